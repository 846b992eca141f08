"""A damaged or deleted step log: every intact record is applied, and what was lost is reported.

The step log holds completed steps that DuckDB does not have yet. A writer is SIGKILLed right
after acknowledging N steps (``WEFT_NB_KILL_AT=steplog.appended:N``), the log is damaged by hand
(a flipped byte, a deleted file), and the journal is reopened. Wanted: reading skips the damaged
record and resynchronises on the next intact one; recovery applies every intact record, warns with
:class:`JournalDamageWarning` (count and byte offsets), keeps the damaged file aside; a log missing
after an unclean shutdown is reported; a resumed run re-executes only the steps whose records were
destroyed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from crash_pipeline import Child, executions, inspect_journal, precreate_journal

from weft_nb.errors import JournalDamageWarning
from weft_nb.journal import step_log as _step_log
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.step_log import LOG_MAGIC, RECORD_HEADER, encode_record

pytestmark = pytest.mark.crash

SMALL = {"steps": 8, "heartbeat": False}  # no heartbeats: every step takes the step-log path


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record of an undamaged log."""
    spans, offset = [], len(LOG_MAGIC)
    while offset < len(data):
        length = RECORD_HEADER.unpack_from(data, offset)[0]
        spans.append((offset, offset + RECORD_HEADER.size + length))
        offset = spans[-1][1]
    return spans


def killed_after(tmp_path: Path, acknowledged: int) -> Path:
    """A writer SIGKILLed right after acknowledging ``acknowledged`` steps; its step log."""
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(
        tmp_path, "first", workflow="many", input=SMALL, kill_at=f"steplog.appended:{acknowledged}"
    )
    first.expect_killed()
    assert set(executions(first.evidence, first.proc.pid)) == set(range(acknowledged))
    return tmp_path / "journal.duckdb.steplog"


def resume(tmp_path: Path) -> set[int]:
    """Finish the run in a new child; the positions it executed (each once)."""
    second = Child(tmp_path, "second", workflow="many", input=SMALL)
    outcome = second.finish()
    assert outcome["status"] == "completed"
    assert outcome["value"]["steps"] == 8
    ran = executions(second.evidence, second.proc.pid)
    assert set(ran.values()) == {1}
    return set(ran)


def test_one_flipped_byte_costs_only_its_own_record_and_is_reported(tmp_path: Path) -> None:
    log = killed_after(tmp_path, 7)
    data = bytearray(log.read_bytes())
    start, end = record_spans(bytes(data))[2]  # the record of step 1 (after the run's start)
    data[end - 3] ^= 0x5A
    log.write_bytes(bytes(data))

    with pytest.warns(JournalDamageWarning) as caught:
        state = inspect_journal(tmp_path / "journal.duckdb")
    message = str(caught[0].message)
    assert f"{start}-{end}" in message and "1 damaged range(s)" in message
    assert "at least 1 record(s)" in message and "7 intact" in message  # the run's start too
    # On 8d3cf07 reading stopped at the damage: steps 2..6 were lost too, silently.
    assert state["completed"] == {0, 2, 3, 4, 5, 6}
    (kept,) = tmp_path.glob("journal.duckdb.steplog.damaged-*")
    assert kept.read_bytes() == bytes(data)  # the evidence, as it was
    assert str(kept) in message

    assert resume(tmp_path) == {1, 7}  # only the destroyed step and the never-acknowledged one


def test_a_step_log_deleted_after_a_crash_is_reported(tmp_path: Path) -> None:
    log = killed_after(tmp_path, 5)
    log.unlink()
    with pytest.warns(JournalDamageWarning, match="is missing.*did not shut down cleanly"):
        state = inspect_journal(tmp_path / "journal.duckdb")
    assert state["completed"] == set()
    assert resume(tmp_path) == set(range(8))  # reported, then re-run: nothing ran twice in one


def test_a_step_log_deleted_after_a_clean_close_is_not_reported(tmp_path: Path) -> None:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    journal.append_step(("r", 0, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"1", None, None))
    journal.close()  # applies the log, then marks the close as clean
    Path(journal.step_log_path).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", JournalDamageWarning)
        reopened = DuckDBJournal(tmp_path / "j.duckdb")
    assert reopened.query("SELECT count(*) FROM steps") == [(1,)]
    reopened.close()


def _row(i: int) -> tuple[object, ...]:
    return ("run", i, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"x" * i, None, None)


def test_scanning_resynchronises_after_each_damaged_range() -> None:
    records = [encode_record(lsn, _row(lsn)) for lsn in range(1, 7)]
    data = bytearray(LOG_MAGIC + b"".join(records))
    spans = record_spans(bytes(data))
    for index in (1, 4):  # records 2 and 5: one in the header, one in the payload
        start, _end = spans[index]
        data[start + (2 if index == 1 else RECORD_HEADER.size + 1)] ^= 0xFF
    found = _step_log.scan(bytes(data))
    assert [lsn for lsn, _ in found.records] == [1, 3, 4, 6]
    assert found.damaged == [spans[1], spans[4]]
    assert found.missing == 2

    bad_magic = bytearray(LOG_MAGIC + b"".join(records))
    bad_magic[0] ^= 0xFF
    found = _step_log.scan(bytes(bad_magic))
    assert [lsn for lsn, _ in found.records] == [1, 2, 3, 4, 5, 6]
    assert found.damaged == [(0, len(LOG_MAGIC))]
    assert found.missing == 0  # a flipped byte in the magic alone lost no record
    bad_magic[len(LOG_MAGIC) + 2] ^= 0xFF  # and the first record's header too: one record lost
    found = _step_log.scan(bytes(bad_magic))
    assert found.damaged == [(0, spans[1][0])]
    assert found.missing == 1

    torn = LOG_MAGIC + b"".join(records) + records[0][:5]
    assert _step_log.scan(torn).damaged == [(len(torn) - 5, len(torn))]
    assert _step_log.scan(LOG_MAGIC[:4]).damaged == []  # a crash before the magic was whole
