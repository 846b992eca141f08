"""The run panel: widget state as heartbeats arrive, rebuilt from the journal, fallbacks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import cancellable_run, parked_run, wait_until

import weft_nb
from weft_nb.base.payloads import decode
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.notebook.panel import RunPanel
from weft_nb.testing import TestEngine


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
    rows = panel._rows
    assert sorted(rows) == [0, 1]
    assert (rows[0].status.value, rows[0].bar.value, rows[0].bar.bar_style) == (
        "completed",
        1.0,
        "success",
    )
    train = rows[1]
    assert (train.name.value, train.status.value, train.attempt.value) == (
        "1. train",
        "running",
        "1/4",
    )
    assert train.bar.value == 0.25
    assert train.details.value == "epoch=1 loss=0.9 progress=0.25"
    assert "running" in panel.header.value and "pipeline" in panel.header.value
    job.step.set()
    job.next_beat()
    panel.refresh()
    assert train.bar.value == 0.75  # current / total
    assert "<polyline" in train.chart.value and "loss 0.5" in train.chart.value
    job.step.set()
    assert handle.result(10) == "trained"
    panel.refresh()
    assert (train.status.value, train.bar.value, train.bar.bar_style) == (
        "completed",
        1.0,
        "success",
    )
    assert train.details.value == "epoch=2 loss=0.5 current=3 total=4"  # the final beat
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
    train = panel._rows[1]
    assert (train.name.value, train.status.value, train.bar.value) == (
        "1. train",
        "interrupted",
        0.7,
    )
    assert train.details.value == "epoch=7 progress=0.7"
    text = repr(panel)
    assert "pipeline run w2: running" in text
    assert "train" in text and "70%" in text
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "<progress" in bundle["text/html"] and "epoch=7" in bundle["text/html"]
    assert bundle["text/plain"] == text
    restarted.close()


def test_failed_steps_show_the_error_and_a_danger_bar(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 2})
    def broken(_: object) -> None:
        raise ValueError("bad <input>")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(broken)

    with pytest.raises(weft_nb.errors.ActivityFailedError):
        engine.run(wf, run_id="w3")
    panel = RunPanel(engine, "w3")
    row = panel._rows[0]
    assert (row.status.value, row.bar.bar_style, row.attempt.value) == ("failed", "danger", "2")
    assert "bad &lt;input&gt;" in row.error.value  # escaped
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
    assert panel._rows[0].status.value == "retrying"
    engine.clock.advance(1)
    assert handle.result(10) == 1


@pytest.mark.parametrize("approved", [True, False])
def test_approve_and_reject_buttons_complete_or_fail_the_parked_step(
    engine: TestEngine, approved: bool
) -> None:
    handle, tokens = parked_run(engine, "rv")
    wait_until(lambda: engine.journal.pending_async_tokens("rv"), what="the token journaled")
    panel = RunPanel(engine, "rv", cancel_button=True)
    row = panel._rows[0]
    assert row.status.value == "waiting"
    assert row.approval is not None and row.comment is not None
    assert f"waiting for completion: token {tokens[0]}" in repr(panel)
    row.comment.value = "metrics look fine" if approved else "accuracy too low"
    _comment, approve, reject = row.approval.children
    (approve if approved else reject).click()
    if approved:
        assert handle.result(10) == {"approved": True, "comment": "metrics look fine"}
    else:
        with pytest.raises(weft_nb.errors.ActivityFailedError, match="rejected: accuracy too low"):
            handle.result(10)
    assert approve.disabled and reject.disabled
    panel.refresh()
    assert row.approval.layout.display == "none"


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
    assert len(panel.steps_box.children) == MAX_ROWS
    assert "70 earlier completed steps not shown" in panel.header.value
    text = panel.snapshot.text()
    assert "70 earlier completed steps not shown" in text
    assert f"  {n - 1} tick" in text
    assert "   69 tick" not in text and "   70 tick" in text
    assert "70 earlier completed steps not shown" in panel.snapshot.html()


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
        chart = panel._rows[1].chart.value
        assert chart.count("<polyline") == 2 and "loss 0.2" in chart and "epoch 5" in chart
