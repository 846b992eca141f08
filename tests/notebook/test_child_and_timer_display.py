"""Child workflows and timers as the panel, `%weft runs` and the CLI show them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import weft_nb
from weft_nb.notebook.run_table import RunTable
from weft_nb.notebook.static_panel import static_html
from weft_nb.testing import TestEngine

REPO = Path(__file__).resolve().parents[2]


@weft_nb.workflow
def trial(ctx: weft_nb.WorkflowContext, lr: float) -> float:
    return lr * 2


@weft_nb.workflow
def sweep(ctx: weft_nb.WorkflowContext) -> list[float]:
    ctx.timer("90s").result()
    return [ctx.run_workflow(trial, 0.5)]


def test_the_panel_links_parent_and_child_and_shows_a_timers_deadline(
    engine: TestEngine,
) -> None:
    assert engine.run(sweep, run_id="sw") == [1.0]
    parent, child = engine.snapshot("sw"), engine.snapshot("sw.1")
    assert child.parent_run_id == "sw"
    assert child.to_json()["parent_run_id"] == "sw"
    assert "child of run sw" in child.text()
    assert "child of run <code>sw</code>" in static_html(child)
    timer, step = parent.steps
    assert (timer.activity, timer.status) == ("<timer>", "completed")
    assert timer.note is not None
    assert timer.note.startswith("deadline ")
    assert timer.note.endswith(": fired")
    assert (step.activity, step.note) == ("<child>", "child workflow run sw.1")
    html = static_html(parent)
    assert "child workflow run sw.1" in html
    assert timer.note in html
    assert parent.to_json()["steps"][1]["note"] == "child workflow run sw.1"


def test_a_pending_timer_shows_the_time_left(engine: TestEngine) -> None:
    engine.clock.auto_advance = False

    @weft_nb.workflow
    def waits(ctx: weft_nb.WorkflowContext) -> None:
        ctx.timer("1h").result()

    handle = engine.start(waits, run_id="w")
    engine.clock.wait_for_sleepers(1)
    (timer,) = engine.snapshot("w").steps
    assert timer.note is not None
    assert timer.note.endswith("(in 3600s)")
    handle.cancel()


def test_runs_lists_the_parent_link(engine: TestEngine) -> None:
    engine.run(sweep, run_id="sw")
    table = RunTable(engine.runs())
    assert [(r.run_id, r.parent_run_id) for r in table] == [("sw", None), ("sw.1", "sw")]
    assert table.rows()[1][-1] == "sw"
    assert "<th style='text-align:left'>parent</th>" in table._repr_html_()
    assert repr(table).splitlines()[0].split()[-1] == "parent"


def test_the_cli_lists_and_shows_the_parent_link(engine: TestEngine) -> None:
    engine.run(sweep, run_id="sw")
    path = engine.journal.path
    engine.close()

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "weft_nb", "--journal", path, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            cwd=REPO,
        )
        return done.stdout

    lines = cli("runs").splitlines()
    assert lines[0].split()[-1] == "PARENT"
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert (rows["sw"][-1], rows["sw.1"][-1]) == ("-", "sw")
    assert "  parent    sw" in cli("show", "sw.1")
    assert "  parent" not in cli("show", "sw")


def test_a_timer_never_waited_on_does_not_read_as_due_in_0s(engine: TestEngine) -> None:
    """review15: a finished run's unawaited timer showed "(in 0s)" for a deadline long past."""

    @weft_nb.workflow
    def forgets(ctx: weft_nb.WorkflowContext) -> None:
        ctx.timer("1s")  # never waited on: it never fires
        ctx.sleep("5s")

    engine.run(forgets, run_id="f")
    timer, _ = engine.snapshot("f").steps
    assert timer.note is not None
    assert timer.note.endswith(": passed, not fired (fires when the workflow waits on it)")
