"""``weft-nb show`` prints the engine's notes under marker steps: a child workflow's run id and a
timer's deadline, as the run panel and ``%weft show`` do (one implementation:
`weft_nb.engine.step_notes`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import weft_nb

REPO = Path(__file__).resolve().parents[2]


@weft_nb.activity
def square(x: int) -> int:
    return x * x


@weft_nb.workflow
def child(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(square, x)


@weft_nb.workflow
def parent(ctx: weft_nb.WorkflowContext, x: int) -> int:
    ctx.all([ctx.timer(0.01)])
    return ctx.run_workflow(child, x, run_id="the-child")


def test_show_names_the_child_run_and_the_timer_deadline(tmp_path: Path) -> None:
    journal = tmp_path / "j.duckdb"
    with weft_nb.Engine(journal) as engine:
        assert engine.run(parent, 3, run_id="the-parent") == 9
    done = subprocess.run(
        [sys.executable, "-m", "weft_nb", "--journal", str(journal), "show", "the-parent"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    child_step = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["<child>"])
    position = lines[child_step].split()[0]
    notes = lines[lines.index(f"step {position}:") + 1 :]
    assert notes[0].strip() == "child workflow run the-child"
    assert any(line.strip().endswith(": fired") for line in lines), done.stdout
