"""Child process for tests/test_crash_loops.py: a workflow whose activity kills its own process.

Usage: ``python crashloop_child.py CONFIG.json``. Config keys: ``journal``, ``run_id``,
``evidence`` (a JSON-lines file), ``how`` (``"exit"``: ``os._exit(1)``; ``"sigkill"``: SIGKILL
itself), ``max_attempts``, ``crashes`` (the activity kills the process on this many attempts,
then returns). Each attempt appends ``{"attempt", "last_heartbeat_details"}`` to the evidence
file (fsynced before it heartbeats, flushes and dies). A run that ends writes
``{"outcome": ...}`` there and exits 0.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from evidence_files import append_json_line, read_config

import weft_nb

CONFIG = read_config()


def note(line: dict[str, Any]) -> None:
    append_json_line(CONFIG["evidence"], line)


@weft_nb.activity
def prepare(x: int) -> int:
    note({"prepare": x})
    return x + 1


@weft_nb.activity(retry={"max_attempts": CONFIG["max_attempts"], "initial_backoff": 0.01})
def crasher(x: int, activity: weft_nb.ActivityContext) -> int:
    note({"attempt": activity.attempt, "last_heartbeat_details": activity.last_heartbeat_details})
    if activity.attempt > CONFIG["crashes"]:
        return x * 10
    activity.heartbeat({"attempt": activity.attempt, "progress": 0.5})
    assert ENGINE is not None
    ENGINE.flusher.flush()  # the details reach the journal; then the process dies
    if CONFIG["how"] == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)
    return -1


@weft_nb.workflow
def looping(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return int(ctx.run(crasher, ctx.run(prepare, x)))


ENGINE: weft_nb.Engine | None = None

if __name__ == "__main__":
    with weft_nb.Engine(CONFIG["journal"]) as engine:
        ENGINE = engine
        engine.register(prepare, crasher, looping)
        try:
            outcome: dict[str, Any] = {"result": engine.run(looping, 4, run_id=CONFIG["run_id"])}
        except weft_nb.errors.WeftError as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        note({"outcome": outcome})
