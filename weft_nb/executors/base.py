"""Where activity attempts run: the executor interface and the default thread executor.

The engine hands every attempt to its executor (``Engine(executor=...)``). The executor runs the
activity and returns its `AttemptOutcome`; everything durable
(the journal, heartbeat flushing, checkpoint files, retries) stays in the kernel whatever the
executor. [`ThreadExecutor`][weft_nb.ThreadExecutor] runs attempts in this process; the remote
executors (`weft_nb.executors.remote`) run them elsewhere and feed what the activity reports
(heartbeats, checkpoints, task-token reads) into the kernel's own ``ActivityContext``.

This module knows no other executor: `weft_nb.executors.spec` is the one place that names
them all.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING

from weft_nb.executors.attempts import AttemptOutcome, AttemptRequest, attempt_outcome

if TYPE_CHECKING:
    from weft_nb.base.clock import Clock


class Executor:
    """Runs the attempts of an engine's activities. Subclasses implement `run()`."""

    clock: Clock

    def check(self) -> None:
        """Raise a ``WeftError`` if the executor cannot run anything (before the journal opens)."""

    def attach(self, clock: Clock) -> None:
        """Called by the engine that uses this executor."""
        self.clock = clock

    def run(self, attempt: AttemptRequest, wake: threading.Event) -> AttemptOutcome | None:
        """Run one attempt; None means the run was cancelled (or stopped) while it ran.

        ``wake`` is set when the run is cancelled or stopped; ``attempt.ctx.cancelled`` says so
        too.
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

    def run(self, attempt: AttemptRequest, wake: threading.Event) -> AttemptOutcome | None:
        """Run one attempt here; see `Executor.run()`."""
        definition, value, ctx = attempt.definition, attempt.value, attempt.ctx
        if attempt.timeout is None and attempt.heartbeat_timeout is None:
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
        watch = attempt.watch(clock)
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
