"""Durable timers (``ctx.timer``): in races and ``ctx.all``, across restarts, on a stepped clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import WorkflowCancelledError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def timer_rows(engine: TestEngine, run_id: str) -> list[tuple[str, bytes]]:
    return engine.journal.query(
        "SELECT status, result FROM steps WHERE run_id = ? AND activity = '<timer>' "
        "AND NOT superseded ORDER BY position",
        [run_id],
    )


def test_a_timer_that_fires_first_wins_the_race_and_the_loser_keeps_running(
    engine: TestEngine,
) -> None:
    release = engine.clock.new_event()  # a clock wait: virtual time moves on meanwhile
    finished: list[bool] = []

    @weft_nb.activity
    def slow(_: object, activity: weft_nb.ActivityContext) -> str:
        release.wait()
        finished.append(activity.cancelled.is_set())
        return "slow"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        job = ctx.submit(slow)
        index, value = ctx.race([job, ctx.timer("5s")])
        release.set()
        return [index, value, job.result()]  # the loser ran to completion, not cancelled

    t0 = engine.clock.now()
    assert engine.run(wf, run_id="t") == [1, None, "slow"]
    assert finished == [False]
    assert timer_rows(engine, "t") == [("completed", str(t0 + 5).encode())]
    race = engine.journal.query("SELECT result FROM steps WHERE activity = '<race>'")
    assert race == [(b"1",)]
    # A replay returns the journaled winner, though the activity is now instant.
    release.set()
    assert engine.simulate_restart().start(wf, run_id="t").result(10) == [1, None, "slow"]


def test_an_activity_that_settles_first_wins_against_a_timer(engine: TestEngine) -> None:
    @weft_nb.activity
    def quick(_: object) -> str:
        return "quick"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> tuple[int, object]:
        return ctx.race([ctx.timer("1h"), ctx.submit(quick)])

    # Time stands still: a submitted step counts for the virtual clock only once a worker
    # thread takes it, so with auto-advance the clock could jump to the timer before then.
    engine.clock.auto_advance = False
    t0 = engine.clock.now()
    assert engine.run(wf, run_id="q") == (1, "quick")
    assert timer_rows(engine, "q") == [("started", str(t0 + 3600).encode())]  # never fired


def test_ctx_all_and_result_wait_for_timers(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        first = ctx.timer("10s")
        second = ctx.timer(30)
        waited = ctx.all([first, second])
        return [waited, ctx.timer("1m").result(), ctx.now()]

    t0 = engine.clock.now()
    assert engine.run(wf) == [[None, None], None, t0 + 90]


def test_a_timer_spanning_a_restart_fires_at_the_original_deadline(engine: TestEngine) -> None:
    engine.clock.auto_advance = False
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def never(_: object, activity: weft_nb.ActivityContext) -> str:
        calls["never"] += 1
        activity.cancelled.wait()
        return "never"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        index, _ = ctx.race([ctx.submit(never), ctx.timer("1h")])
        return [index, ctx.now()]

    t0 = engine.clock.now()
    engine.start(wf, run_id="r")
    engine.clock.wait_for_sleepers(1)
    engine.clock.advance(1800)  # half way, then the process dies
    restarted = engine.simulate_restart()
    handle = restarted.resume("r")
    restarted.clock.wait_for_sleepers(1)
    assert restarted.clock.pending_deadlines() == [t0 + 3600]  # not 30 min later than planned
    restarted.clock.advance(1800)
    assert handle.result(10) == [1, t0 + 3600]
    assert timer_rows(restarted, "r") == [("completed", str(t0 + 3600).encode())]
    restarted.close()


def test_a_deadline_passed_while_down_fires_at_once_and_replays_the_same(
    engine: TestEngine,
) -> None:
    engine.clock.auto_advance = False

    @weft_nb.activity
    def never(_: object, activity: weft_nb.ActivityContext) -> str:
        activity.cancelled.wait()
        return "never"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.race([ctx.submit(never), ctx.timer("10s")])[0]

    engine.start(wf, run_id="d")
    engine.clock.wait_for_sleepers(1)
    restarted = engine.simulate_restart()
    restarted.clock.advance(3600)  # the process was down for an hour
    assert restarted.resume("d").result(10) == 1
    again = restarted.simulate_restart()
    assert again.start(wf, run_id="d").result(10) == 1  # finished: its recorded outcome
    again.close()


def test_cancelling_a_run_waiting_on_a_timer_ends_it(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.timer("1h").result()

    engine.clock.auto_advance = False
    handle = engine.start(wf, run_id="c")
    engine.clock.wait_for_sleepers(1)
    handle.cancel()
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)


def test_a_timer_fires_after_the_wall_clock_steps_back(tmp_path: Path) -> None:
    from test_clock_steps import HANG_GUARD, SteppedClock

    clock = SteppedClock()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        gate = ctx.timer(2)
        clock.step_back_at_next_timed_wait()
        return ctx.race([gate, ctx.timer("2h")])[0]

    with weft_nb.Engine(tmp_path / "j.duckdb", clock=clock) as real:
        handle = real.start(wf)
        assert handle.result(timeout=HANG_GUARD) == 0
        wait_until(lambda: handle.done)


def test_a_race_stopped_by_a_restart_journals_no_winner(engine: TestEngine) -> None:
    @weft_nb.activity
    def never(_: object, activity: weft_nb.ActivityContext) -> str:
        activity.cancelled.wait()  # the stop settles it, with an error
        return "never"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.race([ctx.submit(never), ctx.submit(never)])[0]

    handle = engine.start(wf, run_id="w")
    wait_until(lambda: len(engine.live_attempts("w")) == 2)
    restarted = engine.simulate_restart()
    wait_until(lambda: handle.done)
    assert restarted.journal.query("SELECT 1 FROM steps WHERE activity = '<race>'") == []
    restarted.close()


@pytest.mark.parametrize("call", ["timer", "sleep"])
def test_a_timer_or_sleep_of_none_is_a_named_error(engine: TestEngine, call: str) -> None:
    """review15: ``ctx.timer(None)`` / ``ctx.sleep(None)`` failed with a bare AssertionError."""

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        if call == "timer":
            ctx.timer(None).result()  # type: ignore[arg-type]
        else:
            ctx.sleep(None)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=rf"ctx.{call} duration is required; got None"):
        engine.run(wf)


@pytest.mark.sync_only(
    "an async workflow awaits ctx.sleep: its twin is test_async_workflows.py::"
    "test_a_sleep_in_a_race_says_to_use_a_timer_not_to_await_it"
)
def test_a_sleep_in_a_race_says_to_use_a_timer(engine: TestEngine) -> None:
    """review15: the seed's ``ctx.race([job, ctx.sleep(...)])`` gave a bare AttributeError."""

    @weft_nb.activity
    def tick() -> str:
        return "tick"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.race([ctx.submit(tick), ctx.sleep("1s")])  # type: ignore[list-item]

    with pytest.raises(TypeError, match=r"got None \(ctx.sleep waits.*pass ctx.timer\(duration\)"):
        engine.run(wf)
