"""A run's start and outcome in the step log: crashes around them lose nothing, run nothing twice.

A run is acknowledged as started once its start record is fsync'd to ``<journal>.steplog``, and
as finished once its outcome record is; DuckDB's ``runs`` table receives both later, in a batch
with the steps (``weft_nb.journal.run_log``). Real children are SIGKILLed (``WEFT_NB_KILL_AT``)
right after each record and in the middle of the batch that moves them into DuckDB; the reopened
journal must show the run as the acknowledged records left it, and a resume must run only what was
never acknowledged. Damaged run records (a flipped byte, a torn tail) are reported with
``JournalDamageWarning``, never skipped silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crash_pipeline import RUN_ID, Child, executions, inspect_journal, precreate_journal

from weft_nb.errors import JournalDamageWarning
from weft_nb.journal.run_log import RUN_FINISH_FIELDS, RUN_START_FIELDS
from weft_nb.journal.step_log import APPLY_ROWS, LOG_MAGIC, RECORD_HEADER, read_records

pytestmark = pytest.mark.crash

SMALL = {"steps": 8, "heartbeat": False}  # no heartbeats: every record takes the step-log path
LARGE = {"steps": APPLY_ROWS + 300, "heartbeat": False}  # one batch applied mid-run


def killed(tmp_path: Path, kill_at: str, spec: dict[str, int | bool], acknowledged: int) -> Child:
    """A child SIGKILLed at ``kill_at`` after executing steps ``0..acknowledged-1`` once each."""
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(tmp_path, "first", workflow="many", input=spec, kill_at=kill_at)
    first.expect_killed()
    ran = executions(first.evidence, first.proc.pid)
    assert set(ran) == set(range(acknowledged))
    assert set(ran.values()) <= {1}
    return first


def resume(
    tmp_path: Path, spec: dict[str, int | bool], acknowledged: set[int]
) -> dict[str, object]:
    """Finish (or look up) the run in a new child: only unacknowledged steps run, once."""
    second = Child(tmp_path, "second", workflow="many", input=spec)
    outcome = second.finish()
    assert outcome["status"] == "completed"
    assert outcome["value"]["steps"] == spec["steps"]
    steps = set(range(int(spec["steps"])))
    assert set(executions(second.evidence, second.proc.pid)) == steps - acknowledged
    assert set(executions(second.evidence).values()) <= {1}  # no step ran twice, in any process
    return outcome


def log_records(journal: Path) -> list[tuple[int, int, int]]:
    """(start, end, field count) of each record of an undamaged step log."""
    data = Path(str(journal) + ".steplog").read_bytes()
    found, offset = [], len(LOG_MAGIC)
    for _lsn, row in read_records(str(journal) + ".steplog"):
        end = offset + RECORD_HEADER.size + RECORD_HEADER.unpack_from(data, offset)[0]
        found.append((offset, end, len(row)))
        offset = end
    assert offset == len(data)
    return found


def test_kill_right_after_the_run_start_record(tmp_path: Path) -> None:
    first = killed(tmp_path, "runlog.started:1", SMALL, 0)
    assert [len(row) for _lsn, row in read_records(str(first.journal) + ".steplog")] == [
        RUN_START_FIELDS
    ]
    state = inspect_journal(first.journal)  # a fresh reader applies the dead writer's log
    assert state["runs"] == {RUN_ID: "running"}  # the start was acknowledged: the run exists
    assert state["completed"] == set()
    assert not list(read_records(str(first.journal) + ".steplog"))
    resume(tmp_path, SMALL, set())


def test_kill_right_after_the_run_finish_record(tmp_path: Path) -> None:
    first = killed(tmp_path, "runlog.finished:1", SMALL, 8)
    kinds = [len(row) for _lsn, row in read_records(str(first.journal) + ".steplog")]
    assert kinds == [RUN_START_FIELDS, *[13] * 8, RUN_FINISH_FIELDS]  # nothing reached DuckDB
    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: "completed"}
    assert state["completed"] == set(range(8))
    outcome = resume(tmp_path, SMALL, set(range(8)))
    assert outcome["replayed_from_journal"]  # the recorded outcome, nothing run again


@pytest.mark.parametrize(
    ("kill_at", "spec", "acknowledged", "status"),
    [
        # At close: the run's start, its 8 steps and its outcome in one batch.
        ("steplog.runs_staged:1", SMALL, 8, "completed"),
        ("steplog.before_apply_commit:1", SMALL, 8, "completed"),
        ("steplog.after_apply_commit:1", SMALL, 8, "completed"),
        # Mid-run: the run's start and APPLY_ROWS - 1 steps; the outcome comes later.
        ("steplog.runs_staged:1", LARGE, APPLY_ROWS - 1, "running"),
    ],
    ids=["runs-staged", "before-commit", "after-commit-before-truncate", "mid-run-runs-staged"],
)
def test_kill_during_the_batch_that_moves_runs_into_duckdb(
    tmp_path: Path, kill_at: str, spec: dict[str, int | bool], acknowledged: int, status: str
) -> None:
    first = killed(tmp_path, kill_at, spec, acknowledged)
    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: status}
    assert state["completed"] == set(range(acknowledged))
    resume(tmp_path, spec, set(range(acknowledged)))


def damage(journal: Path, which: int, how: str) -> bytes:
    """Damage record ``which`` of the step log: flip a payload byte, or tear the file inside it."""
    log = Path(str(journal) + ".steplog")
    data = bytearray(log.read_bytes())
    start, end, _fields = log_records(journal)[which]
    if how == "flipped":
        data[end - 3] ^= 0x5A
    else:  # a short write: the file ends inside the record
        assert end == len(data), "only the last record can be torn"
        del data[start + RECORD_HEADER.size + 2 :]
    log.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("how", ["flipped", "torn"])
def test_a_damaged_run_finish_record_is_reported_and_the_run_resumes(
    tmp_path: Path, how: str
) -> None:
    first = killed(tmp_path, "runlog.finished:1", SMALL, 8)
    damaged = damage(first.journal, -1, how)
    with pytest.warns(JournalDamageWarning, match=r"1 damaged range\(s\)") as caught:
        state = inspect_journal(first.journal)
    assert "outcome record was damaged" in str(caught[0].message)
    assert state["runs"] == {RUN_ID: "running"}  # its outcome is lost, never its steps
    assert state["completed"] == set(range(8))
    (kept,) = tmp_path.glob("journal.duckdb.steplog.damaged-*")
    assert kept.read_bytes() == damaged  # the evidence, as it was
    outcome = resume(tmp_path, SMALL, set(range(8)))  # replays every step, runs none
    assert not outcome["replayed_from_journal"]


@pytest.mark.parametrize("how", ["flipped", "torn"])
def test_a_damaged_run_start_record_is_reported_by_run_id(tmp_path: Path, how: str) -> None:
    if how == "torn":  # the start record is the last one written
        first = killed(tmp_path, "runlog.started:1", SMALL, 0)
    else:
        first = killed(tmp_path, "steplog.appended:3", SMALL, 3)
    damage(first.journal, 0, how)
    with pytest.warns(JournalDamageWarning, match=r"1 damaged range\(s\)") as caught:
        state = inspect_journal(first.journal)
    message = str(caught[0].message)
    assert state["runs"] == {}  # the run cannot be rebuilt from its steps: said, not hidden
    if how == "flipped":
        assert state["completed"] == {0, 1, 2}  # its intact steps are kept
        assert f"start records of runs {RUN_ID!r} were damaged" in message
    else:
        assert "at least 1 record(s)" in message


def test_a_run_whose_start_record_was_destroyed_replays_its_surviving_steps(
    tmp_path: Path,
) -> None:
    """Starting the lost run's id again replays its intact steps: none runs twice."""
    first = killed(tmp_path, "steplog.appended:3", SMALL, 3)
    damage(first.journal, 0, "flipped")
    with pytest.warns(JournalDamageWarning):
        state = inspect_journal(first.journal)
    assert state["completed"] == {0, 1, 2}
    resume(tmp_path, SMALL, {0, 1, 2})
    (row,) = state_after(first.journal)
    assert row == 8  # one step row per position: the replayed ones were not written again


