"""Payload codecs: how inputs, results, heartbeat details and errors are stored.

Three codecs, the name stored beside every payload so old rows stay readable:

- ``json``: values made only of dict (str keys), list, str, int, float, bool and None. Checked
  exactly, so a tuple or a subclass never comes back as a different type on replay.
- ``pydantic:<module>:<qualname>``: pydantic models, as their JSON; rehydrated on replay through
  the activity's return type hint, or the class found by its path.
- ``pickle``: everything else (numpy arrays, pandas frames, ...), protocol 5.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import json.encoder
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weft_nb import errors
from weft_nb.errors import PayloadError, WeftError

if TYPE_CHECKING:
    from pydantic import BaseModel

JSON = "json"
PICKLE = "pickle"
_PYDANTIC = "pydantic:"

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


# Python refuses to print or parse ints of more than 4,300 digits (sys.get_int_max_str_digits):
# such an int is pickled instead, so it encodes and decodes whatever the limit is.
_JSON_INT_BITS = 10_000

# ``json.dumps(v, separators=(",", ":"))`` builds a new encoder on every call; these are reused.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
SORTED_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)

What = str | Callable[[], str]
"""What a payload is, for messages: a text, or a function that builds it (only on an error)."""


def what_text(what: What) -> str:
    """The text of a `What`."""
    return what if isinstance(what, str) else what()


def is_json_exact(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged (exact types, str keys, sane ints)."""
    kind = type(value)
    if kind is int:
        return bool(value.bit_length() <= _JSON_INT_BITS)
    if kind is str or kind is bool or value is None or kind is float:
        return True
    if depth > 64:
        return False
    if kind is list:
        return all(is_json_exact(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and is_json_exact(v, depth + 1) for k, v in value.items())
    return False


def encode(
    value: Any, *, what: What, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, hint: Any = None
) -> tuple[str, bytes]:
    """Encode ``value``; raise `PayloadError` naming ``what`` if it cannot be stored.

    A pydantic model is stored as its JSON only when that JSON decodes (as a replay would, through
    ``hint``) to an equal model of the same class; otherwise (NaN or inf, tuples or sets in
    ``Any`` fields, bytes that are not UTF-8, ints too long for JSON, ...) it is pickled, and a
    model that cannot be pickled either is refused here, not at replay.

    >>> encode({"a": [1, 2.5, None]}, what="x")
    ('json', b'{"a":[1,2.5,null]}')
    >>> encode((1, 2), what="x")[0]
    'pickle'
    """
    if is_json_exact(value):
        codec, data = JSON, _json_text(value).encode()
    elif is_model(value) and (as_json := _model_json(value, hint)) is not None:
        codec, data = as_json
    else:
        try:
            codec, data = PICKLE, pickle.dumps(value, protocol=5)
        except Exception as exc:
            what = what_text(what)
            raise PayloadError(
                f"{what} cannot be stored: a {type(value).__module__}.{type(value).__qualname__} "
                f"is not serialisable ({type(exc).__name__}: {exc}). Return plain data "
                "(JSON values, numpy arrays, dataclasses, pydantic models) instead of live "
                "objects such as open files, locks, generators or clients.",
                what=what,
                type_name=type(value).__qualname__,
            ) from exc
    if len(data) > max_bytes:
        what = what_text(what)
        raise PayloadError(
            f"{what} is {len(data):,} bytes, over the {max_bytes:,}-byte payload limit. Save "
            "large data to a file (or an activity checkpoint) and return its path, or raise "
            "Engine(max_payload_bytes=...).",
            what=what,
            size=len(data),
            limit=max_bytes,
        )
    return codec, data


def plain_json(value: Any) -> bytes | None:
    """What `encode` stores for ``value`` when it stores JSON (exact JSON data), else None."""
    kind = type(value)
    if kind is str:  # what `_json_text` does, without its calls
        return _encode_str(value).encode()
    if kind is int and value.bit_length() <= _JSON_INT_BITS:
        return repr(value).encode()  # int's own repr: ``kind`` is exactly int
    return _json_text(value).encode() if is_json_exact(value) else None


def _model_json(value: BaseModel, hint: Any) -> tuple[str, bytes] | None:
    """The model's JSON codec and text, if decoding them gives the model back exactly."""
    cls = type(value)
    codec = f"{_PYDANTIC}{cls.__module__}:{cls.__qualname__}"
    try:
        data = value.model_dump_json().encode()
        back = _decode(codec, data, hint)  # exactly as a replay in a new process decodes it
        if type(back) is cls and back == value:
            return codec, data
    except Exception:  # any failure to round-trip: pickle it instead
        return None
    return None


def decode(codec: str, data: bytes, *, hint: Any = None, what: What = "a stored value") -> Any:
    """Decode a stored payload; ``hint`` (a type hint) rehydrates pydantic models.

    Raises:
        PayloadError: The value needs code that is not loaded, or no longer fits its model.
    """
    try:
        return _decode(codec, data, hint)
    except (AttributeError, ImportError) as exc:
        what = what_text(what)
        raise PayloadError(
            f"{what} needs code that is not loaded ({exc}). Run the cell or import that defines "
            "it, then retry.",
            what=what,
        ) from exc
    except _validation_error() as exc:
        what = what_text(what)
        raise PayloadError(
            f"{what} no longer fits its model ({exc.title}: {exc.error_count()} error(s)); the "
            "model changed since it was recorded. Restore the old fields, or start a new run.",
            what=what,
        ) from exc
    except ValueError as exc:
        what = what_text(what)
        raise PayloadError(
            f"{what} could not be decoded ({exc}); it was recorded by other code or is "
            "damaged. Start a new run, or restore the code that recorded it.",
            what=what,
        ) from exc


def _decode(codec: str, data: bytes, hint: Any) -> Any:
    if codec == JSON:
        value = loads_json(data)
        if hint is not None and _wants_model(hint) and value is not None:
            from pydantic import TypeAdapter

            return TypeAdapter(hint).validate_python(value)
        return value
    if codec == PICKLE:
        return pickle.loads(data)
    if codec.startswith(_PYDANTIC):
        cls = _find_class(codec[len(_PYDANTIC) :])
        if hint is not None and _wants_model(hint):
            if cls is not None and issubclass(cls, hint):  # a subclass keeps its own fields
                return cls.model_validate_json(data)
            from pydantic import TypeAdapter

            return TypeAdapter(hint).validate_json(data)
        if cls is not None:
            return cls.model_validate_json(data)
        return json.loads(data)
    raise PayloadError(
        f"unknown payload codec {codec!r}; was the journal written by a newer weft_nb?"
    )


def _json_text(value: Any) -> str:
    """``COMPACT_JSON.encode(value)``; an int or a str without the encoder's call chain."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)  # what the encoder writes for an int
    if kind is str:
        return _encode_str(value)
    return COMPACT_JSON.encode(value)


_encode_str = json.encoder.encode_basestring_ascii  # the encoder's own (ensure_ascii)
_JSON_DECODER = json.JSONDecoder()
_scan_once = _JSON_DECODER.scan_once  # type: ignore[attr-defined]  # set by __init__


def loads_compact_json(data: bytes | bytearray) -> Any:
    """The value of JSON as `encode` writes it (UTF-8, one value, no whitespace), quickly.

    Whatever it returns, `loads_json` returns too; it refuses (``ValueError``) more: text with
    whitespace, a byte-order mark, or another encoding, which `loads_json` may still read.
    """
    return _scan_whole(data.decode("utf-8", "surrogatepass"))


def _scan_whole(text: str) -> Any:
    """The one JSON value ``text`` is, without whitespace around it; ``ValueError`` otherwise."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration as exc:
        raise ValueError("not JSON") from exc
    if end != len(text):
        raise ValueError("not one compact JSON value")
    return value


def loads_json(data: bytes | bytearray) -> Any:
    """``json.loads(data)``: a JSON payload's value (``decode`` of the ``json`` codec, no hint).

    UTF-8 text (what `encode` writes) skips the encoding detection.

    Raises:
        ValueError: Not JSON (``json.JSONDecodeError``) or not UTF-8 text.
    """
    # json.detect_encoding says UTF-8 unless the text starts with a BOM or a NUL byte or its
    # second byte is NUL (UTF-16/32): a first byte in 1..127 and a non-NUL second rule those out.
    if (
        (type(data) is bytes or type(data) is bytearray)
        and b"\x00" < data[:1] < b"\x80"
        and data[1:2] != b"\x00"
    ):
        text = data.decode("utf-8", "surrogatepass")
        try:  # one value, no whitespace around it (what `encode` writes): the scanner alone
            return _scan_whole(text)
        except ValueError:
            return _JSON_DECODER.decode(text)  # whitespace, or the error json.loads raises
    return json.loads(data)


def _find_class(path: str) -> type[BaseModel] | None:
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if is_model_class(obj) else None


def _wants_model(hint: Any) -> bool:
    return is_model_class(hint)


# pydantic is imported only by code that uses it: a model (or a model class) exists only once
# something imported pydantic, so `import weft_nb` does not have to (it costs ~50 ms).


def _base_model() -> type | None:
    module = sys.modules.get("pydantic")
    base = None if module is None else getattr(module, "BaseModel", None)
    return base if isinstance(base, type) else None


def is_model(value: Any) -> bool:
    """True for an instance of a pydantic model (without importing pydantic)."""
    base = _base_model()
    return base is not None and isinstance(value, base)


def is_model_class(obj: Any) -> bool:
    """True for a pydantic model class (without importing pydantic)."""
    base = _base_model()
    return base is not None and isinstance(obj, type) and issubclass(obj, base)


class _NotRaised(Exception):
    """Stands for pydantic's ValidationError while pydantic is not loaded (nothing raises it)."""


def _validation_error() -> Any:  # pydantic.ValidationError, or _NotRaised
    module = sys.modules.get("pydantic")
    error = None if module is None else getattr(module, "ValidationError", None)
    return error if isinstance(error, type) and issubclass(error, Exception) else _NotRaised


def validate(value: Any, hint: Any, *, what: str) -> Any:
    """Validate ``value`` against a pydantic-model ``hint``; other hints are left alone."""
    if hint is None or not _wants_model(hint) or isinstance(value, hint):
        return value
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        raise PayloadError(
            f"{what} does not match its type hint {hint.__qualname__}: {exc}",
            what=what,
            type_name=type(value).__qualname__,
        ) from exc


def digest(data: bytes) -> str:
    """The hash stored in a step's signature."""
    return hashlib.sha256(data).hexdigest()[:32]


def exception_text(error: BaseException, *, with_type: bool = False) -> str:
    """``str(error)``, or ``<unprintable T>`` when its ``__str__`` raises (never raises itself)."""
    try:
        text = str(error)
    except Exception:
        text = f"<unprintable {type(error).__name__}>"
    return f"{type(error).__name__}: {text}" if with_type else text


def error_to_json(error: BaseException, traceback_text: str = "") -> str:
    """An exception as the JSON text kept in the journal (weft_nb errors keep their fields)."""
    data: dict[str, Any] = {
        "class": type(error).__name__,
        "module": type(error).__module__,
        "message": error.message if isinstance(error, WeftError) else exception_text(error),
        "traceback": traceback_text,
    }
    if isinstance(error, WeftError):
        data["fields"] = error.fields
    return json.dumps(data, default=repr)


def error_from_json(text: str, *, run_id: str | None = None) -> BaseException:
    """Rebuild a recorded error: weft_nb errors as themselves, others as ``WorkflowFailedError``."""
    data = json.loads(text)
    cls = getattr(errors, data["class"], None) if data.get("module") == errors.__name__ else None
    if isinstance(cls, type) and issubclass(cls, WeftError):
        rebuilt = cls.__new__(cls)
        WeftError.__init__(rebuilt, data["message"], **data.get("fields", {}))
        return rebuilt
    return errors.WorkflowFailedError(
        run_id, data["class"], data["message"], data.get("traceback", "")
    )
