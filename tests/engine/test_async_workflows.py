"""``async def`` workflows (issue 15): what only the async kind has.

The semantics both kinds share (replay, retries, parallel steps, sleep, signals, memo, cancel)
run against both in the suites that use the ``workflow_kind`` fixture; these tests cover
``asyncio.gather`` over durable calls, mixing kinds across a restart, awaiting from a running
loop (``engine.run_async``, ``await handle``), and the named errors for mixed styles.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from typing import Any

import pytest
from helpers import wait_until
from workflow_kinds import asyncify

import weft_nb
from weft_nb.errors import AsyncStyleError, StepNotAwaitedError, WorkflowCancelledError
from weft_nb.testing import TestEngine


@weft_nb.activity
def double(x: int) -> int:
    return 2 * x


def test_gather_takes_positions_in_call_order_and_replays_them(engine: TestEngine) -> None:
    """The second call finishes first; positions still follow the calls, live and on resume."""
    calls: Counter[str] = Counter()
    first_may_finish, second_done = threading.Event(), threading.Event()

    @weft_nb.activity
    def first(x: int) -> str:
        calls["first"] += 1
        assert first_may_finish.wait(10)
        return f"first {x}"

    @weft_nb.activity
    def second(x: int) -> str:
        calls["second"] += 1
        second_done.set()
        return f"second {x}"

    @weft_nb.activity
    def blocker(_: object) -> None:
        calls["blocker"] += 1
        threading.Event().wait()  # the process 'dies' here

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> list[str]:
        results = await asyncio.gather(ctx.run(first, 1), ctx.run(second, 2))
        await ctx.run(blocker)
        return list(results)

    engine.start(wf, run_id="g")
    assert second_done.wait(10)
    first_may_finish.set()
    wait_until(lambda: calls["blocker"] == 1)
    rows = engine.journal.query("SELECT position, activity, status FROM steps ORDER BY position")
    assert rows == [(0, "first", "completed"), (1, "second", "completed")]
    restarted = engine.simulate_restart()
    handle = restarted.resume("g")
    wait_until(lambda: calls["blocker"] == 2)
    assert (calls["first"], calls["second"]) == (1, 1)  # both replayed, in the same positions
    assert handle.replayed_steps == 2  # both matched: no step changed
    restarted.close()


@pytest.mark.parametrize(("first", "then"), [("sync", "async"), ("async", "sync")])
def test_a_run_started_by_one_kind_resumes_with_the_other(
    engine: TestEngine, first: str, then: str
) -> None:
    """One journal format: a run written by one kind replays with the other."""
    calls: Counter[str] = Counter()
    gate = threading.Event()

    @weft_nb.activity
    def step(x: int) -> int:
        calls[f"step {x}"] += 1
        if x == 3 and not gate.is_set():
            threading.Event().wait()  # the first execution dies here
        return x

    def pipeline(ctx: weft_nb.WorkflowContext) -> list[int]:
        a = ctx.run(step, 1)
        ctx.sleep("1h")
        b = ctx.all([ctx.submit(step, 2)])
        return [a, *b, ctx.run(step, 3)]

    kinds = {"sync": pipeline, "async": asyncify(pipeline)}
    engine.register(weft_nb.workflow(name="pipeline")(kinds[first]))
    engine.start("pipeline", run_id="k")
    wait_until(lambda: calls["step 3"] == 1)
    restarted = engine.simulate_restart()
    restarted.register(weft_nb.workflow(name="pipeline")(kinds[then]))
    gate.set()
    handle = restarted.resume("k")
    assert handle.result(10) == [1, 2, 3]
    assert (calls["step 1"], calls["step 2"]) == (1, 1)
    assert handle.replayed_steps == 3  # step 1, the sleep, step 2
    restarted.close()


def test_concurrent_signal_waits_each_get_their_signal(engine: TestEngine) -> None:
    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> list[Any]:
        return list(await asyncio.gather(ctx.wait_for_signal("a"), ctx.wait_for_signal("b")))

    handle = engine.start(wf, run_id="s")
    wait_until(lambda: engine.clock._blocked == 3)  # the loop and two waits
    engine.signal("s", "b", 2)
    engine.signal("s", "a", 1)
    assert handle.result(10) == [1, 2]


def test_cancel_wakes_an_async_workflow_awaiting_a_signal_and_a_step(engine: TestEngine) -> None:
    started = threading.Event()

    @weft_nb.activity
    def patient(_: object, activity: weft_nb.ActivityContext) -> None:
        started.set()
        activity.cancelled.wait()
        activity.raise_if_cancelled()

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> None:
        await asyncio.gather(ctx.wait_for_signal("never"), ctx.run(patient))

    handle = engine.start(wf, run_id="c")
    assert started.wait(10)
    engine.cancel("c")
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)
    assert handle.status == "cancelled"


def test_run_async_never_blocks_the_callers_loop(engine: TestEngine) -> None:
    """While a run is awaited, another task of the same loop runs; the activity waits for it."""
    ticks: list[int] = []
    ticked = threading.Event()

    @weft_nb.activity
    def waits_for_ticks(_: object) -> str:
        assert ticked.wait(10), "the caller's loop was blocked"
        return "done"

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> str:
        result: str = await ctx.run(waits_for_ticks)
        return result

    async def ticker() -> None:
        while len(ticks) < 3:
            ticks.append(len(ticks))
            await asyncio.sleep(0)
        ticked.set()

    async def cell() -> tuple[str, str]:
        tick = asyncio.create_task(ticker())
        first = await engine.run_async(wf, run_id="a1")
        second = await engine.start(wf, run_id="a1")  # `await handle`: recorded outcome
        await tick
        return first, second

    assert asyncio.run(cell()) == ("done", "done")


def test_cancelling_run_async_interrupts_the_run(engine: TestEngine) -> None:
    started = threading.Event()

    @weft_nb.activity
    def forever(_: object, activity: weft_nb.ActivityContext) -> None:
        started.set()
        activity.cancelled.wait()

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> None:
        await ctx.run(forever)

    async def cell() -> None:
        task = asyncio.create_task(engine.run_async(wf, run_id="i"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cell())
    assert engine.journal.get_run("i").status == "interrupted"  # resumable


def test_a_call_not_awaited_is_refused_at_return_naming_its_line(engine: TestEngine) -> None:
    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> None:
        ctx.run(double, 1)  # the mistake

    with pytest.raises(StepNotAwaitedError) as caught:
        engine.run(wf)
    message = str(caught.value)
    assert "ctx.run('double')" in message and "await ctx.run('double')" in message
    assert f"{__file__}:{wf.__code__.co_firstlineno + 2}" in message


def test_a_call_not_awaited_is_refused_at_the_next_call_after_an_await(
    engine: TestEngine,
) -> None:
    reached: list[str] = []

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> None:
        ctx.sleep(1)  # the mistake
        await ctx.run(double, 1)
        reached.append("after the await")
        await ctx.run(double, 2)
        reached.append("never")

    with pytest.raises(StepNotAwaitedError, match=r"ctx.sleep\(1\)"):
        engine.run(wf)
    assert reached == ["after the await"]


def test_a_workflow_that_raises_closes_its_unawaited_calls_without_a_second_error(
    engine: TestEngine,
) -> None:
    """The workflow's own error is what the user sees: not StepNotAwaitedError, and the call it
    left behind is closed, so no "coroutine ... was never awaited" RuntimeWarning follows when
    the error's traceback is finally collected."""
    left_behind: list[Any] = []

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> None:
        left_behind.append(ctx.run(double, 1))
        raise ValueError("the workflow's own error")

    with pytest.raises(ValueError, match="the workflow's own error"):
        engine.run(wf)
    (call,) = left_behind
    assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED


