"""Resynchronising past a damaged step-log record costs work linear in its size (issue 12.2).

A damaged record whose payload is a pickled index array (a train/test split) reads, at almost
every offset inside it, as a header with a plausible length and lsn. ``scan`` computed a CRC over
each such candidate, so opening the journal after one flipped byte in a 16 MB record took hours
(quadratic). The CRC computations are counted, not timed.
"""

from __future__ import annotations

import array
import random
import zlib
from typing import Any

import pytest

from weft_nb.journal import step_log as _step_log
from weft_nb.journal.step_log import LOG_MAGIC, encode_record, scan


def _row(position: int, blob: bytes) -> tuple[Any, ...]:
    return ("r", position, "split", "completed", "h", "s", 1, 1.0, 2.0, "pickle", blob, None, None)


class _CountingZlib:
    def __init__(self) -> None:
        self.calls = 0

    def crc32(self, data: bytes, value: int = 0) -> int:
        self.calls += 1
        return zlib.crc32(data, value)


def test_a_damaged_index_array_record_is_skipped_without_a_crc_per_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    indices = list(range(20_000))
    random.Random(7).shuffle(indices)
    blob = array.array("i", indices).tobytes()
    data = bytearray(LOG_MAGIC + encode_record(1, _row(0, blob)) + encode_record(2, _row(1, b"x")))
    data[len(LOG_MAGIC) + 50] ^= 0xFF  # one flipped byte in the big record
    counting = _CountingZlib()
    monkeypatch.setattr(_step_log, "zlib", counting)
    found = scan(bytes(data))
    assert [lsn for lsn, _row_ in found.records] == [2]
    assert len(found.damaged) == 1 and found.missing == 1
    # Two CRC calls per validated candidate; on the unfixed scan this was about 20,000.
    assert counting.calls <= 20


def test_an_intact_log_scans_the_same() -> None:
    rows = [_row(i, bytes([i]) * (i * 100)) for i in range(30)]
    data = LOG_MAGIC + b"".join(encode_record(i + 1, row) for i, row in enumerate(rows))
    found = scan(data)
    assert [row for _lsn, row in found.records] == rows
    assert found.damaged == [] and found.missing == 0
