"""`engine.run()` leaves its start record to the first step's sync: crashes around that window.

`engine.run()` returns nothing before the run's outcome, so its run-start record is appended to
the step log without an ``fdatasync`` of its own; step 0's sync (or the outcome's) makes it
durable together with what follows it (docs/guarantees.md). Real children are SIGKILLed
(``WEFT_NB_KILL_AT``) right after the unsynced start record and right after step 0's sync; the
write survives the process, so the reopened journal holds the run, with no step without it, and
``engine.recover_all()`` resumes it and runs only what was never acknowledged. A power loss may
take the unsynced start record: nothing of the run is then left (no run, no orphaned step), and
nothing had been acknowledged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crash_pipeline import RUN_ID, Child, executions, inspect_journal, precreate_journal

from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.run_log import RUN_START_FIELDS
from weft_nb.journal.step_log import LOG_MAGIC, STEP_TYPES, read_records

pytestmark = pytest.mark.crash

SPEC = {"steps": 8, "heartbeat": False}  # no heartbeats: every record takes the step-log path


def killed_in_engine_run(tmp_path: Path, kill_at: str, acknowledged: int) -> Child:
    """An ``engine.run()`` child SIGKILLed at ``kill_at`` after steps ``0..acknowledged-1``."""
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(tmp_path, "first", workflow="many", input=SPEC, kill_at=kill_at, api="run")
    first.expect_killed()
    ran = executions(first.evidence, first.proc.pid)
    assert set(ran) == set(range(acknowledged))
    assert set(ran.values()) <= {1}
    return first


def recover(tmp_path: Path, acknowledged: set[int]) -> None:
    """``recover_all()`` in a new child resumes the run: only unacknowledged steps run, once."""
    second = Child(tmp_path, "second", workflow="many", input=SPEC, api="recover")
    outcome = second.finish()
    assert outcome["status"] == "completed"
    assert outcome["value"]["steps"] == SPEC["steps"]
    every = set(range(int(SPEC["steps"])))
    assert set(executions(second.evidence, second.proc.pid)) == every - acknowledged
    assert set(executions(second.evidence).values()) <= {1}  # no step ran twice, in any process


def kinds(journal: Path) -> list[int]:
    return [len(row) for _lsn, row in read_records(str(journal) + ".steplog")]


def test_kill_between_the_unsynced_start_record_and_the_first_step(tmp_path: Path) -> None:
    first = killed_in_engine_run(tmp_path, "runlog.started:1", 0)
    assert kinds(first.journal) == [RUN_START_FIELDS]  # written: it outlives the process
    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: "running"}
    assert state["completed"] == set()
    recover(tmp_path, set())


def test_kill_after_the_first_step_whose_sync_covered_the_start(tmp_path: Path) -> None:
    first = killed_in_engine_run(tmp_path, "steplog.appended:1", 1)
    assert kinds(first.journal) == [RUN_START_FIELDS, len(STEP_TYPES)]
    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: "running"}  # step 0 never without its run
    assert state["completed"] == {0}
    recover(tmp_path, {0})


def test_a_lost_unsynced_start_leaves_no_run_and_no_orphaned_step(tmp_path: Path) -> None:
    first = killed_in_engine_run(tmp_path, "runlog.started:1", 0)
    log = Path(str(first.journal) + ".steplog")
    log.write_bytes(LOG_MAGIC)  # what a power loss may make of a write no sync covered
    journal = DuckDBJournal(first.journal)
    try:
        assert journal.list_runs() == []
        assert not journal.orphaned_steps(RUN_ID)  # no step was acknowledged without its start
        assert journal.query("SELECT count(*) FROM steps") == [(0,)]
    finally:
        journal.close()
