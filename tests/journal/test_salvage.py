"""`python -m weft_nb salvage`: intact runs come out of a damaged journal whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError, JournalCorruptError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.testing import TestEngine


@weft_nb.activity
def fill(size: int, activity: weft_nb.ActivityContext) -> str:
    activity.heartbeat({"size": size})
    activity.checkpoint({"size": size})
    return os.urandom(size).hex()


@weft_nb.workflow
def wf(ctx: weft_nb.WorkflowContext, size: int) -> str:
    return ctx.run(fill, size)


def make_journal(path: Path, runs: int) -> dict[str, str]:
    results = {}
    with TestEngine(path) as engine:
        for n in range(runs):
            results[f"r{n}"] = engine.run(wf, 10_000, run_id=f"r{n}")
    return results


def salvage_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weft_nb", "salvage", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def check_whole(target: Path, results: dict[str, str], expected: int) -> None:
    with TestEngine(target) as engine:  # the new journal opens and works
        engine.register(wf, fill)
        runs = [r.run_id for r in engine.runs()]
        assert len(runs) == expected
        for run_id in runs:
            # each copied run is whole: its result, heartbeat and checkpoint came along
            assert engine.start(wf, 10_000, run_id=run_id).result(10) == results[run_id]
            assert engine.journal.latest_heartbeat(run_id, 0) is not None
            assert engine.checkpoints.load_latest(run_id, 0) == {"size": 10_000}


def test_salvage_copies_an_intact_journal_whole(tmp_path: Path) -> None:
    source = tmp_path / "source.duckdb"
    results = make_journal(source, 5)
    done = salvage_cli(str(source), str(tmp_path / "copy.duckdb"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("copied 5 intact run(s)")
    check_whole(tmp_path / "copy.duckdb", results, 5)


def test_salvage_of_a_truncated_journal_never_copies_a_run_in_part(tmp_path: Path) -> None:
    broken = tmp_path / "broken.duckdb"
    results = make_journal(broken, 60)
    with open(broken, "r+b") as handle:
        handle.truncate(os.path.getsize(broken) // 2)
    with pytest.raises(JournalCorruptError):
        DuckDBJournal(broken, read_only=True)
    before = broken.read_bytes()
    target = tmp_path / "salvaged.duckdb"
    done = salvage_cli(str(broken), str(target))
    assert broken.read_bytes() == before  # the damaged file is left untouched
    if done.returncode == 1:  # even the run ids were lost: nothing to copy, and it says so
        assert "nothing can be salvaged" in done.stderr
        return
    assert done.returncode in (0, 3), done.stderr
    copied = int(done.stdout.split()[1])
    left_out = done.stdout.count("left out ")
    assert copied + left_out == 60  # every run is accounted for
    check_whole(target, results, copied)


def test_salvage_refuses_to_overwrite_and_reports_unopenable_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(os.urandom(4096))
    existing = tmp_path / "exists.duckdb"
    existing.write_bytes(b"")
    for args, message in [
        ([str(garbage), str(tmp_path / "new.duckdb")], "cannot be opened at all"),
        ([str(garbage), str(existing)], "salvage writes a new journal only"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "weft_nb", "salvage", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1
        assert message in done.stderr


@weft_nb.activity
def ask(_: object, activity: weft_nb.ActivityContext) -> None:
    activity.complete_async()  # parks the step on its token


@weft_nb.activity(retry={"max_attempts": 1}, circuit_breaker="1/1h")
def fragile(_: object) -> None:
    raise RuntimeError("down")


@weft_nb.workflow
def review(ctx: weft_nb.WorkflowContext) -> Any:
    return ctx.run(ask)


@weft_nb.workflow
def gate(ctx: weft_nb.WorkflowContext) -> Any:
    return ctx.wait_for_signal("go")


@weft_nb.workflow
def trips(ctx: weft_nb.WorkflowContext) -> Any:
    return ctx.run(fragile)


def test_salvage_keeps_tokens_signals_breakers_and_trace_contexts(tmp_path: Path) -> None:
    """What a run still waits for (a token, a signal sent before it listened), its trace
    context and the shared circuit breakers come along: without them a salvaged run could
    never finish, or an open breaker would let a failing service be called again."""
    source, target = tmp_path / "source.duckdb", tmp_path / "copy.duckdb"
    with TestEngine(source) as engine:
        engine.start(review, run_id="review")
        wait_until(lambda: engine.journal.pending_async_tokens("review"), timeout=30)
        with pytest.raises(ActivityFailedError):
            engine.run(trips, run_id="trips")
        engine.journal.trace_context("review", keep="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    with TestEngine(source) as engine:
        engine.start(gate, run_id="gate")
        wait_until(lambda: engine.is_active("gate"), timeout=30)
        engine.interrupt("gate")  # stopped, still running: the signal waits in the journal
        engine.signal("gate", "go", {"approved": True})
    done = salvage_cli(str(source), str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    with TestEngine(target) as engine:
        engine.register(review, ask, gate, trips, fragile)
        (token,) = engine.journal.pending_async_tokens("review").values()
        assert engine.journal.trace_context("review") == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        assert [b.activity for b in engine.journal.breakers()] == ["fragile"]
        handle = engine.resume("review")
        engine.complete_async_activity(token, "approved")
        assert handle.result(30) == "approved"
        assert engine.resume("gate").result(30) == {"approved": True}
