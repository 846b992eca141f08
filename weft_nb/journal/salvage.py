"""Copying the intact runs out of a damaged journal into a new one.

A journal damaged by something outside weft_nb (truncated by hand, a disk fault) raises
``JournalCorruptError`` and is never written to. ``python -m weft_nb salvage BROKEN NEW`` reads
what it still can, run by run: a run whose rows (its steps, attempts, heartbeats, checkpoints,
events, signals not yet received, async-completion tokens and trace context) all read back is
copied whole, with its checkpoint files; a run with any unreadable row is reported and left out,
never copied half. The activities' circuit breakers, shared by every run, are copied when their
table reads back, and reported when it does not.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.errors import JournalCorruptError, JournalError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.paths import checkpoint_root, reading_checkpoint_root
from weft_nb.journal.run_log import RUN_START_FIELDS
from weft_nb.journal.step_log import apply_rows, scan, unapplied
from weft_nb.journal.version import journal_version_error

# Per table: the columns copied (journal-assigned ids are left for the new journal to assign).
_TABLES = {
    "steps": "run_id, position, activity, status, input_hash, source_hash, attempts, result_codec, "
    "result, error, idempotency_key, started_at, finished_at, superseded",
    "attempts": "run_id, position, attempt, activity, started_at, finished_at, error_type, "
    "error_message, traceback, superseded",
    "heartbeats": "run_id, position, attempt, recorded_at, codec, details, beat, activity, "
    "superseded",
    "checkpoints": "run_id, position, attempt, seq, created_at, path, size, codec, superseded",
    "events": "run_id, position, kind, message, created_at",
    "signals": "run_id, name, signal_id, codec, payload, created_at, consumed_at, "
    "consumed_position",
    "async_tokens": "token, run_id, position, attempt, activity, input_hash, source_hash, "
    "idempotency_key, created_at, consumed_at",
    "weft_meta": "key, value",  # the run's trace context (`DuckDBJournal.trace_context`)
}
_ORDER = {"heartbeats": "id", "events": "id", "signals": "id"}
_WHERE = {"weft_meta": "key = 'trace_context/' || ?"}
_BREAKERS = "activity, state, failures, opened_at, updated_at, half_open_at"


@dataclasses.dataclass
class SalvageReport:
    """What was copied and what was not."""

    copied: list[str] = dataclasses.field(default_factory=list)
    damaged: dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"copied {len(self.copied)} intact run(s)"]
        lines += [f"left out {run_id}: {why}" for run_id, why in sorted(self.damaged.items())]
        return "\n".join(lines)


def salvage(broken: str | os.PathLike[str], target: str | os.PathLike[str]) -> SalvageReport:
    """Copy every intact run of ``broken`` into a new journal at ``target``."""
    broken, target = Path(broken).resolve(), Path(target).resolve()
    if target.exists():
        raise JournalError(f"{target} exists; salvage writes a new journal only", path=str(target))
    try:
        source = duckdb.connect(str(broken), read_only=True)
    except duckdb.Error as exc:
        version_error = journal_version_error(str(broken), str(exc))
        if version_error is not None:  # healthy, just another DuckDB's: nothing to salvage
            raise version_error from None
        raise JournalCorruptError(
            str(broken),
            f"cannot be opened at all ({exc}); nothing can be salvaged from it",
            advice="",
        ) from None
    report = SalvageReport()
    try:
        try:
            run_ids = [r[0] for r in source.execute("SELECT run_id FROM runs").fetchall()]
        except duckdb.Error as exc:
            raise JournalCorruptError(
                str(broken),
                f"has an unreadable runs table ({exc}); nothing can be salvaged",
                advice="",
            ) from None
        present = {
            r[0] for r in source.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        journal = DuckDBJournal(target)
        try:
            for run_id in run_ids:
                try:  # each run on its own: a missing block costs only the runs stored in it
                    cursor = source.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
                    row = cursor.fetchone()
                    run_columns = [d[0] for d in cursor.description]
                    rows = _read_run(source, run_id, present)
                except duckdb.Error as exc:
                    report.damaged[run_id] = str(exc).splitlines()[0]
                    continue
                assert row is not None
                _write_run(journal, run_columns, row, rows)
                _copy_checkpoints(broken, target, [r[5] for r in rows["checkpoints"]])
                report.copied.append(run_id)
            _copy_breakers(source, journal, report)
            _copy_step_log(broken, journal, report)
        finally:
            journal.close()
    finally:
        source.close()
    return report


def _copy_step_log(broken: Path, journal: DuckDBJournal, report: SalvageReport) -> None:
    """Add what a dead writer acknowledged in ``<broken>.steplog`` and DuckDB never received.

    Its runs' starts, steps and outcomes (`weft_nb.journal.run_log`): read, never changed. Records
    of runs left out as damaged, or whose run is nowhere, are not copied.
    """
    try:
        data = Path(f"{broken}.steplog").read_bytes()
    except FileNotFoundError:
        return
    found = scan(data)
    started = [row[0] for _lsn, row in found.records if len(row) == RUN_START_FIELDS]
    known = (set(report.copied) | set(started)) - set(report.damaged)
    rows = [row for _lsn, row in found.records if row[0] in known]
    with journal.connection() as con:
        rows = unapplied(con, rows)
        if rows:
            apply_rows(con, rows)
    journal.forget_runs()
    report.copied += [run_id for run_id in dict.fromkeys(started) if run_id not in report.copied]
    if found.damaged:
        report.damaged[f"{broken}.steplog"] = (
            f"{len(found.damaged)} damaged range(s) holding at least {found.missing} record(s) "
            "skipped; every intact record was copied"
        )


def _copy_breakers(
    source: duckdb.DuckDBPyConnection, journal: DuckDBJournal, report: SalvageReport
) -> None:
    """Copy the circuit breakers (one row per activity, shared by all runs), or report them."""
    try:
        rows = source.execute(f"SELECT {_BREAKERS} FROM breakers").fetchall()
    except duckdb.CatalogException:
        return  # a journal from before circuit breakers: none to copy
    except duckdb.Error as exc:
        report.damaged["circuit breakers"] = (
            f"{str(exc).splitlines()[0]} (every breaker starts closed in the new journal)"
        )
        return
    if rows:
        with journal.writing() as con:
            con.executemany(f"INSERT INTO breakers ({_BREAKERS}) VALUES (?, ?, ?, ?, ?, ?)", rows)


def _read_run(
    source: duckdb.DuckDBPyConnection, run_id: str, present: set[str]
) -> dict[str, list[Any]]:
    """The run's rows, table by table (none from a table an older journal does not have)."""
    rows: dict[str, list[Any]] = {}
    for table, columns in _TABLES.items():
        if table not in present:
            rows[table] = []
            continue
        order = f" ORDER BY {_ORDER[table]}" if table in _ORDER else ""
        rows[table] = source.execute(
            f"SELECT {columns} FROM {table} WHERE {_WHERE.get(table, 'run_id = ?')}{order}",
            [run_id],
        ).fetchall()
    return rows


def _write_run(
    journal: DuckDBJournal, run_columns: list[str], run: tuple[Any, ...], rows: dict[str, list[Any]]
) -> None:
    with journal.writing() as con:
        marks = ", ".join("?" * len(run_columns))
        con.execute(f"INSERT INTO runs ({', '.join(run_columns)}) VALUES ({marks})", list(run))
        for table, columns in _TABLES.items():
            if rows[table]:
                marks = ", ".join("?" * len(columns.split(",")))
                con.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                    [list(r) for r in rows[table]],
                )
    journal.forget_runs()  # runs written directly: its writer's run lookups read DuckDB again


def _copy_checkpoints(broken: Path, target: Path, paths: list[str]) -> None:
    """Copy the checkpoint files a run's rows name (paths relative to the checkpoint folder)."""
    source = Path(reading_checkpoint_root(str(broken)))
    dest = Path(checkpoint_root(str(target)))
    for rel in paths:
        origin = (source / rel).resolve()
        if not origin.is_relative_to(source.resolve()) or not origin.is_file():
            continue  # missing, or outside the folder (a run id of an old weft_nb): not copied
        copy = dest / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, copy)
