"""The engine: starts, resumes, cancels and reports runs over one journal.

Each run's workflow function runs on its own daemon thread, so ``start`` never blocks a notebook
cell; ``run`` (or ``handle.result()``) waits. Everything durable goes through the journal.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from . import _dispatch_log as dispatch_log
from ._activity_context import ActivityContext
from ._checkpoints import CheckpointStore
from ._clock import Clock, RealClock
from ._definitions import (
    ON_CHANGE_POLICIES,
    Registry,
    WorkflowDefinition,
    definition_of,
    make_workflow,
)
from ._development import DevelopmentChecks, enabled
from ._duckdb_journal import DuckDBJournal
from ._engine_views import EngineViews
from ._executors import Executor, ThreadExecutor
from ._external_inputs import ExternalInputs
from ._heartbeats import HeartbeatFlusher
from ._journal import (
    CANCELLED,
    INTERRUPTED,
    RUNNING,
    TERMINAL_STATUSES,
    Journal,
    RunRecord,
    StepRecord,
)
from ._journal_paths import check_run_id
from ._parallel import StepPool
from ._payloads import DEFAULT_MAX_PAYLOAD_BYTES, decode, encode
from ._queue_limits import QueueLimits
from ._run_handle import RecoveryReport, RunHandle, RunState, WeftEvent
from ._run_outcome import drive, recorded_outcome
from ._server import Server
from .errors import (
    JournalClosedError,
    RunNotFoundError,
    WeftError,
    WorkflowNotRegisteredError,
    WorkflowVersionMismatchError,
)


class Engine(EngineViews, ExternalInputs):
    """Runs durable workflows over a DuckDB journal.

    Args:
        journal: Path of the journal file (created with its folder when missing).
        clock: Time source; tests pass a ``VirtualClock`` (see ``weft_nb.testing``).
        on_change: Default policy when a journaled step no longer matches the code on replay:
            ``"rerun"`` (supersede and run again, with a warning) or ``"error"``.
        heartbeat_interval: Seconds between journal writes of buffered heartbeat details.
        checkpoint_keep: Checkpoints kept per step (older ones are deleted).
        max_payload_bytes: Largest input or result stored in the journal.
        idle_release: Seconds without use after which the journal file is released, so other
            processes can read it (the engine keeps its ownership lock).
        max_parallel: Steps of ``ctx.submit``/``ctx.all``/``ctx.race``/``ctx.run_all`` that run
            at once, across all runs.
        queue_limits: Concurrency limits per activity queue, e.g. ``{"gpu": 1}``: attempts of
            that queue running at once, across all runs, whatever the executor. Change them
            later with ``engine.queue_limits.set("gpu", 2)``.
        program: Shown to other processes that find the journal locked (a notebook name).
        executor: Where activity attempts run: :class:`ThreadExecutor` (the default, in this
            process), :class:`ProcessExecutor` (worker processes) or :class:`DaskExecutor` (a
            Dask cluster). The journal stays here; the engine closes the executor when it closes.
        development: Development mode: warn (``DevelopmentWarning``) about mistakes the engine
            can see; see docs/engine.md. None (the default) follows ``WEFT_NB_DEV=1``.
    """

    def __init__(
        self,
        journal: str | os.PathLike[str] = ".weft/journal.duckdb",
        *,
        clock: Clock | None = None,
        on_change: str = "rerun",
        heartbeat_interval: float = 1.0,
        checkpoint_keep: int = 2,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idle_release: float = 1.0,
        max_parallel: int = 4,
        queue_limits: Mapping[str, int] | None = None,
        program: str = "",
        executor: Executor | None = None,
        development: bool | None = None,
    ) -> None:
        if on_change not in ON_CHANGE_POLICIES:
            raise ValueError(f"on_change must be one of {ON_CHANGE_POLICIES}; got {on_change!r}")
        self.clock: Clock = clock or RealClock()
        self.on_change = on_change
        self.max_payload_bytes = max_payload_bytes
        self.registry = Registry()
        self.attempts: Executor = executor or ThreadExecutor()
        self.attempts.check()  # e.g. an unreachable scheduler: fail before the journal exists
        self.attempts.attach(self.clock)
        self.journal: Journal = DuckDBJournal(journal, program=program)
        try:
            self.checkpoints = CheckpointStore(self.journal, self.clock, keep=checkpoint_keep)
            self.checkpoints.remove_orphans()
            # Attempts a dead process left running count as failed before anything resumes.
            dispatch_log.recover(self.journal, self.journal.path + ".dispatch", self.clock.now())
            self.dispatches = dispatch_log.DispatchLog(self.journal.path + ".dispatch")
        except BaseException:
            self.journal.close()  # never keep the journal locked after a failed constructor
            raise
        self.flusher = HeartbeatFlusher(self.journal, self.clock, heartbeat_interval, idle_release)
        self._lock = threading.RLock()
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1; got {max_parallel}")
        self.parallel_slots = threading.BoundedSemaphore(max_parallel)
        self.step_pool = StepPool(max_parallel)
        self.queue_limits = QueueLimits(self.clock, queue_limits)
        self._queue_slots: dict[str, threading.BoundedSemaphore] = {}  # see queue_slot()
        self._launching = threading.RLock()  # serialises resume(); see there
        self._active: dict[str, RunState] = {}
        self._listeners: list[Callable[[WeftEvent], None]] = []
        self.development = enabled(development)
        self.dev_checks = DevelopmentChecks(self.development, self.emit)
        self._closed = False
        self._servers: list[Server] = []
        # An engine left open is closed at interpreter exit: heartbeats flushed, journal released.
        self._finalizer = weakref.finalize(
            self, _close_at_exit, self.flusher, self.journal, self.dispatches
        )

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop live runs (they stay resumable), flush heartbeats and release the journal."""
        self._shutdown(flush=True)

    def _shutdown(self, *, flush: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = list(self._active.values())
        if flush:
            # Before the runs stop: a stopped attempt leaves the flusher, taking its details.
            with contextlib.suppress(Exception):
                self.flusher.flush()
        if not flush:  # a (simulated) crash: what the stopped attempts started stays open
            self.dispatches.close(clean=False)
        for state in states:
            self._stop_state(state, "the engine was closed")
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.stop()
        self._finalizer.detach()
        with contextlib.suppress(Exception):
            self.attempts.close()
        self.checkpoints.drain()
        self.flusher.stop(flush=flush)
        self.dispatches.close(clean=True)  # no-op after a simulated crash closed it
        self.journal.close()

    def _stop_state(self, state: RunState, reason: str) -> None:
        state.stop_reason = reason
        state.stopped = True
        state.cancel_requested.set()
        if state.signal_arrived is not None:
            state.signal_arrived.set()
        for ctx, wake in list(state.live):
            ctx._cancel(reason)
            wake.set()

    # -- registration ----------------------------------------------------------------------

    def register(self, *definitions: Any) -> None:
        """Register decorated activities and workflows (or definitions). Re-registering replaces."""
        for item in definitions:
            definition = definition_of(item)
            if definition is None:
                raise TypeError(
                    f"{item!r} is not an activity or workflow; decorate it with @weft_nb.activity "
                    "or @weft_nb.workflow first"
                )
            if self.registry.add(definition):
                self.emit("definition_replaced", None, None, name=definition.name)

    def _workflow_definition(self, workflow: Any) -> WorkflowDefinition:
        if isinstance(workflow, str):
            found = self.registry.workflow(workflow)
            if found is None:
                raise WorkflowNotRegisteredError(
                    f"workflow {workflow!r} is not registered; registered: "
                    f"{sorted(self.registry.workflows) or 'none'}. Run its cell or "
                    "engine.register() it first.",
                    workflow=workflow,
                )
            return found
        definition = definition_of(workflow) or (
            make_workflow(workflow) if callable(workflow) else None
        )
        if not isinstance(definition, WorkflowDefinition):
            raise TypeError(f"{workflow!r} is not a workflow")
        self.registry.add(definition)
        return definition

    # -- starting and resuming -------------------------------------------------------------

    def start(
        self,
        workflow: Any,
        input: Any = None,
        *,
        run_id: str | None = None,
        on_change: str | None = None,
    ) -> RunHandle:
        """Start a run in the background and return its handle at once.

        With a ``run_id`` that exists, a finished run's handle returns its recorded outcome and an
        unfinished run resumes.

        Raises:
            InvalidRunIdError: ``run_id`` cannot name a run (empty, too long, control characters).
        """
        self._check_open()
        if run_id is not None:
            check_run_id(run_id)  # before anything is written (issue 12.7)
        definition = self._workflow_definition(workflow)
        policy = on_change or self.on_change
        if policy not in ON_CHANGE_POLICIES:
            raise ValueError(f"on_change must be one of {ON_CHANGE_POLICIES}; got {policy!r}")
        codec, data = encode(
            input, what=f"input of workflow {definition.name!r}", max_bytes=self.max_payload_bytes
        )
        with self._launching:
            existing = None if run_id is None else self.journal.get_run(run_id)
            if existing is not None:
                if existing.workflow != definition.name:
                    raise WeftError(
                        f"run {run_id!r} belongs to workflow {existing.workflow!r}, not "
                        f"{definition.name!r}; choose another run id",
                        run_id=run_id,
                    )
                return self._resume(existing.run_id)
            return self._create(definition, run_id or uuid.uuid4().hex[:16], input, policy,
                                codec, data)  # fmt: skip

    def _create(
        self,
        definition: WorkflowDefinition,
        run_id: str,
        input: Any,
        policy: str,
        codec: str,
        data: bytes,
    ) -> RunHandle:
        now = self.clock.now()
        self.journal.create_run(
            RunRecord(
                run_id, definition.name, definition.version, RUNNING, policy, codec, data, now, now
            )
        )
        self.emit("run_started", run_id, None, workflow=definition.name)
        return self._launch(definition, run_id, input, policy, {}, {}, {})

    def run(
        self,
        workflow: Any,
        input: Any = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        on_change: str | None = None,
    ) -> Any:
        """Start (or resume) a run and wait for its result.

        Ctrl-C (``KeyboardInterrupt``) while it waits interrupts the run, as ``%weft run`` does:
        its activities' ``cancelled`` is set, it is recorded as ``interrupted``, and the
        ``KeyboardInterrupt`` is raised again. Starting it again (same ``run_id``) resumes it.
        """
        if run_id is None:  # known here: Ctrl-C may land inside start()
            run_id = uuid.uuid4().hex[:16]
        try:
            return self.start(workflow, input, run_id=run_id, on_change=on_change).result(timeout)
        except KeyboardInterrupt:
            self.interrupt(run_id)  # False (nothing to do) when the run was not launched
            raise

    def resume(self, run_id: str) -> RunHandle:
        """Resume an unfinished run; a finished run's handle returns its recorded outcome."""
        self._check_open()
        # Checking, loading and launching are one step: a second resume of the same run sees it
        # either active or finished in the journal (a run commits its outcome before it leaves
        # the active set), never a stale copy of its steps.
        with self._launching:
            return self._resume(run_id)

    def _resume(self, run_id: str) -> RunHandle:
        with self._lock:
            active = self._active.get(run_id)
        if active is not None and not active.stopped:
            return active.handle
        if active is not None and active.thread is not None:
            # An interrupted execution must be gone before a new one replays the journal.
            active.thread.join(timeout=10)
            if active.thread.is_alive():
                raise WeftError(
                    f"run {run_id!r} is still stopping: an activity of it ignores `cancelled` "
                    "and has not returned yet. Wait for it, then resume again.",
                    run_id=run_id,
                )
        record = self.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in journal {self.journal.path}", run_id=run_id
            )
        if record.status in TERMINAL_STATUSES:
            return self._finished_handle(record)
        definition = self.registry.workflow(record.workflow)
        if definition is None:
            raise WorkflowNotRegisteredError(
                f"run {run_id!r} needs workflow {record.workflow!r}, which is not registered; run "
                "the cells that define it (and its activities), then resume",
                workflow=record.workflow,
                run_id=run_id,
            )
        if definition.version != record.version:
            raise WorkflowVersionMismatchError(
                f"run {run_id!r} was recorded by version {record.version!r} of workflow "
                f"{record.workflow!r}, but version {definition.version!r} is registered. Register "
                "the old version to finish it, or start a new run.",
                run_id=run_id,
            )
        steps = self.journal.load_steps(run_id)
        failed: dict[int, int] = {}
        first: dict[int, float] = {}
        for row in self.journal.query(
            "SELECT position, max(attempt), min(started_at) FROM attempts WHERE run_id = ? "
            "AND NOT superseded GROUP BY position",
            [run_id],
        ):
            failed[row[0]], first[row[0]] = row[1], row[2]
        self.emit("run_resumed", run_id, None, workflow=record.workflow, recorded_steps=len(steps))
        value = decode(
            record.input_codec, record.input, what=f"the recorded input of run {run_id!r}"
        )
        pending = self.journal.pending_async_tokens(run_id)
        return self._launch(
            definition, run_id, value, record.on_change, steps, failed, first, pending
        )

    def _launch(
        self,
        definition: WorkflowDefinition,
        run_id: str,
        value: Any,
        on_change: str,
        steps: dict[int, StepRecord],
        failed: dict[int, int],
        first: dict[int, float],
        pending_tokens: dict[int, str] | None = None,
    ) -> RunHandle:
        handle = RunHandle(self, run_id, definition.name)
        state = RunState(
            run_id,
            definition,
            value,
            on_change,
            self.clock.new_event(),
            handle,
            steps,
            failed,
            first,
        )
        handle._state = state
        state.signal_arrived = self.clock.new_event()
        state.pending_tokens = dict(pending_tokens or {})
        with self._lock:
            self._check_open()
            if run_id in self._active:  # a concurrent start/resume of the same run won
                return self._active[run_id].handle
            self._active[run_id] = state
        acquired = reserved = False
        try:
            self.journal.acquire()
            acquired = True
            self.clock.reserve_participant()
            reserved = True
            # The thread runs in a copy of the caller's context: a notebook cell's output
            # routing (ipykernel keeps it in a ContextVar) follows the run, so whatever the
            # workflow and its activities print lands in the cell that started the run.
            thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(drive, self, state),
                name=f"weft-run-{run_id}",
                daemon=True,
            )
            state.thread = thread
            thread.start()
        except BaseException:  # e.g. Interrupt Kernel right here: leave no half-launched run
            if state.thread is not None and state.thread.ident is not None:
                # Interrupted inside thread.start(), once the run's thread was running: the run
                # is live and its thread cleans up after itself; stop it as an interrupt does.
                self.interrupt(run_id)
                raise
            with self._lock:
                self._active.pop(run_id, None)
            if reserved:
                self.clock.release_participant()
            if acquired:
                self.journal.release()
            raise
        return handle

    def _finished_handle(self, record: RunRecord) -> RunHandle:
        handle = RunHandle(self, record.run_id, record.workflow)
        status, value, error = recorded_outcome(record)
        handle._settle(status, value=value, error=error, replayed=True)
        return handle

    def recover_all(self) -> RecoveryReport:
        """Resume every unfinished run whose workflow is registered; report the others by name."""
        report = RecoveryReport()
        for record in self.journal.list_runs():
            if record.status in TERMINAL_STATUSES or record.run_id in self._active:
                continue
            if self.registry.workflow(record.workflow) is None:
                report.unregistered.setdefault(record.workflow, []).append(record.run_id)
                continue
            report.resumed.append(self.resume(record.run_id))
        if report.unregistered:
            warnings.warn(report.describe_unregistered(), RuntimeWarning, stacklevel=2)
        return report

    # -- control and inspection ------------------------------------------------------------

    def interrupt(self, run_id: str) -> bool:
        """Stop a live run as a kernel interrupt does; starting it again resumes it.

        Its activities' ``cancelled`` is set and the run is recorded as ``interrupted`` (not
        failed, so ``recover_all`` and ``start`` with its id resume it).

        Returns False when the run is not live in this engine.
        """
        with self._lock:
            state = self._active.get(run_id)
        if state is None or state.stopped:
            return False
        self.journal.set_run_status(run_id, INTERRUPTED, self.clock.now())
        self._stop_state(state, "the run was interrupted")
        self.emit("run_interrupted", run_id, None)
        return True

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: persist it, then set ``cancelled`` on its in-flight activities.

        Returns False when the run had already finished.
        """
        self._check_open()
        record = self.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(
                f"no run {run_id!r} in journal {self.journal.path}", run_id=run_id
            )
        if not self.journal.set_run_status(run_id, CANCELLED, self.clock.now()):
            return False  # it finished first
        with self._lock:
            state = self._active.get(run_id)
        if state is not None:
            state.cancel_requested.set()
            if state.signal_arrived is not None:
                state.signal_arrived.set()
            for ctx, wake in list(state.live):
                ctx._cancel("the run was cancelled")
                wake.set()
        self.emit("run_cancelled", run_id, None)
        return True

    def queue_slot(self, queue: str) -> threading.BoundedSemaphore:
        """Deprecated, unused by the engine: a free-standing semaphore named after ``queue``.

        Queue limits are :attr:`queue_limits` (a :class:`~weft_nb._queue_limits.QueueLimits`),
        taken around every attempt.
        """
        with self._lock:
            if queue not in self._queue_slots:
                self._queue_slots[queue] = threading.BoundedSemaphore(1_000_000)
            return self._queue_slots[queue]

    def new_activity_context(
        self, state: RunState, name: str, position: int, attempt: int
    ) -> ActivityContext:
        """Build the context of one attempt."""

        def last_heartbeat() -> Any:
            # Earlier attempts only (a crashed process's included): never this attempt's own.
            if attempt == 1:
                return None
            record = self.journal.latest_heartbeat(state.run_id, position, before_attempt=attempt)
            if record is None:
                return None
            return decode(
                record.codec,
                record.details,
                what=f"the last heartbeat details of step {position} (run {state.run_id!r})",
            )

        return ActivityContext(
            run_id=state.run_id,
            activity_name=name,
            position=position,
            attempt=attempt,
            clock=self.clock,
            checkpoints=self.checkpoints,
            last_heartbeat_loader=last_heartbeat,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError(
                f"this engine (journal {self.journal.path}) is closed; create a new Engine"
            )


def _close_at_exit(
    flusher: HeartbeatFlusher, journal: Journal, dispatches: dispatch_log.DispatchLog
) -> None:
    with contextlib.suppress(Exception):
        flusher.flush()
    with contextlib.suppress(Exception):
        dispatches.close(clean=True)  # an orderly exit, not a crash
    with contextlib.suppress(Exception):
        flusher.stop(flush=True)
    with contextlib.suppress(Exception):
        journal.close()
