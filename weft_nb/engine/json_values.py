"""Heartbeat details and other snapshot values as JSON types, with a placeholder for the rest.

A run snapshot (`weft_nb.engine.snapshot`) holds Python values: heartbeat details may be a numpy
array, a tuple, a pydantic model, or a pickle whose class is not loaded in this process.
``GET /api/v1/runs/{id}`` must send all of them as JSON and never fail on one, so each value is
described by its codec, sent as it is when it is JSON, and otherwise replaced by its short
``repr`` (``{"codec": "pickle", "details": null, "repr": "array([1, 2])"}``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from weft_nb.base.payloads import JSON, PICKLE, is_json_exact, is_model

REPR_LIMIT = 200
"""The longest ``repr`` a placeholder carries, in characters."""


@dataclasses.dataclass(frozen=True)
class UndecodedDetails:
    """Journaled heartbeat details this process cannot decode (their class is not loaded).

    A snapshot holds this in their place, so the panel, ``%weft show`` and the REST endpoint
    still show the run instead of failing on one heartbeat.
    """

    codec: str
    reason: str

    def __repr__(self) -> str:
        return f"<{self.codec} details not decodable here: {self.reason}>"


def codec_of(value: Any) -> str:
    """The codec ``value`` would be stored with (`weft_nb.base.payloads.encode`), without encoding.

    >>> codec_of({"loss": 0.5}), codec_of((1, 2))
    ('json', 'pickle')
    """
    if isinstance(value, UndecodedDetails):
        return value.codec
    if is_json_exact(value):
        return JSON
    if is_model(value):
        cls = type(value)
        return f"pydantic:{cls.__module__}:{cls.__qualname__}"
    return PICKLE


def finite(value: Any) -> Any:
    """``value`` with every NaN and infinity spelled as a string (``"NaN"``, ``"Infinity"``).

    Strict JSON has no such numbers; the spelling is protobuf's JSON mapping for doubles.

    >>> finite({"loss": float("nan"), "steps": [1.5, float("-inf")]})
    {'loss': 'NaN', 'steps': [1.5, '-Infinity']}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [finite(item) for item in value]
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    return value


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to `REPR_LIMIT` characters; a failing ``__repr__`` is named instead."""
    try:
        text = repr(value)
    except Exception as exc:  # a user's class: its repr may raise anything
        text = f"<{type(value).__qualname__} whose repr failed: {type(exc).__name__}>"
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 1] + "…"


def details_json(details: Any, recorded_at: float | None) -> dict[str, Any] | None:
    """The latest heartbeat of a step: ``{"codec", "details", "repr", "recorded_at"}``, or None.

    ``details`` is the value itself when it is JSON (a pydantic model: its JSON), else null, with
    ``repr`` saying what it is.

    >>> details_json({"epoch": 3}, 12.5)
    {'codec': 'json', 'details': {'epoch': 3}, 'repr': None, 'recorded_at': 12.5}
    >>> details_json((1, 2), None)
    {'codec': 'pickle', 'details': None, 'repr': '(1, 2)', 'recorded_at': None}
    """
    if details is None and recorded_at is None:
        return None
    codec = codec_of(details)
    value, text = None, None
    if codec == JSON:
        value = finite(details)
    elif is_model(details):
        try:
            value = finite(json.loads(details.model_dump_json()))
        except Exception:  # a model whose fields have no JSON: described like a pickle
            text = short_repr(details)
    else:
        text = short_repr(details)
    return {"codec": codec, "details": value, "repr": text, "recorded_at": recorded_at}
