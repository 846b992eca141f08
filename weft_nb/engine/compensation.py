"""Compensation (the Saga pattern): undoing a run's completed steps, each undo a durable step.

An activity may name a compensation (``@activity(compensate=undo)``). `Compensations` keeps the
run's completed steps that have one, as the workflow passes them: live or answered from the
journal alike, since replay runs the workflow again from the top. ``ctx.compensate()`` then runs
``undo({"input": <the step's input>, "result": <its result>})`` for each of them, latest
position first, as an ordinary ``ctx.run`` step at the run's next position.

That is the whole crash story: a resume replays the workflow, reaches the same
``ctx.compensate()`` with the same steps in the same order, and the compensation steps already
journaled are answered from the journal instead of running again, like any step. Which steps are
compensated is rebuilt the same way, so a step undone by an earlier ``ctx.compensate()`` is never
undone by a later one.

Order: descending position. Positions are taken in program order, so for ``ctx.run`` steps that
is the reverse of completion; for submitted steps (``ctx.submit``, ``all``, ``race``,
``run_all``) it is the reverse of submission, whatever order they finished in (a completion
order would not replay the same). A submitted step still running is waited for first.

A compensation that fails after its retries does not stop the others; they all run, then
`CompensationError` lists the failures. A failed compensation is not tried again by a later
``ctx.compensate()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weft_nb.activity.checkpoints import needs_environment
from weft_nb.base.definitions import compensation_name
from weft_nb.base.payloads import exception_text
from weft_nb.engine import crash_loops
from weft_nb.errors import (
    CompensationError,
    NonDeterminismError,
    WorkflowCancelledError,
)
from weft_nb.journal.io_errors import is_storage_failure

if TYPE_CHECKING:
    from weft_nb.base.definitions import WorkflowDefinition
    from weft_nb.engine.parallel import StepFuture
    from weft_nb.engine.replay import PreparedStep, StepCursor

RunStep = Callable[[Callable[..., Any] | str, Any], Any]
"""How a compensation runs: ``ctx.run(activity, input)``."""


@dataclasses.dataclass
class CompletedStep:
    """A step with a compensation, as the workflow passed it: its result, or its future."""

    position: int
    activity: str
    compensate: str | Callable[..., Any]
    input: Any
    result: Any = None
    future: StepFuture[Any] | None = None


class Compensations:
    """The compensable steps of one execution of a run, and the ones already compensated.

    Args:
        cursor: The run's replay state (liveness, run id).
        run_step: Runs one compensation as a durable step (the run's ``ctx.run``).
    """

    def __init__(self, cursor: StepCursor, run_step: RunStep) -> None:
        self._cursor = cursor
        self._run_step = run_step
        self._pending: dict[int, CompletedStep] = {}
        self._compensating = False

    def completed(self, step: PreparedStep, result: Any) -> None:
        """A ``ctx.run`` step completed (live or from the journal): keep it if it can be undone.

        Compensation steps themselves are not kept: an undo is not undone.
        """
        self._keep(step, result=result)

    def submitted(self, step: PreparedStep, future: StepFuture[Any]) -> None:
        """A step was submitted: keep it, to undo if it completes."""
        self._keep(step, future=future)

    def _keep(
        self, step: PreparedStep, *, result: Any = None, future: StepFuture[Any] | None = None
    ) -> None:
        compensate = step.definition.compensate
        if compensate is None or self._compensating:
            return
        self._pending[step.position] = CompletedStep(
            position=step.position,
            activity=step.definition.name,
            compensate=compensate,
            input=step.value,
            result=result,
            future=future,
        )

    def compensate(self) -> None:
        """Undo every completed step not undone yet, latest position first (see the module).

        Raises:
            CompensationError: Some compensations failed after their retries (all were tried).
            WorkflowCancelledError: The run was cancelled (the rest are not run).
        """
        failures: list[dict[str, Any]] = []
        first_error: BaseException | None = None
        self._compensating = True
        try:
            for position in sorted(self._pending, reverse=True):
                step = self._pending.pop(position)  # tried once, whatever its outcome
                if step.future is not None and not self._settled_ok(step):
                    continue  # a submitted step that failed has nothing to undo
                undo = step.compensate
                try:
                    self._run_step(undo, {"input": step.input, "result": step.result})
                except Exception as exc:  # an unregistered undo, a bad input: a failure too
                    if not is_step_failure(exc):
                        raise
                    first_error = first_error or exc
                    failure = {
                        "position": position,
                        "activity": step.activity,
                        "compensation": compensation_name(undo),
                        "error": exception_text(exc, with_type=True),
                    }
                    failures.append(failure)
        finally:
            self._compensating = False
        if failures:
            raise CompensationError(self._cursor.run_id, failures) from first_error

    def _settled_ok(self, step: CompletedStep) -> bool:
        """Wait for a submitted step; True (its result kept) when it completed."""
        assert step.future is not None
        step.future.wait()
        self._cursor.check_alive()
        try:
            step.result = step.future.result()
        except Exception:
            return False
        return True


def is_step_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is an outcome of a step or workflow, rather than a reason to stop.

    Crash-loop verdicts, storage failures, a missing environment, a cancel and a changed journal
    leave the run resumable or end it without running more steps: nothing is compensated then.
    """
    return not (
        isinstance(exc, NonDeterminismError | WorkflowCancelledError)
        or crash_loops.is_verdict(exc)
        or is_storage_failure(exc) is not None
        or needs_environment(exc) is not None
    )


def compensate_after_failure(
    workflow: WorkflowDefinition, compensations: Compensations, error: Exception
) -> None:
    """With ``compensate_on_failure``, compensate after the workflow function raised ``error``.

    Returns when the caller should raise ``error`` again (compensated, or nothing to do); raises
    the `CompensationError` that says which compensations failed, with ``error`` as its cause.
    The workflow function is called by the run's thread itself, not from here, so development
    mode sees the workflow's own frames.
    """
    if not workflow.compensate_on_failure or not is_step_failure(error):
        return
    try:
        compensations.compensate()
    except CompensationError as failed:
        raise failed from error
