"""The dispatch log survives damage and an unusable file (review F5, F9).

One flipped byte used to end reading: every crashed attempt recorded after it was forgotten (the
crash loop got extra rounds), silently, and the file was then emptied over the evidence. And a
``.dispatch`` file that could not be created or read made ``Engine()`` raise a bare ``OSError``,
although the log is best effort.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import pytest
from crash_loop_runs import evidence, run_child

import weft_nb
from weft_nb.base import io_faults
from weft_nb.errors import JournalDamageWarning
from weft_nb.journal.dispatch_log import DispatchLog, read_log, read_open


def test_reading_resynchronises_after_a_flipped_byte(tmp_path: Path) -> None:
    path = str(tmp_path / "j.duckdb.dispatch")
    log = DispatchLog(path)
    log.start("run-a", 0, 1, "train", 1.0)
    log.start("run-b", 3, 2, "evaluate", 2.0)
    log.start("run-c", 1, 1, "score", 3.0).end()
    log.close(clean=False)
    data = bytearray(Path(path).read_bytes())
    data[12] ^= 0x01  # inside the first record's payload
    Path(path).write_bytes(bytes(data))
    started, damaged, size = read_log(path)
    assert started == [("run-b", 3, 2, "evaluate", 2.0)]  # run-c's start and end both read
    assert len(damaged) == 1 and damaged[0][0] == 0 and size == len(data)
    assert read_open(path) == started


def test_a_crash_recorded_after_a_damaged_record_still_counts(tmp_path: Path) -> None:
    """A real SIGKILLed attempt; a record before its ``start`` is damaged; the run resumes."""
    assert run_child(tmp_path, how="sigkill", max_attempts=3, crashes=1) == -signal.SIGKILL
    dispatch = tmp_path / "journal.duckdb.dispatch"
    data = bytearray(dispatch.read_bytes())
    data[10] ^= 0xFF  # the first record (the start of step 0, which completed)
    dispatch.write_bytes(bytes(data))
    assert run_child(tmp_path, how="sigkill", max_attempts=3, crashes=1) == 0
    lines = evidence(tmp_path)
    # The crashed attempt 1 counted: the resume ran attempt 2 (which returns), not attempt 1 again.
    assert [line["attempt"] for line in lines if "attempt" in line] == [1, 2]
    assert lines[-1]["outcome"] == {"result": 50}
    kept = list(tmp_path.glob("journal.duckdb.dispatch.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(data)  # the evidence, untouched


def test_damage_is_reported_and_the_file_kept_aside(tmp_path: Path) -> None:
    journal = tmp_path / "j.duckdb"
    weft_nb.Engine(journal).close()
    log = DispatchLog(str(journal) + ".dispatch")
    log.start("gone", 0, 1, "train", 1.0)
    log.close(clean=False)
    dispatch = Path(str(journal) + ".dispatch")
    dispatch.write_bytes(dispatch.read_bytes() + b"\x07" * 9)  # garbage after the record
    with pytest.warns(JournalDamageWarning, match=r"dispatch log .* is damaged: skipped 1") as w:
        weft_nb.Engine(journal).close()
    assert "damaged file is kept at" in str(w[0].message)
    assert len(list(tmp_path.glob("j.duckdb.dispatch.damaged-*"))) == 1


def test_an_unreadable_dispatch_log_never_fails_the_engine(tmp_path: Path) -> None:
    journal = tmp_path / "j.duckdb"
    Path(str(journal) + ".dispatch").mkdir()  # cannot be read, created or written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with weft_nb.Engine(journal) as engine:
            assert engine.dispatches._fd is None
    texts = [str(w.message) for w in caught]
    assert any("could not read its dispatch log" in text for text in texts)
    assert all("crash loops are not stopped" in text for text in texts)


def test_a_dispatch_log_that_cannot_be_created_never_fails_the_engine(tmp_path: Path) -> None:
    @weft_nb.activity
    def inc(x: int) -> int:
        return x + 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(inc, 1)

    io_faults.configure("dispatch.write:erofs")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with weft_nb.Engine(tmp_path / "j.duckdb") as engine:
                assert engine.run(wf, run_id="r") == 2
    finally:
        io_faults.configure("")
    texts = [str(w.message) for w in caught if "dispatch log" in str(w.message)]
    assert len(texts) == 1 and "read-only file system" in texts[0].lower()
