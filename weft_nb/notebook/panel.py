"""The run panel: an ipywidgets view of one run, fed by snapshots of the engine and journal.

A header (workflow, run id, status, elapsed time, a retry countdown during backoff), then a table
with one row per step: name, status, attempt ``k/max``, a progress bar fed by heartbeats
(``progress`` in 0..1, or ``current``/``total``), the duration, the latest heartbeat fields, the
error on failure, and a small line chart of its numeric heartbeat fields over time. Bars and
charts are inline SVG, so no plotting library is needed. A chart starts from the heartbeats
the journal recorded, so a panel rebuilt after a restart draws the curve so far.

The table is one HTML widget, rendered by `weft_nb.notebook.static_panel`: a panel is a
handful of widget models whatever the number of steps (a row of widgets per step made a 50-step
run 1,407 models and a 1.5 MB notebook under ``nbconvert --execute``). Only the controls are
widgets of their own: Cancel, and Approve / Reject with a comment box under a parked step.

The panel reads `weft_nb.engine.snapshot.take_snapshot()`, never the activity's thread:
refreshing is capped at a few times a second whatever the heartbeat rate, and a panel built after
a kernel restart (``%weft show``) shows what the journal holds. Where widgets cannot render
(nbconvert, GitHub, nbval), its mime bundle also carries the same table as HTML, and plain text.

Once the run has settled, `RunPanel.finish()` leaves that static table behind in the cell's
output and closes every widget, so a saved notebook shows the run without a kernel.

The panel carries stable CSS classes (``weft-run-panel``, ``weft-run-header``, ``weft-step``,
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
from weft_nb.notebook.static_panel import (
    close_widgets,
    header_html,
    static_bundle,
    static_html,
    steps_table,
)

if TYPE_CHECKING:
    from weft_nb.engine.engine import Engine

REFRESH_SECONDS = 0.25
_MAX_POINTS = 400
_CHART_SKIP = {"progress", "current", "total"}
_FINISHING = threading.RLock()  # one panel goes static at a time (re-entered by a display update)


class _Approval:
    """Approve / Reject buttons and a comment box that complete or fail a parked step."""

    def __init__(self, engine: Engine, step: StepView, token: str) -> None:
        self.label = widgets.HTML(f"<b>{step.position}. {html.escape(step.activity)}</b>")
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
        self.buttons = (approve, reject)
        self.box = widgets.HBox([self.label, self.comment, approve, reject])


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
            del points[1:-1:2]  # keep the shape and both ends, halve the points


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

    finished = False
    """True once the panel is static: its widgets are closed and it renders as HTML and text."""

    def __init__(self, engine: Engine, run_id: str, *, cancel_button: bool = False) -> None:
        self.engine = engine
        self.run_id = run_id
        self.header = widgets.HTML()
        self.header.add_class("weft-run-header")
        self.steps = widgets.HTML()
        self.steps_box = widgets.VBox([self.steps])
        self._approvals: dict[int, _Approval] = {}
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
        """Read the run's state and update the widgets; returns the snapshot shown."""
        with self._lock:
            if self.finished:
                return self.snapshot  # static: the widgets are closed, the last state stays
            snapshot = self.engine.snapshot(self.run_id)
            retry = self.engine.live_backoff(self.run_id)
            status = snapshot.status
            if retry is not None and retry[0] not in {
                s.position for s in snapshot.steps if s.status == "running"
            }:
                status += f", retrying step {retry[0]} in {max(0.0, retry[1] - snapshot.now):.0f}s"
            self.header.value = header_html(snapshot, status)
            shown = snapshot.shown_steps()
            for step in shown:
                self._chart(step, snapshot.now)
            self.steps.value = steps_table(snapshot, self._series)
            self._offer_approvals(shown)
            if self.cancel_button is not None:
                self.cancel_button.disabled = snapshot.status != "running"
            self.snapshot = snapshot
        return snapshot

    def _offer_approvals(self, shown: list[StepView]) -> None:
        """Approve / Reject under each parked step; hidden once it is decided."""
        for step in shown:
            approval = self._approvals.get(step.position)
            if step.token and step.status == "waiting":
                if approval is None:
                    approval = self._approvals[step.position] = _Approval(
                        self.engine, step, step.token
                    )
                    self.steps_box.children = (*self.steps_box.children, approval.box)
            elif approval is not None:
                approval.box.layout.display = "none"  # decided: hide the buttons

    def _chart(self, step: StepView, now: float) -> None:
        """Add a running step's numeric heartbeat fields to its chart (``self._series``)."""
        series = self._series.setdefault(step.position, {})
        if step.status in ("running", "stopping"):
            add_points(series, step.details, now)

    def series(self, position: int) -> dict[str, list[tuple[float, float]]]:
        """The chart of step ``position``: each numeric heartbeat field's ``(time, value)``s."""
        with self._lock:
            return {field: list(points) for field, points in self._series.get(position, {}).items()}

    def follow(self, on_done: Callable[[], object] | None = None) -> None:
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

    def settled(self, snapshot: RunSnapshot) -> bool:
        """Whether ``snapshot``'s run is over here: not running, and no attempt still stopping."""
        return snapshot.status != "running" and not self.engine.live_attempts(self.run_id)

    def finish(self, update: Callable[[RunPanel], object] | None = None) -> bool:
        """Refresh; once the run has settled, turn static. Returns whether the panel is static.

        ``update`` re-sends the panel's display (a display handle's ``update``); it is called
        before the widgets close, so the front end swaps the live panel for the static table
        instead of showing an emptied widget, and the widget models then leave the notebook.
        A run still going keeps its live widgets, and ``update`` re-sends them.
        """
        with _FINISHING:
            turned_static = False
            if not self.finished and self.settled(self.refresh()):
                with self._lock:
                    self.finished = turned_static = True
            if update is not None:
                update(self)
            if turned_static:
                # A notebook executed by nbclient (nbconvert --execute, papermill) keeps a closed
                # model's last state: leave the table there empty, it is in the output already.
                self.header.value = self.steps.value = ""
                close_widgets(self.widget)
        return self.finished

    def freeze(self) -> None:
        """Turn static now, whatever the run's status.

        For a run that is not live in this engine although the journal says running (its
        process stopped mid-run): no refresh would ever settle it (``%weft show``).
        """
        with _FINISHING:
            with self._lock:
                if self.finished:
                    return
                self.finished = True
            self.header.value = self.steps.value = ""
            close_widgets(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if not self.finished and self.settled(self.snapshot):
            self.finish()  # a settled run (replayed, or %weft show) is shown static at once
        bundle = static_bundle(self.snapshot, self._series)
        if self.finished:
            return bundle
        return {**(self.widget._repr_mimebundle_(**kwargs) or {}), **bundle}

    def _repr_html_(self) -> str:
        return static_html(self.snapshot, self._series)

    def _repr_markdown_(self) -> str:
        return "```\n" + self.snapshot.text() + "\n```"

    def __repr__(self) -> str:
        return self.snapshot.text()
