"""The replay path's shortcuts give exactly what the plain code gives (issue 17, item 5).

A resume re-encodes, re-hashes and decodes every journaled step, so those run through shortcuts:
compact JSON without ``json.dumps``'s per-call encoder, a JSON input's canonical text reused when
it holds no object, the previous scheme's digest only on a mismatch, ``json.loads`` without its
encoding detection, step rows put into records without a keyword call. Each must agree with the
long way, byte for byte, or a resume would supersede (re-run) completed steps.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from typing import Any

import pytest

from weft_nb.base.input_digest import ResultDigests, input_digest, json_input_digest
from weft_nb.base.payloads import decode, encode, loads_compact_json, plain_json
from weft_nb.errors import PayloadError
from weft_nb.journal.protocol import StepRecord
from weft_nb.journal.sql_records import step_from_row, steps_by_position
from weft_nb.journal.step_log import STEP_COLUMNS

JSON_INPUTS: list[Any] = [
    0,
    -7,
    2**200,
    1.5,
    float("inf"),
    True,
    None,
    "plain",
    'caf\u00e9 \ud83d\ude00 "quoted" \\ {braces} \n',
    [],
    [3, "a", None, [1.0]],
    {"b": 1, "a": 2},
    [{"z": {"y": 1, "x": [2, {"k": None, "c": 3}]}}, "{"],
    {"": [], "\u00e9": {"b": True, "a": False}},
]


def _scheme_digest(value: Any) -> str:
    """The v2 digest of a JSON input, computed the long way (docs: base/input_digest.py)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"weft-input-v2\0J" + canonical).hexdigest()[:32]


@pytest.mark.parametrize("value", JSON_INPUTS, ids=repr)
def test_a_json_input_encodes_and_hashes_as_the_long_way_does(value: Any) -> None:
    codec, data = encode(value, what="x")
    assert (codec, data) == ("json", json.dumps(value, separators=(",", ":")).encode())
    signed = input_digest(value, codec, data, ResultDigests())
    assert signed.value == _scheme_digest(value)
    assert signed.exact
    legacy = hashlib.sha256(b"json" + data).hexdigest()[:32]
    assert signed.legacy == legacy
    assert signed.matches(signed.value)
    assert signed.matches(legacy)  # a journal of the previous scheme
    assert not signed.matches("0" * 32)
    assert not signed.matches(None)


@pytest.mark.parametrize("value", JSON_INPUTS, ids=repr)
def test_a_json_result_decodes_as_json_loads_does(value: Any) -> None:
    _, data = encode(value, what="x")
    back = decode("json", data)
    expected = json.loads(data)
    assert json.dumps(back) == json.dumps(expected)  # NaN-safe equality, types included
    assert type(back) is type(expected)


@pytest.mark.parametrize(
    "data",
    [
        b" [1, 2] ",
        b"\xef\xbb\xbf[1]",  # a UTF-8 BOM
        json.dumps(["\u00e9"]).encode("utf-16"),
        json.dumps({"a": 1}).encode("utf-32"),
        b"1",
        b'"\\ud800"',  # a lone surrogate, as json.dumps writes one
    ],
    ids=repr,
)
def test_any_text_json_loads_reads_decodes_the_same(data: bytes) -> None:
    assert repr(decode("json", data)) == repr(json.loads(data))


@pytest.mark.parametrize("data", [b"", b"[1", b"1 2", b"x", b'{"a":}', b"\xff"], ids=repr)
def test_damaged_json_is_refused_as_before(data: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(PayloadError, match="the recorded result of step 3"):
        decode("json", data, what=lambda: "the recorded result of step 3")


def test_a_step_row_becomes_the_record_its_constructor_builds() -> None:
    row = (
        "run-1",
        4,
        "act",
        "completed",
        "h" * 32,
        "s" * 16,
        2,
        1.5,
        2.5,
        "json",
        b"[1]",
        None,
        "k",
    )
    fields = STEP_COLUMNS.split(", ")
    built = step_from_row(row)
    assert built == StepRecord(**dict(zip(fields, row, strict=True)))
    assert vars(built) == vars(StepRecord(**dict(zip(fields, row, strict=True))))
    with pytest.raises(ValueError):
        step_from_row(row[:-1])


def _row(position: int) -> tuple[Any, ...]:
    return ("run-1", position, "act", "completed", "h", "s", 1, 1.0, 2.0, "json", b"1", None, None)


def test_steps_load_with_the_collector_paused_and_leave_it_as_it_was() -> None:
    seen: list[bool] = []

    def fetch() -> list[Any]:
        seen.append(gc.isenabled())
        return [_row(0), _row(1)]

    assert gc.isenabled()
    assert sorted(steps_by_position(fetch)) == [0, 1]
    assert seen == [False]
    assert gc.isenabled()  # restored
    gc.disable()
    try:
        steps_by_position(fetch)
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_a_failed_load_restores_the_collector() -> None:
    def fetch() -> list[Any]:
        raise OSError("disk")

    with pytest.raises(OSError):
        steps_by_position(fetch)
    assert gc.isenabled()


def test_concurrent_loads_restore_the_collector_once_all_are_done() -> None:
    inside, release = threading.Barrier(3), threading.Event()

    def fetch() -> list[Any]:
        inside.wait(60)
        assert release.wait(60)
        return [_row(0)]

    threads = [threading.Thread(target=steps_by_position, args=(fetch,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait(60)  # both loads are inside
    assert not gc.isenabled()
    release.set()
    for thread in threads:
        thread.join(60)
    assert gc.isenabled()


def _kind(value: Any) -> str:
    return type(value).__name__


@pytest.mark.parametrize("value", [*JSON_INPUTS, (1, 2), 2**40000, {1: 2}, [b"x"], 1.5j], ids=_kind)
def test_plain_json_is_what_encode_stores_as_json(value: Any) -> None:
    codec, data = encode(value, what="x")
    assert plain_json(value) == (data if codec == "json" else None)
    if codec == "json":
        assert json_input_digest(value, data) == _scheme_digest(value)


@pytest.mark.parametrize(
    "data",
    [
        *(encode(v, what="x")[1] for v in JSON_INPUTS),
        b" [1, 2] ",
        b"\xef\xbb\xbf[1]",
        json.dumps(["\u00e9"]).encode("utf-16"),
        b"1\x00",
        b"",
        b"[1",
        b"1 2",
        b"\xff",
    ],
    ids=repr,
)
def test_compact_json_reads_only_what_json_loads_reads_the_same(data: bytes) -> None:
    for raw in (data, bytearray(data)):
        try:
            fast = loads_compact_json(raw)
        except ValueError:
            continue  # the general path reads or refuses it
        assert json.dumps(fast) == json.dumps(json.loads(data))
        assert type(fast) is type(json.loads(data))


@pytest.mark.parametrize("value", JSON_INPUTS, ids=repr)
def test_compact_json_reads_all_that_encode_writes(value: Any) -> None:
    data = encode(value, what="x")[1]
    assert json.dumps(loads_compact_json(data)) == json.dumps(json.loads(data))
