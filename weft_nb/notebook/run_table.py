"""``%weft runs``: the journal's runs, as an HTML table in the notebook and as text elsewhere.

`RunTable` is the list of `weft_nb.engine.runs.RunInfo` that ``engine.runs()``
returns (code can index it, loop over it, compare it), with the display methods IPython looks
for: ``_repr_html_`` for the notebook, nbconvert and GitHub, and ``_repr_pretty_``/``__repr__``
for a terminal, a log or a plain-text output. Every value is escaped, so a run id or a workflow
name holding ``<script>`` shows as text.
"""

from __future__ import annotations

import datetime
import html
import unicodedata
from collections.abc import Iterable
from typing import Any

from weft_nb.engine.runs import RunInfo

COLUMNS = ("run", "workflow", "status", "started", "updated", "here", "parent")


def _time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _row(run: RunInfo) -> tuple[str, ...]:
    return (
        run.run_id,
        run.workflow,
        run.status,
        _time(run.created_at),
        _time(run.updated_at),
        "live" if run.active else "",
        run.parent_run_id or "",  # a child workflow's parent run
    )


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


class RunTable(list[RunInfo]):
    """The runs of a journal, oldest first: a list that shows itself as a table."""

    def __init__(self, runs: Iterable[RunInfo] = ()) -> None:
        super().__init__(runs)

    def rows(self) -> list[tuple[str, ...]]:
        """One tuple of display strings per run, in the order of `COLUMNS`."""
        return [_row(run) for run in self]

    def _repr_html_(self) -> str:
        if not self:
            return "<p class='weft-runs'>no runs in this journal</p>"
        head = "".join(f"<th style='text-align:left'>{name}</th>" for name in COLUMNS)
        body = "".join(
            "<tr>"
            + "".join(f"<td style='text-align:left'>{html.escape(cell)}</td>" for cell in row)
            + "</tr>"
            for row in self.rows()
        )
        return (
            f"<table class='weft-runs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def __repr__(self) -> str:
        if not self:
            return "no runs in this journal"
        table = [COLUMNS, *self.rows()]
        widths = [max(_width(row[i]) for row in table) for i in range(len(COLUMNS))]
        lines = [
            "  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True))
            for row in table
        ]
        return "\n".join(line.rstrip() for line in lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("RunTable(...)" if cycle else repr(self))
