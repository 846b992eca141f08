"""The run panel: an ipywidgets view of one run, fed by snapshots of the engine and journal.

One row per step: name, status, attempt ``k/max``, a progress bar fed by heartbeats (``progress``
in 0..1, or ``current``/``total``), the latest heartbeat fields, the duration, a retry countdown
during backoff, and the error on failure. Under a running step, a small line chart of its numeric
heartbeat fields over time (drawn as inline SVG, so no plotting library is needed), which starts
from the heartbeats the journal recorded.

The panel reads `weft_nb.engine.snapshot.take_snapshot()`, never the activity's thread:
refreshing
is capped at a few times a second whatever the heartbeat rate, and a panel built after a kernel
restart (``%weft show``) shows what the journal holds. Where widgets cannot render (nbconvert,
GitHub, nbval), its mime bundle also carries the same information as HTML and plain text.

The widgets carry stable CSS classes (``weft-run-panel``, ``weft-run-header``, ``weft-step``,
``weft-progress``, ``weft-loss-chart``, ``weft-cancel``, ``weft-approve``, ``weft-reject``) for
styling and for the browser test (tests/e2e).
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from weft_nb.base.payloads import decode
from weft_nb.engine.snapshot import RunSnapshot, StepView
from weft_nb.journal.protocol import HeartbeatRecord

if TYPE_CHECKING:
    from weft_nb.engine.engine import Engine

REFRESH_SECONDS = 0.25
_MAX_POINTS = 400
_BAR_STYLE = {
    "completed": "success",
    "failed": "danger",
    "interrupted": "warning",
    "retrying": "warning",
    "stopping": "warning",
}
_CHART_SKIP = {"progress", "current", "total"}


class _StepRow:
    """The widgets of one step."""

    def __init__(self) -> None:
        self.name = widgets.Label(layout=widgets.Layout(width="16em"))
        self.status = widgets.Label(layout=widgets.Layout(width="7em"))
        self.attempt = widgets.Label(layout=widgets.Layout(width="4em"))
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="14em"))
        self.bar.add_class("weft-progress")
        self.details = widgets.Label(layout=widgets.Layout(width="24em"))
        self.duration = widgets.Label(layout=widgets.Layout(width="6em"))
        self.error = widgets.HTML()
        self.chart = widgets.HTML()
        self.chart.add_class("weft-loss-chart")
        line = widgets.HBox(
            [self.name, self.status, self.attempt, self.bar, self.details, self.duration]
        )
        self.box = widgets.VBox([line, self.error, self.chart])
        self.box.add_class("weft-step")
        self.approval: widgets.HBox | None = None
        self.comment: widgets.Text | None = None

    def offer_approval(self, engine: Engine, token: str) -> None:
        """Approve / Reject buttons and a comment box that complete or fail the parked step."""
        if self.approval is not None:
            return
        self.comment = widgets.Text(placeholder="comment (optional)")
        approve = widgets.Button(description="Approve", button_style="success")
        reject = widgets.Button(description="Reject", button_style="danger")
        approve.add_class("weft-approve")
        reject.add_class("weft-reject")
        comment = self.comment

        def decide(approved: bool) -> None:
            approve.disabled = reject.disabled = comment.disabled = True
            if approved:
                engine.complete_async_activity(token, {"approved": True, "comment": comment.value})
            else:
                engine.fail_async_activity(token, f"rejected: {comment.value or 'no comment'}")

        approve.on_click(lambda _button: decide(True))
        reject.on_click(lambda _button: decide(False))
        self.approval = widgets.HBox([self.comment, approve, reject])
        self.box.children = (*self.box.children, self.approval)

    def update(self, step: StepView, now: float, chart: str) -> None:
        self.name.value = f"{step.position}. {step.activity}"
        self.status.value = step.status
        self.attempt.value = step.attempt_text()
        progress = step.progress
        self.bar.value = 0.0 if progress is None else progress
        self.bar.bar_style = _BAR_STYLE.get(step.status, "info")
        self.details.value = step.details_text()
        end = step.finished_at if step.finished_at is not None else now
        self.duration.value = "" if step.started_at is None else f"{end - step.started_at:.1f}s"
        self.error.value = (
            f'<span style="color:#b00">{html.escape(step.error)}</span>' if step.error else ""
        )
        self.chart.value = chart


def _sparkline(series: dict[str, list[tuple[float, float]]]) -> str:
    """Inline SVG: one normalised line per numeric field, labelled with its last value."""
    width, height = 320, 60
    lines = []
    for index, (field, points) in enumerate(sorted(series.items())):
        if len(points) < 2:
            continue
        t0, t1 = points[0][0], points[-1][0]
        values = [v for _, v in points]
        low, high = min(values), max(values)
        span_t, span_v = (t1 - t0) or 1.0, (high - low) or 1.0
        xy = " ".join(
            f"{(t - t0) / span_t * width:.1f},{height - (v - low) / span_v * height:.1f}"
            for t, v in points
        )
        colour = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")[index % 4]
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{xy}"/>'
            f'<text x="{width + 6}" y="{12 + 14 * index}" fill="{colour}" font-size="11">'
            f"{html.escape(field)} {values[-1]:.4g}</text>"
        )
    if not lines:
        return ""
    return (
        f'<svg class="weft-chart" width="{width + 140}" height="{height + 4}">{"".join(lines)}'
        "</svg>"
    )


def add_points(series: dict[str, list[tuple[float, float]]], details: Any, at: float) -> None:
    """Extend a step's chart with the numeric fields of one heartbeat's ``details``.

    A point is added only when a field's value changed; past ``_MAX_POINTS`` every other point is
    dropped, which keeps the curve's shape in bounded memory.
    """
    if not isinstance(details, dict):
        return
    for field, value in details.items():
        if field in _CHART_SKIP or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        points = series.setdefault(str(field), [])
        if not points or points[-1][1] != value:
            points.append((at, float(value)))
        if len(points) > _MAX_POINTS:
            del points[::2]  # keep the shape, halve the points


def recorded_series(
    beats: list[HeartbeatRecord],
) -> dict[int, dict[str, list[tuple[float, float]]]]:
    """The charts of a run's steps, from its journaled heartbeats (oldest first).

    What a panel built after a restart (``%weft show``) starts from, so its loss curve is the
    one the run recorded rather than empty. A heartbeat whose details cannot be decoded here (a
    class not loaded yet) is left out of the chart.
    """
    series: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for beat in beats:
        try:
            details = decode(beat.codec, beat.details, what="heartbeat details")
        except Exception:
            continue
        add_points(series.setdefault(beat.position, {}), details, beat.recorded_at)
    return series


class RunPanel:
    """A live panel for one run. Display it; it refreshes itself while the run is active.

    Args:
        engine: The engine that owns the run.
        run_id: The run to show.
        cancel_button: Add a Cancel button (for background runs).
    """

    def __init__(self, engine: Engine, run_id: str, *, cancel_button: bool = False) -> None:
        self.engine = engine
        self.run_id = run_id
        self.header = widgets.HTML()
        self.header.add_class("weft-run-header")
        self.steps_box = widgets.VBox()
        self._rows: dict[int, _StepRow] = {}
        # The charts start from what the journal recorded: a panel built after a restart draws
        # the run's curve so far, and a live one goes on from there.
        self._series = recorded_series(engine.journal.heartbeat_history(run_id))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        children: list[Any] = [self.header]
        self.cancel_button: widgets.Button | None = None
        if cancel_button:
            self.cancel_button = widgets.Button(description="Cancel", button_style="danger")
            self.cancel_button.add_class("weft-cancel")
            self.cancel_button.on_click(lambda _button: self._cancel())
            children = [widgets.HBox([self.header, self.cancel_button])]
        self.widget = widgets.VBox([*children, self.steps_box])
        self.widget.add_class("weft-run-panel")
        self.snapshot = self.refresh()

    def _cancel(self) -> None:
        if self.engine.cancel(self.run_id):
            self.refresh()

    def refresh(self) -> RunSnapshot:
        """Read the run's state and update every widget; returns the snapshot shown."""
        snapshot = self.engine.snapshot(self.run_id)
        retry = self.engine.live_backoff(self.run_id)
        with self._lock:
            status = snapshot.status
            if retry is not None and retry[0] not in {
                s.position for s in snapshot.steps if s.status == "running"
            }:
                status += f", retrying step {retry[0]} in {max(0.0, retry[1] - snapshot.now):.0f}s"
            self.header.value = (
                f"<b>{html.escape(snapshot.workflow)}</b> run "
                f"<code>{html.escape(snapshot.run_id)}</code> &middot; {html.escape(status)} "
                f"&middot; {snapshot.elapsed:.1f}s"
                + (
                    f'<br><span style="color:#b00">{html.escape(snapshot.error)}</span>'
                    if snapshot.error
                    else ""
                )
            )
            shown = snapshot.shown_steps()
            if note := snapshot.hidden_note(shown):
                self.header.value += f"<br><small>{html.escape(note)}</small>"
            for gone in self._rows.keys() - {step.position for step in shown}:
                self._rows.pop(gone).box.close()
            for step in shown:
                row = self._rows.get(step.position)
                if row is None:
                    row = self._rows[step.position] = _StepRow()
                row.update(step, snapshot.now, self._chart(step, snapshot.now))
                if step.token and step.status == "waiting":
                    row.offer_approval(self.engine, step.token)
                elif row.approval is not None:
                    row.approval.layout.display = "none"  # decided: hide the buttons
            boxes = tuple(self._rows[step.position].box for step in shown)
            if boxes != self.steps_box.children:  # one assignment: one message to the front end
                self.steps_box.children = boxes
            if self.cancel_button is not None:
                self.cancel_button.disabled = snapshot.status != "running"
            self.snapshot = snapshot
        return snapshot

    def _chart(self, step: StepView, now: float) -> str:
        series = self._series.setdefault(step.position, {})
        if step.status in ("running", "stopping"):
            add_points(series, step.details, now)
        return _sparkline(series)

    def series(self, position: int) -> dict[str, list[tuple[float, float]]]:
        """The chart of step ``position``: each numeric heartbeat field's ``(time, value)``s."""
        with self._lock:
            return {field: list(points) for field, points in self._series.get(position, {}).items()}

    def follow(self, on_done: Callable[[], None] | None = None) -> None:
        """Refresh a few times a second in a background thread until the run is not live.

        ``on_done`` runs once after the last refresh (the magic re-sends the display then).
        """
        if self._thread is not None and self._thread.is_alive():
            return

        def loop() -> None:
            stop = threading.Event()
            while not stop.wait(REFRESH_SECONDS):
                try:
                    snapshot = self.refresh()
                except Exception:  # the engine closed: stop following
                    return
                if snapshot.status != "running" and not self.engine.live_attempts(self.run_id):
                    break
            if on_done is not None:
                with contextlib.suppress(Exception):
                    on_done()

        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # updates belong to the cell that showed it
            args=(loop,),
            name=f"weft-panel-{self.run_id}",
            daemon=True,
        )
        self._thread.start()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self.snapshot.text()
        bundle["text/html"] = self.snapshot.html()
        return bundle

    def _repr_html_(self) -> str:
        return self.snapshot.html()

    def _repr_markdown_(self) -> str:
        return "```\n" + self.snapshot.text() + "\n```"

    def __repr__(self) -> str:
        return self.snapshot.text()
