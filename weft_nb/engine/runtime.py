"""The services a run needs, handed down to run code instead of the engine itself.

The engine builds one `Runtime` when it opens and gives it to every run's thread and
[`WorkflowContext`][weft_nb.WorkflowContext] (as ``ctx.runtime``). Run code reaches
the journal, the clock, the executor and the rest through it, and never imports the engine: so
the engine's public face can depend on run code without a circle back (as Temporal's activity
``_Context`` is filled in by the worker, which ``activity.py`` never imports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any

from weft_nb.activity.checkpoints import CheckpointStore
from weft_nb.activity.context import ActivityContext, AttemptIdentity
from weft_nb.activity.heartbeats import HeartbeatFlusher
from weft_nb.activity.storage import CheckpointStorage
from weft_nb.base.clock import Clock
from weft_nb.base.definitions import Registry
from weft_nb.base.payloads import decode
from weft_nb.engine import interceptors
from weft_nb.engine.child_links import ChildRuns
from weft_nb.engine.circuit_breakers import CircuitBreakers
from weft_nb.engine.development import DevelopmentChecks
from weft_nb.engine.events import EventBus
from weft_nb.engine.interceptors import Interceptor
from weft_nb.engine.logs import log_event, logging_on
from weft_nb.engine.queue_limits import QueueLimits
from weft_nb.engine.run_threads import RunThreads
from weft_nb.engine.step_pool import StepPool
from weft_nb.executors.attempts import AttemptOutcome, AttemptRequest
from weft_nb.executors.base import Executor
from weft_nb.journal import dispatch_log
from weft_nb.journal.dispatch_log import DispatchLog
from weft_nb.journal.protocol import Journal


@dataclasses.dataclass(frozen=True, eq=False)
class Runtime:
    """One engine's services, shared by all its runs (built once, never replaced).

    Attributes:
        journal: Where everything durable is written.
        clock: The time source (a ``VirtualClock`` in tests).
        registry: Registered activities and workflows.
        executor: Where activity attempts run (the engine's ``attempts``).
        flusher: Buffers heartbeat details and writes them to the journal.
        checkpoints: Activity checkpoints beside the journal.
        events: The engine's listeners; see `emit()`.
        dispatches: Attempts started and not yet finished, for crash-loop counting.
        step_pool: Threads for ``ctx.submit``/``all``/``race``/``run_all``: ``max_parallel`` of
            them at most, which bounds the parallel steps in flight across all runs.
        queue_limits: Concurrency limits per activity queue.
        dev_checks: Development-mode warnings (inactive unless development mode is on).
        max_payload_bytes: Largest input or result stored in the journal.
        interceptors: The whole interceptor chain, outermost first: the built-in logging
            interceptor, then the user's (``Engine(interceptors=...)``), then tracing.
        quiet_interceptors: The same chain without the logging interceptor, used while the
            ``weft_nb`` loggers reach no handler (`logs.logging_on()`): often empty, so free.
        children: Starts, cancels and interrupts child workflows' runs (bound by the engine).
        run_threads: The threads that run workflow functions, reused from run to run.
        breakers: The activities' circuit breakers, shared by all runs (built here, from the
            journal and the clock).
    """

    journal: Journal
    clock: Clock
    registry: Registry
    executor: Executor
    flusher: HeartbeatFlusher
    checkpoints: CheckpointStore
    events: EventBus
    dispatches: DispatchLog
    step_pool: StepPool
    queue_limits: QueueLimits
    dev_checks: DevelopmentChecks
    max_payload_bytes: int
    interceptors: tuple[Interceptor, ...] = ()
    quiet_interceptors: tuple[Interceptor, ...] = ()
    children: ChildRuns = dataclasses.field(default_factory=ChildRuns)
    run_threads: RunThreads = dataclasses.field(default_factory=RunThreads)
    breakers: CircuitBreakers = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        # Frozen: the one assignment, at construction, so the engine need not build it.
        object.__setattr__(self, "breakers", CircuitBreakers(self.journal, self.clock))

    def interceptor_chain(self) -> tuple[Interceptor, ...]:
        """The interceptors that wrap run code now (`weft_nb.engine.interceptors`).

        Without a logging handler the logging interceptor is left out, and so is any interceptor
        that is not `Interceptor.active()` (tracing with no provider): often none is left.
        """
        chain = self.interceptors if logging_on() else self.quiet_interceptors
        for each in chain:  # a loop, not all(generator): asked twice per step
            if not each.active():
                return tuple(each for each in chain if each.active())
        return chain

    def run_attempt(self, request: AttemptRequest, wake: threading.Event) -> AttemptOutcome | None:
        """Run one attempt on the executor, through the interceptors' attempt hooks."""
        return interceptors.around_attempt(self, request, wake)

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Send an engine event to the listeners (see `EventBus`), and log the ones with no hook."""
        log_event(kind, run_id, position, data)
        self.events.emit(kind, run_id, position, **data)

    def new_activity_context(
        self, run_id: str, name: str, position: int, attempt: int
    ) -> ActivityContext:
        """Build the context of one attempt of step ``position`` of run ``run_id``."""
        journal = self.journal

        def last_heartbeat() -> Any:
            # Earlier attempts only (a crashed process's included): never this attempt's own.
            if attempt == 1:
                return None
            record = journal.latest_heartbeat(run_id, position, before_attempt=attempt)
            if record is None:
                return None
            return decode(
                record.codec,
                record.details,
                what=f"the last heartbeat details of step {position} (run {run_id!r})",
            )

        return ActivityContext(
            AttemptIdentity(run_id=run_id, activity_name=name, position=position, attempt=attempt),
            clock=self.clock,
            checkpoints=self.checkpoints,
            last_heartbeat_loader=last_heartbeat,
        )

    def close(self, *, flush: bool) -> None:
        """Close the services once the runs stopped: executor, checkpoints, heartbeats, journal.

        With ``flush=False`` (a simulated crash) the buffered heartbeat details are dropped.
        """
        self.run_threads.close()
        with contextlib.suppress(Exception):
            self.executor.close()
        self.checkpoints.drain()
        self.flusher.stop(flush=flush)
        self.dispatches.close(clean=True)  # no-op after a simulated crash closed it
        self.journal.close()


def open_sidecars(
    journal: Journal, clock: Clock, *, keep: int, storage: CheckpointStorage | None = None
) -> tuple[CheckpointStore, DispatchLog]:
    """The journal's checkpoint store and dispatch log, once a dead process's leftovers are settled.

    Orphaned checkpoint files (and storage objects older than its grace) are removed, and
    attempts a dead process left running count as failed before anything resumes. If that fails
    the journal is closed: a failed engine constructor never keeps the journal locked.
    """
    try:
        checkpoints = CheckpointStore(journal, clock, keep=keep, storage=storage)
        checkpoints.remove_orphans()
        dispatches = journal.sidecar_base + ".dispatch"
        dispatch_log.recover(journal, dispatches, clock.now())
        return checkpoints, DispatchLog(dispatches)
    except BaseException:
        journal.close()
        raise


def release_at_exit(flusher: HeartbeatFlusher, journal: Journal, dispatches: DispatchLog) -> None:
    """Flush heartbeats and release the journal of an engine left open (a ``weakref.finalize``).

    Takes the services, not the engine or its runtime, so the finalizer keeps neither alive.
    """
    with contextlib.suppress(Exception):
        flusher.flush()
    with contextlib.suppress(Exception):
        dispatches.close(clean=True)  # an orderly exit, not a crash
    with contextlib.suppress(Exception):
        flusher.stop(flush=True)
    with contextlib.suppress(Exception):
        journal.close()
