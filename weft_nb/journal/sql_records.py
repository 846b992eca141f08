"""The DuckDB journal's rows: the columns of each record and the conversions both ways.

Rows come back from DuckDB as tuples in the order of a ``SELECT``'s column list; records are
built from them by column name (keywords), so the order of a dataclass's fields never has to
match a table's. The statements shared by several journal operations live here too.
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.journal.protocol import (
    STEP_STARTED,
    AttemptRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    RunRecord,
    StepRecord,
)
from weft_nb.journal.recorded_steps import REPLAY_COLUMNS
from weft_nb.journal.run_log import RUN_COLUMNS
from weft_nb.journal.step_log import INSERT_STEP, STEP_COLUMNS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")

ATTEMPT_COLUMNS = (
    "run_id, position, attempt, activity, started_at, finished_at, error_type, error_message, "
    "traceback"
)
# Heartbeats of journals written before the activity column hold NULL there.
HEARTBEAT_COLUMNS = (
    "run_id, position, attempt, recorded_at, codec, details, beat, coalesce(activity, '')"
)
CHECKPOINT_COLUMNS = "run_id, position, attempt, seq, created_at, path, size, codec"
EVENT_COLUMNS = "run_id, position, kind, message, created_at"
INSERT_ATTEMPT = f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
INSERT_HEARTBEAT = (
    "INSERT INTO heartbeats (run_id, position, attempt, recorded_at, codec, details, beat, "
    "activity) VALUES (?,?,?,?,?,?,?,?)"
)


def _names(columns: str) -> tuple[str, ...]:
    """The field names of a plain column list."""
    return tuple(columns.split(", "))


_RUN_FIELDS = _names(RUN_COLUMNS)
_STEP_FIELDS = _names(STEP_COLUMNS)
_ATTEMPT_FIELDS = _names(ATTEMPT_COLUMNS)
_HEARTBEAT_FIELDS = _names("run_id, position, attempt, recorded_at, codec, details, beat, activity")
_CHECKPOINT_FIELDS = _names(CHECKPOINT_COLUMNS)
_EVENT_FIELDS = _names(EVENT_COLUMNS)


def _record(cls: type[D], fields: tuple[str, ...], row: Sequence[Any]) -> D:
    return cls(**dict(zip(fields, row, strict=True)))


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A run from a row of `RUN_COLUMNS`."""
    return _record(RunRecord, _RUN_FIELDS, row)


def runs_from(cursor: duckdb.DuckDBPyConnection) -> list[RunRecord]:
    """The runs of an executed ``SELECT * FROM runs ...``, mapped by column name.

    A column the journal lacks (a read-only view of one an older weft_nb wrote: see
    ``schema.ADDED_COLUMNS``) keeps its field's default; a column weft_nb does not know is left
    out.
    """
    names = [d[0] for d in cursor.description or ()]
    keep = [(i, name) for i, name in enumerate(names) if name in _RUN_FIELDS]
    return [RunRecord(**{name: row[i] for i, name in keep}) for row in cursor.fetchall()]


# A resume builds one StepRecord per journaled step (100,000 for a long run): the row's values
# go straight into the record's __dict__, as its generated __init__ would put them (STEP_COLUMNS
# names every field, checked here), without a keyword call per record.
if tuple(f.name for f in dataclasses.fields(StepRecord)) != _STEP_FIELDS:
    raise RuntimeError("STEP_COLUMNS must name every StepRecord field, in field order")
_new_step = object.__new__


def step_from_row(row: Sequence[Any]) -> StepRecord:
    """A step from a row of ``STEP_COLUMNS``."""
    record: StepRecord = _new_step(StepRecord)
    record.__dict__ = dict(zip(_STEP_FIELDS, row, strict=True))
    return record


_GC_LOCK = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


