"""Crash loops end: an activity that kills its process is counted, and capped by its retry policy.

The children (``tests/crash_children/crashloop_child.py``) are real processes: their activity calls
``os._exit(1)`` or SIGKILLs itself, and the test resumes the run in a new process each time.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from crash_loop_runs import evidence, run_child
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityCrashLoopError, ActivityScheduleToCloseTimeoutError
from weft_nb.journal.dispatch_log import CRASHED
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


@pytest.mark.parametrize(("how", "killed"), [("exit", 1), ("sigkill", -signal.SIGKILL)])
def test_an_activity_that_kills_its_process_fails_after_max_attempts(
    tmp_path: Path, how: str, killed: int
) -> None:
    for _ in range(3):
        assert run_child(tmp_path, how=how, max_attempts=3, crashes=99) == killed
    assert run_child(tmp_path, how=how, max_attempts=3, crashes=99) == 0  # the resume fails it
    lines = evidence(tmp_path)
    attempts = [line for line in lines if "attempt" in line]
    # The attempt number continues across resumes; each attempt sees the one before it.
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["last_heartbeat_details"] for a in attempts] == [
        None,
        {"attempt": 1, "progress": 0.5},
        {"attempt": 2, "progress": 0.5},
    ]
    outcome = lines[-1]["outcome"]
    assert outcome["error"] == "ActivityCrashLoopError"
    for words in ("'crasher'", "step 1", "started 3 time(s)", "max_attempts"):
        assert words in outcome["message"]
    # Not run again: the verdict is reached again, before any dispatch.
    assert run_child(tmp_path, how=how, max_attempts=3, crashes=99) == 0
    assert evidence(tmp_path)[-1] == lines[-1]
    assert len([line for line in evidence(tmp_path) if "attempt" in line]) == 3
    with weft_nb.Engine(tmp_path / "journal.duckdb") as engine:
        rows = engine.journal.query(
            "SELECT attempt, error_type FROM attempts WHERE run_id = 'loop' ORDER BY attempt"
        )
        assert rows == [(1, CRASHED), (2, CRASHED), (3, CRASHED)]
        crashed = [e for e in engine.journal.events_of("loop") if e.kind == "attempt_crashed"]
        assert [e.position for e in crashed] == [1, 1, 1]
        assert "the process died while attempt 3 of activity 'crasher'" in crashed[-1].message
        # The verdict is not the step's outcome: the run stays resumable (see the next test).
        assert engine.journal.query(
            "SELECT position, status FROM steps WHERE run_id = 'loop' ORDER BY position"
        ) == [(0, "completed")]
        assert engine.journal.get_run("loop").status == "interrupted"  # type: ignore[union-attr]
        assert engine.journal.crashed_attempts("loop", 1) == 3


def test_allowing_more_attempts_resumes_a_crash_looped_run_from_the_journal(
    tmp_path: Path,
) -> None:
    """Review F6: raising max_attempts after the verdict continues the run; it is not final."""
    assert run_child(tmp_path, how="sigkill", max_attempts=1, crashes=99) == -signal.SIGKILL
    assert run_child(tmp_path, how="sigkill", max_attempts=1, crashes=99) == 0  # the verdict
    verdict = evidence(tmp_path)[-1]["outcome"]
    assert verdict["error"] == "ActivityCrashLoopError"
    for words in ("allows 1 attempt(s)", "'max_attempts': n", "n > 1", "resume run 'loop'",
                  "continues from the journal"):  # fmt: skip
        assert words in verdict["message"]
    # The user fixes the crash (it crashes on attempt 1 only now) and allows 5 attempts.
    assert run_child(tmp_path, how="sigkill", max_attempts=5, crashes=1) == 0
    lines = evidence(tmp_path)
    assert lines[-1]["outcome"] == {"result": 50}
    assert [line["attempt"] for line in lines if "attempt" in line] == [1, 2]
    assert [line["prepare"] for line in lines if "prepare" in line] == [4]  # replayed, not re-run
    with weft_nb.Engine(tmp_path / "journal.duckdb") as engine:
        assert engine.journal.get_run("loop").status == "completed"  # type: ignore[union-attr]
        assert engine.journal.query(
            "SELECT position, status, attempts FROM steps WHERE run_id = 'loop' ORDER BY position"
        ) == [(0, "completed", 1), (1, "completed", 2)]
    # A finished run replays its result; nothing runs again.
    assert run_child(tmp_path, how="sigkill", max_attempts=5, crashes=1) == 0
    assert evidence(tmp_path)[-1]["outcome"] == {"result": 50}
    assert len(evidence(tmp_path)) == len(lines) + 1


def test_a_crash_is_retried_as_the_next_attempt_until_it_succeeds(tmp_path: Path) -> None:
    assert run_child(tmp_path, how="sigkill", max_attempts=3, crashes=1) == -signal.SIGKILL
    assert run_child(tmp_path, how="sigkill", max_attempts=3, crashes=1) == 0
    lines = evidence(tmp_path)
    assert [line["attempt"] for line in lines if "attempt" in line] == [1, 2]
    assert lines[-1]["outcome"] == {"result": 50}


def test_schedule_to_close_timeout_caps_a_crash_loop(engine: TestEngine) -> None:
    calls: list[int] = []
    hold = threading.Event()

    @weft_nb.activity(schedule_to_close_timeout=60, retry={"max_attempts": 100})
    def hangs(_: object, activity: weft_nb.ActivityContext) -> str:
        calls.append(activity.attempt)
        assert hold.wait(20)
        return "never adopted"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(hangs)

    engine.start(wf, run_id="budget")
    wait_until(lambda: calls)
    restarted = engine.simulate_restart()  # the process died in attempt 1
    restarted.clock.advance(120)
    hold.set()
    with pytest.raises(ActivityScheduleToCloseTimeoutError, match="schedule_to_close_timeout"):
        restarted.resume("budget").result(20)
    assert calls == [1]
    restarted.close()


def test_a_larger_schedule_to_close_timeout_resumes_the_step(engine: TestEngine) -> None:
    """Review F6: the timeout verdict is re-evaluated on resume against the current definition."""
    calls: list[int] = []
    hold = threading.Event()

    def body(_: object, activity: weft_nb.ActivityContext) -> int:
        calls.append(activity.attempt)
        if activity.attempt == 1:
            assert hold.wait(20)
        return activity.attempt

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run("slow")

    engine.register(weft_nb.activity(name="slow", schedule_to_close_timeout=60)(body), wf)
    engine.start(wf, run_id="budget")
    wait_until(lambda: calls)
    restarted = engine.simulate_restart()  # the process died in attempt 1
    restarted.clock.advance(120)
    hold.set()
    stopped = restarted.resume("budget")
    with pytest.raises(ActivityScheduleToCloseTimeoutError, match="larger than 120s"):
        stopped.result(20)
    assert stopped.status == "interrupted"
    assert restarted.journal.get_run("budget").status == "interrupted"  # type: ignore[union-attr]
    restarted.register(weft_nb.activity(name="slow", schedule_to_close_timeout=600)(body))
    assert restarted.resume("budget").result(20) == 2
    assert calls == [1, 2]
    restarted.close()


def test_a_clean_close_is_not_a_crash(engine: TestEngine) -> None:
    calls: list[int] = []
    hold = threading.Event()

    @weft_nb.activity(retry={"max_attempts": 1})
    def once(_: object, activity: weft_nb.ActivityContext) -> int:
        calls.append(activity.attempt)
        if len(calls) == 1:
            activity.cancelled.wait(20)
            hold.wait(20)
        return activity.attempt

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(once)

    engine.start(wf, run_id="closed")
    wait_until(lambda: calls)
    path = engine.journal.path
    closer = threading.Thread(target=engine.close)
    closer.start()
    wait_until(lambda: engine._closed)
    hold.set()
    closer.join(20)
    with TestEngine(path) as reopened:
        reopened.register(once, wf)
        assert reopened.resume("closed").result(20) == 1
    assert calls == [1, 1]


def test_crash_loop_error_is_an_activity_failed_error() -> None:
    assert issubclass(ActivityCrashLoopError, weft_nb.errors.ActivityFailedError)


def test_a_full_disk_under_the_dispatch_log_warns_once_and_never_fails_a_step(
    engine: TestEngine,
) -> None:
    @weft_nb.activity
    def inc(x: int) -> int:
        return x + 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(inc, ctx.run(inc, 1))

    log = engine.dispatches
    assert log._fd is not None
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC, as a full disk
    with pytest.warns(RuntimeWarning, match="could not write its dispatch log") as caught:
        assert engine.run(wf, run_id="full") == 3
    assert len([w for w in caught if "dispatch log" in str(w.message)]) == 1
