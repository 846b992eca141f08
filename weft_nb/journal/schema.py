"""The journal's tables, and the checks a journal file passes before weft_nb uses it.

``ensure_schema`` creates the tables in a new file, adds tables that a journal written by an
older weft_nb lacks, and refuses a DuckDB file that is not a journal or has another schema
version. ``check_length`` refuses a file cut shorter than its own catalog (truncated after the
fact, by something other than weft_nb).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Literal

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.errors import JournalCorruptError, JournalError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS weft_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, workflow VARCHAR NOT NULL, version VARCHAR NOT NULL,
    status VARCHAR NOT NULL, on_change VARCHAR NOT NULL, input_codec VARCHAR NOT NULL,
    input BLOB, result_codec VARCHAR, result BLOB, error VARCHAR,
    created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL, parent_run_id VARCHAR);
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, activity VARCHAR NOT NULL,
    status VARCHAR NOT NULL, input_hash VARCHAR, source_hash VARCHAR, attempts INTEGER,
    result_codec VARCHAR, result BLOB, error VARCHAR, idempotency_key VARCHAR,
    started_at DOUBLE, finished_at DOUBLE, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS attempts (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    activity VARCHAR NOT NULL, started_at DOUBLE, finished_at DOUBLE, error_type VARCHAR,
    error_message VARCHAR, traceback VARCHAR, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE SEQUENCE IF NOT EXISTS heartbeat_ids;
CREATE TABLE IF NOT EXISTS heartbeats (
    id BIGINT NOT NULL DEFAULT nextval('heartbeat_ids'),
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    recorded_at DOUBLE NOT NULL, codec VARCHAR NOT NULL, details BLOB, beat INTEGER NOT NULL,
    activity VARCHAR,
    superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL, created_at DOUBLE NOT NULL, path VARCHAR NOT NULL,
    size BIGINT NOT NULL, codec VARCHAR NOT NULL, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE SEQUENCE IF NOT EXISTS event_ids;
CREATE TABLE IF NOT EXISTS events (
    id BIGINT NOT NULL DEFAULT nextval('event_ids'),
    run_id VARCHAR, position INTEGER, kind VARCHAR NOT NULL, message VARCHAR,
    created_at DOUBLE NOT NULL);
CREATE SEQUENCE IF NOT EXISTS signal_ids;
CREATE TABLE IF NOT EXISTS signals (
    id BIGINT NOT NULL DEFAULT nextval('signal_ids'),
    run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, signal_id VARCHAR, codec VARCHAR NOT NULL,
    payload BLOB, created_at DOUBLE NOT NULL, consumed_at DOUBLE, consumed_position INTEGER);
CREATE TABLE IF NOT EXISTS async_tokens (
    token VARCHAR PRIMARY KEY, run_id VARCHAR NOT NULL, position INTEGER NOT NULL,
    attempt INTEGER NOT NULL, activity VARCHAR NOT NULL, input_hash VARCHAR, source_hash VARCHAR,
    idempotency_key VARCHAR, created_at DOUBLE NOT NULL, consumed_at DOUBLE);
CREATE TABLE IF NOT EXISTS breakers (
    activity VARCHAR PRIMARY KEY, state VARCHAR NOT NULL, failures INTEGER NOT NULL,
    opened_at DOUBLE, updated_at DOUBLE NOT NULL, half_open_at DOUBLE);
"""
NEWEST_TABLE = "breakers"
"""The table added last: a writer adds it (and any other missing) to a journal that lacks it.

Tables are only ever added, so this stays schema version 1: an older weft_nb opens a newer
journal and never looks at the tables it does not know."""
ADDED_COLUMNS = (("runs", "parent_run_id", "VARCHAR"),)
"""Nullable columns added to existing tables since version 1, by a writer (``ALTER TABLE``).

Still version 1: weft_nb names its columns in every insert, so an older weft_nb keeps writing
to a journal that has them (leaving them NULL), and reads select columns by name. A read-only
view of a journal that lacks one reads it as NULL (`weft_nb.journal.sql_records.runs_from`)."""

_HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers

Transaction = Callable[[duckdb.DuckDBPyConnection], contextlib.AbstractContextManager[None]]
SchemaState = Literal["empty", "created", "existing"]


def ensure_schema(
    con: duckdb.DuckDBPyConnection, path: str, read_only: bool, transaction: Transaction
) -> SchemaState:
    """Make ``con``'s database a current journal; say whether it was empty, new or existing.

    ``empty`` is a read-only view of a file with no tables: a writer killed before its first
    commit, so there are no runs yet and nothing is damaged.
    """
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if tables and "weft_meta" not in tables:
        raise JournalCorruptError(
            path,
            f"is a DuckDB database but not a weft_nb journal (tables: {sorted(tables)[:5]})",
            advice="Point the engine at another path.",
        )
    if not tables:
        if read_only:
            return "empty"
        with transaction(con):
            con.execute(SCHEMA)
            con.execute("INSERT INTO weft_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        return "created"
    if NEWEST_TABLE not in tables and not read_only:
        with transaction(con):
            con.execute(SCHEMA)  # every statement is IF NOT EXISTS: adds what is missing
    if not read_only:
        _add_columns(con, transaction)
    row = con.execute("SELECT value FROM weft_meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version != SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}; this weft_nb reads version "
            f"{SCHEMA_VERSION}. Upgrade weft_nb (or open it with the version that wrote it).",
            path=path,
        )
    return "existing"


def _add_columns(con: duckdb.DuckDBPyConnection, transaction: Transaction) -> None:
    """Add the `ADDED_COLUMNS` a journal written by an older weft_nb lacks (the migration)."""
    present = set(con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall())
    missing = [(t, c, kind) for t, c, kind in ADDED_COLUMNS if (t, c) not in present]
    if missing:
        with transaction(con):
            for table, column, kind in missing:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def check_length(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """Refuse a file shorter than its own catalog says (truncated after the fact)."""
    # Used blocks, not total: DuckDB counts free blocks it has already cut off the file's end.
    block_size, used_blocks = con.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size()"
    ).fetchone() or (0, 0)
    expected = _HEADER_BYTES + int(block_size) * int(used_blocks)
    actual = os.path.getsize(path)
    if actual < expected:
        raise JournalCorruptError(
            path, f"is truncated: {actual:,} bytes where its catalog needs {expected:,}"
        )
