"""Input digests: the hash in a step's signature that says whether a journaled step still matches.

A step's signature holds a digest of its input. On replay the workflow runs again and the digest
is computed again; a different digest means "the input changed" and (with ``on_change="rerun"``)
supersedes the journaled step. So the digest must be the same live and on replay for equal input:

- **Canonical.** Built-in containers are hashed by content, not by their encoding: dict keys and
  set members are sorted (by their own digests), so ``{"lr": 0.1, "epochs": 3}`` and
  ``{"epochs": 3, "lr": 0.1}`` hash the same. Scalars are tagged with their type (``1``, ``1.0``
  and ``True`` differ). Numpy arrays hash their dtype, shape and bytes; dataclasses and pydantic
  models their class and fields.
- **Results keep their identity.** A value the workflow received from the engine (a step's
  result, live or replayed; a memo value; a signal payload; the run's input) is hashed by the
  digest of its *recorded encoding*, not by pickling it again. Live, that encoding is the one
  just journaled; on replay it is the same journaled bytes. Re-pickling an unpickled object (a
  scikit-learn model, say) may give other bytes, which used to supersede, and re-run, completed
  steps after every crash. A reference kept per value (weak where possible) pins its ``id()``.
- **Exact or not.** Anything else (an arbitrary object) is hashed by pickling it, which is not
  guaranteed to give the same bytes in another process. Such a digest is marked inexact; a
  mismatch on an inexact digest does not supersede completed work (see ``matches`` callers in
  ``_workflow_context``).

Journals written before this scheme stored ``digest(codec + encoding)``; `InputDigest.legacy`
is that digest, accepted when comparing, so an old journal replays without superseding anything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import pickle
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from weft_nb.base.payloads import JSON, SORTED_JSON, digest, is_json_exact, is_model

_SCHEME = b"weft-input-v2\0"
_JSON_SCHEME = _SCHEME + b"J"
_OPEN_BRACE = ord("{")


# The same SHA-256, from CPython's own implementation where it has one: for the short inputs
# of most steps it costs about half of OpenSSL's, whose per-hash setup dominates (a resume
# digests every replayed step's input). Absent (another Python, a build without it): OpenSSL's.
def _builtin_sha256() -> Callable[[bytes], Any]:
    for module in ("_sha256", "_sha2"):  # CPython 3.11; 3.12 and later
        try:
            return importlib.import_module(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256  # pragma: no cover - depends on the interpreter


_short_sha256 = _builtin_sha256()
_MAX_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class InputDigest:
    """The digest of one step input.

    Attributes:
        value: The digest stored in new journal rows (scheme v2).
        exact: False when part of the input was hashed by re-pickling an object, which another
            process may do differently.
        opaque: The objects hashed by pickling (for development-mode checks).
        encoded: ``codec + encoding``, what `legacy` digests.
    """

    value: str
    exact: bool
    opaque: tuple[Any, ...] = ()
    encoded: bytes = b""

    @functools.cached_property
    def legacy(self) -> str:
        """The digest the previous scheme stored (``digest(codec + encoding)``).

        Computed when first asked: a replay compares it only when `value` does not match.
        """
        return digest(self.encoded)

    def matches(self, recorded: str | None) -> bool:
        """True when a journaled input hash is this input's (under either scheme)."""
        if recorded == self.value:
            return True
        return recorded == self.legacy  # hashed only now


