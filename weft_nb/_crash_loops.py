"""Ending crash loops: a step whose attempts keep killing the process fails instead of looping.

The dispatch log (:mod:`weft_nb._dispatch_log`) turns every attempt a dead process left running
into a failed ``ActivityCrashed`` attempt when the next engine opens the journal. So a resume
knows how often the step started; before it dispatches again, :func:`check_before_dispatch`
fails the step when its retry policy allows no more attempts (``ActivityCrashLoopError``) or its
``schedule_to_close_timeout`` has passed since the first attempt started, exactly as an attempt
that raised would have. The failure is journaled, so later resumes replay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dispatch_log import CRASHED, Dispatch
from ._journal import STEP_FAILED, StepRecord
from ._payloads import error_to_json
from .errors import ActivityCrashLoopError, ActivityScheduleToCloseTimeoutError, WeftError

if TYPE_CHECKING:
    from ._retry import RetryPolicy
    from ._workflow_context import PreparedStep, WorkflowContext


class DispatchTracker:
    """The dispatch record of the attempt a step is running now (one per ``execute`` call)."""

    def __init__(self, ctx: WorkflowContext, step: PreparedStep) -> None:
        self._ctx = ctx
        self._step = step
        self._current: Dispatch | None = None

    def start(self, attempt: int, at: float) -> None:
        """Record that ``attempt`` runs now (before the activity is called)."""
        self.end()
        step = self._step
        self._current = self._ctx._engine.dispatches.start(
            self._ctx.run_id, step.position, attempt, step.definition.name, at
        )

    def end(self) -> None:
        """Record that the current attempt's handling is over (its outcome is journaled)."""
        if self._current is not None:
            self._current.end()
            self._current = None


def check_before_dispatch(
    ctx: WorkflowContext,
    step: PreparedStep,
    policy: RetryPolicy,
    attempt: int,
    first_start: float,
    schedule_to_close: float | None,
) -> None:
    """Fail the step (journaled) when a resume must not start ``attempt``; else return.

    Only a step that already started ``attempt - 1`` times without an outcome gets here with
    ``attempt > max_attempts``: the earlier attempts died with their process.
    """
    engine, definition, position = ctx._engine, step.definition, step.position
    now = engine.clock.now()
    over_attempts = attempt > policy.max_attempts
    over_budget = schedule_to_close is not None and now >= first_start + schedule_to_close
    if not (over_attempts or over_budget):
        return
    crashed = engine.journal.query(
        "SELECT count(*) FROM attempts WHERE run_id = ? AND position = ? AND error_type = ? "
        "AND NOT superseded",
        [ctx.run_id, position, CRASHED],
    )[0][0]
    if not crashed:
        return  # ordinary failures: the retry decision already happened where they were raised
    started = attempt - 1
    where = f"activity {definition.name!r} (step {position}, run {ctx.run_id!r})"
    error: WeftError
    if over_attempts:
        error = ActivityCrashLoopError(
            f"{where} started {started} time(s) without finishing; in {crashed} of them the "
            "process died while it ran (killed, out of memory, a segfault, os._exit). weft_nb "
            f"stops here instead of crashing again: its retry policy allows {policy.max_attempts} "
            "attempt(s). Fix the crash, or allow more attempts (retry={'max_attempts': n} on the "
            "activity or the call) and start a new run.",
            cause_type=CRASHED,
            cause_message=f"the process died during {crashed} attempt(s)",
            attempts=started,
            run_id=ctx.run_id,
            position=position,
            activity=definition.name,
        )
    else:
        assert schedule_to_close is not None
        error = ActivityScheduleToCloseTimeoutError(
            f"{where} started {started} time(s) without finishing (the process died during "
            f"{crashed}), and its schedule_to_close_timeout of {schedule_to_close:g}s since the "
            "first attempt has passed; it is not started again. Raise the timeout and start a "
            "new run.",
            cause_type=CRASHED,
            cause_message=f"the process died during {crashed} attempt(s)",
            attempts=started,
            run_id=ctx.run_id,
            position=position,
            activity=definition.name,
        )
    if step.record:
        engine.journal.record_step(
            StepRecord(
                ctx.run_id,
                position,
                definition.name,
                STEP_FAILED,
                step.input_hash,
                definition.source_hash,
                started,
                first_start,
                now,
                error=error_to_json(error),
                idempotency_key=step.key,
            )
        )
    engine.emit("crash_loop", ctx.run_id, position, attempts=started, crashed=crashed)
    raise error
