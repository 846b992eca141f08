"""Child process for tests/crash/test_crash_timers_children.py: a timer and a child workflow
across a real SIGKILL.

Usage: ``python timers_child.py CONFIG.json``. Config keys: ``journal``, ``evidence`` (a folder),
``scenario`` (``timer`` or ``children``), ``phase`` (1: start the run, and the test kills this
process at a marker; 2: recover and finish it, writing ``result.json``). Every activity execution
appends ``{"ran": name}`` (fsynced) to ``evidence/ran.jsonl`` before it returns.
"""

from __future__ import annotations

import os
from typing import Any

from evidence_files import EvidenceFiles, read_config

import weft_nb

CONFIG = read_config()
EVIDENCE = EvidenceFiles(CONFIG["evidence"])
PHASE = int(CONFIG["phase"])
TIMER_SECONDS = 5


def ran(name: str) -> None:
    EVIDENCE.append("ran.jsonl", {"ran": name, "phase": PHASE})


@weft_nb.activity(retry={"max_attempts": 5})
def hang(_: object, activity: weft_nb.ActivityContext) -> str:
    ran("hang")
    activity.cancelled.wait()  # loses the race: runs until the engine stops it
    return "hang"


@weft_nb.activity
def work(x: int) -> int:
    ran("work")
    return x * 10


@weft_nb.activity(retry={"max_attempts": 5})
def block(x: int, activity: weft_nb.ActivityContext) -> int:
    ran("block")
    if PHASE == 1:
        EVIDENCE.mark("child-blocked")
        activity.cancelled.wait()  # killed here
    return x + 1


@weft_nb.workflow
def timed(ctx: weft_nb.WorkflowContext, _: object = None) -> dict[str, Any]:
    job = ctx.submit(hang)
    gate = ctx.timer(TIMER_SECONDS)
    EVIDENCE.mark("timer-set", gate.deadline)  # again on replay: the deadline it replays
    winner, _ = ctx.race([job, gate])
    return {"winner": winner, "deadline": gate.deadline}


@weft_nb.workflow
def trial(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(block, ctx.run(work, x))


@weft_nb.workflow
def sweep(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run_workflow(trial, x) + 1000


if __name__ == "__main__":
    run_id = CONFIG["scenario"]
    with weft_nb.Engine(CONFIG["journal"]) as engine:
        engine.register(hang, work, block, timed, trial, sweep)
        if PHASE == 1:
            engine.start(timed if run_id == "timer" else sweep, 3, run_id=run_id).result()
        else:
            report = engine.recover_all()
            resumed = sorted(handle.run_id for handle in report.resumed)
            value = engine.resume(run_id).result(60)
            runs = [
                [r.run_id, r.workflow, r.status, r.parent_run_id]
                for r in engine.journal.list_runs()
            ]
            steps = engine.journal.query(
                "SELECT run_id, position, activity, status, finished_at FROM steps "
                "WHERE activity IN ('<timer>', '<child>', '<race>') AND NOT superseded "
                "ORDER BY run_id, position"
            )
            EVIDENCE.write_json(
                os.path.join(CONFIG["evidence"], "result.json"),
                {"value": value, "resumed": resumed, "runs": runs, "steps": steps},
            )