def test_a_call_not_awaited_passed_as_input_is_refused(engine: TestEngine) -> None:
    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        return await ctx.run(double, ctx.run(double, 1))

    with pytest.raises(AsyncStyleError, match=r"write `await ctx.run\('double'\)`"):
        engine.run(wf)


def test_a_sync_workflow_returning_a_coroutine_is_refused(engine: TestEngine) -> None:
    async def helper(ctx: weft_nb.WorkflowContext) -> int:
        return 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> Any:
        return helper(ctx)

    with pytest.raises(AsyncStyleError, match=r"make it `async def wf\(ctx, ...\)`") as caught:
        engine.run(wf)
    assert f"{__file__}:{wf.__code__.co_firstlineno}" in str(caught.value)


def test_a_sync_activity_returning_a_coroutine_is_refused_without_retries(
    engine: TestEngine,
) -> None:
    attempts: list[int] = []

    async def fetch() -> int:
        return 1

    @weft_nb.activity
    def looks_sync(_: object) -> Any:
        attempts.append(1)
        return fetch()

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        return await ctx.run(looks_sync)

    with pytest.raises(weft_nb.errors.ActivityFailedError, match="make it `async def looks_sync"):
        engine.run(wf)
    assert attempts == [1]  # a coding mistake fails again every time: not retried


def test_an_async_memo_callback_is_refused(engine: TestEngine) -> None:
    async def fetch() -> int:
        return 1

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        return await ctx.memo("k", fetch)

    with pytest.raises(AsyncStyleError, match="make the async work an activity"):
        engine.run(wf)


