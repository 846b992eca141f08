"""Child process for tests/engine/test_compensation.py: a saga killed during its compensation.

Usage: ``python saga_child.py CONFIG.json``. Config keys: ``journal``, ``evidence`` (a
JSON-lines file). The parent sets ``WEFT_NB_KILL_AT`` on the first start. The workflow books,
charges, then ships (which fails); ``compensate_on_failure`` then refunds and releases. Every
activity execution appends ``{"ran": name}`` (fsynced) before it returns; a run that ends
appends ``{"outcome": ...}`` and exits 0. The first start runs the workflow, a second resumes it.
"""

from __future__ import annotations

from typing import Any

from evidence_files import append_json_line, read_config

import weft_nb

CONFIG = read_config()
RUN_ID = "saga"


def ran(name: str) -> None:
    append_json_line(CONFIG["evidence"], {"ran": name})


@weft_nb.activity
def release(undo: dict[str, Any]) -> str:
    ran("release")
    return f"released {undo['result']}"


@weft_nb.activity
def refund(undo: dict[str, Any]) -> str:
    ran("refund")
    return f"refunded {undo['result']}"


@weft_nb.activity(compensate=release)
def book(room: str) -> str:
    ran("book")
    return f"booking-{room}"


@weft_nb.activity(compensate=refund)
def charge(amount: int) -> str:
    ran("charge")
    return f"charge-{amount}"


@weft_nb.activity(retry={"max_attempts": 1})
def ship(_: object) -> None:
    ran("ship")
    raise RuntimeError("no courier")


@weft_nb.workflow(compensate_on_failure=True)
def trip(ctx: weft_nb.WorkflowContext, room: str) -> None:
    ctx.run(book, room)
    ctx.run(charge, 120)
    ctx.run(ship)


if __name__ == "__main__":
    with weft_nb.Engine(CONFIG["journal"]) as engine:
        engine.register(book, charge, ship, refund, release, trip)
        exists = engine.journal.get_run(RUN_ID) is not None
        try:
            if exists:
                engine.resume(RUN_ID).result()
            else:
                engine.run(trip, "r1", run_id=RUN_ID)
        except weft_nb.errors.WeftError as exc:
            record = engine.journal.get_run(RUN_ID)
            status = record.status if record else "?"
            append_json_line(
                CONFIG["evidence"], {"outcome": {"error": type(exc).__name__, "status": status}}
            )
