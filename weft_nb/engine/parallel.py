"""Parallel steps: ``ctx.submit``, ``ctx.all``, ``ctx.race`` and ``ctx.run_all``.

``submit`` takes the next position on the workflow's thread (so positions follow program order,
and replay stays positional) and runs the step on a worker thread. Each step's outcome is
journaled the moment it settles, whatever its siblings do, so a resume never re-runs a sibling
that completed, even when the workflow never reached another step (better than Weft, which loses
completed siblings of a failed group).

Parallelism is bounded by the engine option ``max_parallel``, and a queue (``queue="gpu"``) can
have its own limit (``queue_limits={"gpu": 1}``, taken around each attempt of every step: see
`weft_nb.engine.queue_limits`). Submitted steps wait in the
engine's `StepPool` and run on at most ``max_parallel`` reused
threads, so a 200-way ``ctx.all`` starts a handful of threads, not 200.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import math
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic

from weft_nb.base.payloads import digest
from weft_nb.base.typed_api import ResultT, ResultT_co
from weft_nb.engine import async_loop, steps
from weft_nb.engine.replay import control_record
from weft_nb.errors import BranchTopologyChangedError
from weft_nb.journal.group_commit import Deferral
from weft_nb.journal.protocol import STEP_COMPLETED

if TYPE_CHECKING:
    from weft_nb.base.clock import Clock
    from weft_nb.engine.replay import PreparedStep, StepCursor
    from weft_nb.engine.runtime import Runtime

_SETTLE_ORDER = itertools.count(1)
RACE = "<race>"
GROUP = "<run_all>"


class StepFuture(Generic[ResultT_co]):
    """A submitted step. Pass it to ``ctx.all`` or ``ctx.race``, or call `result()`.

    Generic in the activity's result for type checkers: ``ctx.submit(train, config)`` is a
    ``StepFuture[float]`` when ``train`` returns a ``float``.
    """

    def __init__(self, rt: Runtime, cursor: StepCursor, position: int, activity: str) -> None:
        self.position = position
        self.activity = activity
        self.clock = rt.clock  # the engine's: waits for this step follow it
        self._cursor = cursor
        # No event per future: a 500-way ctx.all would build 500 of them (each a Condition and
        # two locks). Whoever must block makes one and hands its ``set`` to add_done_callback.
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.settled_order = 0  # global settle order: the true first of a race

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Give the step its outcome (the engine does, once) and wake whoever waits for it."""
        with self._lock:
            self._value, self._error = value, error
            self.settled_order = next(_SETTLE_ORDER)
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def watch(self, event: threading.Event) -> None:
        """Set ``event`` when the step settles (at once if it has)."""
        self.add_done_callback(event.set)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the step settles (at once if it has), on the settling thread."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    def __await__(self) -> Generator[Any, None, ResultT_co]:
        """``await future`` in an ``async def`` workflow (or any coroutine): its result.

        Waits without blocking the awaiting event loop; raises the step's error.
        """
        if self.poll() is not None:  # it needs tending (a timer fires when its waiter looks)
            yield from async_loop.off_loop(self.clock, self.wait).__await__()
        elif not self.done():
            yield from async_loop.settled(self.add_done_callback).__await__()
        return self.result()

    def done(self) -> bool:
        """True once the step completed or failed."""
        return self._done

    def poll(self) -> float | None:
        """Settle now if this future settles itself and is due; how long it may still take.

        None for a submitted step, which its worker thread settles whatever the run does (a
        stopped or cancelled run's attempts see ``cancelled``): waiting for it alone is enough.
        A future the waiting thread must tend (a timer: `weft_nb.engine.timers`), or one that
        may outlive a stopped run (a child workflow: `weft_nb.engine.child_workflows`), returns
        the seconds until it is due (``math.inf``: whenever it is settled elsewhere), and its
        waiters also wake when the run is cancelled or stopped.
        """
        return None

    def wait(self) -> None:
        """Wait until the step settles, whatever its outcome.

        A future whose `poll()` is not None also stops waiting once the run is cancelled or
        stopped; `result()` then raises that.
        """
        if self.poll() is None:
            if not self._done:
                wait_settled([self], self.clock)
            return
        cursor = self._cursor
        with cursor.own_wake() as wake:
            self.watch(wake)
            while True:
                cursor.clear_signal(wake)  # before looking: a settle from now on sets it again
                left = self.poll()
                if self.done() or not cursor.is_alive():
                    return
                cursor.wait_signal(None if left is None or left == math.inf else left, wake)

    def result(self) -> ResultT_co:
        """Wait for the step; return its result or raise its error."""
        self.wait()
        self._cursor.check_alive()
        if self._error is not None:
            raise self._error
        value: ResultT_co = self._value
        return value

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<StepFuture step {self.position} {self.activity!r} {state}>"


