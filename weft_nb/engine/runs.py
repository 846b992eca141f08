"""Run handles, the in-memory state of live runs, run listings and recovery reports."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Generic

from weft_nb.base.typed_api import ResultT_co
from weft_nb.engine.async_loop import settled
from weft_nb.journal.protocol import RUNNING
from weft_nb.journal.recorded_steps import RecordedSteps

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import WorkflowDefinition
    from weft_nb.journal.protocol import Journal


class RunCompletion:
    """The outcome a run's handle waits for, set once: by the run's thread, or from the journal.

    The run owns it and settles it; the [`RunHandle`][weft_nb.RunHandle] only reads it. ``progress``
    is the live run's state (its replayed and executed step counts), None for a run read from the
    journal.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.status = RUNNING
        self.value: Any = None
        self.error: BaseException | None = None
        self.replayed = False
        self.progress: RunState | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def settle(
        self,
        status: str,
        *,
        value: Any = None,
        error: BaseException | None = None,
        replayed: bool = False,
    ) -> None:
        """Record the outcome and wake every waiter."""
        self.status = status
        self.value = value
        self.error = error
        self.replayed = replayed
        with self._lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the run has its outcome (at once if it has), on that thread."""
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback()


@dataclasses.dataclass(eq=False)
class RunState:
    """The in-memory state of one live run (dropped on close or a simulated restart)."""

    run_id: str
    workflow: WorkflowDefinition
    input_value: Any
    on_change: str
    cancel_requested: threading.Event
    handle: RunHandle[Any]
    completion: RunCompletion
    steps: RecordedSteps = dataclasses.field(default_factory=RecordedSteps.empty)
    failed_attempts: dict[int, int] = dataclasses.field(default_factory=dict)
    first_started: dict[int, float] = dataclasses.field(default_factory=dict)
    live: set[tuple[ActivityContext, threading.Event]] = dataclasses.field(default_factory=set)
    stopped: bool = False
    stop_reason: str = ""
    backoff: tuple[int, float] | None = None  # (position, retry time) while a retry waits
    signal_arrived: threading.Event | None = None  # set by signals, completions, cancel, stop
    signal_waiters: set[threading.Event] = dataclasses.field(default_factory=set)  # and these
    child_ids: dict[str, int] = dataclasses.field(default_factory=dict)  # child id: position
    pending_tokens: dict[int, str] = dataclasses.field(default_factory=dict)
    thread: threading.Thread | None = None  # its run thread, reused by later runs
    exited: threading.Event = dataclasses.field(default_factory=threading.Event)  # thread done
    replayed: int = 0
    executed: int = 0


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One row of ``engine.runs()``."""

    run_id: str
    workflow: str
    status: str
    created_at: float
    updated_at: float
    active: bool
    parent_run_id: str | None = None  # a child workflow's parent run (``ctx.run_workflow``)


@dataclasses.dataclass
class RecoveryReport:
    """What ``engine.recover_all()`` did."""

    resumed: list[RunHandle[Any]] = dataclasses.field(default_factory=list)
    unregistered: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def describe_unregistered(self) -> str:
        """A sentence naming the workflows that blocked recovery of some runs."""
        names = ", ".join(
            f"{name!r} ({len(ids)} run(s))" for name, ids in sorted(self.unregistered.items())
        )
        return (
            f"not resumed, workflow not registered: {names}. Run the cells that define them "
            "(and their activities), then call recover_all() again."
        )


