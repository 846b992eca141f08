"""`python -m weft_nb salvage`: intact runs come out of a damaged journal whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import weft_nb
from weft_nb.errors import JournalCorruptError
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