def submit(rt: Runtime, cursor: StepCursor, step: PreparedStep) -> StepFuture[Any]:
    """Start a prepared step on a worker thread (or settle it at once from the journal)."""
    future: StepFuture[Any] = StepFuture(rt, cursor, step.position, step.definition.name)
    if step.replayed:
        future.settle(step.result, step.error)
        return future

    def work() -> None:
        # Not a clock wait: time may move meanwhile. The step's queue slot, if it names a queue,
        # is taken around each attempt by _step_execution (see _queue_limits). The pool's
        # max_parallel threads are the bound on parallel steps: no semaphore per step.
        rt.clock.reserve_participant()
        rt.clock.bind_participant()
        deferral = Deferral()
        value: Any = None
        error: BaseException | None = None
        try:
            try:
                # In real time the record's sync is shared with the other parallel steps: this
                # thread moves on to the next step; the future settles once the record is
                # durable (weft_nb.journal.group_commit). A virtual clock keeps it synchronous.
                with deferral if defer else contextlib.nullcontext(deferral):
                    value = steps.execute(rt, cursor, step)
            except BaseException as exc:
                error = exc
            if deferral.commit is None:  # nothing to wait for
                future.settle(value, error)
        finally:
            rt.clock.release_participant()
        if deferral.commit is not None:
            deferral.when_durable(lambda failed: future.settle(value, failed or error))

    # A clock written before Clock.defers_syncs existed keeps every sync synchronous.
    defer = getattr(rt.clock, "defers_syncs", False)
    context = contextvars.copy_context()  # output routing follows the cell; see run_thread.launch
    rt.step_pool.run(lambda: context.run(work))
    return future


def check_futures(futures: Sequence[Any], call: str) -> None:
    """Refuse what is not a future (``ctx.sleep``'s None, a result) with a TypeError naming it."""
    for item in futures:
        if not isinstance(item, StepFuture):
            hint = (
                " (ctx.sleep waits, then returns None: for a deadline, pass ctx.timer(duration))"
                if item is None
                else ""
            )
            raise TypeError(
                f"{call} takes futures from ctx.submit, ctx.timer or ctx.start_workflow; got "
                f"{item!r}{hint}"
            )


def wait_all(futures: Sequence[StepFuture[ResultT]]) -> list[ResultT]:
    """Results in order; on a failure, wait for every sibling to settle, then raise the first."""
    check_futures(futures, "ctx.all")
    pending = [future for future in futures if not future.done()]
    if all(future.poll() is None for future in pending):  # their worker threads settle them
        if pending:
            wait_settled(pending, pending[0].clock)
    else:  # a timer or a child workflow among them: each is tended while it is waited for
        for future in futures:
            future.wait()
    return [future.result() for future in futures]  # settled: raises the first error in order


def wait_settled(futures: Sequence[StepFuture[Any]], clock: Clock) -> None:
    """Block until every one of ``futures`` has settled (steps whose `poll()` is None).

    A count-down latch: one event and one wake-up of the waiting thread for the lot, where
    waiting on each future in turn could wake it once per step of a wide ``ctx.all``.
    """
    left = len(futures)
    lock = threading.Lock()
    event = clock.new_event()

    def count_down() -> None:
        nonlocal left
        with lock:
            left -= 1
            last = left == 0
        if last:
            event.set()

    for future in futures:
        future.add_done_callback(count_down)
    while not clock.wait(event, None):
        pass


def race(
    rt: Runtime, cursor: StepCursor, futures: Sequence[StepFuture[ResultT]]
) -> tuple[int, ResultT]:
    """``(index, result)`` of the first future to settle; the winner is journaled.

    Losers keep running to completion and their ``cancelled`` is not set (Weft's documented
    behaviour): a race selects a result, it does not stop work. Stop a loser yourself (a timeout,
    a cancellation token in its input) when its work is not worth finishing.
    """
    position, winner = race_position(cursor, futures)
    if winner is None:
        wait_first(rt, cursor, futures)
        # A stop or cancel settles the steps it interrupts: such a "winner" is not journaled.
        cursor.check_alive()
        winner = record_winner(rt, cursor, position, futures)
    return winner, futures[winner].result()


