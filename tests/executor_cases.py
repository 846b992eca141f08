"""The engine-semantics cases run on each remote executor (imported by the executor tests)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from executor_workflows import (
    REGISTERED,
    around_blocker,
    lines,
    retrying,
    squares,
    training,
    with_defaults,
)
from helpers import wait_until

import weft_nb
from weft_nb.errors import WorkflowCancelledError


def engine_for(journal: Path, executor: weft_nb.Executor) -> weft_nb.Engine:
    engine = weft_nb.Engine(journal, executor=executor, heartbeat_interval=0.05)
    engine.register(*REGISTERED)
    return engine


def check_success_and_parallel(engine: weft_nb.Engine, folder: Path) -> None:
    result = engine.run(squares, {"dir": str(folder)}, timeout=120)
    assert result["values"] == [1, 4, 9, 16]
    assert os.getpid() not in result["pids"]  # the activities ran in worker processes
    for x in (1, 2, 3, 4):
        assert len(lines(folder, f"square-{x}")) == 1


def check_retries(engine: weft_nb.Engine, folder: Path) -> None:
    assert engine.run(retrying, {"dir": str(folder)}, run_id="r", timeout=120) == "ok"
    failed = engine.journal.query(
        "SELECT attempt, error_type FROM attempts WHERE run_id = 'r' ORDER BY attempt"
    )
    assert failed == [(1, "ConnectionError"), (2, "ConnectionError")]


def check_worker_crash_keeps_checkpoints(engine: weft_nb.Engine, folder: Path) -> None:
    """Attempt 1 checkpoints, heartbeats and dies; attempt 2, on another worker, sees both."""
    result = engine.run(training, {"dir": str(folder)}, run_id="t", timeout=120)
    runs = lines(folder, "train")
    assert [line.split()[1] for line in runs] == ["1", "2"]
    assert runs[0].split()[0] != runs[1].split()[0]  # a different worker process
    assert result["seen"] == {"checkpoint": {"epoch": 3}, "details": {"epoch": 2, "loss": 1 / 3}}
    assert result["epoch"] == 6
    attempts = engine.journal.query("SELECT attempt, error_type FROM attempts WHERE run_id = 't'")
    assert attempts == [(1, "WorkerLostError")]
    beats = engine.journal.query(
        "SELECT DISTINCT attempt FROM heartbeats WHERE run_id = 't' ORDER BY attempt"
    )
    assert beats == [(1,), (2,)]  # heartbeats sent from the workers are journaled
    seqs = engine.journal.query("SELECT attempt, seq FROM checkpoints WHERE run_id = 't'")
    assert {attempt for attempt, _ in seqs} == {2}  # keep=2: the newest two, from attempt 2
    assert max(seq for _, seq in seqs) == 6


def check_cancellation_reaches_worker(engine: weft_nb.Engine, folder: Path) -> None:
    handle = engine.start(around_blocker, {"dir": str(folder)}, run_id="c")
    wait_until(lambda: lines(folder, "blocker"), timeout=60)
    assert engine.cancel("c")
    with pytest.raises(WorkflowCancelledError):
        handle.result(timeout=60)
    wait_until(lambda: lines(folder, "blocker-cancelled"), timeout=60)
    assert "cancelled" in lines(folder, "blocker-cancelled")[0]
    assert lines(folder, "square-6") == []  # nothing ran after the cancelled step


def check_worker_killed_from_outside(engine: weft_nb.Engine, folder: Path) -> None:
    handle = engine.start(around_blocker, {"dir": str(folder)}, run_id="k")
    wait_until(lambda: lines(folder, "blocker"), timeout=60)
    pid = int(lines(folder, "blocker")[0].split()[0])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    assert handle.result(timeout=120) == [25, "unblocked", 36]
    assert len(lines(folder, "square-5")) == 1  # completed steps ran once
    assert len(lines(folder, "square-6")) == 1
    assert [line.split()[1] for line in lines(folder, "blocker")] == ["1", "2"]
    errors = engine.journal.query("SELECT error_type FROM attempts WHERE run_id = 'k'")
    assert errors == [("WorkerLostError",)]


def check_input_defaults(engine: weft_nb.Engine, folder: Path) -> None:
    """No input (or None) lets the parameter's default apply, on the workers too; the journal
    keeps the None that was given, so a replay signs the steps as before."""
    result = engine.run(with_defaults, run_id="d", timeout=120)
    assert result["n"] == 3
    assert result["values"] == [5, 5, 7, 6, 8]
    assert os.getpid() not in result["pids"]
    assert engine.journal.query("SELECT input_codec, input FROM runs WHERE run_id = 'd'") == [
        ("json", b"null")
    ]
    hashes = engine.journal.query(
        "SELECT input_hash FROM steps WHERE run_id = 'd' AND position IN (0, 1) ORDER BY position"
    )
    assert hashes[0] == hashes[1]  # ctx.run(defaulted) is signed as ctx.run(defaulted, None)
    assert engine.run(with_defaults, 4, run_id="d4", timeout=120)["n"] == 4


CASES: dict[str, Any] = {
    "success_and_parallel": check_success_and_parallel,
    "retries": check_retries,
    "worker_crash_keeps_checkpoints": check_worker_crash_keeps_checkpoints,
    "cancellation_reaches_worker": check_cancellation_reaches_worker,
    "worker_killed_from_outside": check_worker_killed_from_outside,
    "input_defaults": check_input_defaults,
}
