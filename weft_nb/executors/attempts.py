"""Running one attempt of an activity, and watching its timeouts.

With the default thread executor (``weft_nb.executors.base``), an attempt with neither a per-attempt
``timeout`` nor a ``heartbeat_timeout`` runs inline on the workflow's thread: nothing needs to
watch it, and it saves a thread hand-off per step. Otherwise it runs on its own daemon thread while
the workflow thread watches two deadlines (`AttemptWatch`, which the process and Dask
executors use too):

- ``timeout``: elapsed-time cap of the attempt (on the monotonic clock, so stepping the system
  clock does not move it). When it passes, the attempt's ``cancelled`` is set
  and the workflow stops waiting. Cancellation is cooperative: code that ignores it runs on in the
  background and its late result is discarded.
- ``heartbeat_timeout``: the longest silence allowed between heartbeats.

Why a CPU-bound (GIL-holding) activity cannot be starved into a false heartbeat timeout:
``heartbeat()`` records its timestamp synchronously on the activity's own thread, so liveness does
not depend on another thread getting the GIL in time. The watchdog only compares timestamps (and
counts the beats a fast loop left without one as alive: `ActivityContext.settle_beats()`). If
the watchdog itself wakes far later than planned (the process was stalled: the GIL held by a long
C call, a GC pause, a suspended laptop), it cannot tell "silent" from "starved", so it grants one
more heartbeat window before failing the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import traceback
from typing import TYPE_CHECKING, Any

from weft_nb.activity.context import CURRENT_ACTIVITY
from weft_nb.base.definitions import call_arguments, defined_at
from weft_nb.base.operational import report
from weft_nb.errors import (
    ActivityHeartbeatTimeoutError,
    ActivityPerAttemptTimeoutError,
    AsyncStyleError,
)

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.clock import Clock
    from weft_nb.base.definitions import ActivityDefinition

_STARVATION_SLACK = 1.0


@dataclasses.dataclass
class AttemptOutcome:
    """What one attempt produced."""

    ok: bool
    value: Any = None
    error: BaseException | None = None
    traceback_text: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptRequest:
    """One attempt for an executor to run: the activity, its input, its context and its limits."""

    definition: ActivityDefinition
    value: Any
    ctx: ActivityContext
    """The attempt's context in the kernel: cancellation, heartbeats, checkpoints, task token."""
    timeout: float | None = None
    """Seconds the attempt may run (the activity's per-attempt ``timeout``); None: no cap."""
    heartbeat_timeout: float | None = None
    """The longest silence allowed between heartbeats; None: not watched."""
    queue: str | None = None
    """The step's queue, for executors that place work by queue."""

    def watch(self, clock: Clock) -> AttemptWatch:
        """The attempt's two deadlines, from now."""
        return AttemptWatch(self.ctx, clock, self.timeout, self.heartbeat_timeout)


