"""The step log as the durability point: crashes around it lose nothing and duplicate nothing.

A completed step is acknowledged once its record is fsync'd to ``<journal>.steplog``; DuckDB
receives it later, in a batch. These tests SIGKILL real processes (``WEFT_NB_KILL_AT``) at each
point of that path and check, on the reopened journal, that every acknowledged step is in
``steps`` exactly once and that the resumed run executes only the steps never acknowledged:

- ``steplog.appended``: the record is on disk, DuckDB has not seen it;
- ``steplog.before_apply_commit``: the batch is inserted in DuckDB, not committed;
- ``steplog.after_apply_commit``: DuckDB committed the batch, the log is not emptied yet;
- a second kill during the recovery that the next open performs.

They reuse the crash harness of ``test_crash.py`` (children, evidence files, reference outcome).
The unit tests at the end cover the log file itself: torn tails, foreign bytes, group commit.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from crash_pipeline import Child, executions, inspect_journal, precreate_journal

from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.step_log import APPLY_ROWS, StepLog, encode_record, read_records

pytestmark = pytest.mark.crash

SMALL = {"steps": 8, "heartbeat": False}  # no heartbeats: every step takes the step-log path
LARGE = {"steps": APPLY_ROWS + 300, "heartbeat": False}  # one batch applied mid-run


def step_rows(journal: Path) -> dict[int, int]:
    """How many current rows each position has in DuckDB's ``steps`` (opened as a writer)."""
    opened = DuckDBJournal(journal)
    try:
        rows = opened.query(
            "SELECT position, count(*) FROM steps WHERE NOT superseded GROUP BY position"
        )
    finally:
        opened.close()
    return {position: count for position, count in rows}


def resume_and_check(tmp_path: Path, spec: dict[str, int | bool], acknowledged: set[int]) -> None:
    """Finish the run in a new child: only unacknowledged steps run, each step once overall."""
    steps = int(spec["steps"])
    second = Child(tmp_path, "second", workflow="many", input=spec)
    outcome = second.finish()
    assert outcome["status"] == "completed"
    if not outcome["replayed_from_journal"]:  # a finished run answers from its record instead
        assert outcome["replayed_steps"] == len(acknowledged)
    assert set(executions(second.evidence, second.proc.pid)) == set(range(steps)) - acknowledged
    assert set(executions(second.evidence).values()) == {1}  # no step ran twice
    assert outcome["value"]["steps"] == steps
    assert step_rows(second.journal) == dict.fromkeys(range(steps), 1)


@pytest.mark.parametrize(
    ("kill_at", "spec", "acknowledged", "status"),
    [
        ("steplog.appended:5", SMALL, 5, "running"),
        # The run's outcome was acknowledged in the step log before its batch (applied at close).
        ("steplog.before_apply_commit:1", SMALL, 8, "completed"),
        ("steplog.after_apply_commit:1", SMALL, 8, "completed"),
        (f"steplog.appended:{APPLY_ROWS + 200}", LARGE, APPLY_ROWS + 200, "running"),
        # The mid-run batch: the run's start and APPLY_ROWS - 1 steps.
        ("steplog.before_apply_commit:1", LARGE, APPLY_ROWS - 1, "running"),
        ("steplog.after_apply_commit:1", LARGE, APPLY_ROWS - 1, "running"),
    ],
    ids=[
        "after-append",
        "during-apply",
        "after-apply-before-truncate",
        "after-a-mid-run-batch",
        "during-the-mid-run-batch",
        "after-the-mid-run-batch-before-truncate",
    ],
)
def test_kill_on_the_step_log_path(
    tmp_path: Path, kill_at: str, spec: dict[str, int | bool], acknowledged: int, status: str
) -> None:
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(tmp_path, "first", workflow="many", input=spec, kill_at=kill_at)
    first.expect_killed()
    ran_before = executions(first.evidence, first.proc.pid)
    assert set(ran_before) == set(range(acknowledged))  # the kill came right after an ack
    assert set(ran_before.values()) == {1}

    # A fresh reader finds the dead writer's log and applies it before answering.
    state = inspect_journal(first.journal)
    assert state["runs"] == {"crash-run": status}
    assert state["completed"] == set(range(acknowledged))
    assert not list(read_records(str(first.journal) + ".steplog"))
    assert step_rows(first.journal) == dict.fromkeys(range(acknowledged), 1)

    resume_and_check(tmp_path, spec, set(range(acknowledged)))


