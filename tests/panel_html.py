"""Reading the run panel's HTML (``weft_nb/notebook/static_panel.py``) back, as a person reads it.

The live panel's step table and the static output a settled run leaves are the same HTML; tests
parse it with the standard library's parser instead of matching substrings, so an assertion
names a column ("status") rather than a piece of markup.
"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

COLUMNS = ("position", "activity", "status", "attempt", "progress", "time", "details")


@dataclasses.dataclass
class Row:
    """One step's row, and the note row under it (error, token, chart) when there is one."""

    cells: dict[str, str]
    bar: float | None = None  # the filled fraction of the inline SVG bar
    bar_colour: str | None = None
    note: str = ""
    chart_lines: int = 0  # <polyline> elements of the step's chart

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


class _TableReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.scripts = 0
        self._cells: list[str] | None = None
        self._in_note = False
        self._bar_width: float | None = None
        self._row: Row | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        elif tag == "tr" and "weft-step" in classes:
            self._cells, self._in_note = [], False
            self._row = Row(cells={})
            self.rows.append(self._row)
        elif tag == "tr":
            self._in_note = self._row is not None
        elif tag == "td" and self._cells is not None:
            self._cells.append("")
        elif tag == "rect" and self._row is not None:
            width = float(found.get("width") or 0)
            if "progress-bar" in classes:
                assert self._bar_width
                self._row.bar = round(width / self._bar_width, 3)
                self._row.bar_colour = found.get("fill")
            else:
                self._bar_width = width
        elif tag == "polyline" and self._in_note and self._row is not None:
            self._row.chart_lines += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._cells is not None and self._row is not None:
            self._row.cells = dict(zip(COLUMNS, (c.strip() for c in self._cells), strict=True))
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._cells is not None and self._cells:
            self._cells[-1] += data
        elif self._in_note and self._row is not None:
            self._row.note += data


def read_rows(html: str) -> list[Row]:
    """The step rows of a panel's HTML, in order; fails if the HTML holds a ``<script>``."""
    reader = _TableReader()
    reader.feed(html)
    reader.close()
    assert reader.scripts == 0, "the panel's HTML must never carry a script"
    return reader.rows
