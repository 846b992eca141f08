"""Which notebook a kernel runs (``weft_nb/notebook/identity.py``), on real notebook files.

The real headless runners are driven in ``test_headless_runs.py``; here each source of the
identity is checked on its own, with notebooks written by ``nbformat`` into ``tmp_path``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from helpers import weft_magics
from IPython.core.interactiveshell import InteractiveShell
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from weft_nb.errors import NotebookJournalLockedError
from weft_nb.notebook.identity import Runner, find_notebook, notebook_by_cells, runner
from weft_nb.testing import TestEngine

CELLS_A = [
    "%load_ext weft_nb",
    "import numpy as np\n\nx = np.arange(3)\n",
    "%%weft_activity a(n)\nn",
]
CELLS_B = ["%load_ext weft_nb", "y = 2", "%%weft_activity b(n)\nn * 2"]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of ``cells`` (code), with a markdown cell and an empty code cell between."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# title"),
            *(new_code_cell(source) for source in cells[:1]),
            new_code_cell("   \n"),  # empty: runners skip it, and so does the history
            *(new_code_cell(source) for source in cells[1:]),
        ]
    )
    nbformat.write(notebook, path)
    return path


def ran(cells: list[str]) -> list[str]:
    """The cells as IPython's raw history records them: trailing whitespace stripped."""
    return [cell.rstrip() for cell in cells]


def test_the_front_end_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_notebook(tmp_path / "a.ipynb", CELLS_A)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    found = find_notebook({"__vsc_ipynb_file__": "/w/vs.ipynb"}, ran(CELLS_A), str(tmp_path), None)
    assert found is not None and (found.path, found.found_by) == ("/w/vs.ipynb", "the front end")
    monkeypatch.setenv("JPY_SESSION_NAME", "/w/lab.ipynb")
    found = find_notebook({}, ran(CELLS_A), str(tmp_path), None)
    assert found is not None and found.path == "/w/lab.ipynb"


def test_papermill_parameters_name_the_output_relative_to_papermills_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    names = {"PAPERMILL_INPUT_PATH": "train.ipynb", "PAPERMILL_OUTPUT_PATH": "out/lr-0.1.ipynb"}
    papermill = Runner(cwd="/runs", argv=("papermill", "train.ipynb", "out/lr-0.1.ipynb"))
    found = find_notebook(names, [], str(tmp_path), papermill)
    assert found is not None
    assert (found.path, found.found_by) == ("/runs/out/lr-0.1.ipynb", "papermill's parameters")
    only_input = {"PAPERMILL_INPUT_PATH": "train.ipynb"}
    found = find_notebook(only_input, [], str(tmp_path), None)  # no runner: the kernel's folder
    assert found is not None and found.path == str(tmp_path / "train.ipynb")
    remote = {"PAPERMILL_OUTPUT_PATH": "s3://bucket/out.ipynb"}
    assert find_notebook(remote, [], str(tmp_path), None) is None


def test_the_notebook_is_found_by_the_cells_the_kernel_ran(tmp_path: Path) -> None:
    a = write_notebook(tmp_path / "a.ipynb", CELLS_A)
    write_notebook(tmp_path / "b.ipynb", CELLS_B)
    (tmp_path / "broken.ipynb").write_text("{not json")
    folder = str(tmp_path)
    assert notebook_by_cells(ran(CELLS_A[:2]), folder, None) == str(a)
    assert notebook_by_cells(ran(CELLS_B), folder, None) == str(tmp_path / "b.ipynb")
    assert notebook_by_cells(ran(CELLS_A[1:]), folder, None) == str(a)  # a cell not run: fine
    assert notebook_by_cells(ran([CELLS_A[2], CELLS_A[1]]), folder, None) is None  # out of order
    assert notebook_by_cells(ran([*CELLS_A, "z = 1"]), folder, None) is None  # not in a
    assert notebook_by_cells(["", "  "], folder, None) is None  # nothing run yet
    assert notebook_by_cells(ran(CELLS_A), str(tmp_path / "missing"), None) is None


def test_when_several_notebooks_hold_the_cells_the_runners_last_named_then_the_shortest_wins(
    tmp_path: Path,
) -> None:
    a = write_notebook(tmp_path / "a.ipynb", CELLS_A)
    copy = write_notebook(tmp_path / "a.nbconvert.ipynb", CELLS_A)  # nbconvert's output
    folder = str(tmp_path)
    assert notebook_by_cells(ran(CELLS_A), folder, None) == str(a)
    nbconvert = Runner(cwd=folder, argv=("jupyter-nbconvert", "--execute", "a.nbconvert.ipynb"))
    assert notebook_by_cells(ran(CELLS_A), folder, nbconvert) == str(copy)
    out = tmp_path / "out"
    out.mkdir()
    output = write_notebook(out / "o.ipynb", CELLS_A)  # papermill's output, outside the folder
    papermill = Runner(cwd=folder, argv=("papermill", "a.ipynb", "out/o.ipynb", "-p", "n", "1"))
    assert notebook_by_cells(ran(CELLS_A), folder, papermill) == str(output)


def test_the_runner_is_read_from_the_process_that_started_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    started_by = runner()
    assert started_by is not None
    assert started_by.cwd == os.getcwd()
    assert started_by.argv[0] == sys.argv[0] or started_by.argv[0].endswith("python")
    monkeypatch.setenv("JPY_PARENT_PID", "not-a-pid")
    assert runner() is None
    monkeypatch.delenv("JPY_PARENT_PID")
    assert runner() is None


@pytest.fixture
def unnamed(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """The test shell as a kernel that nothing names: weft_nb looks for its notebook afresh."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    session = weft_magics(ip).session
    session.close()
    session.forget_notebook()  # the shell is one per process: its earlier tests ran elsewhere
    weft_magics(ip).journal = ""  # not named: weft_nb chooses
    yield ip
    session.close()
    session.forget_notebook()


def test_a_kernel_of_a_notebook_found_by_its_cells_keys_its_journal_on_it(
    unnamed: InteractiveShell, tmp_path: Path
) -> None:
    ip = unnamed
    session = weft_magics(ip).session
    history = ip.history_manager.input_hist_raw
    write_notebook(tmp_path / "train.ipynb", [*history[1:], "%weft journal"])
    ip.run_cell("%weft journal", store_history=True)  # as a kernel runs a cell
    assert session.journal_path() == str(tmp_path / ".weft" / "train.duckdb")
    notebook = session.notebook()
    assert notebook is not None and notebook.found_by == "its cells"
    assert notebook.path == str(tmp_path / "train.ipynb")


def test_the_shared_journal_locked_by_another_kernel_says_to_name_one(
    unnamed: InteractiveShell, tmp_path: Path
) -> None:
    magics = weft_magics(unnamed)
    assert magics.session.journal_path() == os.path.join(".weft", "journal.duckdb")
    with TestEngine(tmp_path / ".weft" / "journal.duckdb"):  # another notebook's kernel
        with pytest.raises(NotebookJournalLockedError) as caught:
            magics.session.engine  # noqa: B018 - opening it is the test
    message = str(caught.value)
    assert "fell back to the folder's shared journal" in message
    assert "%weft journal .weft/NAME.duckdb" in message and "papermill" in message
    assert caught.value.holder_pid == os.getpid()
