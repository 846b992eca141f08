"""Running one attempt of an activity, and watching its timeouts.

An attempt with neither a per-attempt ``timeout`` nor a ``heartbeat_timeout`` runs inline on the
workflow's thread: nothing needs to watch it, and it saves a thread hand-off per step. Otherwise it
runs on its own daemon thread while the workflow thread watches two deadlines:

- ``timeout``: wall-clock cap of the attempt. When it passes, the attempt's ``cancelled`` is set
  and the workflow stops waiting. Cancellation is cooperative: code that ignores it runs on in the
  background and its late result is discarded.
- ``heartbeat_timeout``: the longest silence allowed between heartbeats.

Why a CPU-bound (GIL-holding) activity cannot be starved into a false heartbeat timeout:
``heartbeat()`` records its timestamp synchronously on the activity's own thread, so liveness does
not depend on another thread getting the GIL in time. The watchdog only compares timestamps. If
the watchdog itself wakes far later than planned (the process was stalled: the GIL held by a long
C call, a GC pause, a suspended laptop), it cannot tell "silent" from "starved", so it grants one
more heartbeat window before failing the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import threading
import traceback
import warnings
from typing import TYPE_CHECKING, Any

from ._activity_context import _current
from .errors import ActivityHeartbeatTimeoutError, ActivityPerAttemptTimeoutError

if TYPE_CHECKING:
    from ._activity_context import ActivityContext
    from ._clock import Clock
    from ._definitions import ActivityDefinition

_STARVATION_SLACK = 1.0


@dataclasses.dataclass
class AttemptOutcome:
    """What one attempt produced."""

    ok: bool
    value: Any = None
    error: BaseException | None = None
    traceback_text: str = ""


def call_activity(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> Any:
    """Call the activity function with the arguments it takes; run coroutines to completion.

    Background checkpoints are on disk before the attempt's outcome is known, so a retry (or a
    resume after a crash that follows) starts from the newest one.
    """
    token = _current.set(ctx)
    try:
        if definition.is_async:
            result = asyncio.run(_run_coroutine(definition, value, ctx))
        elif definition.arity >= 2:
            result = definition.fn(value, ctx)
        elif definition.arity == 1:
            result = definition.fn(value)
        else:
            result = definition.fn()
    except BaseException:
        with contextlib.suppress(Exception):  # the activity's own error is the one to report
            ctx.flush_checkpoints()
        raise
    finally:
        _current.reset(token)
    try:
        ctx.flush_checkpoints()
    except Exception as exc:  # the step's result is what matters now; keep it
        warnings.warn(
            f"a background checkpoint of step {ctx.position} (run {ctx.run_id!r}) failed: "
            f"{type(exc).__name__}: {exc}. The step's result is kept.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


async def _run_coroutine(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> Any:
    # Bridge the cooperative ``cancelled`` event to asyncio: cancel the task at its next await.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None

    def cancel_task() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(task.cancel)

    ctx._on_cancel = cancel_task
    try:
        if ctx.cancelled.is_set():
            task.cancel()
        args = (value, ctx) if definition.arity >= 2 else (value,) if definition.arity == 1 else ()
        return await definition.fn(*args)
    finally:
        ctx._on_cancel = None


def _outcome(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> AttemptOutcome:
    try:
        return AttemptOutcome(ok=True, value=call_activity(definition, value, ctx))
    except BaseException as exc:
        return AttemptOutcome(ok=False, error=exc, traceback_text=traceback.format_exc())


class AttemptRunner:
    """Runs attempts for one engine and watches their deadlines."""

    def __init__(self, clock: Clock) -> None:
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
    ) -> AttemptOutcome | None:
        """Run one attempt; None means the workflow was woken by cancellation first."""
        if timeout is None and heartbeat_timeout is None:
            return _outcome(definition, value, ctx)
        result: list[AttemptOutcome] = []

        def target() -> None:
            self.clock.bind_participant()
            try:
                result.append(_outcome(definition, value, ctx))
                wake.set()
            finally:
                self.clock.release_participant()

        self.clock.reserve_participant()
        thread = threading.Thread(
            target=contextvars.copy_context().run,  # output routing follows; see Engine._launch
            args=(target,),
            name=f"weft-{ctx.activity_name}-{ctx.position}.{ctx.attempt}",
            daemon=True,
        )
        thread.start()
        return self._watch(ctx, result, timeout, heartbeat_timeout, wake)

    def _watch(
        self,
        ctx: ActivityContext,
        result: list[AttemptOutcome],
        timeout: float | None,
        heartbeat_timeout: float | None,
        wake: threading.Event,
    ) -> AttemptOutcome | None:
        clock = self.clock
        started = clock.now()
        attempt_deadline = None if timeout is None else started + timeout
        grace_used = False
        while True:
            deadlines = [] if attempt_deadline is None else [attempt_deadline]
            if heartbeat_timeout is not None:
                deadlines.append(ctx.last_heartbeat_at + heartbeat_timeout)
            planned = min(deadlines)
            clock.wait(wake, max(0.0, planned - clock.now()))
            if result:
                return result[0]
            if wake.is_set() and ctx.cancelled.is_set():
                return None  # woken by cancellation of the run
            wake.clear()
            now = clock.now()
            if attempt_deadline is not None and now >= attempt_deadline:
                ctx._cancel(f"per-attempt timeout of {timeout:g}s passed")
                return self._timed_out(
                    ctx, ActivityPerAttemptTimeoutError, timeout or 0.0, "timeout"
                )
            if heartbeat_timeout is not None:
                silent_until = ctx.last_heartbeat_at + heartbeat_timeout
                if now >= silent_until:
                    if not grace_used and now - planned > max(
                        _STARVATION_SLACK, heartbeat_timeout / 2
                    ):
                        grace_used = True  # the watchdog itself was starved; see module docstring
                        ctx.last_heartbeat_at = now
                        continue
                    ctx._cancel(f"no heartbeat for {heartbeat_timeout:g}s")
                    return self._timed_out(
                        ctx, ActivityHeartbeatTimeoutError, heartbeat_timeout, "heartbeat_timeout"
                    )

    @staticmethod
    def _timed_out(
        ctx: ActivityContext,
        cls: type[ActivityPerAttemptTimeoutError | ActivityHeartbeatTimeoutError],
        seconds: float,
        option: str,
    ) -> AttemptOutcome:
        if cls is ActivityPerAttemptTimeoutError:
            what, remedy = "ran longer than", "raise the timeout or make the activity faster"
        else:
            what, remedy = "sent no heartbeat for", "heartbeat more often or raise the limit"
        error = cls(
            f"activity {ctx.activity_name!r} (step {ctx.position}, run {ctx.run_id!r}) attempt "
            f"{ctx.attempt} {what} its {option} of {seconds:g}s, so its `cancelled` event was "
            f"set; {remedy}.",
            cause_type=cls.__name__,
            cause_message=f"{option} of {seconds:g}s passed",
            attempts=ctx.attempt,
            run_id=ctx.run_id,
            position=ctx.position,
            activity=ctx.activity_name,
        )
        return AttemptOutcome(ok=False, error=error)
