"""Parallel steps: ``ctx.submit``, ``ctx.all``, ``ctx.race`` and ``ctx.run_all``.

``submit`` takes the next position on the workflow's thread (so positions follow program order,
and replay stays positional) and runs the step on a worker thread. Each step's outcome is
journaled the moment it settles, whatever its siblings do, so a resume never re-runs a sibling
that completed, even when the workflow never reached another step (better than Weft, which loses
completed siblings of a failed group).

Parallelism is bounded by ``Engine(max_parallel=...)``, and a queue (``queue="gpu"``) can have
its own limit (``Engine(queue_limits={"gpu": 1})``, taken around each attempt of every step: see
:mod:`weft_nb._queue_limits`). Submitted steps wait in a
:class:`StepPool` and run on at most ``max_parallel`` reused threads, so a 200-way ``ctx.all``
starts a handful of threads, not 200.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._journal import STEP_COMPLETED, StepRecord
from ._payloads import digest
from .errors import NonDeterminismError

if TYPE_CHECKING:
    from ._workflow_context import PreparedStep, WorkflowContext

_SETTLE_ORDER = itertools.count(1)
RACE = "<race>"
GROUP = "<run_all>"


class StepPool:
    """Runs submitted steps first come, first served, on at most ``size`` reused daemon threads.

    Daemon threads, as for every other thread the engine starts: an activity that ignores
    cancellation must not keep the interpreter (or a kernel restart) from exiting. A thread
    idle for :attr:`IDLE_EXIT` seconds ends; the next submission starts a new one.
    """

    IDLE_EXIT = 5.0

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0

    def run(self, work: Callable[[], None]) -> None:
        """Queue ``work``; a free thread runs it, or a new one if fewer than ``size`` exist."""
        with self._cond:
            self._queue.append(work)
            if self._idle >= len(self._queue):
                self._cond.notify()
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._serve, name="weft-step", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._idle += 1
                    woken = self._cond.wait(self.IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not self._queue:
                        self._threads -= 1
                        return
                work = self._queue.popleft()
            work()  # never raises: submit()'s work settles its future with any exception


class BranchTopologyChangedError(NonDeterminismError):
    """``ctx.run_all`` was replayed with other branch names, or another order, than recorded."""


class StepFuture:
    """A submitted step. Pass it to ``ctx.all`` or ``ctx.race``, or call :meth:`result`."""

    def __init__(self, ctx: WorkflowContext, position: int, activity: str) -> None:
        self.position = position
        self.activity = activity
        self._ctx = ctx
        self._settled = ctx._engine.clock.new_event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._watchers: list[threading.Event] = []
        self._lock = threading.Lock()
        self.settled_order = 0  # global settle order: the true first of a race

    def _settle(self, value: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            self._value, self._error = value, error
            self.settled_order = next(_SETTLE_ORDER)
            self._settled.set()
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.set()

    def _watch(self, event: threading.Event) -> None:
        with self._lock:
            self._watchers.append(event)
            if self._settled.is_set():
                event.set()

    def done(self) -> bool:
        """True once the step completed or failed."""
        return self._settled.is_set()

    def result(self) -> Any:
        """Wait for the step; return its result or raise its error."""
        clock = self._ctx._engine.clock
        while not clock.wait(self._settled, None):
            pass
        self._ctx._check_alive()
        if self._error is not None:
            raise self._error
        return self._value

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<StepFuture step {self.position} {self.activity!r} {state}>"


def submit(ctx: WorkflowContext, step: PreparedStep) -> StepFuture:
    """Start a prepared step on a worker thread (or settle it at once from the journal)."""
    future = StepFuture(ctx, step.position, step.definition.name)
    if step.replayed:
        future._settle(step.result, step.error)
        return future
    engine = ctx._engine

    def work() -> None:
        # Not a clock wait: time may move meanwhile. The step's queue slot, if it names a queue,
        # is taken around each attempt by _step_execution (see _queue_limits).
        engine.parallel_slots.acquire()
        engine.clock.reserve_participant()
        engine.clock.bind_participant()
        try:
            future._settle(ctx._execute(step))
        except BaseException as exc:
            future._settle(error=exc)
        finally:
            engine.clock.release_participant()
            engine.parallel_slots.release()

    context = contextvars.copy_context()  # output routing follows the cell; see Engine._launch
    engine.step_pool.run(lambda: context.run(work))
    return future


def wait_all(futures: Sequence[StepFuture]) -> list[Any]:
    """Results in order; on a failure, wait for every sibling to settle, then raise the first."""
    for future in futures:
        clock = future._ctx._engine.clock
        while not clock.wait(future._settled, None):
            pass
    errors = [f._error for f in futures if f._error is not None]
    if futures:
        futures[0]._ctx._check_alive()
    if errors:
        raise errors[0]
    return [f._value for f in futures]


def race(ctx: WorkflowContext, futures: Sequence[StepFuture]) -> tuple[int, Any]:
    """``(index, result)`` of the first future to settle; the winner is journaled.

    Losers keep running to completion and their ``cancelled`` is not set (Weft's documented
    behaviour): a race selects a result, it does not stop work. Stop a loser yourself (a timeout,
    a cancellation token in its input) when its work is not worth finishing.
    """
    if not futures:
        raise ValueError("ctx.race needs at least one future")
    position = ctx._take_position()
    members = json.dumps([f.position for f in futures]).encode()
    recorded = ctx._recorded(position, RACE, "", digest(members))
    if recorded is not None and recorded.status == STEP_COMPLETED and recorded.result:
        winner = int(recorded.result)
        ctx._state.replayed += 1
    else:
        wake = ctx._engine.clock.new_event()
        for future in futures:
            future._watch(wake)
        while not ctx._engine.clock.wait(wake, None):
            pass
        winner = min(
            (i for i, f in enumerate(futures) if f.done()), key=lambda i: futures[i].settled_order
        )
        now = ctx._engine.clock.now()
        ctx._engine.journal.record_step(
            StepRecord(ctx.run_id, position, RACE, STEP_COMPLETED, digest(members), "", 1, now,
                       now, "json", str(winner).encode())
        )  # fmt: skip
    return winner, futures[winner].result()


def run_all(
    ctx: WorkflowContext,
    branches: Mapping[str, tuple[str | Callable[..., Any], Any] | tuple[str | Callable[..., Any]]],
    submit_one: Callable[..., StepFuture],
) -> dict[str, Any]:
    """Named branches run in parallel; a dict of their results. The topology is journaled."""
    names = list(branches)
    position = ctx._take_position()
    topology = json.dumps(names).encode()
    recorded = ctx._state.steps.pop(position, None)
    if recorded is not None and recorded.activity == GROUP and recorded.result is not None:
        if recorded.result != topology:
            raise BranchTopologyChangedError(
                f"ctx.run_all at step {position} of run {ctx.run_id!r} was recorded with branches "
                f"{json.loads(recorded.result)} and now has {names}; results would be matched to "
                "the wrong branches. Restore the branches, or start a new run.",
                run_id=ctx.run_id,
                position=position,
            )
    else:
        if recorded is not None:
            ctx._on_changed(position, recorded, GROUP, "", digest(topology))
        now = ctx._engine.clock.now()
        ctx._engine.journal.record_step(
            StepRecord(ctx.run_id, position, GROUP, STEP_COMPLETED, digest(topology), "", 1, now,
                       now, "json", topology)
        )  # fmt: skip
    futures = []
    for name in names:
        branch = branches[name]
        activity, value = (branch[0], branch[1] if len(branch) > 1 else None)
        futures.append(submit_one(activity, value))
    return dict(zip(names, wait_all(futures), strict=True))
