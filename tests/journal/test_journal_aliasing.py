"""One journal file, one owner, whatever its name; journals named alike keep their own files.

Issue 12.4: the single-writer lock went by the unresolved path, so a symlink or a hard link let a
second engine open the journal, and both drove one run (every step executed twice). Issue 12.3:
``exp.duckdb``, ``exp.db`` and ``exp`` shared ``exp.checkpoints/`` and opening one deleted the
others' checkpoints. Cross-process checks use real children (``tests/lock_holder.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import training
from test_journal_locking import Child, run_child

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalLockedError
from weft_nb.journal.duckdb_journal import DuckDBJournal

OWNER_FILE = ".weft-owner.json"  # weft_nb.journal.paths.OWNER_FILE
CALLS: list[str] = []


@weft_nb.activity
def count_call(x: int) -> int:
    CALLS.append(f"count-{x}")
    return x + 1


@weft_nb.workflow
def counting(ctx: Any, x: int) -> int:
    return ctx.run(count_call, x)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()


def _aliases(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    real = tmp_path / "data" / "exp.duckdb"
    real.parent.mkdir()
    with Engine(real) as eng:
        eng.run(counting, 1, run_id="r1")
    (tmp_path / "link.duckdb").symlink_to(real)
    (tmp_path / "dirlink").symlink_to(real.parent, target_is_directory=True)
    os.link(real, tmp_path / "hard.duckdb")
    return real, {
        "symlink": tmp_path / "link.duckdb",
        "symlinked-folder": tmp_path / "dirlink" / "exp.duckdb",
        "hard-link": tmp_path / "hard.duckdb",
        "dotdot": tmp_path / "data" / ".." / "data" / "exp.duckdb",
    }


@pytest.mark.parametrize("alias", ["symlink", "symlinked-folder", "hard-link", "dotdot"])
def test_a_second_engine_by_another_name_is_refused_in_process(tmp_path: Path, alias: str) -> None:
    real, names = _aliases(tmp_path)
    with Engine(real) as first:
        with pytest.raises(JournalLockedError, match=str(os.getpid())):
            Engine(names[alias])
        assert first.run(counting, 1, run_id="r1") == 2  # the owner is undisturbed
    with Engine(names[alias]) as again:  # once the owner is gone, any name opens it
        assert [r.run_id for r in again.runs()] == ["r1"]
    assert CALLS == ["count-1"]


def test_a_relative_path_is_the_same_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, _ = _aliases(tmp_path)
    monkeypatch.chdir(real.parent)
    with Engine(real), pytest.raises(JournalLockedError):
        Engine("exp.duckdb")


@pytest.mark.parametrize("alias", ["symlink", "hard-link"])
def test_a_second_process_by_another_name_is_refused(tmp_path: Path, alias: str) -> None:
    real, names = _aliases(tmp_path)
    holder = Child(tmp_path, "hold", str(real))
    try:
        assert holder.read_json()["ready"] is True
        outcome = run_child(tmp_path, "open", str(names[alias]))
        assert outcome["error_type"] == "JournalLockedError", outcome
        assert outcome["holder_pid"] == holder.pid
        # and the other way round: held by the alias, refused by the real name
        holder.send("close")
        assert holder.read_json() == {"closed": True}
    finally:
        holder.stop()
    holder = Child(tmp_path, "hold", str(names[alias]))
    try:
        assert holder.read_json()["ready"] is True
        with pytest.raises(JournalLockedError) as caught:
            Engine(real)
        assert caught.value.holder_pid == holder.pid
    finally:
        holder.stop()


def test_every_name_finds_the_same_step_log_and_checkpoints(tmp_path: Path) -> None:
    real, names = _aliases(tmp_path)
    with Engine(names["symlink"]) as eng:
        assert eng.journal.path == str(real)
        assert eng.journal.step_log_path == str(real) + ".steplog"
        assert eng.checkpoints.root == str(real) + ".checkpoints"
        assert eng.run(training, 2, run_id="t") == 2
    assert not (tmp_path / "link.duckdb.checkpoints").exists()
    assert not (tmp_path / "link.duckdb.lock").exists()
    with Engine(names["hard-link"]) as eng:  # a hard link keeps the first name's files
        assert eng.journal.path == str(real)
        assert eng.checkpoints.load_latest("t", 0) == {"epoch": 2}


# -- journals named alike ------------------------------------------------------------------------


def test_journals_differing_only_by_extension_keep_their_own_checkpoints(tmp_path: Path) -> None:
    paths = [tmp_path / "exp.duckdb", tmp_path / "exp.db", tmp_path / "exp"]
    engines = [Engine(p) for p in paths]
    try:
        for index, eng in enumerate(engines):
            assert eng.run(training, index + 1, run_id="same-id") == index + 1
        for index, eng in enumerate(engines):  # reopen each: nobody cleans the others' files
            eng.close()
            engines[index] = Engine(paths[index])
        for index, eng in enumerate(engines):
            assert eng.checkpoints.load_latest("same-id", 0) == {"epoch": index + 1}
            root = Path(eng.checkpoints.root)
            assert root == Path(str(paths[index]) + ".checkpoints")
            owner = json.loads((root / OWNER_FILE).read_text())
            assert owner["journal"] == str(paths[index])
            assert owner["ino"] == os.stat(paths[index]).st_ino
    finally:
        for eng in engines:
            eng.close()


def _old_layout(journal: Path, run_id: str, epochs: int) -> None:
    """A journal as an older weft_nb left it: checkpoints in ``<stem>.checkpoints``."""
    with Engine(journal) as eng:
        eng.run(training, epochs, run_id=run_id)
        root = Path(eng.checkpoints.root)
    (root / OWNER_FILE).unlink()
    root.rename(journal.with_suffix(".checkpoints"))


def test_an_old_unshared_folder_is_adopted(tmp_path: Path) -> None:
    journal = tmp_path / "old.duckdb"
    _old_layout(journal, "r", 3)
    with Engine(journal) as eng:
        assert eng.checkpoints.root == str(journal) + ".checkpoints"
        assert eng.checkpoints.load_latest("r", 0) == {"epoch": 3}
    assert not journal.with_suffix(".checkpoints").exists()


def test_an_old_folder_two_journals_could_claim_is_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "exp.duckdb"
    _old_layout(journal, "r", 3)
    with pytest.warns(RuntimeWarning, match="not adopted"), Engine(tmp_path / "exp.db") as other:
        other.run(counting, 5, run_id="o")  # a second journal that maps to the same old folder
    legacy = tmp_path / "exp.checkpoints"
    before = sorted(p.name for p in legacy.rglob("*"))
    with pytest.warns(RuntimeWarning, match="not adopted"), Engine(journal) as eng:
        assert eng.checkpoints.root == str(journal) + ".checkpoints"
    assert sorted(p.name for p in legacy.rglob("*")) == before  # nothing deleted or moved


def test_a_journal_without_checkpoints_gets_no_folder(tmp_path: Path) -> None:
    with Engine(tmp_path / "plain.duckdb") as eng:
        eng.run(counting, 1, run_id="p")
    assert not (tmp_path / "plain.duckdb.checkpoints").exists()


_CRASHING_WRITER = """
import os, signal, sys
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import RunRecord, StepRecord
journal = DuckDBJournal(sys.argv[1])
journal.create_run(RunRecord(run_id="c", workflow="wf", version="v", status="running",
    on_change="rerun", input_codec="json", input=b"1", created_at=0.0, updated_at=0.0))
journal.record_step(StepRecord(run_id="c", position=0, activity="act", status="completed",
    input_hash="h", source_hash="s", attempts=1, started_at=1.0, finished_at=2.0,
    result_codec="json", result=b"7"))
assert os.path.getsize(journal.step_log_path) > 0  # acknowledged, only in the step log
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_reader_by_a_hard_link_finds_the_step_log_of_a_killed_writer(tmp_path: Path) -> None:
    real = tmp_path / "exp.duckdb"
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(real)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    os.link(real, tmp_path / "hard.duckdb")
    reader = DuckDBJournal(tmp_path / "hard.duckdb", read_only=True)
    try:
        assert list(reader.load_steps("c")) == [0]  # applied from exp.duckdb.steplog
    finally:
        reader.close()
