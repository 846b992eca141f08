"""``weft-nb`` beside a notebook: the default journal is missing, the notebook's is named after it.

A notebook's journal is ``.weft/<notebook>.duckdb`` (issue 18.11), so ``weft-nb runs`` run in
the notebook's folder finds no ``.weft/journal.duckdb``. It must list the journals it found and
say how to pick one, with exit status 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import weft_nb
from weft_nb.cli.main import main
from weft_nb.testing import TestEngine

REPO = Path(__file__).resolve().parents[2]


@weft_nb.workflow
def hello(ctx: weft_nb.WorkflowContext) -> str:
    return "hi"


def notebook_journal(path: Path, run_id: str) -> Path:
    """A closed journal at ``path`` holding one completed run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with TestEngine(path) as engine:
        assert engine.run(hello, run_id=run_id) == "hi"
    return path


@pytest.fixture
def notebook_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder as two notebooks leave it: ``.weft/train.duckdb`` and ``.weft/sweep.duckdb``."""
    notebook_journal(tmp_path / ".weft" / "train.duckdb", "train-1")
    notebook_journal(tmp_path / ".weft" / "sweep.duckdb", "sweep-1")
    (tmp_path / ".weft" / "notes.txt").write_text("not a journal")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_runs_beside_a_notebook_lists_the_journals_it_found(
    notebook_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs"]) == 1
    err = capsys.readouterr().err
    missing = notebook_folder / ".weft" / "journal.duckdb"
    assert (
        f"no journal at {missing}; found 2 journal(s): .weft/sweep.duckdb, .weft/train.duckdb"
        in err
    )
    assert "Pick one with --journal PATH, e.g. weft-nb --journal .weft/sweep.duckdb runs" in err
    assert "Traceback" not in err
    assert not missing.exists()  # nothing created

    assert main(["--journal", ".weft/train.duckdb", "runs"]) == 0
    assert "train-1" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["show", "r"], ["sql", "SELECT 1"], ["check"]])
def test_every_read_command_lists_them(
    notebook_folder: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "found 2 journal(s): .weft/sweep.duckdb, .weft/train.duckdb" in err
    assert f"weft-nb --journal .weft/sweep.duckdb {command[0]}" in err


def test_from_the_project_root_it_looks_one_folder_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    notebook_journal(tmp_path / "notebooks" / ".weft" / "quickstart.duckdb", "q-1")
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 1
    assert (
        "found 1 journal(s): notebooks/.weft/quickstart.duckdb. Pick one with --journal PATH, "
        "e.g. weft-nb --journal notebooks/.weft/quickstart.duckdb runs"
    ) in capsys.readouterr().err


def test_with_no_journal_anywhere_the_message_is_the_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 1
    err = capsys.readouterr().err
    assert f"no journal at {tmp_path / '.weft' / 'journal.duckdb'} (pass --journal PATH)" in err


def test_the_real_command_exits_1_and_lists_them(notebook_folder: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "weft_nb", "runs"],
        cwd=notebook_folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "found 2 journal(s): .weft/sweep.duckdb, .weft/train.duckdb" in done.stderr
    assert "--journal" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