def test_kill_during_the_recovery_of_a_step_log(tmp_path: Path) -> None:
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(tmp_path, "first", workflow="many", input=SMALL, kill_at="steplog.appended:6")
    first.expect_killed()
    log = tmp_path / "journal.duckdb.steplog"
    assert [lsn for lsn, _row in read_records(str(log))] == [1, 2, 3, 4, 5, 6, 7]  # run + 6

    # The next engine dies while it applies the log it found: nothing committed, log intact.
    recovering = Child(
        tmp_path, "recovering", workflow="many", input=SMALL, kill_at="steplog.before_apply_commit"
    )
    recovering.expect_killed()
    assert executions(recovering.evidence, recovering.proc.pid) == {}
    assert len(list(read_records(str(log)))) == 7

    resume_and_check(tmp_path, SMALL, set(range(6)))


# -- the log file itself ---------------------------------------------------------------------


def test_a_torn_or_damaged_tail_is_ignored(tmp_path: Path) -> None:
    path = str(tmp_path / "x.steplog")
    log = StepLog(path)
    for lsn in (1, 2, 3):
        log.append(
            lsn, ("run", lsn, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"1", None, None)
        )
        log.sync(lsn)
    log.close()
    whole = Path(path).read_bytes()
    assert [lsn for lsn, _ in read_records(path)] == [1, 2, 3]

    torn = encode_record(
        4, ("run", 4, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"1", None, None)
    )
    Path(path).write_bytes(whole + torn[: len(torn) // 2])
    assert [lsn for lsn, _ in read_records(path)] == [1, 2, 3]

    flipped = bytearray(whole)
    flipped[-3] ^= 0xFF  # a bit flip inside record 3's payload
    Path(path).write_bytes(bytes(flipped))
    assert [lsn for lsn, _ in read_records(path)] == [1, 2]

    Path(path).write_bytes(b"not a step log at all")
    assert list(read_records(path)) == []


def test_a_damaged_log_never_blocks_opening_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.duckdb"
    precreate_journal(journal)
    Path(str(journal) + ".steplog").write_bytes(b"WEFTSTEPLOG1\n" + b"\x00" * 100)
    assert step_rows(journal) == {}
    assert Path(str(journal) + ".steplog").read_bytes() == b""


def test_concurrent_appends_share_syncs_and_lose_nothing(tmp_path: Path) -> None:
    journal = DuckDBJournal(tmp_path / "journal.duckdb")
    barrier = threading.Barrier(8)

    def writer(worker: int) -> None:
        barrier.wait()
        for i in range(50):
            row = (
                f"run-{worker}",
                i,
                "a",
                "completed",
                "h",
                "s",
                1,
                0.0,
                1.0,
                "json",
                b"1",
                None,
                None,
            )
            journal.append_step(row)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = journal.query(
        "SELECT run_id, count(*), count(DISTINCT position) FROM steps GROUP BY 1"
    )
    journal.close()
    assert sorted(counts) == [(f"run-{w}", 50, 50) for w in range(8)]


def test_closing_the_log_syncs_records_no_sync_covered_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``engine.run()`` start is written without a sync of its own; if the engine closes
    before any sync covered it (the batch into DuckDB at close failed), close syncs it."""
    synced_fds: list[int] = []
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        synced_fds.append(fd)
        real_fdatasync(fd)

    row = ("run", 1, "a", "completed", "h", "s", 1, 0.0, 1.0, "json", b"1", None, None)
    log = StepLog(str(tmp_path / "unsynced.steplog"))
    log.append(1, row)
    monkeypatch.setattr(os, "fdatasync", spy)
    fd = log._fd
    log.close()
    assert synced_fds == [fd]

    synced_fds.clear()
    log = StepLog(str(tmp_path / "synced.steplog"))
    log.append(1, row)
    log.sync(1)
    synced_fds.clear()
    log.close()
    assert synced_fds == []  # nothing left to make durable: no extra sync
