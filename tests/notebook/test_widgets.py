"""The run panel: its table as heartbeats arrive, rebuilt from the journal, its controls, fallbacks.

The table is HTML (one widget); ``read_rows`` reads it back by column.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import cancellable_run, parked_run, wait_until
from panel_html import Row, read_rows

import weft_nb
from weft_nb.base.payloads import decode
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.notebook.panel import RunPanel
from weft_nb.notebook.static_panel import static_html
from weft_nb.testing import TestEngine

GREEN, RED, BLUE = "#5cb85c", "#d9534f", "#5bc0de"


def rows(panel: RunPanel) -> dict[int, Row]:
    """The live table's rows by step position."""
    return {int(row["position"]): row for row in read_rows(panel.steps.value)}


class Training:
    """An activity that heartbeats, then waits for the test to let it continue."""

    def __init__(self) -> None:
        self.step = threading.Event()
        self.beat = threading.Event()
        self.values: list[dict[str, object]] = []
        step, beat, values = self.step, self.beat, self.values

        @weft_nb.activity
        def prepare(n: int) -> int:
            return n

        @weft_nb.activity(retry={"max_attempts": 4})
        def train(n: int, activity: weft_nb.ActivityContext) -> str:
            for details in values:
                activity.heartbeat(details)
                beat.set()
                assert step.wait(10)
                step.clear()
            return "trained"

        @weft_nb.workflow
        def pipeline(ctx: weft_nb.WorkflowContext, n: int) -> str:
            return ctx.run(train, ctx.run(prepare, n))

        self.workflow = pipeline

    def next_beat(self) -> None:
        assert self.beat.wait(10)
        self.beat.clear()


def test_bars_texts_and_styles_follow_heartbeats(engine: TestEngine) -> None:
    job = Training()
    job.values.extend(
        [
            {"epoch": 1, "loss": 0.9, "progress": 0.25},
            {"epoch": 2, "loss": 0.5, "current": 3, "total": 4},
        ]
    )
    handle = engine.start(job.workflow, 3, run_id="w1")
    job.next_beat()
    panel = RunPanel(engine, "w1")
    shown = rows(panel)
    assert sorted(shown) == [0, 1]
    assert (shown[0]["status"], shown[0].bar, shown[0].bar_colour) == ("completed", 1.0, GREEN)
    train = shown[1]
    assert (train["activity"], train["status"], train["attempt"]) == ("train", "running", "1/4")
    assert (train.bar, train.bar_colour, train["progress"]) == (0.25, BLUE, "25%")
    assert train["details"] == "epoch=1 loss=0.9 progress=0.25"
    assert "running" in panel.header.value and "pipeline" in panel.header.value
    job.step.set()
    job.next_beat()
    panel.refresh()
    train = rows(panel)[1]
    assert train.bar == 0.75  # current / total
    assert train.chart_lines == 2 and "loss 0.5" in train.note  # epoch and loss, over time
    job.step.set()
    assert handle.result(10) == "trained"
    panel.refresh()
    train = rows(panel)[1]
    assert (train["status"], train.bar, train.bar_colour) == ("completed", 1.0, GREEN)
    assert train["details"] == "epoch=2 loss=0.5 current=3 total=4"  # the final beat
    assert train.chart_lines == 2  # the chart stays under the finished step
    assert "completed" in panel.header.value


def test_a_panel_rebuilt_after_a_restart_shows_the_recorded_state(engine: TestEngine) -> None:
    job = Training()
    job.values.append({"epoch": 7, "progress": 0.7})
    engine.start(job.workflow, 3, run_id="w2")
    job.next_beat()
    engine.flusher.flush()
    restarted = engine.simulate_restart()
    job.step.set()
    panel = RunPanel(restarted, "w2")  # like %weft show after a kernel restart
    train = rows(panel)[1]
    assert (train["activity"], train["status"], train.bar) == ("train", "interrupted", 0.7)
    assert train["details"] == "epoch=7 progress=0.7"
    text = repr(panel)
    assert "pipeline run w2: running" in text
    assert "train" in text and "70%" in text
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert read_rows(bundle["text/html"])[1].bar == 0.7  # the same table, for renderers
    assert "epoch=7" in bundle["text/html"]  # without widgets (nbconvert, GitHub)
    assert bundle["text/plain"] == text
    restarted.close()


