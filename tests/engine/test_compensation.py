"""Compensation (Saga): ``compensate=``, ``ctx.compensate()`` and ``compensate_on_failure``.

On the TestEngine's virtual clock over a real DuckDB file; the crash case kills a real child
process (``tests/crash_children/saga_child.py``) with SIGKILL at a fault point and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError, CompensationError
from weft_nb.testing import TestEngine

Calls = list[tuple[str, Any]]

pytestmark = pytest.mark.usefixtures("workflow_kind")


def saga_activities(calls: Calls) -> dict[str, Any]:
    """book -> release and charge -> refund, recording every execution in ``calls``."""

    @weft_nb.activity
    def release(undo: dict[str, Any]) -> str:
        calls.append(("release", undo))
        return f"released {undo['result']}"

    @weft_nb.activity
    def refund(undo: dict[str, Any]) -> str:
        calls.append(("refund", undo))
        return f"refunded {undo['result']}"

    @weft_nb.activity(compensate=release)
    def book(room: str) -> str:
        calls.append(("book", room))
        return f"booking-{room}"

    @weft_nb.activity(compensate="refund")
    def charge(amount: int) -> str:
        calls.append(("charge", amount))
        return f"charge-{amount}"

    @weft_nb.activity(retry={"max_attempts": 1})
    def ship(_: object) -> None:
        calls.append(("ship", None))
        raise RuntimeError("no courier")

    return {"release": release, "refund": refund, "book": book, "charge": charge, "ship": ship}


def test_compensate_runs_undos_in_reverse_order_with_input_and_result(engine: TestEngine) -> None:
    calls: Calls = []
    acts = saga_activities(calls)
    engine.register(acts["refund"])

    @weft_nb.workflow
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> str:
        ctx.run(acts["book"], room)
        ctx.run(acts["charge"], 120)
        ctx.compensate()
        ctx.compensate()  # nothing left to undo: never twice
        return "undone"

    assert engine.run(trip, "r1") == "undone"
    assert calls == [
        ("book", "r1"),
        ("charge", 120),
        ("refund", {"input": 120, "result": "charge-120"}),
        ("release", {"input": "r1", "result": "booking-r1"}),
    ]
    rows = engine.journal.query("SELECT position, activity FROM steps ORDER BY position")
    assert [tuple(r) for r in rows] == [(0, "book"), (1, "charge"), (2, "refund"), (3, "release")]


def test_compensate_on_failure_undoes_then_reraises_the_original_error(engine: TestEngine) -> None:
    calls: Calls = []
    acts = saga_activities(calls)
    engine.register(acts["refund"])

    @weft_nb.workflow(compensate_on_failure=True)
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> None:
        ctx.run(acts["book"], room)
        ctx.run(acts["charge"], 80)
        ctx.run(acts["ship"])

    with pytest.raises(ActivityFailedError, match="no courier") as info:
        engine.run(trip, "r2")
    assert info.value.activity == "ship"
    assert [c[0] for c in calls] == ["book", "charge", "ship", "refund", "release"]
    run = engine.journal.list_runs()[0]
    assert run.status == "failed"


def test_without_compensate_on_failure_nothing_is_undone(engine: TestEngine) -> None:
    calls: Calls = []
    acts = saga_activities(calls)

    @weft_nb.workflow
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> None:
        ctx.run(acts["book"], room)
        ctx.run(acts["ship"])

    with pytest.raises(ActivityFailedError):
        engine.run(trip, "r3")
    assert [c[0] for c in calls] == ["book", "ship"]


def test_a_failing_compensation_retries_then_the_others_run_and_an_error_lists_it(
    engine: TestEngine,
) -> None:
    calls: Calls = []
    attempts: list[float] = []

    @weft_nb.activity(retry={"max_attempts": 2})
    def void(undo: dict[str, Any]) -> None:
        attempts.append(engine.clock.now())
        raise ConnectionError("bank down")

    @weft_nb.activity(compensate=void)
    def pay(amount: int) -> str:
        return f"paid {amount}"

    @weft_nb.activity(retry={"max_attempts": 3})
    def flaky_release(undo: dict[str, Any]) -> str:
        calls.append(("flaky_release", undo["result"]))
        if len(calls) < 3:
            raise ConnectionError("hotel busy")
        return "released"

    @weft_nb.activity(compensate=flaky_release)
    def hold(room: str) -> str:
        calls.append(("hold", room))
        return f"hold-{room}"

    @weft_nb.workflow(compensate_on_failure=True)
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> None:
        ctx.run(hold, room)
        ctx.run(pay, 5)
        raise ValueError("traveller cancelled")

    with pytest.raises(CompensationError) as info:
        engine.run(trip, "r4")
    assert [f["compensation"] for f in info.value.failures] == ["void"]
    assert info.value.failures[0]["position"] == 1
    assert "bank down" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # the workflow's own error
    assert len(attempts) == 2  # void's retries were spent before giving up
    # hold's compensation still ran after void failed, retried until it succeeded
    assert calls == [("hold", "r4"), ("flaky_release", "hold-r4"), ("flaky_release", "hold-r4")]


def test_an_unregistered_compensation_is_a_listed_failure_and_the_others_still_run(
    engine: TestEngine,
) -> None:
    """A typo in ``compensate="..."`` must not strand the other undos or hide the run's error."""
    calls: Calls = []
    acts = saga_activities(calls)

    @weft_nb.activity(compensate="no_such_undo")
    def reserve(seat: str) -> str:
        return f"seat-{seat}"

    @weft_nb.workflow(compensate_on_failure=True)
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> None:
        ctx.run(acts["book"], room)
        ctx.run(reserve, "12A")
        ctx.run(acts["ship"], None)

    with pytest.raises(CompensationError) as info:
        engine.run(trip, "r5")
    assert [f["compensation"] for f in info.value.failures] == ["no_such_undo"]
    assert "no_such_undo" in info.value.failures[0]["error"]
    assert isinstance(info.value.__cause__, ActivityFailedError)  # the workflow's own error
    assert ("release", {"input": "r5", "result": "booking-r5"}) in calls  # book still undone