def race_position(cursor: StepCursor, futures: Sequence[StepFuture[Any]]) -> tuple[int, int | None]:
    """Take a race's position: ``(position, winner)``, the winner when the journal has it."""
    if not futures:
        raise ValueError("ctx.race needs at least one future")
    check_futures(futures, "ctx.race")
    position = cursor.take_position()
    members = json.dumps([f.position for f in futures]).encode()
    recorded = cursor.match(position, RACE, "", digest(members))
    if recorded is not None and recorded.status == STEP_COMPLETED and recorded.result:
        cursor.count_replayed()
        return position, int(recorded.result)
    return position, None


def record_winner(
    rt: Runtime, cursor: StepCursor, position: int, futures: Sequence[StepFuture[Any]]
) -> int:
    """Journal the first of ``futures`` to settle (one has) as the race's winner; its index."""
    winner = min(
        (i for i, f in enumerate(futures) if f.done()), key=lambda i: futures[i].settled_order
    )
    members = json.dumps([f.position for f in futures]).encode()
    at, result = rt.clock.now(), str(winner).encode()
    rt.journal.record_step(
        control_record(
            cursor.run_id, position, RACE, digest(members), at, completed=True, result=result
        )
    )
    return winner


def wait_first(rt: Runtime, cursor: StepCursor, futures: Sequence[StepFuture[Any]]) -> None:
    """Wait until one of ``futures`` settles (firing due timers on the way).

    With only submitted steps, waits for the first to settle. With a timer or a child workflow
    among them, also wakes at the earliest timer's deadline and when the run is cancelled or
    stopped (then raises that: nothing is journaled).
    """
    due = [left for left in (f.poll() for f in futures) if left is not None]
    if not due:
        wake = rt.clock.new_event()
        for future in futures:
            future.watch(wake)
        while not rt.clock.wait(wake, None):
            pass
        return
    with cursor.own_wake() as wake:
        for future in futures:
            future.watch(wake)
        while True:
            cursor.clear_signal(wake)  # before looking: a settle from now on sets it again
            due = [left for left in (f.poll() for f in futures) if left is not None]
            if any(f.done() for f in futures):
                return
            cursor.check_alive()
            earliest = min(due, default=math.inf)
            cursor.wait_signal(None if earliest == math.inf else earliest, wake)


def run_all(
    rt: Runtime,
    cursor: StepCursor,
    branches: Mapping[str, tuple[str | Callable[..., Any], Any] | tuple[str | Callable[..., Any]]],
    submit_one: Callable[..., StepFuture[Any]],
) -> dict[str, Any]:
    """Named branches run in parallel; a dict of their results. The topology is journaled."""
    names, futures = start_group(rt, cursor, branches, submit_one)
    return dict(zip(names, wait_all(futures), strict=True))


def start_group(
    rt: Runtime,
    cursor: StepCursor,
    branches: Mapping[str, tuple[str | Callable[..., Any], Any] | tuple[str | Callable[..., Any]]],
    submit_one: Callable[..., StepFuture[Any]],
) -> tuple[list[str], list[StepFuture[Any]]]:
    """Journal a ``run_all`` group's topology and submit its branches: names and futures."""
    names = list(branches)
    position = cursor.take_position()
    topology = json.dumps(names).encode()
    recorded = cursor.take_recorded(position)
    if recorded is not None and recorded.activity == GROUP and recorded.result is not None:
        if recorded.result != topology:
            raise BranchTopologyChangedError(
                cursor.run_id, position, recorded=json.loads(recorded.result), current=names
            )
    else:
        if recorded is not None:
            cursor.supersede(position, recorded, GROUP, "", digest(topology))
        at = rt.clock.now()
        rt.journal.record_step(
            control_record(
                cursor.run_id,
                position,
                GROUP,
                digest(topology),
                at,
                completed=True,
                result=topology,
            )
        )
    futures = []
    for name in names:
        branch = branches[name]
        activity, value = (branch[0], branch[1] if len(branch) > 1 else None)
        futures.append(submit_one(activity, value))
    return names, futures
