"""The ``ctx`` an ``async def`` workflow receives: the durable operations, each one awaitable.

One engine, one journal: every method does what the sync `WorkflowContext` does, through it. Each
is a plain method that takes its position *when called*, on the workflow's thread (program order,
so replay stays positional), and returns an awaitable. ``ctx.run`` submits its step at once, so
``asyncio.gather(ctx.run(a), ctx.run(b))`` runs both in parallel at positions in call order, the
same on every replay. Waiting never blocks the run's loop (`weft_nb.engine.async_loop`): a step's
thread wakes it when the step settles, and a sleep or a signal wait runs on a thread of its own.

A call that is never awaited raises `StepNotAwaitedError` (its line named) at the workflow's next
``ctx`` call once the loop has moved on, or when the workflow returns.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from weft_nb.base.retry import Duration
from weft_nb.engine import async_loop, parallel, recorded_calls
from weft_nb.engine import step_scope as _step_scope
from weft_nb.engine.async_loop import off_loop
from weft_nb.engine.parallel import StepFuture
from weft_nb.errors import AsyncStyleError, StepNotAwaitedError

if TYPE_CHECKING:
    from weft_nb.engine.async_loop import RunLoop
    from weft_nb.engine.timers import TimerFuture
    from weft_nb.engine.workflow_context import WorkflowContext

T = TypeVar("T")
Step = Coroutine[Any, Any, T]
"""What a durable call of an async workflow returns: a coroutine to ``await``."""


class AsyncWorkflowContext:
    """The ``ctx`` an ``async def`` workflow receives; ``await`` its durable calls.

    Args:
        ctx: The run's sync context, which does the durable work.
        loop: The run's private loop (its turns age un-awaited calls).
    """

    def __init__(self, ctx: WorkflowContext, loop: RunLoop) -> None:
        self.sync = ctx  # the sync context: positions, journal, replay
        self.runtime = ctx.runtime
        self.cursor = ctx.cursor
        self.run_id = ctx.run_id
        self.workflow_name = ctx.workflow_name
        self._loop = loop
        self._pending: dict[Coroutine[Any, Any, Any], tuple[str, str, int]] = {}
        self._futures: dict[Coroutine[Any, Any, Any], StepFuture[Any]] = {}

    # -- steps -----------------------------------------------------------------------------

    def run(
        self, activity: str | Callable[..., Any], input: Any = None, **options: Any
    ) -> Step[Any]:
        """``await ctx.run(activity, input, **options)``: the activity's result, as the sync one.

        The step takes its position and starts now; awaiting it waits for its result.
        """
        self._check_awaited()
        _step_scope.check_scope(self.cursor, lambda: f"ctx.run({_name_of(activity)!r})")
        future = self.sync.submit(activity, self._input(input), **options)
        step = _result_of(future)
        self._futures[step] = future
        return self._track(step, f"ctx.run({_name_of(activity)!r})")

    def submit(
        self, activity: str | Callable[..., Any], input: Any = None, **options: Any
    ) -> StepFuture[Any]:
        """Schedule an activity now; a `StepFuture` (``await`` it, or pass it to all/race)."""
        self._check_awaited()
        return self.sync.submit(activity, self._input(input), **options)

    def all(self, steps: Sequence[StepFuture[T] | Step[T]]) -> Step[list[T]]:
        """``await ctx.all([...])``: results in order; on a failure, all settle, then it raises.

        Takes futures from `submit` and calls from `run` (not awaited yet).
        """
        self._check_awaited()
        _step_scope.check_scope(self.cursor, "ctx.all")
        futures = [self._future_of(s, "ctx.all") for s in steps]
        return self._track(_all_of(futures), "ctx.all([...])")

    def race(self, steps: Sequence[StepFuture[T] | Step[T]]) -> Step[tuple[int, T]]:
        """``await ctx.race([...])``: ``(index, result)`` of the first to settle, journaled.

        Losers keep running, as in the sync ``ctx.race``.
        """
        self._check_awaited()
        _step_scope.check_scope(self.cursor, "ctx.race")
        futures = [self._future_of(s, "ctx.race") for s in steps]
        position, winner = parallel.race_position(self.cursor, futures)
        return self._track(self._race(position, winner, futures), "ctx.race([...])")

    def timer(self, duration: Duration) -> TimerFuture:
        """A durable timer (the sync ``ctx.timer``): ``await`` it, or race it against steps."""
        self._check_awaited()
        return self.sync.timer(duration)

    def start_workflow(
        self, workflow: str | Callable[..., Any], input: Any = None, **options: Any
    ) -> StepFuture[Any]:
        """Start a child workflow now (the sync ``ctx.start_workflow``); ``await`` its future."""
        self._check_awaited()
        return self.sync.start_workflow(workflow, self._input(input), **options)

    def run_workflow(
        self, workflow: str | Callable[..., Any], input: Any = None, **options: Any
    ) -> Step[Any]:
        """``await ctx.run_workflow(workflow, input, run_id=None, **options)``: its result.

        The child starts now; a failed child raises ``ChildWorkflowFailedError`` here.
        """
        self._check_awaited()
        future = self.sync.start_workflow(workflow, self._input(input), **options)
        step = _result_of(future)
        self._futures[step] = future
        return self._track(step, f"ctx.run_workflow({_name_of(workflow)!r})")

    def run_all(self, branches: Mapping[str, Any]) -> Step[dict[str, Any]]:
        """``await ctx.run_all({"name": (activity, input), ...})``: ``{"name": result}``."""
        self._check_awaited()
        _step_scope.check_scope(self.cursor, "ctx.run_all")
        names, futures = parallel.start_group(self.runtime, self.cursor, branches, self.sync.submit)
        return self._track(_named(names, _all_of(futures)), "ctx.run_all({...})")

    def compensate(self) -> Step[None]:
        """``await ctx.compensate()``: the sync ``ctx.compensate()``, run when called."""
        self._check_awaited()
        self.sync.compensate()
        return self._track(_done(None), "ctx.compensate()")

    # -- time, signals, memo ---------------------------------------------------------------

    def sleep(self, duration: Duration) -> Step[None]:
        """``await ctx.sleep(duration)``: a durable sleep (its deadline journaled when called)."""
        self._check_awaited()
        _step_scope.check_scope(self.cursor, "ctx.sleep")
        wait = recorded_calls.begin_sleep(self.runtime, self.cursor, duration)
        step = _done(None) if wait is None else off_loop(self.runtime.clock, wait)
        return self._track(step, f"ctx.sleep({duration!r})")

    def now(self) -> float:
        """The current time, recorded (a plain call: it never waits)."""
        self._check_awaited()
        return self.sync.now()

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Step[Any]:
        """``await ctx.wait_for_signal(name, timeout=None)``: the signal's payload."""
        self._check_awaited()
        _step_scope.check_scope(self.cursor, f"ctx.wait_for_signal({name!r})")
        replayed, wait = recorded_calls.begin_signal_wait(self.runtime, self.cursor, name, timeout)
        if replayed is not None:
            step: Step[Any] = _call(replayed)
        else:
            state, clock = self.cursor.state, self.runtime.clock
            arrived = clock.new_event()  # its own: several waits may run at once

            def waiting() -> Any:
                state.signal_waiters.add(arrived)
                try:
                    return wait(arrived)
                finally:
                    state.signal_waiters.discard(arrived)

            step = off_loop(clock, waiting)
        return self._track(step, f"ctx.wait_for_signal({name!r})")

    def memo(self, key: str, fn: Callable[[], T]) -> Step[T]:
        """``await ctx.memo(key, fn)``: ``fn()`` once per key in this run, run when called.

        ``fn`` is a plain function (async work belongs in an activity).
        """
        self._check_awaited()
        if inspect.iscoroutinefunction(fn):
            raise AsyncStyleError(
                f"ctx.memo({key!r}) got the async function {_name_of(fn)!r}",
                "a memo's callback is a plain function; make the async work an activity and "
                "`await ctx.run(...)` it",
                where=_step_scope.call_site(),
            )
        return self._track(_done(self.sync.memo(key, fn)), f"ctx.memo({key!r})")

    # -- bookkeeping -----------------------------------------------------------------------

    async def finish(self, workflow: Coroutine[Any, Any, T]) -> T:
        """Run the workflow's coroutine; refuse a durable call it never awaited."""
        try:
            value = await workflow
        except BaseException as error:
            if isinstance(error, TypeError | AttributeError) and "coroutine" in str(error):
                self._check_awaited(final=True, cause=error)  # an un-awaited call used as a value
            self._close_pending()  # no "never awaited" RuntimeWarning on top of the error
            raise
        self._check_awaited(final=True)
        return value

    def _input(self, input: Any) -> Any:
        """A step's input; refuse an un-awaited call passed as one."""
        if inspect.iscoroutine(input) and input in self._pending:
            call, where, _ = self._pending[input]
            raise AsyncStyleError(
                f"the input of a step is {call}, which was not awaited",
                f"write `await {call}` to pass its result",
                where=where,
            )
        return input

    def _track(self, step: Step[T], call: str) -> Step[T]:
        self._pending[step] = (call, _step_scope.call_site(), self._loop.turns)
        return step

    def _future_of(self, step: StepFuture[T] | Step[T], call: str) -> StepFuture[T]:
        if isinstance(step, StepFuture):
            return step
        future = self._futures.pop(step, None) if inspect.iscoroutine(step) else None
        if future is None:
            what, hint = repr(step), ""
            if inspect.iscoroutine(step) and step in self._pending:
                what = self._pending.pop(step)[0]  # refused here: not "never awaited" as well
                step.close()
                if what.startswith("ctx.sleep("):
                    hint = " (for a deadline, pass ctx.timer(duration))"
            raise TypeError(
                f"{call} takes futures (ctx.submit, ctx.timer, ctx.start_workflow) and "
                f"ctx.run(...) / ctx.run_workflow(...) calls; got {what}{hint}"
            )
        self._pending.pop(step, None)
        step.close()  # its future stands for it
        return future

    def _check_awaited(self, *, final: bool = False, cause: BaseException | None = None) -> None:
        """Raise for a call not awaited (nor handed to a task) since the loop last moved on."""
        turns = self._loop.turns
        for step, (call, where, turn) in list(self._pending.items()):
            if inspect.getcoroutinestate(step) != inspect.CORO_CREATED:
                del self._pending[step]
                self._futures.pop(step, None)
            elif final or turn < turns - 1:
                self._close_pending()
                raise StepNotAwaitedError(call, where=where, run_id=self.run_id) from cause

    def _close_pending(self) -> None:
        for stale in self._pending:
            if inspect.getcoroutinestate(stale) == inspect.CORO_CREATED:
                stale.close()  # no "never awaited" RuntimeWarning on top of the error
        self._pending.clear()

    async def _race(
        self, position: int, winner: int | None, futures: Sequence[StepFuture[T]]
    ) -> tuple[int, T]:
        if winner is None:
            if any(f.poll() is not None for f in futures):  # a timer, a child: tended off-loop
                rt, cursor = self.runtime, self.cursor
                await off_loop(rt.clock, lambda: parallel.wait_first(rt, cursor, futures))
            elif not any(f.done() for f in futures):

                def on_any(callback: Callable[[], None]) -> None:
                    for future in futures:
                        future.add_done_callback(callback)

                await async_loop.settled(on_any)
            self.cursor.check_alive()  # a stop or cancel settles its steps: no winner journaled
            winner = parallel.record_winner(self.runtime, self.cursor, position, futures)
        return winner, futures[winner].result()


async def _result_of(future: StepFuture[T]) -> T:
    return await future


async def _all_of(futures: Sequence[StepFuture[T]]) -> list[T]:
    for future in futures:
        try:
            await future
        except BaseException as error:  # a step's error is raised below, in order, once settled
            if isinstance(error, asyncio.CancelledError) and not future.done():
                raise  # the wait itself was cancelled (asyncio.timeout, wait_for, TaskGroup)
    return [future.result() for future in futures]  # settled: raises the first error in order


async def _named(names: list[str], results: Step[list[Any]]) -> dict[str, Any]:
    return dict(zip(names, await results, strict=True))


async def _done(value: T) -> T:
    return value


async def _call(fn: Callable[[], T]) -> T:
    return fn()


def _name_of(activity: str | Callable[..., Any]) -> str:
    return activity if isinstance(activity, str) else getattr(activity, "__name__", repr(activity))
