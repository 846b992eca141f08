"""Ending crash loops: a step whose attempts keep killing the process fails instead of looping.

The dispatch log (`weft_nb.journal.dispatch_log`) turns every attempt a dead process left
running
into a failed ``ActivityCrashed`` attempt when the next engine opens the journal. So a resume
knows how often the step started; before it dispatches again, `check_before_dispatch()`
fails the step when its retry policy allows no more attempts (``ActivityCrashLoopError``) or its
``schedule_to_close_timeout`` has passed since the first attempt started, exactly as an attempt
that raised would have. The verdict is not journaled as the step's outcome: the run is left
unfinished (``interrupted``) and every resume reaches the verdict again before it dispatches,
against the retry policy registered then. So a resume after ``max_attempts`` (or the timeout) was
raised continues the step, and one without that change fails at once instead of crashing again.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from weft_nb.errors import ActivityCrashLoopError, ActivityScheduleToCloseTimeoutError, WeftError
from weft_nb.journal.dispatch_log import CRASHED, Dispatch

if TYPE_CHECKING:
    from weft_nb.base.retry import RetryPolicy
    from weft_nb.engine.replay import PreparedStep
    from weft_nb.engine.runtime import Runtime
    from weft_nb.journal.dispatch_log import DispatchLog


@dataclasses.dataclass(frozen=True)
class RetryBudget:
    """What a step may still spend: its retry policy and its ``schedule_to_close`` window.

    Attributes:
        policy: The step's retry policy (the activity's, merged with the call's override).
        first_start: When its first attempt started (journaled; survives restarts).
        schedule_to_close: Seconds the step may take from ``first_start``, or None.
    """

    policy: RetryPolicy
    first_start: float
    schedule_to_close: float | None


class DispatchTracker:
    """The dispatch record of the attempt a step is running now (one per ``execute`` call)."""

    def __init__(self, dispatches: DispatchLog, run_id: str, step: PreparedStep) -> None:
        self._dispatches = dispatches
        self._run_id = run_id
        self._step = step
        self._current: Dispatch | None = None

    def start(self, attempt: int, at: float) -> None:
        """Record that ``attempt`` runs now (before the activity is called)."""
        self.end()
        step = self._step
        self._current = self._dispatches.start(
            self._run_id, step.position, attempt, step.definition.name, at
        )

    def end(self) -> None:
        """Record that the current attempt's handling is over (its outcome is journaled)."""
        if self._current is not None:
            self._current.end()
            self._current = None


def check_before_dispatch(
    rt: Runtime, run_id: str, step: PreparedStep, budget: RetryBudget, attempt: int
) -> None:
    """Raise the crash-loop verdict when a resume must not start ``attempt``; else return.

    Only a step that already started ``attempt - 1`` times without an outcome gets here with
    ``attempt > max_attempts``: the earlier attempts died with their process. The verdict is not
    journaled as the step's outcome: it is reached again, before any dispatch, on every resume,
    against the policy registered then, so allowing more attempts continues the run.
    """
    definition, position = step.definition, step.position
    policy, first_start, schedule_to_close = (
        budget.policy,
        budget.first_start,
        budget.schedule_to_close,
    )
    now = rt.clock.now()
    over_attempts = attempt > policy.max_attempts
    over_budget = schedule_to_close is not None and now >= first_start + schedule_to_close
    if not (over_attempts or over_budget):
        return
    crashed = rt.journal.crashed_attempts(run_id, position)
    if not crashed:
        return  # ordinary failures: the retry decision already happened where they were raised
    started = attempt - 1
    where = f"activity {definition.name!r} (step {position}, run {run_id!r})"
    fields: dict[str, Any] = {
        "cause_type": CRASHED,
        "cause_message": f"the process died during {crashed} attempt(s)",
        "attempts": started,
        "run_id": run_id,
        "position": position,
        "activity": definition.name,
    }
    resume = (
        f"define {definition.name!r} again (re-run its cell), then resume run {run_id!r} "
        f"(engine.resume({run_id!r}), or %weft run / engine.run with the same run_id): it "
        "continues from the journal, its completed steps are not run again, and this step "
        "starts as attempt "
        f"{attempt}. The run is left unfinished (status 'interrupted'); resuming it without "
        "that change stops here again at once, without starting the activity."
    )
    error: WeftError
    if over_attempts:
        error = ActivityCrashLoopError(
            f"{where} started {started} time(s) without finishing; in {crashed} of them the "
            "process died while it ran (killed, out of memory, a segfault, os._exit). weft_nb "
            f"stops here instead of crashing again: its retry policy allows {policy.max_attempts} "
            "attempt(s). Fix the crash, and to allow more attempts set retry={'max_attempts': n} "
            f"with n > {started} on the activity (or on the ctx.run call), {resume}",
            **fields,
        )
    else:
        assert schedule_to_close is not None
        error = ActivityScheduleToCloseTimeoutError(
            f"{where} started {started} time(s) without finishing (the process died during "
            f"{crashed}), and its schedule_to_close_timeout of {schedule_to_close:g}s since the "
            f"first attempt has passed ({now - first_start:g}s ago); it is not started again. "
            "Fix the crash, and to allow more time set a schedule_to_close_timeout larger than "
            f"{now - first_start:g}s on the activity (or on the ctx.run call), {resume}",
            **fields,
        )
    rt.emit("crash_loop", run_id, position, attempts=started, crashed=crashed)
    raise error


def is_verdict(error: BaseException) -> bool:
    """True for the error `check_before_dispatch()` raises: the run stays resumable."""
    return (
        isinstance(error, (ActivityCrashLoopError, ActivityScheduleToCloseTimeoutError))
        and getattr(error, "cause_type", None) == CRASHED
    )
