"""``%weft timeline``: a Gantt-style plot of a run's steps and attempts (matplotlib).

The chart is a matplotlib ``Figure`` built directly, never through ``pyplot``, and drawn to PNG
by its own Agg canvas: the user's backend, pyplot's current figure and its figure list are left
exactly as they were (``matplotlib.use`` would switch the backend, and a later ``plt.show()``
would draw nothing). The figure shows itself as a PNG wherever IPython displays it, whatever
backend the notebook uses.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weft_nb.engine.engine import Engine

_COLOURS = {"completed": "#2ca02c", "failed": "#d62728", "attempt": "#ff7f0e", "running": "#1f77b4"}


@dataclasses.dataclass(frozen=True)
class Bar:
    """One bar: a step's successful attempt, a failed attempt, or an attempt still running."""

    position: int
    label: str
    kind: str  # completed, failed, attempt (a failed attempt that was retried), running
    start: float
    end: float


def timeline_bars(engine: Engine, run_id: str) -> list[Bar]:
    """The bars of a run, from the journal and the attempts in flight; times from the run start."""
    snapshot = engine.snapshot(run_id)
    origin = snapshot.created_at
    bars = [
        Bar(
            a.position,
            f"{a.position}. {a.activity}",
            "attempt",
            a.started_at - origin,
            a.finished_at - origin,
        )
        for a in engine.journal.attempts_of_run(run_id)
    ]
    for step in snapshot.steps:
        label = f"{step.position}. {step.activity}"
        if step.status in ("completed", "failed") and step.finished_at is not None:
            # the last attempt: from the end of the previous failed one (or the step's start)
            earlier = [b.end for b in bars if b.position == step.position]
            start = max(earlier) if earlier else (step.started_at or origin) - origin
            bars.append(Bar(step.position, label, step.status, start, step.finished_at - origin))
        elif step.status in ("running", "stopping") and step.started_at is not None:
            start, end = step.started_at - origin, snapshot.now - origin
            bars.append(Bar(step.position, label, "running", start, end))
    return sorted(bars, key=lambda b: (b.position, b.start))


@functools.cache
def timeline_figure_class() -> Any:
    """``Figure`` with ``_repr_png_``: IPython shows it as a PNG without pyplot's help.

    Built on first use, so loading the magics does not import matplotlib.
    """
    from matplotlib.figure import Figure

    class TimelineFigure(Figure):
        """A Figure that IPython shows as a PNG, drawn by its own Agg canvas."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return TimelineFigure


def plot_timeline(engine: Engine, run_id: str) -> Any:
    """A matplotlib Figure: one row per step, one bar per attempt, coloured by outcome.

    The figure is not known to ``pyplot`` and changes no global matplotlib state; it displays
    itself as a PNG.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ImportError("%weft timeline draws with matplotlib: pip install matplotlib") from exc
    bars = timeline_bars(engine, run_id)
    labels = sorted({(b.position, b.label) for b in bars})
    rows = {position: index for index, (position, _) in enumerate(labels)}
    figure = timeline_figure_class()(figsize=(8, 1.4 + 0.4 * len(labels)))
    FigureCanvasAgg(figure)  # this figure's own canvas; the backend setting is not touched
    axes = figure.subplots()
    for bar in bars:
        axes.barh(
            rows[bar.position],
            max(bar.end - bar.start, 1e-3),
            left=bar.start,
            height=0.6,
            color=_COLOURS[bar.kind],
            edgecolor="black",
            linewidth=0.4,
        )
    axes.set_yticks(range(len(labels)), [label for _, label in labels])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the run started")
    axes.set_title(f"run {run_id}")
    axes.legend(
        handles=[Patch(color=c, label=k) for k, c in _COLOURS.items()],
        loc="lower right",
        fontsize="small",
    )
    figure.tight_layout()
    return figure
