"""The panel a settled run leaves behind: static HTML, its widgets closed, hostile text escaped.

In-process (the IPython-free half); tests/notebook/test_static_output.py runs the same in a real
kernel under nbclient and nbconvert.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import cancellable_run, wait_until
from IPython.core.interactiveshell import InteractiveShell
from ipywidgets.widgets.widget import _instances as open_widget_models
from panel_html import read_rows

import weft_nb
from weft_nb.engine.snapshot import StepView
from weft_nb.notebook.panel import RunPanel
from weft_nb.notebook.static_panel import CHART_POINTS, sparkline, static_html
from weft_nb.testing import TestEngine

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
HOSTILE = "<script>alert('weft')</script>"


def steps_run(engine: TestEngine, run_id: str, n: int) -> None:
    @weft_nb.activity
    def tick(i: int, activity: weft_nb.ActivityContext) -> int:
        activity.heartbeat({"loss": 1 / (i + 1), "progress": 1.0})
        return i

    @weft_nb.workflow
    def ticks(ctx: weft_nb.WorkflowContext, n: int) -> int:
        return sum(ctx.run(tick, i) for i in range(n))

    engine.run(ticks, n, run_id=run_id)


def test_a_panel_is_a_handful_of_widget_models_whatever_the_steps(engine: TestEngine) -> None:
    """A row of widgets per step made a 50-step run 1,407 models (1.5 MB saved by nbclient)."""
    made = {}
    for steps in (2, 120):
        steps_run(engine, f"steps-{steps}", steps)
        before = set(open_widget_models)
        panel = RunPanel(engine, f"steps-{steps}", cancel_button=True)
        made[steps] = len(set(open_widget_models) - before)
    assert made[2] == made[120] <= 15, made  # layouts and styles included
    assert len(read_rows(panel.steps.value)) == 50  # the newest MAX_ROWS steps, one table


def test_finish_leaves_static_html_and_closes_every_widget_the_panel_made(
    engine: TestEngine,
) -> None:
    steps_run(engine, "done", 3)
    before = set(open_widget_models)
    panel = RunPanel(engine, "done")
    made = set(open_widget_models) - before
    seen: list[dict[str, Any]] = []

    def update(shown: RunPanel) -> None:  # what a display handle's update would send
        assert set(open_widget_models) >= made, "the display is re-sent before the widgets close"
        seen.append(shown._repr_mimebundle_())

    assert panel.finish(update) is True
    assert panel.finished
    assert not made & set(open_widget_models)  # every model closed: layouts and styles too
    (bundle,) = seen
    assert WIDGET_VIEW not in bundle
    assert 'class="weft-run-panel weft-static"' in bundle["text/html"]
    rows = read_rows(bundle["text/html"])
    assert [(r["activity"], r["status"], r.bar) for r in rows] == [("tick", "completed", 1.0)] * 3
    assert bundle["text/plain"].startswith("ticks run done: completed")
    assert panel.refresh() is panel.snapshot  # static: nothing is read or redrawn any more
    assert panel.finish() is True  # idempotent


def test_a_live_run_keeps_its_widgets_until_it_settles(engine: TestEngine) -> None:
    handle = cancellable_run(engine, "live", 10)
    panel = RunPanel(engine, "live", cancel_button=True)
    resent: list[RunPanel] = []
    assert panel.finish(resent.append) is False  # still running: re-sent, live
    assert resent == [panel] and WIDGET_VIEW in panel._repr_mimebundle_()
    assert panel.cancel_button is not None and panel.cancel_button.comm is not None
    handle.cancel()
    with pytest.raises(weft_nb.errors.WorkflowCancelledError):
        handle.result(10)
    wait_until(lambda: panel.finish(resent.append), what="the panel turning static")
    assert panel.cancel_button.comm is None
    bundle = panel._repr_mimebundle_()
    assert WIDGET_VIEW not in bundle and "cancelled" in bundle["text/html"]


def test_a_settled_runs_panel_is_static_as_soon_as_it_is_shown(engine: TestEngine) -> None:
    """A replayed run, or ``%weft show`` of a finished one, never puts widgets in the notebook."""
    steps_run(engine, "earlier", 2)
    panel = RunPanel(engine, "earlier")
    bundle = panel._repr_mimebundle_()
    assert WIDGET_VIEW not in bundle and panel.finished
    assert len(read_rows(bundle["text/html"])) == 2


def test_hostile_names_details_and_errors_are_escaped(engine: TestEngine) -> None:
    @weft_nb.activity(name=HOSTILE, retry={"max_attempts": 1})
    def hostile(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.heartbeat({"note": HOSTILE, "progress": 0.5})
        raise ValueError(HOSTILE)

    @weft_nb.workflow(name=f"wf{HOSTILE}")
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(hostile)

    with pytest.raises(weft_nb.errors.ActivityFailedError):
        engine.run(wf, run_id=f"run{HOSTILE}")
    panel = RunPanel(engine, f"run{HOSTILE}")
    page = panel._repr_mimebundle_()["text/html"]
    (row,) = read_rows(page)  # read_rows fails on any <script> element
    assert row["activity"] == HOSTILE and row["status"] == "failed"
    assert row["details"].startswith("note=<script>") and HOSTILE in row.note  # shown as text
    assert "<script>" not in page and page.count("&lt;script&gt;") >= 5  # names, details, error


def test_a_steps_chart_is_in_the_static_output_thinned(engine: TestEngine) -> None:
    beat, step = threading.Event(), threading.Event()

    @weft_nb.activity
    def train(epochs: int, activity: weft_nb.ActivityContext) -> str:
        for epoch in range(epochs):
            activity.heartbeat({"epoch": epoch, "loss": 1 / (epoch + 1)})
            beat.set()
            assert step.wait(10)
            step.clear()
        return "trained"

    @weft_nb.workflow
    def training(ctx: weft_nb.WorkflowContext, epochs: int) -> str:
        return ctx.run(train, epochs)

    handle = engine.start(training, 3, run_id="chart")
    panel = RunPanel(engine, "chart")
    for _ in range(3):  # the panel sees each heartbeat, as its refresh loop would
        assert beat.wait(10)
        beat.clear()
        panel.refresh()
        step.set()
    assert handle.result(10) == "trained"
    assert panel.finish()
    html = panel._repr_mimebundle_()["text/html"]
    (row,) = read_rows(html)
    assert row.chart_lines == 2 and "loss 0.3333" in row.note
    assert 'class="weft-loss-chart"' in html and "<svg" in html


def test_sparklines_keep_a_bounded_number_of_points() -> None:
    series = {"loss": [(float(t), 1 / (t + 1)) for t in range(1000)]}
    svg = sparkline(series)
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) <= CHART_POINTS + 1
    assert points[-1] == "320,60"  # the last point is kept: the curve ends where the run did
    assert sparkline({"loss": [(0.0, 1.0)]}) == ""  # one point draws nothing


def test_static_html_of_a_snapshot_needs_no_panel(engine: TestEngine) -> None:
    steps_run(engine, "plain", 2)
    html = static_html(engine.snapshot("plain"))
    assert [r["status"] for r in read_rows(html)] == ["completed", "completed"]


def test_a_long_chart_keeps_its_latest_value_when_it_halves(engine: TestEngine) -> None:
    """Past 400 points the live chart drops every other one, never the newest (its label)."""
    steps_run(engine, "long-chart", 1)
    panel = RunPanel(engine, "long-chart")
    for beat in range(401):
        running = StepView(
            position=7,
            activity="train",
            status="running",
            attempt=1,
            max_attempts=None,
            details={"loss": 1000.0 - beat},
            started_at=0.0,
            finished_at=None,
            error=None,
        )
        panel._chart(running, now=float(beat))
    points = panel._series[7]["loss"]
    assert len(points) <= 400 and points[0] == (0.0, 1000.0) and points[-1] == (400.0, 600.0)
    assert "loss 600" in sparkline(panel._series[7])


CRASH = """\
import os, sys, weft_nb
@weft_nb.activity
def die(n: int) -> int:
    os._exit(9)  # the process dies mid-run: the journal keeps the run 'running'
@weft_nb.workflow
def wf(ctx, n: int) -> int:
    return ctx.run(die, n)
with weft_nb.Engine(sys.argv[1]) as engine:
    engine.start(wf, 1, run_id="crashed").result()
"""


def test_show_of_a_run_its_dead_process_left_running_is_static_with_a_resume_hint(
    ip: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "crashed.duckdb"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(journal)], env=env, check=False, timeout=120
    )
    assert done.returncode == 9
    ip.run_line_magic("weft", f"journal {journal}")
    capsys.readouterr()
    panel = ip.run_line_magic("weft", "show crashed")
    assert panel.snapshot.status == "running"
    assert panel.finished  # static at once: nothing here would ever settle it
    assert WIDGET_VIEW not in panel._repr_mimebundle_()
    assert not [t for t in threading.enumerate() if t.name == "weft-panel-crashed"]
    assert "%weft resume crashed" in capsys.readouterr().out
