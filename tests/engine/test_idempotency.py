"""Keyed activities: dispatch markers and fail-closed reconciliation with Tier-0 verifiers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError, ActivityReconciliationIndeterminateError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def _crash_during_keyed_step(
    engine: TestEngine, verify: Callable[..., Any] | None
) -> tuple[TestEngine, list[str], Any]:
    """Run a keyed 'charge' activity and simulate a crash while it runs."""
    calls: list[str] = []
    inside = threading.Event()
    gate = threading.Event()

    @weft_nb.activity(idempotency_key=lambda order: f"order-{order['id']}", verify=verify)
    def charge(order: dict[str, int]) -> dict[str, int]:
        calls.append(f"charge {order['id']}")
        if len(calls) == 1:
            inside.set()
            gate.wait()
        return {"charged": order["amount"]}

    @weft_nb.workflow
    def checkout(ctx: weft_nb.WorkflowContext, order: dict[str, int]) -> dict[str, int]:
        return ctx.run(charge, order)

    engine.start(checkout, {"id": 7, "amount": 30}, run_id="k1")
    assert inside.wait(10)
    restarted = engine.simulate_restart()
    gate.set()
    return restarted, calls, checkout


def test_marker_is_written_before_dispatch_and_replaced_by_the_result(engine: TestEngine) -> None:
    @weft_nb.activity
    def send(_: object) -> str:
        return "sent"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(send, idempotency_key="email-42")

    assert engine.run(wf, run_id="m") == "sent"
    rows = engine.journal.query("SELECT status, idempotency_key FROM steps WHERE run_id = 'm'")
    assert rows == [("completed", "email-42")]


def test_without_verifier_an_ambiguous_dispatch_fails_closed(engine: TestEngine) -> None:
    engine, calls, _ = _crash_during_keyed_step(engine, verify=None)
    with pytest.raises(ActivityReconciliationIndeterminateError, match="order-7") as info:
        engine.resume("k1").result(10)
    assert "verify" in str(info.value)
    assert calls == ["charge 7"]  # never dispatched again
    engine.close()


def test_verifier_not_completed_allows_one_redispatch(engine: TestEngine) -> None:
    phases: list[tuple[str, str | None]] = []

    def verify(result: object, context: weft_nb.VerificationContext) -> object:
        phases.append((context.phase, context.idempotency_key))
        return "not-completed" if context.phase == "pre-dispatch-reconciliation" else True

    engine, calls, _ = _crash_during_keyed_step(engine, verify)
    assert engine.resume("k1").result(10) == {"charged": 30}
    assert calls == ["charge 7", "charge 7"]
    assert phases == [("pre-dispatch-reconciliation", "order-7"), ("post-execution", "order-7")]
    engine.close()


def test_verifier_completed_with_result_resumes_without_running(engine: TestEngine) -> None:
    def verify(result: object, context: weft_nb.VerificationContext) -> object:
        if context.phase == "pre-dispatch-reconciliation":
            return {"status": "completed-with-result", "result": {"charged": 30, "found": 1}}
        return True

    engine, calls, checkout = _crash_during_keyed_step(engine, verify)
    assert engine.resume("k1").result(10) == {"charged": 30, "found": 1}
    assert calls == ["charge 7"]
    # recorded: the next replay returns it from the journal
    assert engine.start(checkout, run_id="k1").result(1) == {"charged": 30, "found": 1}
    engine.close()


@pytest.mark.parametrize(
    "verdict", ["completed-result-unavailable", "indeterminate", True, "raise"]
)
def test_other_verdicts_fail_closed(engine: TestEngine, verdict: object) -> None:
    def verify(result: object, context: weft_nb.VerificationContext) -> object:
        if context.phase == "post-execution":
            return True
        if verdict == "raise":
            raise ConnectionError("payment API down")
        return verdict

    engine, calls, _ = _crash_during_keyed_step(engine, verify)
    with pytest.raises(ActivityReconciliationIndeterminateError, match="fails closed"):
        engine.resume("k1").result(10)
    assert calls == ["charge 7"]
    engine.close()


def test_post_execution_verify_rejection_is_retried(engine: TestEngine) -> None:
    results = iter([{"rows": 0}, {"rows": 0}, {"rows": 12}])

    def verify(result: dict[str, int], context: weft_nb.VerificationContext) -> bool:
        return result["rows"] > 0

    @weft_nb.activity(verify=verify)
    def load(_: object) -> dict[str, int]:
        return next(results)

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> dict[str, int]:
        return ctx.run(load)

    assert engine.run(wf) == {"rows": 12}
    errors = engine.journal.query("SELECT error_type FROM attempts ORDER BY attempt")
    assert errors == [("ActivityVerificationError",), ("ActivityVerificationError",)]


def test_post_execution_rejection_exhausts_retries(engine: TestEngine) -> None:
    @weft_nb.activity(verify=lambda result, context: False, retry={"max_attempts": 2})
    def load(_: object) -> int:
        return 0

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(load)

    with pytest.raises(ActivityFailedError) as info:
        engine.run(wf)
    assert (info.value.cause_type, info.value.attempts) == ("ActivityVerificationError", 2)