def test_replayed_steps_count_and_a_resume_does_not_undo_twice(engine: TestEngine) -> None:
    calls: Calls = []
    acts = saga_activities(calls)
    engine.register(acts["refund"])

    @weft_nb.workflow
    def trip(ctx: weft_nb.WorkflowContext, room: str) -> str:
        ctx.run(acts["book"], room)
        ctx.compensate()  # undoes book
        ctx.run(acts["charge"], 9)
        ctx.wait_for_signal("go")  # the process dies here
        ctx.compensate()  # undoes charge only: book was undone already
        return "done"

    engine.start(trip, "r5", run_id="saga-resume")
    wait_until(lambda: len(engine.journal.load_steps("saga-resume")) == 3)
    assert [c[0] for c in calls] == ["book", "release", "charge"]
    restarted = engine.simulate_restart()
    calls.clear()
    restarted.signal("saga-resume", "go", None)
    assert restarted.resume("saga-resume").result() == "done"
    restarted.close()
    assert calls == [("refund", {"input": 9, "result": "charge-9"})]  # the rest was journaled


def test_parallel_steps_are_undone_in_reverse_submission_order(engine: TestEngine) -> None:
    calls: Calls = []
    acts = saga_activities(calls)
    engine.register(acts["refund"])

    @weft_nb.workflow
    def trip(ctx: weft_nb.WorkflowContext, _: object) -> None:
        first = ctx.submit(acts["charge"], 1)
        second = ctx.submit(acts["charge"], 2)
        failing = ctx.submit(acts["ship"])
        ctx.submit(acts["charge"], 3)  # never awaited: compensate waits for it
        ctx.all([first, second])
        with pytest.raises(ActivityFailedError):
            failing.result()
        ctx.compensate()

    engine.run(trip)
    undone = [c[1]["input"] for c in calls if c[0] == "refund"]
    assert undone == [3, 2, 1]


CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "saga_child.py"


def run_child(tmp_path: Path, kill_at: str | None) -> int:
    config = tmp_path / "config.json"
    journal, evidence = tmp_path / "journal.duckdb", tmp_path / "executions.jsonl"
    config.write_text(json.dumps({"journal": str(journal), "evidence": str(evidence)}))
    env = {k: v for k, v in os.environ.items() if k != "WEFT_NB_KILL_AT"}
    if kill_at is not None:
        env["WEFT_NB_KILL_AT"] = kill_at
    done = subprocess.run(
        [sys.executable, str(CHILD), str(config)],
        capture_output=True,
        timeout=120,
        check=False,
        env=env,
    )
    if done.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"child exited with {done.returncode}: {done.stderr.decode()[-3000:]}")
    return done.returncode


def ran_so_far(tmp_path: Path) -> list[str]:
    lines = [json.loads(x) for x in (tmp_path / "executions.jsonl").read_text().splitlines()]
    return [x["ran"] for x in lines if "ran" in x]


@pytest.mark.parametrize(
    ("kill_at", "before_kill"),
    [
        # Killed once refund's result is durable and before release ran: nothing runs twice.
        ("steplog.appended:3", ["book", "charge", "ship", "refund"]),
        # Killed after release ran, before its result was journaled: at-least-once, like any step.
        ("step.before_record:4", ["book", "charge", "ship", "refund", "release"]),
    ],
)
def test_a_crash_during_compensation_resumes_without_running_a_journaled_one_again(
    tmp_path: Path, kill_at: str, before_kill: list[str]
) -> None:
    assert run_child(tmp_path, kill_at) == -signal.SIGKILL
    assert ran_so_far(tmp_path) == before_kill  # killed in the middle of the compensation
    assert run_child(tmp_path, None) == 0
    # The resume runs release (again, in the second case) and nothing else.
    assert ran_so_far(tmp_path) == [*before_kill, "release"]
    last = json.loads((tmp_path / "executions.jsonl").read_text().splitlines()[-1])
    assert last["outcome"] == {"error": "ActivityFailedError", "status": "failed"}
