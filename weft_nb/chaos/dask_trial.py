"""One trial of the Dask chaos sweep, and what its evidence must show afterwards.

A trial is an activity that trains for a few epochs on a Dask worker: it resumes from
``activity.last_checkpoint``, does one epoch of work, checkpoints, and so on. It appends what it
does to an evidence file shared by all workers (``begin`` with the epoch it resumed from, one
``checkpoint`` line after each ``checkpoint()`` returned, that is once the kernel made it
durable, and ``end``), one ``os.write`` of one line each, so a SIGKILL never leaves a torn line.
Its result is a number that depends on every epoch having run exactly once in order from the
trial's input, so a trial that skipped or repeated an epoch returns a wrong result.

`check_sweep()` reads that file and the journal after the sweep and counts, per trial, what the
invariants forbid (lost, run twice, resumed from an older checkpoint than the newest durable one)
and what the campaign wants to see happen (resumed from a checkpoint on another worker).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from weft_nb.activity.context import ActivityContext
from weft_nb.base.definitions import activity

_MODULUS = 1_000_003


def _log(path: str, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def step_value(value: int, epoch: int) -> int:
    """One epoch of the trial's "training": deterministic, order-sensitive."""
    return (value * 31 + epoch + 7) % _MODULUS


def expected_value(trial: int, epochs: int) -> int:
    """The result of a trial whose epochs all ran exactly once, in order."""
    value = trial
    for epoch in range(epochs):
        value = step_value(value, epoch)
    return value


@activity(retry={"max_attempts": 12, "initial_backoff": 0.2, "max_backoff": 1.0})
def chaos_trial(spec: dict[str, Any], ctx: ActivityContext) -> dict[str, int]:
    """Train ``spec["epochs"]`` epochs of ``spec["seconds"]`` each, checkpointing after each.

    The retry policy allows many attempts with short backoffs: every attempt a SIGKILLed worker
    ends counts as one (`WorkerLostError`), and a campaign may hit one trial several times.
    """
    log, trial = spec["log"], spec["trial"]
    state = ctx.last_checkpoint
    epoch, value = (0, trial) if state is None else (state["epoch"], state["value"])
    _log(log, "begin", trial=trial, attempt=ctx.attempt, from_epoch=epoch)
    while epoch < spec["epochs"]:
        deadline = time.monotonic() + spec["seconds"]
        while time.monotonic() < deadline:  # the epoch's work; stops early when cancelled
            if ctx.cancelled.wait(min(0.02, max(0.0, deadline - time.monotonic()))):
                raise RuntimeError(f"trial {trial} cancelled: {ctx.cancel_reason}")
        value = step_value(value, epoch)
        epoch += 1
        ctx.checkpoint({"epoch": epoch, "value": value})
        _log(log, "checkpoint", trial=trial, attempt=ctx.attempt, epoch=epoch)
        ctx.heartbeat({"epoch": epoch})
    _log(log, "end", trial=trial, attempt=ctx.attempt)
    return {"trial": trial, "value": value}


def read_events(path: Path) -> list[dict[str, Any]]:
    """The evidence lines written so far (a line still being written is skipped)."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def running_with_checkpoint(events: list[dict[str, Any]]) -> dict[int, int]:
    """``{trial: worker pid}`` of the attempts now mid-trial, past at least one checkpoint."""
    current: dict[int, tuple[int, bool]] = {}  # trial -> (pid, has a checkpoint this attempt)
    for event in events:
        trial = event.get("trial")
        if trial is None:
            continue
        if event["event"] == "begin":
            current[trial] = (event["pid"], False)
        elif event["event"] == "checkpoint" and trial in current:
            current[trial] = (current[trial][0], True)
        elif event["event"] == "end":
            current.pop(trial, None)
    return {trial: pid for trial, (pid, ok) in current.items() if ok}


@dataclasses.dataclass
class TrialFigures:
    """What the evidence and the journal say about the sweep, trial by trial."""

    trials: int = 0
    completed: int = 0
    lost: list[int] = dataclasses.field(default_factory=list)
    run_twice: list[int] = dataclasses.field(default_factory=list)
    wrong_result: list[int] = dataclasses.field(default_factory=list)
    resumed_from_checkpoint: int = 0
    resumed_on_another_worker: int = 0
    resumed_on_same_worker: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    resumed_from_older_checkpoint: list[int] = dataclasses.field(default_factory=list)
    attempts: int = 0


def check_sweep(
    events: list[dict[str, Any]],
    steps: list[tuple[int, str, float | None]],
    results: list[Any] | None,
    trials: int,
    epochs: int,
) -> TrialFigures:
    """Count lost, run-twice and resumed trials from the evidence and the journal.

    ``steps`` are the sweep run's ``(position, status, finished_at)`` step rows; the trial of
    position p is trial p (``ctx.submit`` in order). ``results`` is what the sweep returned
    (None when it did not finish).
    """
    figures = TrialFigures(trials=trials)
    finished: dict[int, list[float]] = {}
    for position, status, finished_at in steps:
        if status == "completed":
            finished.setdefault(position, []).append(finished_at or 0.0)
    for trial, result in enumerate(results or []):
        if result != {"trial": trial, "value": expected_value(trial, epochs)}:
            figures.wrong_result.append(trial)
    figures.completed = len(finished)
    figures.lost = [t for t in range(trials) if t not in finished]
    durable: dict[int, int] = {}  # trial -> newest epoch acknowledged as checkpointed
    last_pid: dict[int, int] = {}
    twice: set[int] = {t for t, times in finished.items() if len(times) > 1}
    for event in events:
        number = event.get("trial")
        if number is None:
            continue
        if event["event"] == "checkpoint":
            durable[number] = max(durable.get(number, 0), event["epoch"])
        elif event["event"] == "begin":
            figures.attempts += 1
            if number in finished and event["t"] > min(finished[number]):
                twice.add(number)  # an attempt began after the trial was journaled complete
            if event["from_epoch"] < durable.get(number, 0):
                figures.resumed_from_older_checkpoint.append(number)
            if event["from_epoch"] > 0:
                figures.resumed_from_checkpoint += 1
                if last_pid.get(number) != event["pid"]:
                    figures.resumed_on_another_worker += 1
                else:  # (trial, attempt, pid): its earlier attempt failed on a live worker
                    figures.resumed_on_same_worker.append((number, event["attempt"], event["pid"]))
            last_pid[number] = event["pid"]
    figures.run_twice = sorted(twice)
    return figures
