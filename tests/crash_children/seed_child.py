"""Child process for tests/test_crash_seed.py: runs (or resumes) one weft_nb workflow, then exits.

Usage: ``python seed_child.py CONFIG.json``. The parent SIGKILLs this process at a point it waits
for (a marker file), or an activity SIGKILLs its own process; then a new child resumes the same
run on the same journal. Everything the parent asserts on lives outside this process, in files
that are appended, flushed and fsynced before the code goes on (they survive SIGKILL):

- ``counts.jsonl``: one line per activity execution (``start``), with pid and position;
- ``process.jsonl``: when this process launched the run, which signals it sent and which async
  completion it delivered before resuming;
- ``markers/<name>``: readiness signals the parent waits for;
- ``token.json``: the task token of a parked activity;
- ``result.json``: the run's outcome (written only when the run settled);
- ``engine.jsonl``: weft_nb's own evidence log (``WEFT_NB_EVIDENCE_LOG``, set by the parent).

Config keys: ``journal``, ``evidence``, ``run_id``, ``workflow`` (a key of ``WORKFLOWS``),
``input``, ``api`` (``start`` or ``resume``), and optionally:

- ``block_in``: an activity that signals ``blocked`` and waits to be killed by the parent;
- ``kill_in``: an activity that SIGKILLs this process itself (after logging its start);
- ``report_sleep``: signal ``sleeping`` with the journaled deadline of the run's ``ctx.sleep``;
- ``signals_before_launch`` / ``signals_after_launch``: ``[{"name", "payload", "signal_id"}]``
  sent through ``engine.signal`` before / after ``start``/``resume``;
- ``complete_before_launch``: ``{"result": ...}``: complete the token in ``token.json`` through
  ``engine.complete_async_activity`` before resuming.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from evidence_files import PID, EvidenceFiles

import weft_nb

with open(sys.argv[1], encoding="utf-8") as _handle:
    CONFIG: dict[str, Any] = json.load(_handle)

EVIDENCE: str = CONFIG["evidence"]
WAIT_LIMIT = 120.0  # never outlive a parent that forgot us
ENGINE: weft_nb.Engine | None = None
SENT = threading.Event()  # set once every ``signals_after_launch`` signal is durable


FILES = EvidenceFiles(EVIDENCE)
append, write_json, mark = FILES.append, FILES.write_json, FILES.mark


def fail(message: str) -> NoReturn:
    """Report a broken precondition to the parent and exit (never finish the run wrongly)."""
    mark("error", message)
    os._exit(4)


def wait_until(condition: Any, what: str) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail after half the wait limit."""
    deadline = time.monotonic() + WAIT_LIMIT / 2
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def journal_rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read this process's own journal (only the owning process may open it while a run runs)."""
    assert ENGINE is not None
    return ENGINE.journal.query(sql, [CONFIG["run_id"], *params])


def enter(ctx: weft_nb.ActivityContext, **extra: Any) -> None:
    """Log an execution, then block or kill this process when the config says so."""
    append("counts.jsonl", {"activity": ctx.activity_name, "pos": ctx.position, **extra})
    if CONFIG.get("kill_in") == ctx.activity_name:
        if not SENT.wait(WAIT_LIMIT / 2):
            fail("signals_after_launch were never sent")
        os.kill(PID, signal.SIGKILL)
    if CONFIG.get("block_in") == ctx.activity_name:
        mark("blocked", {"activity": ctx.activity_name, "pos": ctx.position})
        time.sleep(WAIT_LIMIT)
        os._exit(3)  # the parent never killed us: fail loudly rather than finish the run


# -- 1. a durable sleep spanning a restart ---------------------------------------------------


@weft_nb.activity
def before_sleep(tag: str, ctx: weft_nb.ActivityContext) -> str:
    enter(ctx, t=time.time())
    return f"{tag}:before"


@weft_nb.activity
def after_sleep(before: str, ctx: weft_nb.ActivityContext) -> dict[str, Any]:
    woke = time.time()
    enter(ctx, t=woke)
    return {"before": before, "woke": woke}


