"""Verifiers: post-execution result checks and Tier-0 pre-dispatch reconciliation.

A keyed activity writes a dispatch marker before it runs. If a crash leaves a marker without an
outcome, nobody knows whether the side effect happened. Without a verifier the engine fails closed
(`ActivityReconciliationIndeterminateError`); with one, its Tier-0 verdict decides:

- ``"not-completed"``: nothing happened outside; dispatch again.
- ``{"status": "completed-with-result", "result": r}``: it happened; adopt ``r`` as the result.
- ``"completed-result-unavailable"``, ``"indeterminate"``, anything else, or an exception from the
  verifier: fail closed, never run it again.

This module decides; `weft_nb.engine.steps.adopt_reconciled()` journals an adopted result as
the step's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from weft_nb.base.definitions import ActivityDefinition
from weft_nb.base.operational import QuietLogger
from weft_nb.errors import ActivityReconciliationIndeterminateError, ActivityVerificationError
from weft_nb.journal.protocol import StepRecord

if TYPE_CHECKING:
    from weft_nb.engine.replay import PreparedStep

NOT_COMPLETED = "not-completed"
COMPLETED_WITH_RESULT = "completed-with-result"

_LOG = QuietLogger("weft_nb.engine")


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
    run_id: str, step: PreparedStep, attempt: int, result: Any
) -> ActivityVerificationError | None:
    """Run the post-execution verifier; the error to fail the attempt with, or None to accept."""
    definition, position = step.definition, step.position
    if definition.verify is None:
        return None
    context = VerificationContext(
        phase="post-execution",
        run_id=run_id,
        position=position,
        activity=definition.name,
        input=step.value,
        idempotency_key=step.key,
        attempt=attempt,
    )
    if definition.verify(result, context):
        return None
    return ActivityVerificationError(definition.name, position, run_id, attempt)


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
        phase="pre-dispatch-reconciliation",
        run_id=run_id,
        position=position,
        activity=definition.name,
        input=value,
        idempotency_key=key,
        attempt=marker.attempts,
    )
    try:
        verdict = definition.verify(None, context)
    except Exception as exc:
        verdict = f"indeterminate (verify raised {type(exc).__name__}: {exc})"
    fields = {"run_id": run_id, "position": position, "activity": definition.name}
    if verdict == NOT_COMPLETED:
        _LOG.info("%s: reconciled as not completed; dispatching again", where, extra=fields)
        return False, None
    if isinstance(verdict, Mapping) and verdict.get("status") == COMPLETED_WITH_RESULT:
        _LOG.info("%s: reconciled as completed; adopting the result", where, extra=fields)
        return True, verdict.get("result")
    _LOG.error(
        "%s: reconciliation indeterminate (%r); failing closed", where, verdict, extra=fields
    )
    raise ActivityReconciliationIndeterminateError(
        f"{where}: verify reported {verdict!r} for the dispatch before the crash; weft_nb fails "
        "closed rather than run the side effect again. Resolve it by hand and start a new run.",
        run_id=run_id,
        position=position,
        activity=definition.name,
    )
