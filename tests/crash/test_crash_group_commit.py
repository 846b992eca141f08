"""Group commit never acknowledges a parallel step before its ``fdatasync``.

Parallel steps share their step-log syncs (``weft_nb.journal.group_commit``): a pool thread
appends a completed step's record and moves on, and the step's future settles (the workflow sees
the step completed) only once a sync covering the record returned. A child runs a 300-way fan-out
and notes, fsynced, every step whose result the workflow saw; it is SIGKILLed at a seeded random
moment mid-fan-out. After the restart every step the workflow saw must be in the journal, and the
resumed run must execute none of the steps the journal holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crash_pipeline import RUN_ID, Child, executions, inspect_journal, precreate_journal
from crash_process import read_jsonl

import weft_nb
from weft_nb.base import io_faults
from weft_nb.errors import JournalIOError

pytestmark = pytest.mark.crash

FAN = {"steps": 300}
HANG_GUARD = 120.0  # seconds; only stops a hang from blocking the suite


@pytest.mark.parametrize("seed", [2, 3, 11])
def test_a_kill_mid_fan_out_loses_no_step_the_workflow_saw(tmp_path: Path, seed: int) -> None:
    precreate_journal(tmp_path / "journal.duckdb")
    first = Child(
        tmp_path,
        "first",
        workflow="fan",
        input=FAN,
        random_kill={"seed": seed, "first": 60, "last": 240, "max_delay": 0.05, "hold": 30},
    )
    first.expect_killed()
    seen = {
        row["pos"]
        for row in read_jsonl(first.evidence, "seen.jsonl")
        if row["pid"] == first.proc.pid
    }
    ran = executions(first.evidence, first.proc.pid)
    assert seen and len(ran) < FAN["steps"]  # killed mid-fan-out, after the workflow saw some

    state = inspect_journal(first.journal)  # a fresh reader applies the dead writer's log
    assert state["runs"] == {RUN_ID: "running"}
    assert seen <= state["completed"]  # acknowledged only once durable
    assert state["completed"] <= set(ran)

    second = Child(tmp_path, "second", workflow="fan", input=FAN)
    outcome = second.finish()
    assert outcome["status"] == "completed"
    assert outcome["value"]["steps"] == FAN["steps"]
    again = set(executions(second.evidence, second.proc.pid))
    assert not again & state["completed"]  # nothing the journal held ran again
    assert again | state["completed"] == set(range(FAN["steps"]))


def test_a_failed_group_sync_acknowledges_none_of_the_steps_it_covered(tmp_path: Path) -> None:
    """A SIGKILL keeps written records (the page cache survives it); a failed sync does not.

    The third ``fdatasync`` of the step log (1: the run's start; 2 and 3: fan-out groups) fails
    with EIO: the steps it covered must settle with ``JournalIOError``, never as completed.
    """
    seen: dict[str, list[int]] = {"ok": [], "failed": []}

    @weft_nb.activity
    def leaf(i: int) -> int:
        return i

    @weft_nb.workflow
    def fan_out(ctx: weft_nb.WorkflowContext) -> None:
        futures = [ctx.submit(leaf, i) for i in range(200)]
        for future in futures:
            try:
                future.result()
                seen["ok"].append(future.position)
            except JournalIOError:
                seen["failed"].append(future.position)

    io_faults.configure("steplog.sync:eio:3")
    try:
        engine = weft_nb.Engine(tmp_path / "journal.duckdb", max_parallel=4)
        engine.register(leaf, fan_out)
        engine.run(fan_out, run_id="f", timeout=HANG_GUARD)
        engine.close()
    finally:
        io_faults.configure("")
    assert seen["failed"]  # the failed sync's steps were not acknowledged
    assert sorted(seen["ok"] + seen["failed"]) == list(range(200))
