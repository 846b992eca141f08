"""Which notebook a kernel runs (``weft_nb/notebook/identity.py``), on real notebook files.

The real headless runners are driven in ``test_headless_runs.py``; here each source of the
identity is checked on its own, with notebooks written by ``nbformat`` into ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from helpers import weft_magics
from IPython.core.interactiveshell import InteractiveShell
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from weft_nb.errors import NotebookJournalLockedError
from weft_nb.notebook.identity import (
    Runner,
    Undecided,
    find_notebook,
    notebook_by_cells,
    notebook_path,
    runner,
)
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


def test_when_several_notebooks_hold_the_cells_only_the_runners_command_line_decides(
    tmp_path: Path,
) -> None:
    a = write_notebook(tmp_path / "a.ipynb", CELLS_A)
    copy = write_notebook(tmp_path / "a.nbconvert.ipynb", CELLS_A)  # nbconvert's output
    folder = str(tmp_path)
    both = Undecided(candidates=(str(a), str(copy)))  # sorted
    assert notebook_by_cells(ran(CELLS_A), folder, None) == both  # no guess by name length
    nbconvert = Runner(cwd=folder, argv=("jupyter-nbconvert", "--execute", "a.nbconvert.ipynb"))
    assert notebook_by_cells(ran(CELLS_A), folder, nbconvert) == str(copy)  # the one it names
    out = tmp_path / "out"
    out.mkdir()
    output = write_notebook(out / "o.ipynb", CELLS_A)  # papermill's output, outside the folder
    papermill = Runner(cwd=folder, argv=("papermill", "a.ipynb", "out/o.ipynb", "-p", "n", "1"))
    assert notebook_by_cells(ran(CELLS_A), folder, papermill) == str(output)  # copies: the last


def test_two_named_notebooks_that_differ_later_stay_undecided_until_their_cells_differ(
    tmp_path: Path,
) -> None:
    a = write_notebook(tmp_path / "a.ipynb", CELLS_A)
    b = write_notebook(tmp_path / "b.ipynb", [*CELLS_A[:2], "%%weft_activity b(n)\nn * 2"])
    both = Runner(cwd=str(tmp_path), argv=("jupyter-nbconvert", "--execute", "a.ipynb", "b.ipynb"))
    opening = ran(CELLS_A[:2])
    assert notebook_by_cells(opening, str(tmp_path), both) == Undecided((str(a), str(b)))
    assert notebook_by_cells(ran(CELLS_A), str(tmp_path), both) == str(a)  # a's own cell ran


def test_papermills_parameters_win_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/w/orchestrator.ipynb")
    names = {"PAPERMILL_OUTPUT_PATH": "out/lr-0.1.ipynb"}
    found = find_notebook(names, [], str(tmp_path), Runner(cwd="/runs", argv=("papermill",)))
    assert found is not None and not isinstance(found, Undecided)
    assert (found.path, found.found_by) == ("/runs/out/lr-0.1.ipynb", "papermill's parameters")


def test_a_session_name_the_starting_process_carries_too_was_inherited_and_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real process stands for the runner (a parent kernel, papermill run from a cell)."""
    holds = "import sys; print(flush=True); sys.stdin.read()"  # waits for the test to close stdin
    for runner_value, counts in (("/w/parent.ipynb", False), ("/w/other.ipynb", True), ("", True)):
        env = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}
        if runner_value:
            env["JPY_SESSION_NAME"] = runner_value
        process = subprocess.Popen(
            [sys.executable, "-c", holds], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            process.stdout.readline()  # it runs: /proc shows its environment (not mid-exec)
            monkeypatch.setenv("JPY_PARENT_PID", str(process.pid))
            monkeypatch.setenv("JPY_SESSION_NAME", "/w/parent.ipynb")
            expected = "/w/parent.ipynb" if counts else None
            assert notebook_path({}) == expected, runner_value
        finally:
            process.communicate(b"")


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


def test_commands_that_only_read_do_not_choose_the_notebook_from_too_few_cells(
    unnamed: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two notebooks begin with the same cells; only a later cell tells which one this is."""
    ip = unnamed
    session = weft_magics(ip).session
    opening = [*ip.history_manager.input_hist_raw[1:], "%weft runs", "%weft journal"]
    shared = "%%weft_activity prep(n)\nn + 1"  # both notebooks define it the same way
    own = ["%%weft_workflow wf(n)\nreturn ctx.run(prep, n)", "%weft run wf n=3"]
    write_notebook(tmp_path / "train.ipynb", [*opening, shared, *own])
    write_notebook(tmp_path / "eval.ipynb", [*opening, shared, "%weft journal"])
    for cell in [*opening[-2:], shared]:
        assert ip.run_cell(cell, store_history=True).success
        assert session.open_engine is None and session.undecided() is not None
    assert "no journal chosen yet" in capsys.readouterr().out
    result = ip.run_cell(own[0], store_history=True)  # only train.ipynb has it
    assert result.success and session.undecided() is None
    result = ip.run_cell(own[1], store_history=True)
    assert result.success and result.result == 4  # the activity registered before is known
    notebook = session.notebook()
    assert notebook is not None and notebook.path == str(tmp_path / "train.ipynb")
    assert session.journal_path() == str(tmp_path / ".weft" / "train.duckdb")
    assert {p.name for p in (tmp_path / ".weft").glob("*.duckdb")} == {"train.duckdb"}


def test_a_run_while_the_cells_fit_several_notebooks_says_to_name_the_journal(
    unnamed: InteractiveShell, tmp_path: Path
) -> None:
    ip = unnamed
    session = weft_magics(ip).session
    cells = [
        *ip.history_manager.input_hist_raw[1:],
        "%%weft_activity twice(n)\nn * 2",
        "%%weft_workflow wf2(n)\nreturn ctx.run(twice, n)",
        "%weft run wf2 n=3",
    ]
    write_notebook(tmp_path / "train.ipynb", cells)
    write_notebook(tmp_path / "train-copy.ipynb", cells)  # a copy: the kernel cannot tell
    for cell in cells[-3:-1]:
        assert ip.run_cell(cell, store_history=True).success
    result = ip.run_cell(cells[-1], store_history=True)
    assert not result.success and "UsageError" in type(result.error_in_exec).__name__
    message = str(result.error_in_exec)
    assert "train-copy.ipynb" in message and "%weft journal .weft/NAME.duckdb" in message
    assert session.open_engine is None and not (tmp_path / ".weft").exists()  # nothing chosen
    weft_magics(ip).session.switch_journal(str(tmp_path / "named.duckdb"))
    assert ip.run_cell(cells[-1], store_history=True).result == 6  # named: the cells are known
