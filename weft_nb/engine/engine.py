"""The engine: starts, resumes, cancels and reports runs over one journal.

Each run's workflow function runs on its own daemon thread, so ``start`` never blocks a notebook
cell; ``run`` (or ``handle.result()``) waits. Everything durable goes through the journal.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from weft_nb.activity.context import ActivityContext
from weft_nb.activity.heartbeats import HeartbeatFlusher
from weft_nb.activity.storage import CheckpointStorage, storage_from
from weft_nb.base.clock import Clock, RealClock
from weft_nb.base.definitions import ON_CHANGE_POLICIES, Registry, definition_of
from weft_nb.base.payloads import DEFAULT_MAX_PAYLOAD_BYTES
from weft_nb.engine import run_thread, views
from weft_nb.engine.development import DevelopmentChecks, enabled
from weft_nb.engine.events import EventBus, WeftEvent
from weft_nb.engine.inputs import ExternalInputs
from weft_nb.engine.interceptors import Interceptor
from weft_nb.engine.launcher import RunLauncher
from weft_nb.engine.live_runs import LiveRuns
from weft_nb.engine.logs import LoggingInterceptor
from weft_nb.engine.queue_limits import QueueLimits
from weft_nb.engine.run_starting import RunStarting
from weft_nb.engine.runs import RecoveryReport, RunHandle, RunInfo
from weft_nb.engine.runtime import Runtime, open_sidecars, release_at_exit
from weft_nb.engine.snapshot import RunSnapshot
from weft_nb.engine.step_pool import StepPool
from weft_nb.engine.tracing import with_tracing
from weft_nb.executors.base import Executor, ThreadExecutor
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.paths import endpoint_file
from weft_nb.journal.protocol import Journal

if TYPE_CHECKING:  # the REST endpoint (http.server and friends) loads on the first serve()
    from weft_nb.endpoint.server import Server


class Engine(RunStarting):
    """Runs durable workflows over a DuckDB journal.

    Args:
        journal: Path of the journal file (created with its folder when missing), or an open
            `Journal` (such as ``weft_nb.testing.MemoryJournal``),
            which the engine then owns and closes.
        clock: Time source; tests pass a ``VirtualClock`` (see ``weft_nb.testing``).
        on_change: Default policy when a journaled step no longer matches the code on replay:
            ``"rerun"`` (supersede and run again, with a warning) or ``"error"``.
        heartbeat_interval: Seconds between journal writes of buffered heartbeat details.
        checkpoint_keep: Checkpoints kept per step (older ones are deleted).
        checkpoint_storage: Where checkpoint bytes go: None (the default) for the folder beside
            the journal, or a URL such as ``"s3://bucket/prefix"``, ``"gs://bucket/prefix"`` or
            a shared path, through fsspec (the ``s3`` extra); or a
            [`CheckpointStorage`][weft_nb.CheckpointStorage]. Workers write there directly and
            the journal keeps the reference (docs/guides/scaling.md).
        storage_options: Options of the fsspec file system of ``checkpoint_storage``
            (credentials, ``client_kwargs={"endpoint_url": ...}``); they travel to workers.
        max_payload_bytes: Largest input or result stored in the journal.
        idle_release: Seconds without use after which the journal file is released, so other
            processes can read it (the engine keeps its ownership lock).
        max_parallel: Steps of ``ctx.submit``/``ctx.all``/``ctx.race``/``ctx.run_all`` that run
            at once, across all runs.
        queue_limits: Concurrency limits per activity queue, e.g. ``{"gpu": 1}``: attempts of
            that queue running at once, across all runs, whatever the executor. Change them
            later with ``engine.queue_limits.set("gpu", 2)``.
        program: Shown to other processes that find the journal locked (a notebook name).
        executor: Where activity attempts run: [`ThreadExecutor`][weft_nb.ThreadExecutor] (the
            default, in this process), [`ProcessExecutor`][weft_nb.ProcessExecutor] (worker
            processes) or [`DaskExecutor`][weft_nb.DaskExecutor] (a Dask cluster). The journal
            stays here; the engine closes the executor when it closes.
        development: Development mode: warn (``DevelopmentWarning``) about mistakes the engine
            can see; see docs/engine.md. None (the default) follows ``WEFT_NB_DEV=1``.
        interceptors: [`Interceptor`][weft_nb.Interceptor]s that wrap every run, step, attempt
            and `durable_activity` call, outermost first (docs/guides/interceptors.md). The
            engine's logging interceptor comes first while a logging handler would receive its
            records, and OpenTelemetry tracing last when ``opentelemetry-api`` is installed
            (docs/guides/logging-and-tracing.md).
    """

    def __init__(  # noqa: PLR0913 - public: keyword-only options by design
        self,
        journal: str | os.PathLike[str] | Journal = ".weft/journal.duckdb",
        *,
        clock: Clock | None = None,
        on_change: str = "rerun",
        heartbeat_interval: float = 1.0,
        checkpoint_keep: int = 2,
        checkpoint_storage: str | os.PathLike[str] | CheckpointStorage | None = None,
        storage_options: Mapping[str, Any] | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idle_release: float = 1.0,
        max_parallel: int = 4,
        queue_limits: Mapping[str, int] | None = None,
        program: str = "",
        executor: Executor | None = None,
        development: bool | None = None,
        interceptors: Sequence[Interceptor] = (),
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
        storage = storage_from(checkpoint_storage, storage_options)  # checked before the journal
        self.journal: Journal = (
            DuckDBJournal(journal, program=program)
            if isinstance(journal, (str, os.PathLike))
            else journal
        )
        self.checkpoints, self.dispatches = open_sidecars(
            self.journal,
            self.clock,
            keep=checkpoint_keep,
            storage=storage,
        )
        self.flusher = HeartbeatFlusher(self.journal, self.clock, heartbeat_interval, idle_release)
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1; got {max_parallel}")
        self.step_pool = StepPool(max_parallel)
        self.queue_limits = QueueLimits(self.clock, queue_limits)
        self._queue_slots: dict[str, threading.BoundedSemaphore] = {}  # see queue_slot()
        self._live = LiveRuns(
            f"this engine (journal {self.journal.path}) is closed; create a new Engine"
        )
        self._events = EventBus(self.clock)
        self.development = enabled(development)
        self.dev_checks = DevelopmentChecks(self.development, self._events.emit)
        self._servers: list[Server] = []
        chain = with_tracing(interceptors)
        self.runtime = Runtime(
            journal=self.journal,
            clock=self.clock,
            registry=self.registry,
            executor=self.attempts,
            flusher=self.flusher,
            checkpoints=self.checkpoints,
            events=self._events,
            dispatches=self.dispatches,
            step_pool=self.step_pool,
            queue_limits=self.queue_limits,
            dev_checks=self.dev_checks,
            max_payload_bytes=max_payload_bytes,
            interceptors=(LoggingInterceptor(), *chain),
            quiet_interceptors=chain,
        )
        self._inputs = ExternalInputs(self.runtime, self._live)
        self._launcher = RunLauncher(self.runtime, self._live, self.cancel)
        self.runtime.children.bind(self._launcher.start_child, self.cancel, self.interrupt)
        # An engine left open is closed at interpreter exit: heartbeats flushed, journal released.
        self._finalizer = weakref.finalize(
            self, release_at_exit, self.flusher, self.journal, self.dispatches
        )

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop live runs (they stay resumable), flush heartbeats and release the journal."""
        self._shutdown(flush=True)

    @property
    def _closed(self) -> bool:
        return self._live.closed

    def _shutdown(self, *, flush: bool) -> None:
        states = self._live.close()
        if states is None:  # closed already
            return
        if flush:
            # Before the runs stop: a stopped attempt leaves the flusher, taking its details.
            with contextlib.suppress(Exception):
                self.flusher.flush()
        if not flush:  # a (simulated) crash: what the stopped attempts started stays open
            self.dispatches.close(clean=False)
        for state in states:
            self._live.stop(state, "the engine was closed")
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.stop()
        self._finalizer.detach()
        self.runtime.close(flush=flush)

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

    # -- starting (start and run: `RunStarting`) and resuming -----------------------------

    def resume(self, run_id: str) -> RunHandle[Any]:
        """Resume an unfinished run; a finished run's handle returns its recorded outcome."""
        self._live.check_open()
        return self._launcher.resume(run_id)

    def recover_all(self) -> RecoveryReport:
        """Resume every unfinished run whose workflow is registered; report the others by name."""
        return self._launcher.recover_all()

    # -- control and inspection ------------------------------------------------------------

    def interrupt(self, run_id: str) -> bool:
        """Stop a live run as a kernel interrupt does; starting it again resumes it.

        Its activities' ``cancelled`` is set and the run is recorded as ``interrupted`` (not
        failed, so ``recover_all`` and ``start`` with its id resume it).

        Returns False when the run is not live in this engine.
        """
        return run_thread.interrupt(self.runtime, self._live, run_id)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: persist it, then set ``cancelled`` on its in-flight activities.

        Returns False when the run had already finished.
        """
        return self._inputs.cancel(run_id)

    def queue_slot(self, queue: str) -> threading.BoundedSemaphore:
        """Deprecated, unused by the engine: a free-standing semaphore named after ``queue``.

        Queue limits are `queue_limits` (a `QueueLimits`),
        taken around every attempt.
        """
        return self._queue_slots.setdefault(queue, threading.BoundedSemaphore(1_000_000))

    # -- events, views and inputs (delegated) ----------------------------------------------

    def add_listener(self, listener: Callable[[WeftEvent], None]) -> None:
        """Call ``listener(event)`` for every engine event (run and step lifecycle)."""
        self._events.add_listener(listener)

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Send an event to the listeners; a failing listener is reported, never fatal."""
        self._events.emit(kind, run_id, position, **data)

    def runs(self, status: str | None = None) -> list[RunInfo]:
        """Every run in the journal (oldest first), optionally of one status."""
        return views.list_runs(self.journal, self._live, status)

    def snapshot(self, run_id: str) -> RunSnapshot:
        """The run's state now: recorded steps, latest heartbeats and attempts in flight."""
        return views.snapshot(self.journal, self._live, self.clock, run_id)

    def live_attempts(self, run_id: str) -> list[tuple[ActivityContext, int | None]]:
        """The attempts of a run in flight right now, with their ``max_attempts``."""
        return self._live.live_attempts(run_id)

    def is_active(self, run_id: str) -> bool:
        """True while the run executes in this engine."""
        return self._live.is_active(run_id)

    def live_backoff(self, run_id: str) -> tuple[int, float] | None:
        """``(position, retry time)`` while a step of the run waits out a retry backoff."""
        return self._live.backoff(run_id)

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> bool:
        """Send a signal to a run; it is durable when this returns.

        It is buffered until the workflow waits for ``name`` (``ctx.wait_for_signal``), survives
        restarts, and is delivered once: a repeated ``signal_id`` is ignored (returns False).

        Raises:
            RunNotFoundError: No such run.
            RunFinishedError: The run already finished.
            PayloadError: The payload cannot be stored (nothing is written).
        """
        return self._inputs.signal(run_id, name, payload, signal_id=signal_id)

    def complete_async_activity(self, token: str, result: Any = None) -> None:
        """Complete a parked activity (``ActivityContext.complete_async``) with ``result``.

        The token is consumed in the same transaction that records the step's result. A
        completion that arrives before the workflow is waiting again (after a restart) is kept
        and delivered when replay reaches the step.

        Raises:
            AsyncTokenNotFoundError: Unknown token, already used (tokens are single-use), or
                spent: its attempt failed, timed out or died with its process.
            RunFinishedError: The token's run has finished or was cancelled.
            PayloadError: ``result`` cannot be stored; the token is not consumed.
        """
        self._inputs.complete_async_activity(token, result)

    def fail_async_activity(self, token: str, error: BaseException | str) -> None:
        """Fail a parked activity; the workflow's ``ctx.run`` raises ``ActivityFailedError``.

        Raises:
            AsyncTokenNotFoundError: Unknown token, already used, or spent.
            RunFinishedError: The token's run has finished or was cancelled.
            PayloadError: The recorded failure would exceed ``max_payload_bytes`` (a huge error
                message); the token is not consumed, so a shorter failure can still be sent.
        """
        self._inputs.fail_async_activity(token, error)

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth_token: str | None = None,
        allow_unauthenticated: bool = False,
        max_body: int = 1024 * 1024,
    ) -> Server:
        """Serve the REST endpoint from this process (it owns the journal); returns the server.

        Routes: ``POST /api/v1/activities/complete`` (``{"token", "result"}``), ``POST
        /api/v1/activities/fail`` (``{"token", "error"}``), ``GET /api/v1/runs``, ``GET
        /api/v1/runs/{id}``, ``POST /api/v1/runs/{id}/signals/{name}`` (``{"payload",
        "signal_id"}``), ``GET /health``. Loopback by default; ``Authorization: Bearer
        <auth_token>`` is required unless ``allow_unauthenticated=True``. By default the system
        picks a free port (``server.port``; the ``weft-nb`` command finds it through the journal's
        endpoint file); pass ``port=`` for a fixed one. The server stops with the engine.
        """
        from weft_nb.endpoint.server import EndpointSettings, serve

        self._live.check_open()
        settings = EndpointSettings(
            host=host,
            port=port,
            auth_token=auth_token,
            allow_unauthenticated=allow_unauthenticated,
            max_body=max_body,
            discovery_file=endpoint_file(self.journal.sidecar_base),
        )
        server = serve(self, settings)
        self._servers.append(server)
        return server