@weft_nb.workflow
def sleeper(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    before = ctx.run(before_sleep, cfg["tag"])  # 0
    ctx.sleep(cfg["seconds"])  # 1: the first process is killed in here
    woke: dict[str, Any] = ctx.run(after_sleep, before)  # 2
    return woke


def report_sleep_deadline() -> None:
    """Signal ``sleeping`` once the sleep's deadline is committed, with the committed value."""
    rows = wait_until(
        lambda: journal_rows(
            "SELECT status, result FROM steps WHERE run_id = ? AND activity = '<sleep>' "
            "AND NOT superseded"
        ),
        "the sleep's deadline in the journal",
    )
    ((status, result),) = rows
    mark("sleeping", {"status": status, "deadline": json.loads(result)})


# -- 2. a signal buffered before a crash ----------------------------------------------------


@weft_nb.activity
def send_review(cfg: dict[str, Any], ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)
    assert ENGINE is not None
    sent = ENGINE.signal(ctx.run_id, "review", cfg["payload"], signal_id="review-1")
    append("process.jsonl", {"event": "signal", "signal_id": "review-1", "added": sent})
    return "sent"


@weft_nb.activity
def prepare_release(cfg: dict[str, Any], ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)
    return f"release-{cfg['version']}"


@weft_nb.workflow
def buffered(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    sent = ctx.run(send_review, cfg)  # 0
    release = ctx.run(prepare_release, cfg)  # 1: the first process is killed in here
    review = ctx.wait_for_signal("review", timeout=cfg["timeout"])  # 2
    return {"sent": sent, "release": release, "review": review}


# -- 3. a signal consumed right before a crash ----------------------------------------------


@weft_nb.activity
def boom(payload: Any, ctx: weft_nb.ActivityContext) -> dict[str, Any]:
    enter(ctx)
    return {"handled": payload}


@weft_nb.workflow
def consumed(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    first = ctx.wait_for_signal("go", timeout=cfg["timeout"])  # 0
    handled = ctx.run(boom, first)  # 1: kills the first process
    second = ctx.wait_for_signal("go", timeout=cfg["timeout"])  # 2
    return {"first": first, "handled": handled, "second": second}


# -- 4. an async completion delivered in the recovery window --------------------------------


@weft_nb.activity
def request_review(doc: str, ctx: weft_nb.ActivityContext) -> Any:
    enter(ctx)
    token = ctx.task_token  # journals the parked step under its token
    write_json(os.path.join(EVIDENCE, "token.json"), token)
    mark("token_written", token)
    ctx.complete_async()


@weft_nb.activity
def publish(reply: Any, ctx: weft_nb.ActivityContext) -> dict[str, Any]:
    enter(ctx)
    return {"published": reply}


@weft_nb.workflow
def parked(ctx: weft_nb.WorkflowContext, doc: str) -> dict[str, Any]:
    reply = ctx.run(request_review, doc)  # 0
    result: dict[str, Any] = ctx.run(publish, reply)  # 1
    return result


# -- 5. a partially completed ctx.all -------------------------------------------------------


@weft_nb.activity
def branch_a(value: str, ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)
    return f"{value}-done"


@weft_nb.activity
def branch_b(value: str, ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)  # the first process blocks here, and is killed once branch_a is journaled
    return f"{value}-done"


@weft_nb.workflow
def gathered(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> list[Any]:
    first = ctx.submit(branch_a, cfg["a"])  # 0
    second = ctx.submit(branch_b, cfg["b"])  # 1
    return ctx.all([first, second])


# -- 6. a recorded ctx.race winner ----------------------------------------------------------


@weft_nb.activity
def tortoise(value: str, ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)
    # Settle only after the race was journaled with the hare as its winner: both branches are
    # then durable before the crash, and only the journaled winner can tell them apart.
    wait_until(
        lambda: journal_rows(
            "SELECT 1 FROM steps WHERE run_id = ? AND position = ? AND activity = '<race>' "
            "AND status = 'completed' AND NOT superseded",
            ctx.position + 2,
        ),
        "the race's winner in the journal",
    )
    return f"tortoise:{value}"


@weft_nb.activity
def hare(value: str, ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)
    return f"hare:{value}"


@weft_nb.activity
def after_race(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> str:
    enter(ctx)  # kills the first process
    return f"after:{spec['winner']}"


@weft_nb.workflow
def racing(ctx: weft_nb.WorkflowContext, value: str) -> dict[str, Any]:
    slow = ctx.submit(tortoise, value)  # 0
    fast = ctx.submit(hare, value)  # 1
    index, winner = ctx.race([slow, fast])  # 2
    loser = slow.result()
    after = ctx.run(after_race, {"index": index, "winner": winner})  # 3
    return {"index": index, "winner": winner, "loser": loser, "after": after}


WORKFLOWS = {
    "sleeper": sleeper,
    "buffered": buffered,
    "consumed": consumed,
    "parked": parked,
    "gathered": gathered,
    "racing": racing,
}
ACTIVITIES = [
    before_sleep,
    after_sleep,
    send_review,
    prepare_release,
    boom,
    request_review,
    publish,
    branch_a,
    branch_b,
    tortoise,
    hare,
    after_race,
]


def send_signals(engine: weft_nb.Engine, key: str) -> None:
    for spec in CONFIG.get(key, []):
        added = engine.signal(
            CONFIG["run_id"], spec["name"], spec["payload"], signal_id=spec["signal_id"]
        )
        append("process.jsonl", {"event": "signal", "signal_id": spec["signal_id"], "added": added})


def on_event(event: weft_nb.WeftEvent) -> None:
    if event.kind == "async_pending":
        mark("async_pending", {"position": event.position, "token": event.data["token"]})


def main() -> int:
    global ENGINE
    engine = weft_nb.Engine(CONFIG["journal"], heartbeat_interval=0.05, program="seed-child")
    ENGINE = engine
    engine.register(*ACTIVITIES, *WORKFLOWS.values())
    engine.add_listener(on_event)
    send_signals(engine, "signals_before_launch")
    completion = CONFIG.get("complete_before_launch")
    if completion is not None:
        with open(os.path.join(EVIDENCE, "token.json"), encoding="utf-8") as token_file:
            token = json.load(token_file)
        engine.complete_async_activity(token, completion["result"])
        append("process.jsonl", {"event": "completed_async", "token": token})
    append("process.jsonl", {"event": "launch", "api": CONFIG["api"], "t": time.time()})
    if CONFIG["api"] == "resume":
        handle = engine.resume(CONFIG["run_id"])
    else:
        workflow = WORKFLOWS[CONFIG["workflow"]]
        handle = engine.start(workflow, CONFIG["input"], run_id=CONFIG["run_id"])
    send_signals(engine, "signals_after_launch")
    SENT.set()
    if CONFIG.get("report_sleep"):
        threading.Thread(target=report_sleep_deadline, daemon=True).start()
    try:
        outcome = {"status": "completed", "value": handle.result(timeout=WAIT_LIMIT)}
    except Exception as exc:  # the parent shows it: a failed run is a finding, not a crash
        outcome = {"status": handle.status, "error": f"{type(exc).__name__}: {exc}"}
    outcome["replayed_steps"] = handle.replayed_steps
    outcome["executed_steps"] = handle.executed_steps
    engine.close()
    write_json(os.path.join(EVIDENCE, "result.json"), outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
