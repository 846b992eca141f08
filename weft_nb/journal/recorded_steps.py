"""A run's journaled steps as a replay loads them: columns, a `StepRecord` only when one is taken.

A resume of a long run answers every ``ctx.run`` from the journal. Building a `StepRecord` per
row (100,000 for a long run) cost as much as the replay's own checks, and most are never looked
at beyond their signature and result: the replay's fast path reads those from the columns, and a
step taken any other way gets its record built then (`RecordedSteps.pop`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from weft_nb.journal.protocol import StepRecord

_FIELDS = tuple(f.name for f in dataclasses.fields(StepRecord) if f.name != "run_id")
REPLAY_COLUMNS = ", ".join(_FIELDS)
"""The step columns a replay loads: every `StepRecord` field but ``run_id``."""


def columns_of(records: Iterable[StepRecord]) -> dict[str, list[Any]]:
    """The columns `RecordedSteps` takes, of ``records`` in order (for journals of records)."""
    ordered = list(records)
    return {name: [getattr(r, name) for r in ordered] for name in _FIELDS}


class RecordedSteps:
    """The current (not superseded) steps of one run, by position, until the replay takes them.

    Args:
        run_id: The run the steps belong to.
        columns: One list per name of `REPLAY_COLUMNS` (`Journal.step_columns`), row ``i`` of
            each being one step, in the journal's order (a later row at the same position
            wins); kept, not copied. ``result`` may hold ``bytearray``s (DuckDB's columnar
            fetch); records get ``bytes``.

    The columns the replay's fast path reads (`weft_nb.engine.plain_replay`) are attributes: it
    reads the row `row_of()` finds, then `take_row()`s it.
    """

    __slots__ = (
        "_columns",
        "_index",
        "activity",
        "identity",
        "input_hash",
        "result",
        "result_codec",
        "run_id",
        "source_hash",
        "status",
    )

    def __init__(self, run_id: str, columns: Mapping[str, list[Any]]) -> None:
        self.run_id = run_id
        self._columns = [columns[name] for name in _FIELDS]
        self.activity, self.status = columns["activity"], columns["status"]
        self.input_hash, self.source_hash = columns["input_hash"], columns["source_hash"]
        self.result_codec, self.result = columns["result_codec"], columns["result"]
        positions = columns["position"]
        # Positions 0..n-1 (a run without gaps, the usual case) index their own rows.
        if positions == list(range(len(positions))):
            self._index: dict[int, int] | None = None
        else:
            self._index = {p: i for i, p in enumerate(positions)}  # a later row wins
        self.identity = self._index is None
        """Whether row ``i`` is position ``i`` (else `row_of()` maps them)."""

    @classmethod
    def empty(cls) -> RecordedSteps:
        """No steps: a new run's."""
        return cls("", {name: [] for name in _FIELDS})

    def row_of(self, position: int) -> int:
        """The row of the step at ``position`` not taken yet, or -1."""
        index = self._index
        if index is None:
            row = position if 0 <= position < len(self.status) else -1
        else:
            row = index.get(position, -1)
        return row if row >= 0 and self.status[row] is not None else -1

    def take_row(self, row: int) -> None:
        """Mark ``row`` taken: it is no longer in these steps (a taken row's status is None)."""
        self.status[row] = None

    def pop(self, position: int, default: None = None) -> StepRecord | None:
        """The step at ``position`` as a record, taking it; ``default`` when there is none."""
        row = self.row_of(position)
        if row < 0:
            return default
        fields = {name: column[row] for name, column in zip(_FIELDS, self._columns, strict=True)}
        if isinstance(fields["result"], bytearray):
            fields["result"] = bytes(fields["result"])
        record = StepRecord(run_id=self.run_id, **fields)
        self.take_row(row)
        return record

    def __len__(self) -> int:
        status = self.status
        if self._index is None:
            return len(status) - status.count(None)
        return sum(status[row] is not None for row in self._index.values())

    def __contains__(self, position: object) -> bool:
        return isinstance(position, int) and self.row_of(position) >= 0

    def __iter__(self) -> Iterator[int]:
        """The positions not taken yet, ascending."""
        positions = self._columns[_FIELDS.index("position")]
        return iter(sorted({p for p in positions if self.row_of(p) >= 0}))

    def __delitem__(self, position: int) -> None:
        row = self.row_of(position)
        if row < 0:
            raise KeyError(position)
        self.take_row(row)
