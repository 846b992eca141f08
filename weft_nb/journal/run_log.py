"""Runs in the step log: a run's start and its outcome are fsync'd appends, not DuckDB commits.

A DuckDB commit costs 1-2 ms of CPU and several syncs; an append to ``<journal>.steplog``
(`weft_nb.journal.step_log`) costs one ``fdatasync``. So a run's creation (`Journal.create_run`)
and its outcome (`Journal.finish_run`) are records of the step log, beside its completed steps,
and reach DuckDB's ``runs`` table in the same batches, under the same rules: before any other read
or write of the journal (a read of one run that has no record in the log reads DuckDB as it is,
`weft_nb.journal.run_index`), before the file is released to other processes, and on the next open
after a crash.

Three record shapes share the log, told apart by their field count (all are `marshal`'d tuples):

- a step: the 13 columns of ``steps`` (`weft_nb.journal.step_log.STEP_COLUMN_TYPES`);
- a run's start: the 13 columns of ``runs`` (`RUN_COLUMNS`), in that order, then the tag
  ``"run"`` (14 fields);
- a run's outcome: ``(run_id, status, at, result_codec, result, error)``.

Applying is idempotent, as for steps: a start whose run is already in ``runs`` is skipped on
recovery, and an outcome is an ``UPDATE`` of an unfinished run only (a finished run never becomes
unfinished again), so a crash between DuckDB's commit and the log's truncation applies nothing
twice. Within a batch, starts are inserted first and outcomes applied last, which is the log's own
order for each run (a run's start precedes its steps and its outcome).
"""

from __future__ import annotations

from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.faults import fault_point
from weft_nb.journal.protocol import TERMINAL_STATUSES, RunOutcome, RunRecord

RUN_COLUMNS = (
    "run_id, workflow, version, status, on_change, input_codec, input, created_at, updated_at, "
    "result_codec, result, error, parent_run_id"
)
RUN_TYPES = (
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "BLOB",
    "DOUBLE",
    "DOUBLE",
    "VARCHAR",
    "BLOB",
    "VARCHAR",
    "VARCHAR",
)
# A run-start record ends with this tag: without it, its 13 columns would read as a step's.
RUN_START_TAG = "run"
FINISH_TYPES = ("VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR", "BLOB", "VARCHAR")
RUN_START_FIELDS = len(RUN_TYPES) + 1  # the columns, then RUN_START_TAG
RUN_FINISH_FIELDS = len(FINISH_TYPES)
UNFINISHED = "status NOT IN ('completed', 'failed', 'cancelled')"

# Run ids of steps whose run is missing: only a destroyed run-start record leaves these.
ORPHANED_RUNS = (
    "SELECT DISTINCT run_id FROM steps s WHERE NOT EXISTS "
    "(SELECT 1 FROM runs r WHERE r.run_id = s.run_id)"
)
_INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * len(RUN_TYPES))})"
_INSERT_RUNS = f"INSERT INTO runs ({RUN_COLUMNS}) SELECT " + ", ".join(
    f"UNNEST(?::{kind}[])" for kind in RUN_TYPES
)
_FINISH_RUN = (
    "UPDATE runs SET status = ?, updated_at = ?, result_codec = ?, result = ?, error = ? "
    f"WHERE run_id = ? AND {UNFINISHED}"
)
_FINISH_RUNS = (
    "UPDATE runs SET status = f.status, updated_at = f.at, result_codec = f.codec, "
    "result = f.result, error = f.error FROM (SELECT "
    + ", ".join(
        f"UNNEST(?::{kind}[]) AS {name}"
        for kind, name in zip(
            FINISH_TYPES, ("id", "status", "at", "codec", "result", "error"), strict=True
        )
    )
    + ") AS f WHERE runs.run_id = f.id AND runs."
    + UNFINISHED
)
_SMALL_BATCH = 4

Row = tuple[Any, ...]


def run_start_row(run: RunRecord) -> Row:
    """The step-log record of a run's start: its ``runs`` row."""
    return (
        run.run_id,
        run.workflow,
        run.version,
        run.status,
        run.on_change,
        run.input_codec,
        run.input,
        run.created_at,
        run.updated_at,
        run.result_codec,
        run.result,
        run.error,
        run.parent_run_id,
        RUN_START_TAG,
    )


def run_finish_row(run_id: str, outcome: RunOutcome) -> Row:
    """The step-log record of a run's outcome."""
    return (run_id, outcome.status, outcome.at, outcome.result_codec, outcome.result, outcome.error)


def run_status_of(row: Row) -> str | None:
    """The run status a record leaves its run in, or None for a step record."""
    if len(row) == RUN_START_FIELDS:
        return str(row[3])
    if len(row) == RUN_FINISH_FIELDS:
        return str(row[1])
    return None


def is_finished(status: str) -> bool:
    """Whether a run in ``status`` has its final outcome."""
    return status in TERMINAL_STATUSES


def insert_runs(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    """Insert run-start records into ``runs`` (inside the caller's transaction)."""
    if len(rows) < _SMALL_BATCH:
        for row in rows:
            con.execute(_INSERT_RUN, list(row[:-1]))
    elif rows:
        columns = zip(*(row[:-1] for row in rows), strict=True)
        con.execute(_INSERT_RUNS, [list(column) for column in columns])
    if rows:
        fault_point("steplog.runs_staged")


def finish_runs(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    """Apply outcome records to their unfinished runs (inside the caller's transaction)."""
    if len(rows) < _SMALL_BATCH:
        for run_id, status, at, codec, result, error in rows:
            con.execute(_FINISH_RUN, [status, at, codec, result, error, run_id])
    else:
        con.execute(_FINISH_RUNS, [list(column) for column in zip(*rows, strict=True)])


def unapplied_starts(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> list[Row]:
    """The run-start records of a crashed writer's log whose run DuckDB does not hold yet."""
    if not rows:
        return []
    present = {
        found[0]
        for found in con.execute(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT UNNEST(?::VARCHAR[]))",
            [sorted({row[0] for row in rows})],
        ).fetchall()
    }
    return [row for row in rows if row[0] not in present]
