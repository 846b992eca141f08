"""Run handles, the in-memory state of live runs, run listings, recovery reports, events."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

from ._journal import RUNNING

if TYPE_CHECKING:
    from ._activity_context import ActivityContext
    from ._definitions import WorkflowDefinition
    from ._engine import Engine
    from ._journal import StepRecord


@dataclasses.dataclass(eq=False)
class RunState:
    """The in-memory state of one live run (dropped on close or a simulated restart)."""

    run_id: str
    workflow: WorkflowDefinition
    input_value: Any
    on_change: str
    cancel_requested: threading.Event
    handle: RunHandle
    steps: dict[int, StepRecord] = dataclasses.field(default_factory=dict)
    failed_attempts: dict[int, int] = dataclasses.field(default_factory=dict)
    first_started: dict[int, float] = dataclasses.field(default_factory=dict)
    live: set[tuple[ActivityContext, threading.Event]] = dataclasses.field(default_factory=set)
    stopped: bool = False
    stop_reason: str = ""
    backoff: tuple[int, float] | None = None  # (position, retry time) while a retry waits
    signal_arrived: threading.Event | None = None  # set by signals, completions, cancel, stop
    pending_tokens: dict[int, str] = dataclasses.field(default_factory=dict)
    thread: threading.Thread | None = None
    replayed: int = 0
    executed: int = 0


@dataclasses.dataclass(frozen=True)
class WeftEvent:
    """Something that happened in the engine, for listeners (widgets, logs, tests)."""

    kind: str
    run_id: str | None
    position: int | None
    at: float
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One row of ``Engine.runs()``."""

    run_id: str
    workflow: str
    status: str
    created_at: float
    updated_at: float
    active: bool


@dataclasses.dataclass
class RecoveryReport:
    """What ``Engine.recover_all()`` did."""

    resumed: list[RunHandle] = dataclasses.field(default_factory=list)
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


class RunHandle:
    """A started (or recorded) run."""

    def __init__(self, engine: Engine, run_id: str, workflow: str) -> None:
        self._engine = engine
        self.run_id = run_id
        self.workflow = workflow
        self._state: RunState | None = None
        self._done = threading.Event()
        self._status = RUNNING
        self._value: Any = None
        self._error: BaseException | None = None
        self.replayed_from_journal = False

    def _settle(
        self,
        status: str,
        *,
        value: Any = None,
        error: BaseException | None = None,
        replayed: bool = False,
    ) -> None:
        self._status = status
        self._value = value
        self._error = error
        self.replayed_from_journal = replayed
        self._done.set()

    @property
    def status(self) -> str:
        """``running``, ``completed``, ``failed`` or ``cancelled``.

        ``interrupted`` when a crash-loop verdict stopped the run (it stays resumable).
        """
        return self._status

    @property
    def done(self) -> bool:
        """True once the run has an outcome (or its engine stopped)."""
        return self._done.is_set()

    @property
    def replayed_steps(self) -> int:
        """Steps answered from the journal in this execution."""
        return self._state.replayed if self._state else 0

    @property
    def executed_steps(self) -> int:
        """Steps that ran live in this execution."""
        return self._state.executed if self._state else 0

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run and return its result, or raise its error.

        Raises:
            TimeoutError: The run did not finish within ``timeout`` (real) seconds.
            WorkflowCancelledError: The run was cancelled.
        """
        if not _interruptible_wait(self._done, timeout):
            raise TimeoutError(
                f"run {self.run_id!r} did not finish within {timeout}s; it keeps running"
            )
        if self._error is not None:
            raise self._error
        return self._value

    def wait_for_token(self, timeout: float = 30.0) -> str:
        """Wait until a step of this run parks on ``activity.complete_async()``; its token.

        Waits up to ``timeout`` real seconds. When several steps are parked, the earliest
        step's token is returned.

        Raises:
            TimeoutError: No step parked within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            pending = self._engine.journal.pending_async_tokens(self.run_id)
            if pending:
                return pending[min(pending)]
            if self._done.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"no step of run {self.run_id!r} is waiting for a completion")
            self._done.wait(0.02)

    def cancel(self) -> bool:
        """Cancel this run (see ``Engine.cancel``)."""
        return self._engine.cancel(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle {self.workflow!r} run_id={self.run_id!r} status={self._status!r}>"


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