class RunHandle(Generic[ResultT_co]):
    """A started (or recorded) run.

    Generic in the workflow's result for type checkers: ``engine.start(pipeline, params)`` is a
    ``RunHandle[dict[str, float]]`` when ``pipeline`` returns a ``dict[str, float]``, and
    `result()` has that type (``RunHandle[Any]`` for a workflow started by name).

    Args:
        run_id: The run's id.
        workflow: Its workflow's name.
        journal: The journal it is recorded in (read by
            [`wait_for_token()`][weft_nb.RunHandle.wait_for_token]).
        cancel: Cancels a run by id (the engine's ``cancel``).
        completion: The run's outcome, once it has one (settled by the run, read here).
    """

    def __init__(
        self,
        run_id: str,
        workflow: str,
        *,
        journal: Journal,
        cancel: Callable[[str], bool],
        completion: RunCompletion,
    ) -> None:
        self._journal = journal
        self._cancel = cancel
        self._completion = completion
        self._done = completion.done
        self.run_id = run_id
        self.workflow = workflow

    @property
    def replayed_from_journal(self) -> bool:
        """True when the run had finished before: its outcome came from the journal."""
        return self._completion.replayed

    @property
    def status(self) -> str:
        """``running``, ``completed``, ``failed`` or ``cancelled``.

        ``interrupted`` when a crash-loop verdict stopped the run (it stays resumable).
        """
        return self._completion.status

    @property
    def done(self) -> bool:
        """True once the run has an outcome (or its engine stopped)."""
        return self._done.is_set()

    @property
    def replayed_steps(self) -> int:
        """Steps answered from the journal in this execution."""
        progress = self._completion.progress
        return progress.replayed if progress else 0

    @property
    def executed_steps(self) -> int:
        """Steps that ran live in this execution."""
        progress = self._completion.progress
        return progress.executed if progress else 0

    def result(self, timeout: float | None = None) -> ResultT_co:
        """Wait for the run and return its result, or raise its error.

        Raises:
            TimeoutError: The run did not finish within ``timeout`` (real) seconds.
            WorkflowCancelledError: The run was cancelled.
        """
        if not _interruptible_wait(self._done, timeout):
            raise TimeoutError(
                f"run {self.run_id!r} did not finish within {timeout}s; it keeps running"
            )
        if self._completion.error is not None:
            raise self._completion.error
        value: ResultT_co = self._completion.value
        return value

    def __await__(self) -> Generator[Any, None, ResultT_co]:
        """``await handle``: the run's result (or its error), never blocking the event loop.

        For a notebook cell with top-level ``await``: the kernel's loop keeps running while the
        run does. Cancelling the awaiting task leaves the run running (``engine.run_async``
        interrupts it instead).
        """
        if not self._done.is_set():
            yield from settled(self._completion.add_done_callback).__await__()
        return self.result()

    def add_done_callback(self, callback: Callable[[RunHandle[ResultT_co]], None]) -> None:
        """Call ``callback(handle)`` once the run has an outcome (or its execution stopped).

        At once when it has one already; otherwise on the run's own thread, right after the
        outcome is journaled: keep it short, and let it not raise (what it raises is lost).
        """

        def call() -> None:
            with contextlib.suppress(Exception):
                callback(self)

        self._completion.add_done_callback(call)

    def wait_for_token(self, timeout: float = 30.0) -> str:
        """Wait until a step of this run parks on ``activity.complete_async()``; its token.

        Waits up to ``timeout`` real seconds. When several steps are parked, the earliest
        step's token is returned.

        Raises:
            TimeoutError: No step parked within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            pending = self._journal.pending_async_tokens(self.run_id)
            if pending:
                return pending[min(pending)]
            if self._done.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"no step of run {self.run_id!r} is waiting for a completion")
            self._done.wait(0.02)

    def cancel(self) -> bool:
        """Cancel this run (as ``engine.cancel(run_id)`` does)."""
        return self._cancel(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle {self.workflow!r} run_id={self.run_id!r} status={self.status!r}>"


_WAKE_EVERY = 0.1


def _interruptible_wait(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)`` in short slices, so Ctrl-C is seen at once.

    A SIGINT may be delivered to any thread of the process (a Jupyter kernel has many); Python then
    runs its handler only when the main thread next runs bytecode, which a single long wait on a
    lock would postpone until the run ends.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _WAKE_EVERY if deadline is None else min(_WAKE_EVERY, deadline - time.monotonic())
        if event.wait(max(left, 0.0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
