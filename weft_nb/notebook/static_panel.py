"""The run panel's static rendering: HTML and text that show a run without a kernel or widgets.

A live panel is a tree of ipywidgets: some 28 widget models a step, each saved in the notebook
and drawn by JavaScript that nbconvert's HTML fetches from a CDN. When a run settles, the panel
is replaced by this rendering and its widgets are closed (`close_widgets`), so a saved
notebook keeps one small table, which nbconvert, GitHub and VS Code show with no kernel, no
widget manager and no network: a row per step with its status, attempt, a progress bar and the
latest heartbeat, its error, and its chart of numeric heartbeat fields. Bars and charts are
inline SVG, every piece of text from a run (names, details, errors) is escaped.

While a run is live, the same HTML is the panel's fallback for front ends that cannot draw widgets,
so there is one HTML renderer. The elements carry the live panel's CSS classes
(``weft-run-panel``, ``weft-run-header``, ``weft-step``, ``weft-progress``, ``weft-loss-chart``),
plus ``weft-static`` on the whole.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ipywidgets import Widget

from weft_nb.engine.snapshot import RunSnapshot, StepView

STATIC_CLASS = "weft-static"
CHART_POINTS = 80
"""Points drawn of each chart line: a 320-pixel sparkline keeps its shape, a notebook stays small"""

Series = Mapping[str, Sequence[tuple[float, float]]]
"""One step's numeric heartbeat fields over time: field name to ``(time, value)`` points."""

_BAR_WIDTH, _BAR_HEIGHT = 140, 12
_BAR_COLOURS = {
    "completed": "#5cb85c",
    "failed": "#d9534f",
    "interrupted": "#f0ad4e",
    "retrying": "#f0ad4e",
    "stopping": "#f0ad4e",
}
_STATUS_CLASSES = {"completed": "weft-ok", "failed": "weft-bad", "cancelled": "weft-bad"}
_LINE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
_STYLE = (  # once per table, not per cell: a 50-step table stays a few kB
    "<style>.weft-run-panel table.weft-steps td,.weft-run-panel table.weft-steps th"
    "{text-align:left;vertical-align:top;padding:1px 6px}.weft-steps .weft-bar{white-space:nowrap}"
    ".weft-run-panel .weft-ok{color:#2e7d32}.weft-run-panel .weft-bad{color:#b00}</style>"
)


def sparkline(series: Series, *, max_points: int | None = CHART_POINTS) -> str:
    """Inline SVG: one normalised line per numeric field, labelled with its last value.

    ``max_points`` thins each line to about that many points (the last one always kept), so a
    long training run's chart costs a notebook a few hundred bytes. "" when no field has two
    points.
    """
    width, height = 320, 60
    lines = []
    for index, (field, recorded) in enumerate(sorted(series.items())):
        if len(recorded) < 2:
            continue
        points = _thinned(recorded, max_points)
        t0, t1 = points[0][0], points[-1][0]
        values = [v for _, v in points]
        low, high = min(values), max(values)
        span_t, span_v = (t1 - t0) or 1.0, (high - low) or 1.0
        xy = " ".join(
            f"{(t - t0) / span_t * width:.0f},{height - (v - low) / span_v * height:.0f}"
            for t, v in points
        )
        colour = _LINE_COLOURS[index % len(_LINE_COLOURS)]
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{xy}"/>'
            f'<text x="{width + 6}" y="{12 + 14 * index}" fill="{colour}" font-size="11">'
            f"{html.escape(field)} {values[-1]:.4g}</text>"
        )
    if not lines:
        return ""
    return (
        f'<svg class="weft-chart" xmlns="http://www.w3.org/2000/svg" width="{width + 140}" '
        f'height="{height + 4}">{"".join(lines)}</svg>'
    )


def _thinned(
    points: Sequence[tuple[float, float]], max_points: int | None
) -> Sequence[tuple[float, float]]:
    if max_points is None or len(points) <= max_points:
        return points
    stride = math.ceil(len(points) / max_points)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def progress_bar(step: StepView) -> str:
    """A step's progress as an inline SVG bar and a percentage; "" when it has none."""
    progress = step.progress
    if progress is None:
        return ""
    filled = progress * _BAR_WIDTH
    colour = _BAR_COLOURS.get(step.status, "#5bc0de")
    return (
        f'<svg class="weft-progress" width="{_BAR_WIDTH}" height="{_BAR_HEIGHT}">'
        f'<rect width="{_BAR_WIDTH}" height="{_BAR_HEIGHT}" fill="#e6e6e6"/>'
        f'<rect class="progress-bar" width="{filled:.1f}" height="{_BAR_HEIGHT}" '
        f'fill="{colour}"/></svg> {progress:.0%}'
    )


