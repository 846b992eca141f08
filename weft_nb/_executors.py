"""Where activity attempts run: the executor interface and the default thread executor.

The engine hands every attempt to its executor (``Engine(executor=...)``). The executor runs the
activity and returns its :class:`~weft_nb._attempts.AttemptOutcome`; everything durable (the
journal, heartbeat flushing, checkpoint files, retries) stays in the kernel, in
``_step_execution``, whatever the executor. :class:`ThreadExecutor` runs attempts in this process;
``ProcessExecutor`` and ``DaskExecutor`` run them elsewhere and feed what the activity reports
(heartbeats, checkpoints, task-token reads) into the kernel's own ``ActivityContext``.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from ._attempts import AttemptOutcome, AttemptWatch, attempt_outcome

if TYPE_CHECKING:
    from ._activity_context import ActivityContext
    from ._clock import Clock
    from ._definitions import ActivityDefinition


class Executor:
    """Runs the attempts of an engine's activities. Subclasses implement :meth:`run`."""

    clock: Clock

    def check(self) -> None:
        """Raise a ``WeftError`` if the executor cannot run anything (before the journal opens)."""

    def attach(self, clock: Clock) -> None:
        """Called by the engine that uses this executor."""
        self.clock = clock

    def run(
        self,
        definition: ActivityDefinition,
        value: Any,
        ctx: ActivityContext,
        *,
        timeout: float | None,
        heartbeat_timeout: float | None,
        wake: threading.Event,
        queue: str | None = None,
    ) -> AttemptOutcome | None:
        """Run one attempt; None means the run was cancelled (or stopped) while it ran.

        ``wake`` is set when the run is cancelled or stopped; ``ctx.cancelled`` says so too.
        ``queue`` is the step's queue, for executors that place work by queue.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release workers; the engine calls it when it closes."""


class ThreadExecutor(Executor):
    """The default: attempts run in the kernel's process, on threads.

    An attempt with no ``timeout`` and no ``heartbeat_timeout`` runs inline on the workflow's
    thread (no hand-off); otherwise on a daemon thread that the workflow thread watches.
    Cancellation and timeouts are cooperative (``activity.cancelled``): a thread cannot be killed.
    """

    def run(
        self,
        definition: ActivityDefinition,
        value: Any,
        ctx: ActivityContext,
        *,
        timeout: float | None,
        heartbeat_timeout: float | None,
        wake: threading.Event,
        queue: str | None = None,
    ) -> AttemptOutcome | None:
        """Run one attempt here; see :meth:`Executor.run`."""
        if timeout is None and heartbeat_timeout is None:
            return attempt_outcome(definition, value, ctx)
        result: list[AttemptOutcome] = []
        clock = self.clock

        def target() -> None:
            clock.bind_participant()
            try:
                result.append(attempt_outcome(definition, value, ctx))
                wake.set()
            finally:
                clock.release_participant()

        clock.reserve_participant()
        thread = threading.Thread(
            target=contextvars.copy_context().run,  # output routing follows; see Engine._launch
            args=(target,),
            name=f"weft-{ctx.activity_name}-{ctx.position}.{ctx.attempt}",
            daemon=True,
        )
        thread.start()
        watch = AttemptWatch(ctx, clock, timeout, heartbeat_timeout)
        while True:
            clock.wait(wake, watch.remaining())
            if result:
                return result[0]
            if wake.is_set() and ctx.cancelled.is_set():
                return None  # woken by cancellation of the run
            wake.clear()
            expired = watch.expired()
            if expired is not None:
                return expired


EXECUTOR_USAGE = "thread | process [N] | dask ADDRESS"


def executor_from_spec(spec: str) -> Executor:
    """Build an executor from a short description: ``thread``, ``process 4``, ``dask tcp://h:8786``.

    Raises:
        ValueError: The description is not one of those (the message gives the forms).
    """
    words = spec.split()
    kind, args = (words[0], words[1:]) if words else ("", [])
    if kind == "thread" and not args:
        return ThreadExecutor()
    if kind == "process" and len(args) <= 1:
        if args and not (args[0].isdigit() and int(args[0]) >= 1):
            raise ValueError(f"process takes a worker count >= 1, not {args[0]!r}")
        from ._process_executor import ProcessExecutor

        return ProcessExecutor(max_workers=int(args[0]) if args else None)
    if kind == "dask" and len(args) == 1:
        from ._dask_executor import DaskExecutor

        return DaskExecutor(args[0])
    raise ValueError(f"unknown executor {spec.strip()!r}; use one of: {EXECUTOR_USAGE}")