def test_all_and_race_take_run_calls_and_futures_and_race_replays_its_winner(
    engine: TestEngine,
) -> None:
    release = threading.Event()
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def slow(x: int) -> int:
        calls["slow"] += 1
        assert release.wait(10)
        return x

    @weft_nb.activity
    def blocker(_: object) -> None:
        calls["blocker"] += 1
        threading.Event().wait()  # the process 'dies' here

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        both = await ctx.all([ctx.submit(double, 1), ctx.run(double, 2)])
        winner = await ctx.race([ctx.run(slow, 5), ctx.submit(double, 3)])
        release.set()
        await ctx.run(blocker)
        return both, winner

    engine.start(wf, run_id="ar")
    wait_until(lambda: calls["blocker"] == 1)
    slow_done = "SELECT count(*) FROM steps WHERE activity = 'slow' AND status = 'completed'"
    wait_until(lambda: engine.journal.query(slow_done) == [(1,)])  # the loser finished too
    restarted = engine.simulate_restart()
    handle = restarted.resume("ar")
    wait_until(lambda: calls["blocker"] == 2)
    assert calls["slow"] == 1  # journaled (the loser kept running to completion)
    rows = restarted.journal.query(
        "SELECT position, activity, result FROM steps WHERE activity = '<race>'"
    )
    assert rows == [(4, "<race>", b"1")]  # the journaled winner: double(3), at position 4
    assert handle.replayed_steps == 5  # 4 steps and the race
    restarted.close()


def test_a_call_kept_for_later_in_a_task_is_not_refused(engine: TestEngine) -> None:
    """The documented way to hold a step across other awaits: ensure_future; and gather later."""

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        kept = asyncio.ensure_future(ctx.run(double, 1))
        first, second = ctx.run(double, 2), ctx.run(double, 3)  # awaited below, no await between
        await ctx.sleep(1)
        after = await ctx.run(double, 4)
        return await kept, await asyncio.gather(first, second), after

    with pytest.raises(StepNotAwaitedError, match=r"ctx.run\('double'\)"):
        engine.run(wf)  # `first` and `second` were not awaited before the sleep

    @weft_nb.workflow
    async def fixed(ctx: weft_nb.AsyncWorkflowContext) -> Any:
        kept = asyncio.ensure_future(ctx.run(double, 1))
        pair = asyncio.gather(ctx.run(double, 2), ctx.run(double, 3))
        await ctx.sleep(1)
        after = await ctx.run(double, 4)
        return await kept, await pair, after

    assert engine.run(fixed) == (2, [4, 6], 8)


def test_asyncio_timeout_around_ctx_all_cancels_the_wait(engine: TestEngine) -> None:
    """review15: ``ctx.all`` swallowed the task's cancel, so ``asyncio.timeout`` never fired."""
    gate = threading.Event()

    @weft_nb.activity
    def blocked(x: int) -> int:
        gate.wait(30)
        return x

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> str:
        try:
            async with asyncio.timeout(0.05):  # not durable: real time, in this process
                await ctx.all([ctx.run(blocked, 1), ctx.run(double, 2)])
        except TimeoutError:
            return "timed out"
        return "waited for the steps"

    try:
        assert engine.run(wf, run_id="t") == "timed out"
    finally:
        gate.set()


def test_using_an_unawaited_call_as_a_value_names_the_missing_await(engine: TestEngine) -> None:
    """review15: ``ctx.run(...) + 1`` failed the run with a bare TypeError about a coroutine."""

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> int:
        return ctx.run(double, 1) + 1  # type: ignore[operator]  # the mistake

    with pytest.raises(StepNotAwaitedError) as caught:
        engine.run(wf)
    assert f"{__file__}:{wf.__code__.co_firstlineno + 2}" in str(caught.value)
    assert isinstance(caught.value.__cause__, TypeError)


def test_a_sleep_in_a_race_says_to_use_a_timer_not_to_await_it(engine: TestEngine) -> None:
    """review15: the seed's ``ctx.race([ctx.run(job), ctx.sleep(...)])`` pointed nowhere useful."""

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> object:
        return await ctx.race([ctx.run(double, 1), ctx.sleep("1s")])  # type: ignore[list-item]

    with pytest.raises(TypeError, match=r"got ctx.sleep\('1s'\) \(for a deadline, pass ctx.timer"):
        engine.run(wf)


def test_a_weft_type_error_is_not_blamed_on_a_pending_call(engine: TestEngine) -> None:
    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> object:
        later = ctx.run(double, 1)
        return await ctx.run(double, 2, no_such_option=1), await later

    with pytest.raises(TypeError, match="unknown ctx.run option"):
        engine.run(wf)


def test_a_memo_callback_returning_a_coroutine_is_named(engine: TestEngine) -> None:
    """review15: ``ctx.memo(k, lambda: fetch())`` gave a PayloadError about pickling."""

    async def fetch() -> int:
        return 1

    @weft_nb.workflow
    async def wf(ctx: weft_nb.AsyncWorkflowContext) -> object:
        return await ctx.memo("k", lambda: fetch())  # noqa: PLW0108  # the mistake

    with pytest.raises(AsyncStyleError, match=r"ctx.memo\('k'\) callback returned a coroutine"):
        engine.run(wf)
