"""Payload codecs, pydantic validation, unserialisable and oversize values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import weft_nb
from weft_nb.base.payloads import decode, encode
from weft_nb.errors import PayloadError
from weft_nb.testing import TestEngine


class Params(BaseModel):
    lr: float
    epochs: int = 3


class Metrics(BaseModel):
    accuracy: float
    epochs: int


@pytest.mark.parametrize(
    ("value", "codec"),
    [
        ({"a": [1, 2.5, None, True]}, "json"),
        ("text", "json"),
        ((1, 2), "pickle"),
        ({1: "int key"}, "pickle"),
        ({"s": {1, 2}}, "pickle"),
        (Metrics(accuracy=0.9, epochs=2), "pydantic:test_payloads:Metrics"),
    ],
)
def test_values_round_trip_exactly_with_their_codec(value: object, codec: str) -> None:
    stored_codec, data = encode(value, what="x")
    assert stored_codec == codec
    back = decode(stored_codec, data)
    assert back == value
    assert type(back) is type(value)


def test_replayed_results_keep_their_types_and_codecs_are_recorded(engine: TestEngine) -> None:
    @weft_nb.activity
    def as_tuple(_: object) -> tuple[int, int]:
        return (1, 2)

    @weft_nb.activity
    def as_array(_: object) -> np.ndarray:
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    @weft_nb.activity
    def as_model(p: Params) -> Metrics:
        assert isinstance(p, Params)  # validated from a dict against the hint
        return Metrics(accuracy=0.5 + p.lr, epochs=p.epochs)

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        return [ctx.run(as_tuple), ctx.run(as_array), ctx.run(as_model, {"lr": 0.25})]

    live = engine.run(wf, run_id="p")
    codecs = engine.journal.query("SELECT result_codec FROM steps ORDER BY position")
    assert [c for (c,) in codecs] == ["pickle", "pickle", "pydantic:test_payloads:Metrics"]
    assert live[0] == (1, 2) and isinstance(live[2], Metrics)
    # Replay through the engine in a new process:
    # test_pydantic_results_replay_intact_through_the_engine_in_a_new_process.


def test_invalid_input_for_a_model_hint_is_a_payload_error(engine: TestEngine) -> None:
    @weft_nb.activity
    def train(p: Params) -> float:
        return p.lr

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run(train, {"lr": "fast"})

    with pytest.raises(PayloadError, match="Params"):
        engine.run(wf)


def test_unserialisable_result_names_activity_and_type_and_is_not_recorded(
    engine: TestEngine,
) -> None:
    calls: list[int] = []

    @weft_nb.activity
    def open_lock(_: object) -> object:
        calls.append(1)
        return threading.Lock()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(open_lock)

    with pytest.raises(PayloadError, match="open_lock.*lock") as info:
        engine.run(wf, run_id="u")
    assert "not serialisable" in str(info.value)
    assert calls == [1]  # not retried: it would fail the same way
    assert engine.journal.query("SELECT count(*) FROM steps WHERE status = 'completed'") == [(0,)]


def test_oversize_result_is_refused_with_the_limit(journal_path: object) -> None:
    @weft_nb.activity
    def big(_: object) -> bytes:
        return b"x" * 5000

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> bytes:
        return ctx.run(big)

    with TestEngine(journal_path, max_payload_bytes=1000) as engine:  # type: ignore[arg-type]
        with pytest.raises(PayloadError, match="1,000-byte payload limit"):
            engine.run(wf)
        assert engine.journal.query("SELECT count(*) FROM steps") == [(0,)]


def test_unserialisable_workflow_input_is_refused_before_anything_is_written(
    engine: TestEngine,
) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: object) -> None:
        return None

    with pytest.raises(PayloadError, match="input of workflow 'wf'"):
        engine.start(wf, threading.Lock())
    assert engine.runs() == []


CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "payload_child.py"
ROOT = CHILD.parents[2]


def _child(journal: Path, phase: str, out: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(CHILD), str(journal), phase, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_pydantic_results_replay_intact_through_the_engine_in_a_new_process(
    tmp_path: Path,
) -> None:
    """NaN/inf, a subclass through a base-class hint, tuples and sets in Any fields, non-UTF-8
    bytes and a 5,000-digit int, a plain model, a tuple and a numpy array: each comes back, in a
    new process, equal and of its class."""
    journal = tmp_path / "journal.duckdb"
    recorded = _child(journal, "record", tmp_path / "record.json")
    assert recorded["status"] == "running", recorded
    assert len(recorded["executed"]) == 8
    # Only what JSON cannot hold exactly is pickled; plain models and the subclass stay JSON.
    assert recorded["codecs"][1] == "pydantic:__main__:Sub"
    assert recorded["codecs"][5] == "pydantic:__main__:Plain"
    replayed = _child(journal, "replay", tmp_path / "replay.json")
    assert replayed["status"] == "completed", replayed  # base: PayloadError, the model changed
    assert replayed["executed"] == []  # every result came from the journal
    assert replayed["types"] == replayed["expected_types"]
    assert replayed["reprs"] == replayed["expected_reprs"]


class _Holder(BaseModel):
    data: Any


def test_a_model_that_cannot_come_back_intact_is_refused_when_recorded(
    engine: TestEngine,
) -> None:
    class Local(BaseModel):  # not importable by path, not picklable
        data: Any

    @weft_nb.activity
    def make(_: object) -> Local:
        return Local(data=(1, 2))  # JSON would give a list back

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(make)

    with pytest.raises(PayloadError, match="result of activity 'make'.*not serialisable"):
        engine.run(wf, run_id="m")
    assert engine.journal.query("SELECT count(*) FROM steps WHERE status = 'completed'") == [(0,)]
    # an importable model holding a tuple is pickled and comes back as a tuple
    codec, data = encode(_Holder(data=(1, {2})), what="x")
    assert codec == "pickle" and decode(codec, data) == _Holder(data=(1, {2}))