def test_failed_steps_show_the_error_and_a_danger_bar(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 2})
    def broken(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.heartbeat({"progress": 0.5})
        raise ValueError("bad <input>")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(broken)

    with pytest.raises(weft_nb.errors.ActivityFailedError):
        engine.run(wf, run_id="w3")
    panel = RunPanel(engine, "w3")
    row = rows(panel)[0]
    assert (row["status"], row.bar_colour, row["attempt"]) == ("failed", RED, "2")
    assert "bad <input>" in row.note  # shown as text:
    assert "bad &lt;input&gt;" in panel.steps.value  # escaped
    assert "failed" in panel.header.value


def test_cancel_button_cancels_a_background_run(engine: TestEngine) -> None:
    handle = cancellable_run(engine, "w4", 10)
    panel = RunPanel(engine, "w4", cancel_button=True)
    assert panel.cancel_button is not None
    assert panel.cancel_button.disabled is False
    panel.cancel_button.click()
    with pytest.raises(weft_nb.errors.WorkflowCancelledError):
        handle.result(10)
    panel.refresh()
    assert panel.cancel_button.disabled is True
    assert "cancelled" in panel.header.value


def test_retry_countdown_shows_during_backoff(engine: TestEngine) -> None:
    engine.clock.auto_advance = False
    calls: list[int] = []

    @weft_nb.activity
    def flaky(_: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("transient")
        return 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(flaky)

    handle = engine.start(wf, run_id="w5")
    engine.clock.wait_for_sleepers(1)
    panel = RunPanel(engine, "w5")
    assert "retrying step 0 in 1s" in panel.header.value
    assert rows(panel)[0]["status"] == "retrying"
    engine.clock.advance(1)
    assert handle.result(10) == 1


@pytest.mark.parametrize("approved", [True, False])
def test_approve_and_reject_buttons_complete_or_fail_the_parked_step(
    engine: TestEngine, approved: bool
) -> None:
    handle, tokens = parked_run(engine, "rv")
    wait_until(lambda: engine.journal.pending_async_tokens("rv"), what="the token journaled")
    panel = RunPanel(engine, "rv", cancel_button=True)
    assert rows(panel)[0]["status"] == "waiting"
    assert f"waiting for completion: token {tokens[0]}" in rows(panel)[0].note
    assert f"waiting for completion: token {tokens[0]}" in repr(panel)
    approval = panel._approvals[0]
    assert approval.box in panel.steps_box.children
    approval.comment.value = "metrics look fine" if approved else "accuracy too low"
    approve, reject = approval.buttons
    (approve if approved else reject).click()
    if approved:
        assert handle.result(10) == {"approved": True, "comment": "metrics look fine"}
    else:
        with pytest.raises(weft_nb.errors.ActivityFailedError, match="rejected: accuracy too low"):
            handle.result(10)
    assert approve.disabled and reject.disabled
    panel.refresh()
    assert approval.box.layout.display == "none"


def test_a_long_run_shows_its_newest_steps_and_says_how_many_are_hidden(
    engine: TestEngine,
) -> None:
    from weft_nb.engine.snapshot import MAX_ROWS

    @weft_nb.activity
    def tick(i: int) -> int:
        return i

    @weft_nb.workflow
    def long_run(ctx: weft_nb.WorkflowContext, n: int) -> int:
        return sum(ctx.run(tick, i) for i in range(n))

    n = MAX_ROWS + 70
    engine.run(long_run, n, run_id="long")
    panel = RunPanel(engine, "long")
    assert len(rows(panel)) == MAX_ROWS
    assert "70 earlier completed steps not shown" in panel.header.value
    text = panel.snapshot.text()
    assert "70 earlier completed steps not shown" in text
    assert f"  {n - 1} tick" in text
    assert "   69 tick" not in text and "   70 tick" in text
    assert "70 earlier completed steps not shown" in static_html(panel.snapshot)


def test_a_panel_rebuilt_from_the_journal_draws_the_recorded_loss_curve(
    journal_path: Path,
) -> None:
    """``%weft show`` after a restart: the chart is the run's recorded curve, not empty."""
    job = Training()
    job.values.extend({"epoch": e, "loss": round(1 / e, 3), "progress": e / 5} for e in range(1, 6))
    # A heartbeat interval nothing reaches: the test flushes each beat itself.
    with TestEngine(journal_path, heartbeat_interval=3600) as engine:
        handle = engine.start(job.workflow, 3, run_id="curve")
        for _ in job.values:
            job.next_beat()
            engine.flusher.flush()
            job.step.set()
        assert handle.result(10) == "trained"

    reader = DuckDBJournal(journal_path, read_only=True)
    try:
        beats = reader.heartbeat_history("curve")
    finally:
        reader.close()
    recorded: dict[str, list[tuple[float, float]]] = {"epoch": [], "loss": []}
    for beat in beats:
        assert beat.position == 1
        details = decode(beat.codec, beat.details, what="heartbeat details")
        for field, points in recorded.items():
            if not points or points[-1][1] != details[field]:  # a point per change of value
                points.append((beat.recorded_at, float(details[field])))
    assert [v for _, v in recorded["loss"]] == [1.0, 0.5, 0.333, 0.25, 0.2]

    with weft_nb.Engine(journal_path) as reopened:  # a new kernel: nothing in memory
        panel = RunPanel(reopened, "curve")
        assert panel.series(1) == recorded
        assert panel.series(0) == {}  # prepare sent no heartbeat
        chart = panel._repr_html_()  # the table it leaves behind, charts included
        assert chart.count("<polyline") == 2 and "loss 0.2" in chart and "epoch 5" in chart
