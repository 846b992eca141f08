"""Workflows on ``TestEngine(MemoryJournal())``: retries, restarts, signals, tokens, checkpoints.

The contract suite (tests/journal/test_journal_contract.py) checks the memory journal operation
by operation; these tests check that the engine needs nothing else from a journal: no SQL, no
DuckDB file.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import (
    ActivityCrashLoopError,
    ActivityFailedError,
    ActivityPerAttemptTimeoutError,
    AsyncTokenNotFoundError,
    JournalLockedError,
)
from weft_nb.journal.dispatch_log import CRASHED
from weft_nb.testing import MemoryJournal, TestEngine


@pytest.fixture
def memory_engine() -> Iterator[TestEngine]:
    engine = TestEngine(MemoryJournal())
    yield engine
    engine.close()


def test_a_memory_engine_writes_no_journal_file(memory_engine: TestEngine) -> None:
    @weft_nb.activity
    def double(x: int) -> int:
        return 2 * x

    @weft_nb.workflow
    def pipeline(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(double, x) + 1

    assert memory_engine.run(pipeline, 20, run_id="r") == 41
    journal = memory_engine.journal
    assert isinstance(journal, MemoryJournal)
    assert journal.path.startswith("memory:")
    assert journal.load_steps("r")[0].activity == "double"
    assert journal.get_run("r").status == "completed"  # type: ignore[union-attr]
    assert not [n for n in os.listdir(os.path.dirname(journal.sidecar_base)) if "duckdb" in n]


def test_retries_are_journaled_and_shown(memory_engine: TestEngine) -> None:
    calls: list[int] = []

    @weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": "1h"})
    def flaky(x: int, activity: weft_nb.ActivityContext) -> int:
        calls.append(activity.attempt)
        if activity.attempt < 3:
            raise ValueError(f"attempt {activity.attempt} failed")
        return x

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(flaky, 7)

    assert memory_engine.run(wf, run_id="retry") == 7  # the hour of backoff is virtual
    assert calls == [1, 2, 3]
    failed = memory_engine.journal.attempts_of_run("retry")
    assert [(a.position, a.attempt, a.error_type) for a in failed] == [
        (0, 1, "ValueError"),
        (0, 2, "ValueError"),
    ]
    view = memory_engine.snapshot("retry").steps[0]
    assert (view.status, view.attempt) == ("completed", 3)


def test_retries_exhausted_fail_the_run(memory_engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 2})
    def broken() -> None:
        raise RuntimeError("always")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(broken)

    with pytest.raises(ActivityFailedError, match="always"):
        memory_engine.run(wf, run_id="bad")
    assert memory_engine.journal.step_outcome("bad", 0).status == "failed"  # type: ignore[union-attr]
    assert memory_engine.journal.get_run("bad").status == "failed"  # type: ignore[union-attr]


def test_a_simulated_restart_replays_steps_checkpoints_and_heartbeats(
    memory_engine: TestEngine,
) -> None:
    calls: Counter[str] = Counter()
    gate, in_c = threading.Event(), threading.Event()

    @weft_nb.activity
    def step_a(x: int) -> int:
        calls["a"] += 1
        return x + 1

    @weft_nb.activity
    def step_c(x: int, activity: weft_nb.ActivityContext) -> dict[str, object]:
        calls["c"] += 1
        seen = {"checkpoint": activity.last_checkpoint, "hb": activity.last_heartbeat_details}
        activity.heartbeat({"progress": 0.5})
        activity.checkpoint({"half": x})
        in_c.set()
        gate.wait()
        return {"value": x - 1, "seen": seen}

    @weft_nb.workflow
    def pipeline(ctx: weft_nb.WorkflowContext, x: int) -> dict[str, object]:
        return ctx.run(step_c, ctx.run(step_a, x))

    handle = memory_engine.start(pipeline, 5, run_id="run-1")
    assert in_c.wait(10)
    memory_engine.flusher.flush()
    old_journal = memory_engine.journal
    assert isinstance(old_journal, MemoryJournal)
    restarted = memory_engine.simulate_restart()
    try:
        assert not handle.done or handle.status == "running"
        assert isinstance(restarted.journal, MemoryJournal)
        assert restarted.journal.store is old_journal.store, "the same records, reopened"
        in_c.clear()
        gate.set()  # the abandoned thread finishes but can no longer write
        result = restarted.resume("run-1").result(10)
        assert result == {"value": 5, "seen": {"checkpoint": {"half": 6}, "hb": {"progress": 0.5}}}
        assert calls == Counter({"a": 1, "c": 2})
        crashed = restarted.journal.attempts_of("run-1", 1)
        assert [(a.attempt, a.error_type) for a in crashed] == [(1, CRASHED)]
    finally:
        restarted.close()


def test_the_restarted_engine_holds_the_records_alone(memory_engine: TestEngine) -> None:
    journal = memory_engine.journal
    assert isinstance(journal, MemoryJournal)
    with pytest.raises(JournalLockedError):
        MemoryJournal(journal.store)
    restarted = memory_engine.simulate_restart()
    restarted.close()


def test_an_attempt_that_crashed_each_time_ends_as_a_crash_loop(memory_engine: TestEngine) -> None:
    started = threading.Event()
    hold = threading.Event()

    @weft_nb.activity(retry={"max_attempts": 1})
    def dies() -> None:
        started.set()
        hold.wait(20)

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(dies)

    memory_engine.start(wf, run_id="loop")
    assert started.wait(10)
    restarted = memory_engine.simulate_restart()  # the process "died" in attempt 1
    hold.set()
    try:
        with pytest.raises(ActivityCrashLoopError):
            restarted.resume("loop").result(20)
        assert restarted.journal.crashed_attempts("loop", 0) == 1
    finally:
        restarted.close()


def test_signals_wake_a_waiting_workflow_and_survive_a_restart(memory_engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        first = ctx.wait_for_signal("data")
        return [first, ctx.wait_for_signal("data")]

    memory_engine.start(wf, run_id="s")
    assert memory_engine.signal("s", "data", "one", signal_id="1") is True
    assert memory_engine.signal("s", "data", "one again", signal_id="1") is False
    wait_until(lambda: 0 in memory_engine.journal.load_steps("s"))
    restarted = memory_engine.simulate_restart()
    try:
        restarted.signal("s", "data", "two")
        assert restarted.resume("s").result(10) == ["one", "two"]
    finally:
        restarted.close()


def test_an_out_of_band_completion_settles_a_parked_step(memory_engine: TestEngine) -> None:
    tokens: list[str] = []

    @weft_nb.activity
    def ask(question: str, activity: weft_nb.ActivityContext) -> None:
        tokens.append(activity.task_token)
        activity.complete_async()

    @weft_nb.workflow
    def review(ctx: weft_nb.WorkflowContext, question: str) -> object:
        return ctx.run(ask, question)

    handle = memory_engine.start(review, "ship it?", run_id="a")
    wait_until(lambda: tokens)
    # parked once the attempt has handed its step to the token (a snapshot read of the token)
    wait_until(lambda: memory_engine.snapshot("a").steps[0].status == "waiting")
    memory_engine.complete_async_activity(tokens[0], {"approved": True})
    assert handle.result(10) == {"approved": True}
    with pytest.raises(AsyncTokenNotFoundError, match="single-use"):
        memory_engine.complete_async_activity(tokens[0], {"approved": False})


def test_timeouts_and_backoffs_take_exactly_their_virtual_time(memory_engine: TestEngine) -> None:
    """A fast journal once let the clock jump past a timed-out attempt that had not woken yet."""
    seen: list[tuple[int, float, bool]] = []

    @weft_nb.activity(timeout="5s")
    def stuck(_: object, activity: weft_nb.ActivityContext) -> None:
        started = memory_engine.clock.now()
        cancelled = activity.cancelled.wait(100)  # virtual seconds
        seen.append((activity.attempt, memory_engine.clock.now() - started, cancelled))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(stuck)

    t0 = memory_engine.clock.now()
    with pytest.raises(ActivityPerAttemptTimeoutError):
        memory_engine.run(wf)
    assert memory_engine.clock.now() - t0 == 5 + 1 + 5 + 2 + 5  # 1 s and 2 s of backoff
    # The run fails as the last attempt times out; that attempt's thread wakes on its own time.
    wait_until(lambda: len(seen) == 3)
    assert sorted(seen) == [(1, 5.0, True), (2, 5.0, True), (3, 5.0, True)]