class ResultDigests:
    """The recorded-encoding digests of the values one workflow execution received.

    Keyed by ``id()``. An object that supports weak references (class instances, numpy arrays,
    models) is held weakly and its entry dropped when it dies, so a long loop does not keep every
    result alive; a dict, list or tuple cannot be, and is held until the execution ends (so its
    id cannot be reused meanwhile). Plain values (JSON-encoded) are not kept: they hash
    canonically the same live and on replay, and small ints or interned strings share ids with
    unrelated equal values.
    """

    def __init__(
        self,
        input_value: Any = None,
        input_loader: Callable[[], tuple[str, bytes] | None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._refs: dict[int, tuple[Callable[[], Any], str]] = {}
        self._input = input_value
        self._input_loader = input_loader

    def remember(self, value: Any, codec: str | None, data: bytes | None) -> None:
        """Record that ``value`` came from a journaled encoding ``(codec, data)``."""
        if codec is None or data is None or codec == JSON or _is_plain(value):
            return
        key = id(value)
        try:
            get: Callable[[], Any] = weakref.ref(value, lambda _: self._forget(key))
        except TypeError:  # no weak references to dict, list, tuple, ...
            get = _Strong(value)
        with self._lock:
            self._refs[key] = (get, digest(codec.encode() + data))

    def _forget(self, key: int) -> None:
        with self._lock:
            entry = self._refs.get(key)
            if entry is not None and entry[0]() is None:
                del self._refs[key]

    def lookup(self, value: Any) -> str | None:
        """The recorded digest of ``value``, if the workflow received exactly this object."""
        if self._input_loader is not None and value is self._input:
            loader, self._input_loader = self._input_loader, None
            record = loader()  # the run's input, as journaled: lazily, most inputs are plain
            if record is not None:
                self.remember(self._input, record[0], record[1])
        entry = self._refs.get(id(value))
        return entry[1] if entry is not None and entry[0]() is value else None


class _Strong:
    """A strong reference with ``weakref.ref``'s call interface."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value


def _is_plain(value: Any) -> bool:
    kind = type(value)
    return value is None or kind in (bool, int, float, str, bytes)


def input_digest(value: Any, codec: str, data: bytes, refs: ResultDigests) -> InputDigest:
    """Digest ``value`` (already encoded as ``(codec, data)``) canonically; see the module."""
    encoded = codec.encode() + data
    if codec == JSON:
        return InputDigest(json_input_digest(value, data), True, (), encoded)
    opaque: list[Any] = []
    hasher = hashlib.sha256(_SCHEME)
    _feed(hasher, value, refs, opaque, 0)
    return InputDigest(hasher.hexdigest()[:32], not opaque, tuple(opaque), encoded)


def json_input_digest(value: Any, data: bytes) -> str:
    """`InputDigest.value` of JSON data ``value`` whose compact JSON is ``data`` (exact)."""
    # With no object in ``data`` ("{"), sorting keys changes nothing. (A byte's value, not
    # b"{": bytes' substring search costs several times the digest's other steps.)
    canonical = data if _OPEN_BRACE not in data else SORTED_JSON.encode(value).encode()
    signed: str = _short_sha256(_JSON_SCHEME + canonical).hexdigest()[:32]
    return signed


def _sub(value: Any, refs: ResultDigests, opaque: list[Any], depth: int) -> bytes:
    hasher = hashlib.sha256()
    _feed(hasher, value, refs, opaque, depth)
    return hasher.digest()


def _feed(h: Any, value: Any, refs: ResultDigests, opaque: list[Any], depth: int) -> None:
    kind = type(value)
    if value is None:
        h.update(b"N")
    elif kind is bool:
        h.update(b"B1" if value else b"B0")
    elif kind is int:
        h.update(b"I" + format(value, "x").encode() + b";")  # hex: no digit limit
    elif kind is float:
        h.update(b"F" + struct.pack("<d", value))
    elif kind is str:
        raw = value.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(raw) + raw)
    elif kind is bytes or kind is bytearray:
        h.update(b"Y%d:" % len(value) + bytes(value))
    elif (ref := refs.lookup(value)) is not None:
        h.update(b"R" + ref.encode())
    elif depth > _MAX_DEPTH:
        _opaque(h, value, opaque)
    elif kind in (list, dict) and is_json_exact(value):  # never a result: those are not JSON
        _feed_json(h, value)
    elif kind is list or kind is tuple:
        h.update(b"%s%d:" % (b"L" if kind is list else b"T", len(value)))
        for item in value:
            h.update(_sub(item, refs, opaque, depth + 1))
    elif kind is dict:
        pairs = sorted(
            (_sub(k, refs, opaque, depth + 1), _sub(v, refs, opaque, depth + 1))
            for k, v in value.items()
        )
        h.update(b"D%d:" % len(pairs))
        for k, v in pairs:
            h.update(k + v)
    elif kind is set or kind is frozenset:
        members = sorted(_sub(item, refs, opaque, depth + 1) for item in value)
        h.update(b"%s%d:" % (b"E" if kind is set else b"Z", len(members)))
        h.update(b"".join(members))
    elif is_model(value):
        h.update(b"M" + _type_name(kind))
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        fields.update(value.model_extra or {})
        _feed(h, fields, refs, opaque, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(b"C" + _type_name(kind))
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        _feed(h, fields, refs, opaque, depth + 1)
    elif _is_plain_array(value):
        h.update(b"A" + _type_name(kind) + value.dtype.str.encode() + repr(value.shape).encode())
        h.update(value.tobytes(order="C"))
    else:
        _opaque(h, value, opaque)


def _feed_json(h: Any, value: Any) -> None:
    """Plain data: sorted-key JSON is canonical, and C-fast for big lists."""
    h.update(b"J" + SORTED_JSON.encode(value).encode())


def _opaque(h: Any, value: Any, opaque: list[Any]) -> None:
    opaque.append(value)
    h.update(b"P" + hashlib.sha256(pickle.dumps(value, protocol=5)).digest())


def _type_name(kind: type) -> bytes:
    return f"{kind.__module__}.{kind.__qualname__};".encode()


def _is_plain_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return (
        numpy is not None
        and type(value) is numpy.ndarray
        and not value.dtype.hasobject
        and value.dtype.fields is None
    )
