"""Storage faults: a full disk, a failing disk or a read-only location at each of our write sites.

Faults are injected with ``weft_nb.base.io_faults`` (``WEFT_NB_IO_FAULT`` in child processes,
:func:`configure` here) at the real write sites: the step log's append and ``fdatasync``,
checkpoint files, the lock file, journal creation and DuckDB commits. One test fills a real tmpfs
(root only). What must hold: the caller gets :class:`JournalIOError` naming the file and the
cause; no acknowledged step is lost or runs again; the run is never marked failed by our I/O
error and resumes once the cause is gone; every run thread settles its handle.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_status

import weft_nb
from weft_nb.base import io_faults
from weft_nb.errors import JournalIOError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.step_log import scan
from weft_nb.testing import TestEngine

HANG_GUARD = 60.0  # seconds; only stops a hang from blocking the suite


@pytest.fixture(autouse=True)
def _disarm() -> Iterator[None]:
    yield
    io_faults.configure("")


def make_workflow(steps: int, ran: collections.Counter[int]) -> Any:
    """A workflow of ``steps`` plain steps (the step-log path); counts executions per step."""
    name = f"step_{uuid.uuid4().hex[:8]}"

    def one(i: int) -> int:
        ran[i] += 1
        return i * i

    one.__name__ = one.__qualname__ = name
    act = weft_nb.activity(one)

    @weft_nb.workflow(name=f"wf_{name}")
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return sum(ctx.run(act, i) for i in range(steps))

    return wf


@pytest.mark.parametrize("kind", ["short", "enospc", "eio"])
def test_a_failed_step_append_is_cut_back_and_the_run_stays_resumable(
    journal_path: Path, kind: str
) -> None:
    ran: collections.Counter[int] = collections.Counter()
    wf = make_workflow(6, ran)
    io_faults.configure(f"steplog.append:{kind}:5")  # append 1 is the run's start
    with TestEngine(journal_path) as engine:
        handle = engine.start(wf, run_id="r")
        with pytest.raises(JournalIOError) as caught:
            handle.result(timeout=HANG_GUARD)
        assert caught.value.path == str(journal_path) + ".steplog"
        assert caught.value.cause == ("I/O error" if kind == "eio" else "disk full")
        assert str(journal_path) in str(caught.value) and "resume" in str(caught.value)
        # The log ends at its last whole record: the run's start and the three acknowledged
        # steps, no partial one.
        found = scan((Path(str(journal_path) + ".steplog")).read_bytes())
        assert (len(found.records), found.damaged) == (4, [])
        assert dict(ran) == {0: 1, 1: 1, 2: 1, 3: 1}
    io_faults.configure("")
    assert run_status(journal_path, "r") == "running"  # never marked failed by our I/O error
    with TestEngine(journal_path) as engine:
        assert engine.run(wf, run_id="r", timeout=HANG_GUARD) == sum(i * i for i in range(6))
    assert dict(ran) == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}  # only the unacknowledged step


def test_appends_after_a_short_write_never_land_after_a_partial_record(tmp_path: Path) -> None:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    row = ("run", 0, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"1", None, None)
    journal.append_step(row)
    io_faults.configure("steplog.append:short")
    with pytest.raises(JournalIOError):
        journal.append_step((*row[:1], 1, *row[2:]))
    io_faults.configure("")
    journal.append_step((*row[:1], 2, *row[2:]))
    found = scan(Path(journal.step_log_path).read_bytes())
    assert found.damaged == []
    assert [lsn for lsn, _ in found.records] == [1, 2]  # the failed append's lsn is reused
    journal.close()


def test_a_failed_sync_is_a_journal_io_error(journal_path: Path) -> None:
    ran: collections.Counter[int] = collections.Counter()
    io_faults.configure("steplog.sync:eio:2")
    with TestEngine(journal_path) as engine:
        with pytest.raises(JournalIOError, match="I/O error"):
            engine.run(make_workflow(3, ran), run_id="r", timeout=HANG_GUARD)


def test_a_disk_full_append_of_the_outcome_never_hangs_and_stays_resumable(
    journal_path: Path,
) -> None:
    ran: collections.Counter[int] = collections.Counter()
    wf = make_workflow(3, ran)
    with TestEngine(journal_path) as engine:
        io_faults.configure("steplog.append:enospc:5")  # 1: the run's start; 2-4: steps; 5: outcome
        handle = engine.start(wf, run_id="r")
        with pytest.raises(JournalIOError, match="disk full") as caught:
            handle.result(timeout=HANG_GUARD)
        assert caught.value.path.endswith(".steplog")
        assert handle.done and handle.status == "running"
    io_faults.configure("")
    assert run_status(journal_path, "r") == "running"
    with TestEngine(journal_path) as engine:
        assert engine.run(wf, run_id="r", timeout=HANG_GUARD) == 5
    assert dict(ran) == {0: 1, 1: 1, 2: 1}  # the steps of the failed commit stayed in the log


def test_a_checkpoint_write_error_is_retryable_not_unpicklable(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
    def saver(_: object, activity: weft_nb.ActivityContext) -> int:
        activity.checkpoint({"w": list(range(100))})
        return activity.attempt

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(saver)

    io_faults.configure("checkpoint.write:enospc:1")
    assert engine.run(wf, run_id="c", timeout=HANG_GUARD) == 2
    (failed,) = engine.journal.attempts_of("c", 0)
    assert failed.error_type == "JournalIOError"
    assert "disk full" in (failed.error_message or "")
    assert "pickled" not in (failed.error_message or "")


def test_a_checkpoint_write_error_on_the_last_attempt_leaves_the_run_resumable(
    journal_path: Path,
) -> None:
    @weft_nb.activity(retry={"max_attempts": 1})
    def saver(_: object, activity: weft_nb.ActivityContext) -> str:
        activity.checkpoint({"w": 1})
        return "saved"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(saver)

    io_faults.configure("checkpoint.write:erofs:1:0")  # every checkpoint write fails
    with TestEngine(journal_path) as engine:
        with pytest.raises(JournalIOError, match="read-only"):
            engine.run(wf, run_id="c", timeout=HANG_GUARD)
    io_faults.configure("")
    assert run_status(journal_path, "c") == "running"
    with TestEngine(journal_path) as engine:
        assert engine.run(wf, run_id="c", timeout=HANG_GUARD) == "saved"


def test_creating_a_journal_on_a_full_disk_leaves_no_stub(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    io_faults.configure("journal.create:enospc")
    with pytest.raises(JournalIOError, match="disk full") as caught:
        DuckDBJournal(path)
    assert caught.value.path == str(path)
    assert not path.exists()  # on 8d3cf07 a 4 KiB stub stayed, "corrupt" from then on
    io_faults.configure("")
    DuckDBJournal(path).close()  # space is back: a new journal, not a corrupt one


def test_a_read_only_location_says_how_to_open_the_journal_read_only(tmp_path: Path) -> None:
    io_faults.configure("lock.write:erofs")
    with pytest.raises(JournalIOError) as caught:
        DuckDBJournal(tmp_path / "j.duckdb")
    message = str(caught.value)
    assert caught.value.path == str(tmp_path / "j.duckdb.lock")
    assert caught.value.cause == "read-only file system"
    assert "read_only=True" in message and "weft-nb --journal" in message