def steps_by_position(fetch: Callable[[], list[Any]]) -> dict[int, StepRecord]:
    """The records of the rows ``fetch()`` returns, by position, built with the cyclic GC paused.

    A long run's resume fetches and builds ~1.3 million objects per 100,000 steps: each burst of
    allocations would start a collection, and the full ones walk every object of the process (a
    notebook kernel holds many), which more than doubled the load. Nothing here makes a cycle; the
    collector runs again, as it was, when the last concurrent load ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _GC_LOCK:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        return {row[1]: step_from_row(row) for row in fetch()}
    finally:
        with _GC_LOCK:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def attempt_from_row(row: Sequence[Any]) -> AttemptRecord:
    """A failed attempt from a row of `ATTEMPT_COLUMNS`."""
    return _record(AttemptRecord, _ATTEMPT_FIELDS, row)


def attempt_row(attempt: AttemptRecord) -> list[Any]:
    """The values of `ATTEMPT_COLUMNS` for ``attempt``."""
    return [getattr(attempt, name) for name in _ATTEMPT_FIELDS]


def step_columns(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list[Any]]:
    """A run's current steps as columns (`Journal.step_columns`): no record or tuple per row.

    Through numpy (DuckDB's ``fetchnumpy``: ~3x faster than rows) when a library already
    imported it, as a notebook's pandas does; importing it here would cost more than it saves.
    """
    # In the table's order, as load_steps() reads it: a later row at a position wins.
    sql = f"SELECT {REPLAY_COLUMNS} FROM steps WHERE run_id = ? AND NOT superseded"
    result = con.execute(sql, [run_id])
    if "numpy" in sys.modules:
        return {name: array.tolist() for name, array in result.fetchnumpy().items()}
    names = REPLAY_COLUMNS.split(", ")
    columns = list(zip(*result.fetchall(), strict=True)) or [()] * len(names)
    return {name: list(column) for name, column in zip(names, columns, strict=True)}


def heartbeat_from_row(row: Sequence[Any]) -> HeartbeatRecord:
    """A heartbeat from a row of `HEARTBEAT_COLUMNS`."""
    return _record(HeartbeatRecord, _HEARTBEAT_FIELDS, row)


def checkpoint_from_row(row: Sequence[Any]) -> CheckpointRecord:
    """A checkpoint from a row of `CHECKPOINT_COLUMNS`."""
    return _record(CheckpointRecord, _CHECKPOINT_FIELDS, row)


def event_from_row(row: Sequence[Any]) -> EventRecord:
    """An event from a row of `EVENT_COLUMNS`."""
    return _record(EventRecord, _EVENT_FIELDS, row)


_step_values = operator.attrgetter(*_STEP_FIELDS)
_heartbeat_values = operator.attrgetter(*_HEARTBEAT_FIELDS)


def step_row(step: StepRecord) -> tuple[Any, ...]:
    """A step as a row of ``STEP_COLUMNS`` (also the step log's record)."""
    row: tuple[Any, ...] = _step_values(step)
    return row


def heartbeat_row(hb: HeartbeatRecord) -> tuple[Any, ...]:
    """A heartbeat as the parameters of `INSERT_HEARTBEAT`."""
    row: tuple[Any, ...] = _heartbeat_values(hb)
    return row


def updated(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> bool:
    """Run an ``UPDATE``; True when it changed a row.

    DuckDB answers a data-changing statement with its row count, which costs about 0.5 ms less
    per commit than ``RETURNING``.
    """
    row = con.execute(sql, params).fetchone()
    return bool(row and row[0])


def settled(con: duckdb.DuckDBPyConnection, run_id: str, position: int) -> bool:
    """True when the step already has a current outcome (inside the caller's transaction)."""
    return bool(
        con.execute(
            "SELECT 1 FROM steps WHERE run_id = ? AND position = ? AND NOT superseded AND "
            "status IN ('completed', 'failed')",
            [run_id, position],
        ).fetchone()
    )


def insert_outcome(con: duckdb.DuckDBPyConnection, step: StepRecord) -> None:
    """Insert a step's record; a keyed one replaces the step's current dispatch marker."""
    if step.idempotency_key is not None:
        con.execute(
            "DELETE FROM steps WHERE run_id = ? AND position = ? AND status = ? AND NOT superseded",
            [step.run_id, step.position, STEP_STARTED],
        )
    con.execute(INSERT_STEP, step_row(step))


def insert_event(con: duckdb.DuckDBPyConnection, event: EventRecord) -> None:
    """Append an audit event."""
    con.execute(
        f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?)",
        [event.run_id, event.position, event.kind, event.message, event.created_at],
    )
