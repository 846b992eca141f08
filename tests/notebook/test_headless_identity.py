"""Which journal a headless kernel takes, with real runners and kernels (review 18, findings 1, 2).

Each notebook runs in a runner process of its own (nbclient, as nbconvert and papermill use it),
started in the notebooks' parent folder, and the runner's command line names no notebook.
- A runner that carries ``JPY_SESSION_NAME`` in its environment stands for a notebook that runs
  other notebooks (papermill or nbconvert in a cell): its kernels inherit the name, which must
  not send them to the orchestrator's journal.
- Notebooks with the same opening cells must not share a journal, and adding a notebook to the
  folder must not move a notebook to another journal and run completed work again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytest.importorskip("nbclient", reason="the dev extra installs nbclient")

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 300

RUNNER = """\
import os, nbclient, nbformat
path = os.environ["WEFT_TEST_NOTEBOOK"]  # not on the command line: nothing names the notebook
notebook = nbformat.read(path, as_version=4)
client = nbclient.NotebookClient(
    notebook, timeout=180, kernel_name="python3",
    resources={"metadata": {"path": os.path.dirname(path)}},
)
session = os.environ.get("WEFT_TEST_KERNEL_SESSION")  # set for the kernel only, as a server does
client.execute(**({"env": {**os.environ, "JPY_SESSION_NAME": session}} if session else {}))
print("".join(o.get("text", "") for o in notebook.cells[-1].outputs), end="")  # may be chunked
"""


def write(path: Path, cells: list[str]) -> None:
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)


def execute(notebook: Path, **env: str) -> tuple[int, str, str]:
    """Run ``notebook`` in a runner process; its exit status, stdout and stderr."""
    child_env = {**os.environ, "WEFT_TEST_NOTEBOOK": str(notebook), **env}
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    child_env.pop("JPY_PARENT_PID", None)
    if "JPY_SESSION_NAME" not in env:
        child_env.pop("JPY_SESSION_NAME", None)
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        check=False,
        cwd=notebook.parent.parent,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    return done.returncode, done.stdout, done.stderr


def journals(folder: Path) -> set[str]:
    return {p.name for p in (folder / ".weft").glob("*.duckdb")}


def test_kernels_started_from_a_notebook_do_not_take_its_inherited_session_name(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "sweep"
    folder.mkdir()
    for lr in (1, 2):
        write(
            folder / f"out-lr{lr}.ipynb",
            [
                f"lr = {lr}",
                "%load_ext weft_nb",
                "%%weft_activity train(n)\nn * lr",
                "%%weft_workflow wf(n)\nreturn ctx.run(train, n)",
                "result = %weft run wf n=10",
                "print('result', result)",
            ],
        )
    orchestrator = str(folder / "sweep.ipynb")
    for lr, expected in ((1, 10), (2, 20)):
        code, out, err = execute(folder / f"out-lr{lr}.ipynb", JPY_SESSION_NAME=orchestrator)
        assert code == 0, err
        assert out == f"result {expected}\n"  # not the other notebook's result, replayed
    assert journals(folder) == {"out-lr1.duckdb", "out-lr2.duckdb"}

    # The same name set for the kernel alone (as Jupyter Server does) still names the notebook.
    code, out, err = execute(folder / "out-lr1.ipynb", WEFT_TEST_KERNEL_SESSION=orchestrator)
    assert code == 0, err
    assert journals(folder) == {"out-lr1.duckdb", "out-lr2.duckdb", "sweep.duckdb"}


def test_notebooks_with_the_same_opening_keep_their_journals_as_the_folder_changes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    log = tmp_path / "prep.log"
    opening = ["%load_ext weft_nb", "%weft runs"]
    logged = f"with open({str(log)!r}, 'a') as f:\n    f.write('ran\\n')"
    train = [
        *opening,
        f"%%weft_activity prep(n)\n{logged}\nn + 1",
        "%%weft_workflow wf(n)\nreturn ctx.run(prep, n)",
        "result = %weft run wf n=3",
        "print('result', result)",
    ]
    write(folder / "train.ipynb", train)
    write(folder / "eval.ipynb", [*opening, "%%weft_activity score(n)\nn * 2"])
    for _ in range(2):
        code, out, err = execute(folder / "train.ipynb")
        assert code == 0, err
        assert out == "result 4\n"
    write(folder / "a.ipynb", opening)  # a scratch notebook with a shorter name
    code, out, err = execute(folder / "train.ipynb")
    assert code == 0, err
    assert out == "result 4\n"
    assert log.read_text() == "ran\n"  # completed once, replayed since
    assert journals(folder) == {"train.duckdb"}

    write(folder / "train-copy.ipynb", train)  # the kernel cannot tell these two apart
    code, out, err = execute(folder / "train.ipynb")
    assert code != 0
    assert "UsageError" in err and "%weft journal .weft/NAME.duckdb" in err
    assert log.read_text() == "ran\n"
    assert journals(folder) == {"train.duckdb"}