def _duration(step: StepView, now: float) -> str:
    if step.started_at is None:
        return ""
    end = step.finished_at if step.finished_at is not None else now
    return f"{end - step.started_at:.1f}s"


def _status(status: str) -> str:
    css = _STATUS_CLASSES.get(status.split(",", maxsplit=1)[0])
    text = html.escape(status)
    return f'<span class="{css}">{text}</span>' if css else text


def _step_rows(step: StepView, now: float, series: Series | None) -> Iterable[str]:
    yield (
        f'<tr class="weft-step"><td>{step.position}</td><td>{html.escape(step.activity)}</td>'
        f"<td>{_status(step.status)}</td><td>{html.escape(step.attempt_text())}</td>"
        f'<td class="weft-bar">{progress_bar(step)}</td><td>{_duration(step, now)}</td>'
        f"<td><code>{html.escape(step.details_text())}</code></td></tr>"
    )
    notes = []
    if step.error:
        notes.append(f'<div class="weft-bad">{html.escape(step.error)}</div>')
    if step.note:
        notes.append(f'<small class="weft-step-note">{html.escape(step.note)}</small>')
    if step.token:
        notes.append(f"<small>waiting for completion: token {html.escape(step.token)}</small>")
    chart = sparkline(series) if series else ""
    if chart:
        notes.append(f'<div class="weft-loss-chart">{chart}</div>')
    if notes:
        yield f'<tr><td></td><td colspan="6">{"".join(notes)}</td></tr>'


def header_html(snapshot: RunSnapshot, status: str | None = None) -> str:
    """The panel's header: workflow, run id, status, elapsed time, errors, steps left out.

    ``status`` replaces the run's own (the live panel adds a retry countdown to it).
    """
    header = (
        f"<b>{html.escape(snapshot.workflow)}</b> run <code>{html.escape(snapshot.run_id)}</code>"
        f" &middot; {_status(status or snapshot.status)} &middot; {snapshot.elapsed:.1f}s"
    )
    if snapshot.parent_run_id:
        header += f" &middot; child of run <code>{html.escape(snapshot.parent_run_id)}</code>"
    if snapshot.error:
        header += f'<br><span class="weft-bad">{html.escape(snapshot.error)}</span>'
    for note in snapshot.breaker_notes():
        header += f'<br><span class="weft-bad">{html.escape(note)}</span>'
    if note := snapshot.hidden_note(snapshot.shown_steps()):
        header += f"<br><small>{html.escape(note)}</small>"
    return header


def steps_table(snapshot: RunSnapshot, charts: Mapping[int, Series] | None = None) -> str:
    """The steps as one HTML table, with inline SVG bars and, per step, the chart of ``charts``.

    ``charts`` maps a step's position to its numeric heartbeat fields over time (what the live
    panel has drawn); a step without one gets no chart.
    """
    charts = charts or {}
    rows = "".join(
        row
        for step in snapshot.shown_steps()
        for row in _step_rows(step, snapshot.now, charts.get(step.position))
    )
    heads = "".join(
        f"<th>{name}</th>"
        for name in ("#", "activity", "status", "attempt", "progress", "time", "latest heartbeat")
    )
    return (
        f'{_STYLE}<table class="weft-steps"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def static_html(snapshot: RunSnapshot, charts: Mapping[int, Series] | None = None) -> str:
    """The whole panel as HTML: the header and the steps table (see `steps_table`)."""
    return (
        f'<div class="weft-run-panel {STATIC_CLASS}">'
        f'<div class="weft-run-header">{header_html(snapshot)}</div>'
        f"{steps_table(snapshot, charts)}</div>"
    )


def static_bundle(
    snapshot: RunSnapshot, charts: Mapping[int, Series] | None = None
) -> dict[str, Any]:
    """The mime bundle of a run's static rendering: HTML, and plain text for terminals."""
    return {"text/plain": snapshot.text(), "text/html": static_html(snapshot, charts)}


def close_widgets(*roots: Any) -> int:
    """Close each widget and every widget it holds (children, layout, style); returns how many.

    ``Widget.close()`` closes one model: a box's children, and every widget's layout and style
    models, stay open and stay in the notebook's saved widget state unless closed one by one.
    """
    stack: list[Any] = list(roots)
    seen: set[int] = set()
    closed = 0
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        for name in widget.keys:
            value = getattr(widget, name, None)
            held = value if isinstance(value, list | tuple) else (value,)
            stack.extend(item for item in held if isinstance(item, Widget))
        if widget.comm is not None:
            widget.close()
            closed += 1
    return closed
