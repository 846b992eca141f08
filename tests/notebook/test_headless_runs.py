"""Headless runs: two notebooks of one folder executed at once by nbclient, each on its own journal.

nbclient (what ``jupyter nbconvert --execute``, ``jupyter execute`` and papermill run on) starts
real kernels in the notebook's folder and tells them nothing about which notebook they run. Each
notebook here runs in its own process, as two ``nbconvert`` commands would, and neither runner's
command line names its notebook, so weft_nb finds each notebook by the cells its kernel ran. The
two runs meet inside their activities, so both kernels hold their journals at the same moment:
with one shared journal the second kernel would be refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from weft_nb.journal.duckdb_journal import DuckDBJournal

pytest.importorskip("nbclient", reason="the dev extra installs nbclient")

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 300

RUNNER = """\
import os, nbclient, nbformat
path = os.environ["WEFT_TEST_NOTEBOOK"]  # not on the command line: nothing names the notebook
notebook = nbformat.read(path, as_version=4)
client = nbclient.NotebookClient(
    notebook, timeout=180, kernel_name="python3",
    resources={"metadata": {"path": os.path.dirname(path)}},  # the kernel runs in its folder
)
client.execute()
print("".join(o.get("text", "") for o in notebook.cells[-1].outputs), end="")  # may be chunked
"""

MEET = """\
import os, pathlib, time
MARKS = pathlib.Path(os.environ["WEFT_TEST_MARKS"])

def meet(me):
    '''Say this kernel runs; wait (bounded) until the partner notebook's kernel runs too.'''
    (MARKS / f"{me}-running").touch()
    partner = os.environ.get("WEFT_TEST_PARTNER")
    deadline = time.monotonic() + 60
    while partner and not (MARKS / f"{partner}-running").exists():
        assert time.monotonic() < deadline, f"{partner} never ran beside {me}"
        time.sleep(0.05)
"""


def pipeline_notebook(name: str, factor: int) -> list[str]:
    """A notebook: prepare (logs each execution), then train (meets the partner, may crash)."""
    return [
        "%load_ext weft_nb",
        MEET,
        f"%%weft_activity prepare_{name}(n)\n"
        f"with open(MARKS / 'prepare_{name}.log', 'a') as log:\n"
        "    log.write('ran\\n')\n"
        "list(range(n))",
        f"%%weft_activity train_{name}(data) --retry 2 --non-retryable AssertionError\n"
        f"meet({name!r})\n"
        "if os.environ.get('WEFT_TEST_CRASH'):\n"
        "    os._exit(1)  # the kernel dies mid-run\n"
        f"sum(data) * {factor}",
        f"%%weft_workflow pipeline_{name}(n)\nctx.run(train_{name}, ctx.run(prepare_{name}, n))",
        f"result = %weft run pipeline_{name} n=4",
        "print('result', result)",
    ]


def start(folder: Path, name: str, marks: Path, **env: str) -> subprocess.Popen[str]:
    """A runner process executing ``folder/<name>.ipynb`` with nbclient."""
    child_env = {**os.environ, "WEFT_TEST_NOTEBOOK": str(folder / f"{name}.ipynb"), **env}
    child_env["WEFT_TEST_MARKS"] = str(marks)
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    for variable in ("JPY_SESSION_NAME", "JPY_PARENT_PID"):
        child_env.pop(variable, None)
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER],
        cwd=folder.parent,  # not the notebooks' folder: nbclient starts the kernel there
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=DEADLINE)
    return process.returncode, out, err


def runs(journal: Path) -> dict[str, tuple[str, str]]:
    """Each run of a journal file: its workflow and status."""
    reader = DuckDBJournal(journal, read_only=True)
    try:
        return {r.run_id: (r.workflow, r.status) for r in reader.list_runs()}
    finally:
        reader.close()


def test_two_notebooks_run_at_once_in_one_folder_each_on_its_own_journal_and_resume(
    tmp_path: Path,
) -> None:
    folder, marks = tmp_path / "notebooks", tmp_path / "marks"
    folder.mkdir()
    marks.mkdir()
    for name, factor in (("a", 1), ("b", 2)):
        cells = pipeline_notebook(name, factor)
        nbformat.write(
            new_notebook(cells=[new_code_cell(c) for c in cells]), folder / f"{name}.ipynb"
        )

    first_a = start(folder, "a", marks, WEFT_TEST_PARTNER="b", WEFT_TEST_CRASH="1")
    first_b = start(folder, "b", marks, WEFT_TEST_PARTNER="a")
    code_b, out_b, err_b = finish(first_b)
    code_a, _, err_a = finish(first_a)
    assert code_b == 0, err_b
    assert out_b == "result 12\n"
    assert code_a != 0 and "DeadKernelError" in err_a, err_a  # a's kernel died mid-run
    assert {p.name for p in marks.iterdir()} >= {"a-running", "b-running"}  # they met

    weft = folder / ".weft"
    assert sorted(p.name for p in weft.glob("*.duckdb")) == ["a.duckdb", "b.duckdb"]
    (run_b,) = runs(weft / "b.duckdb").values()
    assert run_b == ("pipeline_b", "completed")
    ((run_id, run_a),) = runs(weft / "a.duckdb").items()
    assert run_a == ("pipeline_a", "running")  # unfinished: its kernel died

    code, out, err = finish(start(folder, "a", marks))  # run the notebook again
    assert code == 0, err
    assert out == "result 6\n"
    assert runs(weft / "a.duckdb") == {run_id: ("pipeline_a", "completed")}  # the same run
    assert (marks / "prepare_a.log").read_text() == "ran\n"  # replayed, not run again
