"""Child process for tests/test_durable_activity.py: keyed ``durable_activity`` calls in a memo.

Usage: ``python durable_child.py CONFIG.json``. Config keys: ``journal``, ``run_id``,
``evidence`` (a JSON-lines file), ``verifier`` (``"none"``, ``"not-completed"`` or
``"completed"``). The parent may set ``WEFT_NB_KILL_AT=step.before_record`` so the process dies
after the activity ran and before its result is journaled. Every execution of ``charge``
appends ``{"charged": x}`` (fsynced); a run that ends appends ``{"outcome": ...}`` and exits 0.
"""

from __future__ import annotations

from typing import Any

from evidence_files import append_json_line, read_config

import weft_nb

CONFIG = read_config()


def note(line: dict[str, Any]) -> None:
    append_json_line(CONFIG["evidence"], line)


def verify(result: Any, context: weft_nb.VerificationContext) -> Any:
    if context.phase == "post-execution":
        return True
    if CONFIG["verifier"] == "completed":
        return {"status": "completed-with-result", "result": {"receipt": "from the provider"}}
    return "not-completed"


_verifier = None if CONFIG["verifier"] == "none" else verify


@weft_nb.activity(verify=_verifier)
def charge(x: int) -> dict[str, str]:
    note({"charged": x})
    return {"receipt": f"charged {x}"}


def pay(x: int) -> dict[str, str]:
    """A plain helper: no ctx, just durable_activity with an idempotency key."""
    return dict(weft_nb.durable_activity("charge", x, idempotency_key=f"order-{x}"))


@weft_nb.workflow
def checkout(ctx: weft_nb.WorkflowContext, x: int) -> object:
    return ctx.memo("pay", lambda: pay(x))


if __name__ == "__main__":
    with weft_nb.Engine(CONFIG["journal"]) as engine:
        engine.register(charge, checkout)
        try:
            outcome: dict[str, Any] = {"result": engine.run(checkout, 7, run_id=CONFIG["run_id"])}
        except weft_nb.errors.WeftError as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        note({"outcome": outcome})
