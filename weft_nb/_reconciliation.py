"""Verifiers: post-execution result checks and Tier-0 pre-dispatch reconciliation.

A keyed activity writes a dispatch marker before it runs. If a crash leaves a marker without an
outcome, nobody knows whether the side effect happened. Without a verifier the engine fails closed
(`ActivityReconciliationIndeterminateError`); with one, its Tier-0 verdict decides:

- ``"not-completed"``: nothing happened outside; dispatch again.
- ``{"status": "completed-with-result", "result": r}``: it happened; adopt ``r`` as the result.
- ``"completed-result-unavailable"``, ``"indeterminate"``, anything else, or an exception from the
  verifier: fail closed, never run it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._definitions import ActivityDefinition
from ._journal import StepRecord
from .errors import ActivityReconciliationIndeterminateError, ActivityVerificationError

if TYPE_CHECKING:
    from ._workflow_context import PreparedStep, WorkflowContext

NOT_COMPLETED = "not-completed"
COMPLETED_WITH_RESULT = "completed-with-result"


@dataclasses.dataclass(frozen=True)
class VerificationContext:
    """Passed to an activity's ``verify(result, context)``.

    ``phase`` is ``"post-execution"`` (return True to accept ``result``) or
    ``"pre-dispatch-reconciliation"`` (``result`` is None; return ``"not-completed"``,
    ``{"status": "completed-with-result", "result": ...}``, ``"completed-result-unavailable"`` or
    ``"indeterminate"``).
    """

    phase: str
    run_id: str
    position: int
    activity: str
    input: Any
    idempotency_key: str | None
    attempt: int


def check_result(
    definition: ActivityDefinition,
    run_id: str,
    position: int,
    value: Any,
    key: str | None,
    attempt: int,
    result: Any,
) -> ActivityVerificationError | None:
    """Run the post-execution verifier; the error to fail the attempt with, or None to accept."""
    if definition.verify is None:
        return None
    context = VerificationContext(
        "post-execution", run_id, position, definition.name, value, key, attempt
    )
    if definition.verify(result, context):
        return None
    return ActivityVerificationError(
        f"verify rejected the result of activity {definition.name!r} (step {position}, run "
        f"{run_id!r}, attempt {attempt}); the attempt fails and may retry",
        run_id=run_id,
    )


def reconcile(
    definition: ActivityDefinition, marker: StepRecord, value: Any, key: str | None
) -> tuple[bool, Any]:
    """Decide a dispatch marker's fate: ``(True, result)`` to adopt, ``(False, None)`` to dispatch.

    Raises:
        ActivityReconciliationIndeterminateError: The outcome cannot be proven (fail closed).
    """
    run_id, position = marker.run_id, marker.position
    where = f"activity {definition.name!r} (step {position}, run {run_id!r})"
    if definition.verify is None:
        raise ActivityReconciliationIndeterminateError(
            f"{where} was dispatched with idempotency key {marker.idempotency_key!r} before a "
            "crash and its outcome is unknown. weft_nb fails closed instead of running it again: "
            "add a verify= function that checks the external system, or start a new run.",
            run_id=run_id,
            position=position,
            activity=definition.name,
        )
    context = VerificationContext(
        "pre-dispatch-reconciliation",
        run_id,
        position,
        definition.name,
        value,
        key,
        marker.attempts,
    )
    try:
        verdict = definition.verify(None, context)
    except Exception as exc:
        verdict = f"indeterminate (verify raised {type(exc).__name__}: {exc})"
    if verdict == NOT_COMPLETED:
        return False, None
    if isinstance(verdict, Mapping) and verdict.get("status") == COMPLETED_WITH_RESULT:
        return True, verdict.get("result")
    raise ActivityReconciliationIndeterminateError(
        f"{where}: verify reported {verdict!r} for the dispatch before the crash; weft_nb fails "
        "closed rather than run the side effect again. Resolve it by hand and start a new run.",
        run_id=run_id,
        position=position,
        activity=definition.name,
    )


def adopt_reconciled(
    ctx: WorkflowContext, step: PreparedStep, marker: StepRecord
) -> tuple[bool, Any]:
    """Reconcile a keyed step's dispatch marker that survived a crash.

    ``ctx.run`` and ``durable_activity`` both take this one path. Returns ``(True, result)``
    with the verifier's result journaled as the step's, or ``(False, None)`` when the step may
    be dispatched again.

    Raises:
        ActivityReconciliationIndeterminateError: No verifier, or it cannot prove the outcome.
    """
    if step.position in ctx._state.pending_tokens:
        return False, None  # parked on its task token, not lost: execution waits for it
    adopt, result = reconcile(step.definition, marker, step.value, step.key)
    if not adopt:
        return False, None
    return True, ctx._record_success(
        step.definition, step.position, step.input_hash, step.key, result,
        marker.attempts, marker.started_at, None,
    )  # fmt: skip
