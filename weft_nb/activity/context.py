"""What a running activity sees: heartbeats, checkpoints, cancellation, attempt information."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from weft_nb.errors import WorkflowCancelledError

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeAlias

    from weft_nb.activity.background import BackgroundWriter
    from weft_nb.activity.checkpoints import CheckpointStore
    from weft_nb.activity.storage import CheckpointStorage
    from weft_nb.base.clock import Clock
    from weft_nb.base.typed_api import InputT, ResultT
    from weft_nb.journal.protocol import CheckpointRecord

_NOT_LOADED: Any = object()

_FAST_BEAT = 50e-6
"""Beats closer than this (seconds, on average) read the clock only every few calls."""
_MAX_STRIDE = 64
"""At most this many beats between clock readings: 64 x 50 us = 3.2 ms of lag at worst."""

CURRENT_ACTIVITY: contextvars.ContextVar[ActivityContext | None] = contextvars.ContextVar(
    "weft_current_activity", default=None
)
"""The context of the activity running in this thread or task (executors set it around a call)."""


class EngineStopped(BaseException):
    """Raised inside a workflow thread whose engine closed (or simulated a crash)."""


class CompleteAsync(BaseException):
    """Raised by ``ActivityContext.complete_async()``: park the step until its token completes."""


def current_activity() -> ActivityContext:
    """The context of the activity running in this thread (or task).

    A training helper deep in a call stack can heartbeat or checkpoint without being passed the
    context. Raises ``RuntimeError`` outside an activity.
    """
    ctx = CURRENT_ACTIVITY.get()
    if ctx is None:
        raise RuntimeError(
            "weft_nb.current_activity() was called outside an activity; call it from code that "
            "an activity runs"
        )
    return ctx


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptIdentity:
    """Which attempt of which step an [`ActivityContext`][weft_nb.ActivityContext] serves."""

    run_id: str
    activity_name: str
    position: int
    attempt: int


class ActivityContext:
    """Passed to an activity as its second parameter (and returned by ``current_activity()``).

    Attributes:
        run_id: The workflow run.
        activity_name: The activity's registered name.
        position: The step's position in the workflow.
        attempt: 1 for the first attempt, 2 for the first retry, and so on.
        cancelled: A ``threading.Event`` set when the run is cancelled or this attempt timed out.
            Check it in loops, or call
            [`raise_if_cancelled()`][weft_nb.ActivityContext.raise_if_cancelled].
    """

    # heartbeat() reads the clock only when the count reaches `_stamp_at` (see `_stamp`). Class
    # defaults, so a subclass with its own __init__ (a worker's context) starts right; a virtual
    # clock is read on every beat (`_adaptive` false), so tests see exact times.
    _adaptive = True
    _stamp_at = 1
    _stride = 1
    _stamped_count = 0
    last_beat_monotonic: float
    _wall_offset: float

    def __init__(
        self,
        identity: AttemptIdentity,
        *,
        clock: Clock,
        checkpoints: CheckpointStore,
        last_heartbeat_loader: Callable[[], Any],
    ) -> None:
        self.run_id = identity.run_id
        self.activity_name = identity.activity_name
        self.position = identity.position
        self.attempt = identity.attempt
        self.cancelled: threading.Event = clock.new_event()
        self.cancel_reason = ""
        self._clock = clock
        self._monotonic = clock.monotonic  # bound once: heartbeat() is on a training loop's path
        self._checkpoints = checkpoints
        self._last_heartbeat_loader = last_heartbeat_loader
        self._last_heartbeat: Any = _NOT_LOADED
        self._last_checkpoint: Any = _NOT_LOADED
        self._background: BackgroundWriter | None = None
        self._on_cancel: Callable[[], None] | None = None
        self._register_token: Callable[[str], None] | None = None  # set_token_registrar
        self._on_last_heartbeat_read: Callable[[Any], None] | None = None  # development mode
        self._token_registered = False  # see token_handed_out
        # Written by heartbeat() on the activity's thread and read by the flusher and watchdog.
        # Plain attribute stores are atomic under the GIL, so no lock sits on the hot path.
        self.details: Any = None
        self.heartbeat_count = 0
        self.first_heartbeat_at: float | None = None
        self._adaptive = clock.monotonic is time.monotonic
        self.restart_watch()
        self.scheduled_at = self.started_at  # before any wait for a queue slot (queue wait time)
        self.max_attempts: int | None = None  # set by the engine; shown as "attempt k/max"

    def heartbeat(self, details: Any = None) -> None:
        """Report liveness and progress; cheap enough for every batch of a training loop.

        The details are kept in memory and written to the journal by a background thread at most
        once per heartbeat interval, and when the attempt ends. The object is serialised then, not
        now: pass a fresh dict (``{"epoch": 3, "loss": 0.12}``) rather than one you keep mutating.
        """
        # Two stores and a compare: the clock is read by `_stamp` only every few beats when they
        # come microseconds apart (a 10 us training batch), on every beat otherwise.
        if details is not None:
            self.details = details
        count = self.heartbeat_count + 1
        self.heartbeat_count = count
        if count >= self._stamp_at:
            self._stamp(count)

    def _stamp(self, count: int) -> None:
        # One clock reading, monotonic: the watchdog compares it, so a system clock stepped back
        # cannot fake silence (or liveness); the wall time is derived when someone asks.
        now = self._monotonic()
        if self._stamped_count == 0:
            self.first_heartbeat_at = now + self._wall_offset
        fast = now - self.last_beat_monotonic < _FAST_BEAT * (count - self._stamped_count)
        self.last_beat_monotonic = now
        self._stamped_count = count
        stride = min(self._stride * 2, _MAX_STRIDE) if fast and self._adaptive else 1
        self._stride = stride
        self._stamp_at = count + stride

    def settle_beats(self) -> None:
        """Date the beats that `heartbeat()` left unstamped to now (watchdog, flusher).

        Beats less than `_FAST_BEAT` apart read the clock only every few calls. When the loop then
        slows down or stops, its last few beats have no time of their own; they happened after
        the latest stamp and before now, and now is the choice that never fakes silence.
        """
        count = self.heartbeat_count
        if count != self._stamped_count:
            now = self._monotonic()
            if self._stamped_count == 0:
                self.first_heartbeat_at = now + self._wall_offset
            self.last_beat_monotonic = now
            self._stamped_count = count
            self._stride = 1
            self._stamp_at = count + 1

    def restart_watch(self) -> None:
        """Start the attempt's clocks (again, when it waited for a queue slot before it ran)."""
        self.started_at = self._clock.now()
        self.last_beat_monotonic = self._monotonic()
        self._wall_offset = self.started_at - self.last_beat_monotonic

    @property
    def last_heartbeat_at(self) -> float:
        """Wall time of the latest heartbeat (or of the attempt's start).

        The attempt's wall-clock start plus the monotonic time elapsed since, so a stepped
        system clock cannot move it.
        """
        return self.last_beat_monotonic + self._wall_offset

    @last_heartbeat_at.setter
    def last_heartbeat_at(self, value: float) -> None:
        self.last_beat_monotonic = value - self._wall_offset

    @property
    def heartbeat_age(self) -> float:
        """Seconds since the latest heartbeat (or the attempt's start), on the engine clock."""
        return self._monotonic() - self.last_beat_monotonic

    @property
    def last_heartbeat_details(self) -> Any:
        """The latest heartbeat details recorded by an earlier attempt of this step, or None.

        Durable: after a crash the next attempt, in a new process, still sees them (with at most
        one heartbeat interval of lag).
        """
        if self._last_heartbeat is _NOT_LOADED:
            self._last_heartbeat = self._last_heartbeat_loader()
        if self._on_last_heartbeat_read is not None:
            self._on_last_heartbeat_read(self._last_heartbeat)
        return self._last_heartbeat

    def checkpoint(self, state: Any, *, background: bool = False) -> None:
        """Save ``state`` (any picklable object) durably; returns once it is on disk.

        The latest few checkpoints of the step are kept (``Engine(checkpoint_keep=...)``). A crash
        during the write leaves the previous checkpoint intact.

        With ``background=True`` it returns once ``state`` is pickled into memory (a snapshot)
        and the file is written on another thread, so the training loop pays only for the
        snapshot. A snapshot still waiting when a newer one arrives is dropped. The attempt's end
        (and [`last_checkpoint`][weft_nb.ActivityContext.last_checkpoint]) waits for the write; a
        failed write is raised by the next ``checkpoint()`` call.
        """
        if not background:
            self.flush_checkpoints()
            self._checkpoints.save(self.run_id, self.position, self.attempt, state)
        else:
            data = self._checkpoints.snapshot(self.run_id, self.position, state)
            if self._background is None:
                from weft_nb.activity.background import BackgroundWriter

                self._background = BackgroundWriter(
                    self._checkpoints, self.run_id, self.position, self.attempt
                )
            self._background.submit(data)
        self._last_checkpoint = _NOT_LOADED  # the next read sees the new one

    @property
    def checkpoint_storage(self) -> CheckpointStorage | None:
        """Where this step's checkpoints go; None for the folder beside the journal."""
        storage: CheckpointStorage | None = getattr(self._checkpoints, "storage", None)
        return storage

    def checkpoint_records(self) -> list[CheckpointRecord]:
        """The journal rows of this step's checkpoints, newest first (for a worker to read)."""
        self.flush_checkpoints()
        return self._checkpoints.records(self.run_id, self.position)

    def flush_checkpoints(self) -> None:
        """Wait until background checkpoints are on disk; raise a failed write's error."""
        if self._background is not None:
            self._background.flush()

    @property
    def last_checkpoint(self) -> Any:
        """The newest checkpoint of this step (from any attempt, any process), or None."""
        if self._last_checkpoint is _NOT_LOADED:
            self.flush_checkpoints()
            self._last_checkpoint = self._checkpoints.load_latest(self.run_id, self.position)
        return self._last_checkpoint

    @property
    def task_token(self) -> str:
        """This attempt's out-of-band completion token (deterministic, not a secret).

        Reading it journals the token first, so it can be handed to another system (a webhook,
        a person) before ``complete_async()`` and a fast completion is still accepted.
        """
        token = f"async-act:v1:{self.run_id}:{self.position}:{self.attempt}"
        if not self._token_registered and self._register_token is not None:
            self._register_token(token)
            self._token_registered = True
        return token

    def complete_async(self) -> NoReturn:
        """Park the step until its token is completed or failed from outside.

        ``engine.complete_async_activity(token, result)`` completes it and
        ``engine.fail_async_activity(token, error)`` fails it.

        The token (``task_token``) is journaled before the workflow waits, so a completion that
        arrives after a restart, even before the run is resumed, is kept and used.
        """
        raise CompleteAsync

    def raise_if_cancelled(self) -> None:
        """Raise ``WorkflowCancelledError`` if the run was cancelled or this attempt timed out."""
        if self.cancelled.is_set():
            raise WorkflowCancelledError(
                self.run_id,
                activity=self.activity_name,
                position=self.position,
                reason=self.cancel_reason,
            )

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on cancellation; True when cancelled. Follows a virtual clock."""
        return self.cancelled.wait(seconds)

    # -- the engine's and executors' side -------------------------------------------------

    def cancel(self, reason: str) -> None:
        """Ask this attempt to stop: set `cancelled` with ``reason`` (once).

        The engine calls it when the run is cancelled or stopped, executors when the attempt's
        timeout or heartbeat timeout passes; the activity sees it through `cancelled`,
        [`raise_if_cancelled()`][weft_nb.ActivityContext.raise_if_cancelled] or, for a coroutine
        activity, a cancelled task.
        """
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()
            callback = self._on_cancel
            if callback is not None:
                callback()

    def set_cancel_callback(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` on `cancel()` (a coroutine activity's runner cancels its task)."""
        self._on_cancel = callback

    def set_token_registrar(self, register: Callable[[str], None]) -> None:
        """Journal the task token with ``register(token)`` when `task_token` is first read."""
        self._register_token = register

    @property
    def token_handed_out(self) -> bool:
        """True once [`task_token`][weft_nb.ActivityContext.task_token] was read, and so journaled.

        The attempt's outcome must then consume the token, or an outside completion settles the
        step instead.
        """
        return self._token_registered

    def set_heartbeat_read_hook(self, hook: Callable[[Any], None] | None) -> None:
        """Call ``hook(details)`` on each read of `last_heartbeat_details` (development)."""
        self._on_last_heartbeat_read = hook


if TYPE_CHECKING:  # the shapes the typed API accepts (weft_nb.base.typed_api), for type checkers
    ActivityFn: TypeAlias = (
        Callable[[InputT], ResultT] | Callable[[InputT, ActivityContext], ResultT]
    )
    """An activity ``(input)`` or ``(input, activity_context)`` returning ``ResultT``.

    Only these two shapes: at runtime a second positional parameter always receives the
    ``ActivityContext``, so a function whose second parameter wants anything else is refused.
    """

    AsyncActivityFn: TypeAlias = (
        Callable[[InputT], Awaitable[ResultT]]
        | Callable[[InputT, ActivityContext], Awaitable[ResultT]]
    )
    """An ``async def`` activity of either shape: the step's result is what it returns."""
