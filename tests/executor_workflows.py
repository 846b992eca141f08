"""Workflows and activities shared by the executor tests (run on threads, processes and Dask).

Activities leave their evidence in files under ``input["dir"]`` (one line appended per execution,
flushed before they go on), because they run in other processes: the tests count executions and
find worker pids there.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import weft_nb


def note(folder: str, name: str, text: str = "") -> None:
    """Append one line to ``folder/name``, durably enough to survive a SIGKILL that follows."""
    with open(os.path.join(folder, name), "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {text}\n")
        handle.flush()
        os.fsync(handle.fileno())


def lines(folder: Path, name: str) -> list[str]:
    path = folder / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@weft_nb.activity
def square(args: dict[str, Any]) -> dict[str, int]:
    note(args["dir"], f"square-{args['x']}")
    return {"value": args["x"] ** 2, "pid": os.getpid()}


@weft_nb.workflow
def squares(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> dict[str, Any]:
    first = ctx.run(square, {"dir": args["dir"], "x": 1})
    rest = ctx.all([ctx.submit(square, {"dir": args["dir"], "x": x}) for x in (2, 3, 4)])
    return {"values": [r["value"] for r in [first, *rest]], "pids": [r["pid"] for r in rest]}


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
def flaky(args: dict[str, Any]) -> str:
    note(args["dir"], "flaky")
    if len(lines(Path(args["dir"]), "flaky")) < 3:
        raise ConnectionError("the service is not up yet")
    return "ok"


@weft_nb.workflow
def retrying(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> str:
    result: str = ctx.run(flaky, args)
    return result


@weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 0.01})
def train(args: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Three epochs per attempt; the first attempt's worker SIGKILLs itself after them."""
    seen = {"checkpoint": activity.last_checkpoint, "details": activity.last_heartbeat_details}
    note(args["dir"], "train", str(activity.attempt))
    start = (activity.last_checkpoint or {"epoch": 0})["epoch"]
    for epoch in range(start, start + 3):
        activity.heartbeat({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
        activity.checkpoint({"epoch": epoch + 1})
    if activity.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker crash in the middle of training
    return {"seen": seen, "epoch": start + 3, "pid": os.getpid()}


@weft_nb.workflow
def training(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = ctx.run(train, args)
    return result


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
def blocker(args: dict[str, Any], activity: weft_nb.ActivityContext) -> str:
    """Records its pid, then waits for cancellation (attempt 1) or returns (later attempts)."""
    note(args["dir"], "blocker", str(activity.attempt))
    if activity.attempt == 1 and os.environ.get("WEFT_TEST_BLOCK") != "0":
        deadline = time.monotonic() + 120
        while not activity.cancelled.is_set() and time.monotonic() < deadline:
            activity.sleep(0.02)
        note(args["dir"], "blocker-cancelled", activity.cancel_reason)
        activity.raise_if_cancelled()
    return "unblocked"


@weft_nb.workflow
def around_blocker(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> list[Any]:
    before = ctx.run(square, {"dir": args["dir"], "x": 5})["value"]
    middle = ctx.run(blocker, args)
    after = ctx.run(square, {"dir": args["dir"], "x": 6})["value"]
    return [before, middle, after]


# The timeout counts from dispatch, worker start-up included: 1 s was too short on a loaded
# 2-core machine (the worker was killed before the activity wrote its note).
@weft_nb.activity(timeout=8.0, retry={"max_attempts": 1})
def runaway(args: dict[str, Any]) -> None:
    """Ignores ``cancelled``: only a hard kill stops it."""
    note(args["dir"], "runaway")
    while True:
        sum(range(1000))


@weft_nb.workflow
def runaway_then_square(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> Any:
    try:
        ctx.run(runaway, args)
    except weft_nb.errors.ActivityPerAttemptTimeoutError as exc:
        return {"error": type(exc).__name__, "next": ctx.run(square, {**args, "x": 7})["value"]}
    return None


@weft_nb.activity
def defaulted(n: int = 5) -> list[int]:
    """Its input's default applies when a call gives none (or None)."""
    return [n, os.getpid()]


@weft_nb.activity
def defaulted_with_context(
    n: int = 6, activity: weft_nb.ActivityContext | None = None
) -> list[int]:
    """The default applies and the context still arrives (by keyword)."""
    assert activity is not None
    return [n, os.getpid()]


@weft_nb.activity
async def defaulted_async(n: int = 8) -> list[int]:
    return [n, os.getpid()]


@weft_nb.workflow
def with_defaults(ctx: weft_nb.WorkflowContext, n: int = 3) -> dict[str, Any]:
    """Started without input, ``n`` is 3; each activity called without input gets its default."""
    results = [
        ctx.run(defaulted),
        ctx.run(defaulted, None),
        ctx.run(defaulted, 7),
        ctx.run(defaulted_with_context),
        ctx.run(defaulted_async),
    ]
    return {"n": n, "values": [value for value, _ in results], "pids": [p for _, p in results]}


REGISTERED = [squares, retrying, training, around_blocker, runaway_then_square, with_defaults]
