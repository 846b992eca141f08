"""Child process for tests/crash/test_crash.py: runs (or resumes) one weft_nb workflow, then exits.

Usage: ``python child.py CONFIG.json``. The parent kills this process with SIGKILL at chosen
points, or sets ``WEFT_NB_KILL_AT`` so weft_nb kills it, then starts a new child on the same
journal and run id. Everything the parent asserts on is written outside the journal, to files
that survive SIGKILL (appended, flushed and fsynced before the activity goes on):

- ``counts.jsonl``: one line per activity execution (``start``) and per return (``end``);
- ``train.jsonl``: what ``train`` saw at start (``last_checkpoint``, ``last_heartbeat_details``)
  and every checkpoint that ``checkpoint()`` returned from;
- ``opened-<pid>.json``: the checkpoint files present right after the engine opened;
- ``markers/<name>``: readiness signals the parent waits for;
- ``result.json``: the run's outcome (written only when the run finished).

Config keys: ``journal``, ``evidence``, ``run_id``, ``workflow`` (``pipeline``, ``many``, ``fan``),
``input``, ``api`` (``start``, ``run`` for ``engine.run()``, ``resume``, or ``recover`` for
``engine.recover_all()``, which must resume exactly this run), ``heartbeat_interval``,
``checkpoint_keep``, and
optionally ``block`` (``{"activity": name, "epoch": e or null}``: signal ``blocked`` there and
wait to be killed) and ``random_kill`` (``{"seed", "first", "last", "max_delay"}``: once the step
at a seeded random position in ``[first, last]`` starts, SIGKILL this process after a seeded
random delay of at most ``max_delay`` seconds, from a background thread; with ``"hold": n``, steps
more than ``n`` past that position wait for the kill, so it lands mid-fan-out however fast).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

from evidence_files import PID, EvidenceFiles, checkpoint_files

import weft_nb  # reads WEFT_NB_KILL_AT, which the parent put in our environment
from weft_nb.base.payloads import decode

with open(sys.argv[1], encoding="utf-8") as _handle:
    CONFIG: dict[str, Any] = json.load(_handle)

EVIDENCE: str = CONFIG["evidence"]
BLOCK: dict[str, Any] | None = CONFIG.get("block")
ENGINE: weft_nb.Engine | None = None
WAIT_LIMIT = 120.0  # never outlive a parent that forgot us


FILES = EvidenceFiles(EVIDENCE)
append, write_json, mark = FILES.append, FILES.write_json, FILES.mark


def wait_to_be_killed() -> None:
    """Block this thread (the run's) until the parent's SIGKILL arrives."""
    time.sleep(WAIT_LIMIT)
    os._exit(3)  # the parent never killed us: fail loudly rather than finish the run


def maybe_block(activity: str, epoch: int | None = None) -> None:
    if BLOCK is not None and BLOCK["activity"] == activity and BLOCK.get("epoch") == epoch:
        mark("blocked", {"activity": activity, "epoch": epoch})
        wait_to_be_killed()


def wait_for_heartbeat_flush(ctx: weft_nb.ActivityContext, details: dict[str, Any]) -> float:
    """Wait until the background flusher committed ``details``; return the seconds it took.

    The parent must only kill once the heartbeat is durable, and the flusher writes at most once
    per ``heartbeat_interval``: rather than guess with a sleep, read the journal back (this
    process holds it, so read through its own engine). Any committed row with these details
    counts: which row ``latest_heartbeat`` picks is what the parent checks.
    """
    assert ENGINE is not None
    began = time.monotonic()
    interval = CONFIG["heartbeat_interval"]
    while True:
        rows = ENGINE.journal.query(
            "SELECT codec, details FROM heartbeats WHERE run_id = ? AND position = ? "
            "AND NOT superseded",
            [ctx.run_id, ctx.position],
        )
        if any(decode(codec, data) == details for codec, data in rows):
            return time.monotonic() - began
        if time.monotonic() - began > WAIT_LIMIT / 2:
            mark("error", f"heartbeat {details} was never flushed")
            os._exit(4)
        ctx.sleep(interval)


# -- the "pipeline" workflow: five steps, the middle one trains with heartbeats + checkpoints ---


def _enter(ctx: weft_nb.ActivityContext) -> None:
    append("counts.jsonl", {"activity": ctx.activity_name, "pos": ctx.position, "event": "start"})


def _leave(ctx: weft_nb.ActivityContext) -> None:
    append("counts.jsonl", {"activity": ctx.activity_name, "pos": ctx.position, "event": "end"})


@weft_nb.activity
def prepare(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> list[int]:
    _enter(ctx)
    maybe_block("prepare")
    rng = random.Random(spec["seed"])
    data = [rng.randint(1, 1000) for _ in range(spec["n"])]
    _leave(ctx)
    return data


@weft_nb.activity
def normalise(data: list[int], ctx: weft_nb.ActivityContext) -> list[int]:
    _enter(ctx)
    maybe_block("normalise")
    low = min(data)
    result = [x - low for x in data]
    _leave(ctx)
    return result


def _epoch_update(weight: int, epoch: int, data: list[int]) -> int:
    for x in data:
        weight = (weight * 31 + x * epoch + 7) % 1_000_003
    return weight


@weft_nb.activity
def train(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> dict[str, int]:
    _enter(ctx)
    checkpoint = ctx.last_checkpoint
    heartbeat = ctx.last_heartbeat_details
    append(
        "train.jsonl",
        {
            "event": "start",
            "attempt": ctx.attempt,
            "last_checkpoint": checkpoint,
            "last_heartbeat_details": heartbeat,
        },
    )
    maybe_block("train")
    state = checkpoint if checkpoint is not None else {"epoch": 0, "weight": spec["weight"]}
    for epoch in range(state["epoch"] + 1, spec["epochs"] + 1):
        weight = _epoch_update(state["weight"], epoch, spec["data"])
        details = {"epoch": epoch, "loss": weight % 997}
        ctx.heartbeat(details)
        state = {"epoch": epoch, "weight": weight}
        ctx.checkpoint(state)
        append("train.jsonl", {"event": "checkpointed", "state": state, "heartbeat": details})
        if BLOCK is not None and BLOCK["activity"] == "train" and BLOCK.get("epoch") == epoch:
            waited = wait_for_heartbeat_flush(ctx, details)
            append("train.jsonl", {"event": "heartbeat_flushed", "details": details, "s": waited})
            maybe_block("train", epoch)
    _leave(ctx)
    return state


@weft_nb.activity
def evaluate(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> int:
    _enter(ctx)
    maybe_block("evaluate")
    score = sum(x * spec["model"]["weight"] for x in spec["data"]) % 10_007
    _leave(ctx)
    return score


@weft_nb.activity
def summarise(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> dict[str, Any]:
    _enter(ctx)
    maybe_block("summarise")
    summary = {"epochs": spec["model"]["epoch"], "weight": spec["model"]["weight"]}
    summary["score"] = spec["score"]
    _leave(ctx)
    return summary


@weft_nb.workflow
def pipeline(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    data = ctx.run(prepare, {"n": cfg["n"], "seed": cfg["seed"]})
    data = ctx.run(normalise, data)
    model = ctx.run(train, {"epochs": cfg["epochs"], "weight": cfg["weight"], "data": data})
    score = ctx.run(evaluate, {"model": model, "data": data})
    return ctx.run(summarise, {"model": model, "score": score})


# -- the "many" workflow: many tiny steps, each result feeding the next ---------------------

_REACHED = threading.Event()
_KILL_POSITION = -1
_HOLD_AFTER = -1  # random_kill's "hold": steps past the kill position + this wait for the kill


def _start_random_killer(spec: dict[str, Any]) -> None:
    global _KILL_POSITION, _HOLD_AFTER
    rng = random.Random(spec["seed"])
    _KILL_POSITION = rng.randint(spec["first"], spec["last"])
    if "hold" in spec:  # the kill lands mid-fan-out however fast the rest would finish
        _HOLD_AFTER = _KILL_POSITION + spec["hold"]
    delay = rng.uniform(0.0, spec["max_delay"])

    def killer() -> None:
        _REACHED.wait()
        time.sleep(delay)
        os.kill(PID, signal.SIGKILL)

    threading.Thread(target=killer, name="random-killer", daemon=True).start()


@weft_nb.activity
def tiny(spec: dict[str, Any], ctx: weft_nb.ActivityContext) -> int:
    append("counts.jsonl", {"activity": "tiny", "pos": ctx.position, "event": "start"})
    if ctx.position == _KILL_POSITION:
        _REACHED.set()
    if 0 <= _HOLD_AFTER < ctx.position:
        threading.Event().wait()  # until the kill
    if spec["heartbeat"]:
        ctx.heartbeat({"i": spec["i"]})
    return (spec["acc"] * 7 + spec["i"] * 13 + 1) % 1_000_003


@weft_nb.workflow
def many(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    acc = 0
    trail = []
    for i in range(cfg["steps"]):
        acc = ctx.run(tiny, {"i": i, "acc": acc, "heartbeat": cfg["heartbeat"]})
        trail.append(acc)
    return {"acc": acc, "digest": sum(trail) % 1_000_003, "steps": len(trail)}


@weft_nb.workflow
def fan(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    """A ``ctx.all``-style fan-out; notes each step the workflow sees completed, as it sees it."""
    futures = [
        ctx.submit(tiny, {"i": i, "acc": 0, "heartbeat": False}) for i in range(cfg["steps"])
    ]
    results = []
    for future in futures:
        results.append(future.result())
        append("seen.jsonl", {"pos": future.position})
    return {"acc": sum(results) % 1_000_003, "steps": len(results)}


WORKFLOWS = {"pipeline": pipeline, "many": many, "fan": fan}


def main() -> int:
    global ENGINE
    engine = weft_nb.Engine(
        CONFIG["journal"],
        heartbeat_interval=CONFIG.get("heartbeat_interval", 1.0),
        checkpoint_keep=CONFIG.get("checkpoint_keep", 2),
        program="crash-child",
    )
    ENGINE = engine
    write_json(
        os.path.join(EVIDENCE, f"opened-{PID}.json"),
        checkpoint_files(engine.checkpoints.root),
    )
    engine.register(prepare, normalise, train, evaluate, summarise, tiny, pipeline, many, fan)
    if CONFIG.get("random_kill"):
        _start_random_killer(CONFIG["random_kill"])
    workflow = WORKFLOWS[CONFIG["workflow"]]
    api = CONFIG.get("api")
    if api == "run":  # no handle before the outcome: its start record is not synced by itself
        value = engine.run(workflow, CONFIG["input"], run_id=CONFIG["run_id"], timeout=WAIT_LIMIT)
        engine.close()
        write_json(os.path.join(EVIDENCE, "result.json"), {"value": value, "status": "completed"})
        return 0
    if api == "resume":
        handle = engine.resume(CONFIG["run_id"])
    elif api == "recover":
        (handle,) = engine.recover_all().resumed
        assert handle.run_id == CONFIG["run_id"], handle.run_id
    else:
        handle = engine.start(workflow, CONFIG["input"], run_id=CONFIG["run_id"])
    value = handle.result(timeout=WAIT_LIMIT)
    outcome = {
        "value": value,
        "status": handle.status,
        "replayed_steps": handle.replayed_steps,
        "executed_steps": handle.executed_steps,
        "replayed_from_journal": handle.replayed_from_journal,
    }
    engine.close()
    write_json(os.path.join(EVIDENCE, "result.json"), outcome)
    if CONFIG.get("random_kill"):
        time.sleep(WAIT_LIMIT / 4)  # the kill is still due; let it land rather than exit 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