def state_after(journal: Path) -> list[int]:
    """The number of step rows the journal holds for the run."""
    import duckdb

    con = duckdb.connect(str(journal), read_only=True)
    try:
        return [n for (n,) in con.execute("SELECT count(*) FROM steps").fetchall()]
    finally:
        con.close()


@pytest.mark.parametrize(
    "kill_at", ["runlog.finished:1", "steplog.after_apply_commit:1", "steplog.appended:3"]
)
def test_salvage_copies_what_only_the_step_log_holds(tmp_path: Path, kill_at: str) -> None:
    """A dead writer's acknowledged runs and steps in ``<journal>.steplog`` are salvaged too."""
    from weft_nb.journal.salvage import salvage

    done = {"runlog.finished:1": 8, "steplog.after_apply_commit:1": 8, "steplog.appended:3": 3}
    first = killed(tmp_path, kill_at, SMALL, done[kill_at])
    log = Path(str(first.journal) + ".steplog")
    before = log.read_bytes()
    report = salvage(first.journal, tmp_path / "saved.duckdb")
    assert report.copied == [RUN_ID]
    assert log.read_bytes() == before  # the broken journal is left untouched
    state = inspect_journal(tmp_path / "saved.duckdb")
    assert state["runs"] == {RUN_ID: "completed" if done[kill_at] == 8 else "running"}
    assert state["completed"] == set(range(done[kill_at]))
    assert state_after(tmp_path / "saved.duckdb") == [done[kill_at]]