def call_activity(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> Any:
    """Call the activity function with the arguments it takes; run coroutines to completion.

    Background checkpoints are on disk before the attempt's outcome is known, so a retry (or a
    resume after a crash that follows) starts from the newest one.
    """
    token = CURRENT_ACTIVITY.set(ctx)
    try:
        if definition.is_async:
            result = asyncio.run(_run_coroutine(definition, value, ctx))
        else:
            args, kwargs = activity_arguments(definition, value, ctx)
            result = refuse_coroutine(definition, definition.fn(*args, **kwargs))
    except BaseException:
        with contextlib.suppress(Exception):  # the activity's own error is the one to report
            ctx.flush_checkpoints()
        raise
    finally:
        CURRENT_ACTIVITY.reset(token)
    try:
        ctx.flush_checkpoints()
    except Exception as exc:  # the step's result is what matters now; keep it
        report(
            f"a background checkpoint of step {ctx.position} (run {ctx.run_id!r}) failed: "
            f"{type(exc).__name__}: {exc}. The step's result is kept.",
            RuntimeWarning,
            stacklevel=2,
            logger="weft_nb.activity",
        )
    return result


def refuse_coroutine(definition: ActivityDefinition, result: Any) -> Any:
    """A sync activity's result; a coroutine (a plain `def` returning one) is refused."""
    if not inspect.iscoroutine(result):
        return result
    result.close()  # no "never awaited" warning on top of the error
    raise AsyncStyleError(
        f"activity {definition.name!r} is a plain `def` but returned a coroutine",
        f"make it `async def {definition.name}(...)` (awaited in the attempt), or run the "
        "coroutine inside it with asyncio.run(...)",
        where=defined_at(definition.fn, definition.name),
    )


def activity_arguments(
    definition: ActivityDefinition, value: Any, ctx: ActivityContext
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What the activity function is called with: its input and, when it takes one, its context.

    An input of None is left out when the parameter has a default, so the default applies.
    """
    return call_arguments(
        definition.fn, arity=min(definition.arity, 2), value=value, context=ctx, context_first=False
    )


async def _run_coroutine(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> Any:
    # Bridge the cooperative ``cancelled`` event to asyncio: cancel the task at its next await.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None

    def cancel_task() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(task.cancel)

    ctx.set_cancel_callback(cancel_task)
    try:
        if ctx.cancelled.is_set():
            task.cancel()
        args, kwargs = activity_arguments(definition, value, ctx)
        return await definition.fn(*args, **kwargs)
    finally:
        ctx.set_cancel_callback(None)


def attempt_outcome(
    definition: ActivityDefinition, value: Any, ctx: ActivityContext
) -> AttemptOutcome:
    """Run the activity here and now; its exception becomes a failed outcome."""
    try:
        return AttemptOutcome(ok=True, value=call_activity(definition, value, ctx))
    except BaseException as exc:
        return AttemptOutcome(ok=False, error=exc, traceback_text=traceback.format_exc())


class AttemptWatch:
    """The two deadlines of one attempt (``timeout`` and ``heartbeat_timeout``).

    Shared by every executor: the thread executor waits on its wake event until
    `remaining()` passes, a remote executor polls its worker's channel for that long; both
    then ask `expired()`, which cancels the attempt and returns its timeout outcome.
    """

    def __init__(
        self,
        ctx: ActivityContext,
        clock: Clock,
        timeout: float | None,
        heartbeat_timeout: float | None,
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        # Monotonic: a system clock stepped back must not push these deadlines out (issue 13.8).
        self.attempt_deadline = None if timeout is None else clock.monotonic() + timeout
        self._planned = 0.0
        self._grace_used = False

    def remaining(self) -> float | None:
        """Seconds until the next deadline (0 when one passed); None when nothing is watched."""
        deadlines = [] if self.attempt_deadline is None else [self.attempt_deadline]
        if self.heartbeat_timeout is not None:
            deadlines.append(self.ctx.last_beat_monotonic + self.heartbeat_timeout)
        if not deadlines:
            return None
        self._planned = min(deadlines)
        return max(0.0, self._planned - self.clock.monotonic())

    def expired(self) -> AttemptOutcome | None:
        """The timeout outcome when a deadline passed (the attempt is cancelled), else None."""
        ctx, now = self.ctx, self.clock.monotonic()
        if self.attempt_deadline is not None and now >= self.attempt_deadline:
            ctx.cancel(f"per-attempt timeout of {self.timeout:g}s passed")
            return timed_out(ctx, ActivityPerAttemptTimeoutError, self.timeout or 0.0)
        limit = self.heartbeat_timeout
        if limit is not None and now >= ctx.last_beat_monotonic + limit:
            ctx.settle_beats()  # beats of a fast loop may not have read the clock yet
        if limit is not None and now >= ctx.last_beat_monotonic + limit:
            if not self._grace_used and now - self._planned > max(_STARVATION_SLACK, limit / 2):
                self._grace_used = True  # the watchdog itself was starved; see module docstring
                ctx.last_beat_monotonic = now
                return None
            ctx.cancel(f"no heartbeat for {limit:g}s")
            return timed_out(ctx, ActivityHeartbeatTimeoutError, limit)
        return None


def timed_out(
    ctx: ActivityContext,
    cls: type[ActivityPerAttemptTimeoutError | ActivityHeartbeatTimeoutError],
    seconds: float,
) -> AttemptOutcome:
    """The failed outcome of an attempt that passed its ``timeout`` or ``heartbeat_timeout``."""
    error = cls(
        seconds=seconds,
        attempts=ctx.attempt,
        run_id=ctx.run_id,
        position=ctx.position,
        activity=ctx.activity_name,
    )
    return AttemptOutcome(ok=False, error=error)
