"""The step log: the durability point of a completed step, ahead of DuckDB.

Committing one row to DuckDB costs about 1 ms of CPU per statement, five to ten times an fsync'd
append. So a completed step (the engine's hot path) is first appended to ``<journal>.steplog``
and synced with ``fdatasync``; the workflow moves on as soon as that returns. The rows are moved
into DuckDB's ``steps`` table in batches, and the log is then emptied:

- when a batch fills up (:data:`APPLY_ROWS` rows or :data:`APPLY_BYTES` bytes);
- before any other read or write of the journal, so every query sees every step;
- before the DuckDB file is released to other readers, and on close;
- on the next open after a crash (by the next engine, or by a reader when no engine holds the
  journal), so a step acknowledged to the workflow is never lost.

Recovery is idempotent: a record whose row is already in ``steps`` (same run, position,
activity, start and finish time, superseded or not) is skipped, so a crash between DuckDB's
commit and the log's truncation applies nothing twice. That check runs only on recovery, so the
hot path's commit carries no bookkeeping row. A record is framed as
``<length, crc32, lsn>`` and its payload is the step's row encoded with :mod:`marshal` (format 4,
stable since Python 3.4; it builds plain values and never runs code). A torn record at the end (a
crash mid-append) was never acknowledged, so reading stops there.

Concurrent appends (parallel steps) share their syncs: a thread whose record was written before
another thread's ``fdatasync`` started needs no sync of its own (group commit).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import duckdb

from ._faults import fault_point

STEP_COLUMNS = (
    "run_id, position, activity, status, input_hash, source_hash, attempts, started_at, "
    "finished_at, result_codec, result, error, idempotency_key"
)
STEP_TYPES = (
    "VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "INTEGER", "DOUBLE",
    "DOUBLE", "VARCHAR", "BLOB", "VARCHAR", "VARCHAR",
)  # fmt: skip
INSERT_STEP = f"INSERT INTO steps ({STEP_COLUMNS}) VALUES ({', '.join('?' * len(STEP_TYPES))})"
# One statement for a whole batch: each column travels as one list parameter. DuckDB's
# ``executemany`` runs a statement per row (about 0.6 ms each); this costs about 15 us a row.
_INSERT_STEPS_UNNESTED = f"INSERT INTO steps ({STEP_COLUMNS}) SELECT " + ", ".join(
    f"UNNEST(?::{kind}[])" for kind in STEP_TYPES
)
_SMALL_BATCH = 4  # below this, one INSERT per row is cheaper than planning the UNNEST statement

APPLY_ROWS = 1000
APPLY_BYTES = 8 * 1024 * 1024

_MAGIC = b"WEFTSTEPLOG1\n"
_HEADER = struct.Struct("<IIq")  # payload length, crc32 of (lsn + payload), lsn
_LSN = struct.Struct("<q")

StepRow = tuple[Any, ...]


def encode_record(lsn: int, row: StepRow) -> bytes:
    """Frame one step row as a log record."""
    payload = marshal.dumps(row, 4)
    crc = zlib.crc32(payload, zlib.crc32(_LSN.pack(lsn)))
    return _HEADER.pack(len(payload), crc, lsn) + payload


def read_records(path: str) -> Iterator[tuple[int, StepRow]]:
    """The intact records of a log file, in order; stops at the first torn or damaged one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return
    if not data.startswith(_MAGIC):
        return  # empty, or a crash before the magic reached the disk: nothing was acknowledged
    offset = len(_MAGIC)
    while offset + _HEADER.size <= len(data):
        length, crc, lsn = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(_LSN.pack(lsn))) != crc:
            return
        try:
            row = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            return
        yield lsn, tuple(row)
        offset += _HEADER.size + length


def insert_rows(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> None:
    """Insert step rows into ``steps`` (inside the caller's transaction)."""
    if len(rows) < _SMALL_BATCH:
        for row in rows:
            con.execute(INSERT_STEP, list(row))
    else:
        con.execute(_INSERT_STEPS_UNNESTED, [list(column) for column in zip(*rows, strict=True)])


def unapplied(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> list[StepRow]:
    """The rows of a crashed writer's log that DuckDB does not hold yet (recovery only)."""
    if not rows:
        return []
    run_ids = sorted({row[0] for row in rows})
    present = {
        tuple(found)
        for found in con.execute(
            "SELECT run_id, position, activity, started_at, finished_at FROM steps "
            "WHERE run_id IN (SELECT UNNEST(?::VARCHAR[]))",
            [run_ids],
        ).fetchall()
    }
    return [row for row in rows if (row[0], row[1], row[2], row[7], row[8]) not in present]


def stage_rows(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> None:
    """Insert the log's rows into ``steps``, inside the caller's transaction."""
    insert_rows(con, rows)
    fault_point("steplog.before_apply_commit")


def apply_rows(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> None:
    """:func:`stage_rows` in a DuckDB transaction of its own."""
    con.execute("BEGIN TRANSACTION")
    try:
        stage_rows(con, rows)
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    fault_point("steplog.after_apply_commit")


class StepLog:
    """The append-only file of completed steps not yet moved into DuckDB.

    :meth:`append` and :meth:`reset` must be called under the journal's lock; :meth:`sync` is
    called outside it so that concurrent appenders can share one ``fdatasync``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._sync_lock = threading.Lock()
        self._written = 0  # highest lsn written to the file
        self._synced = 0  # highest lsn known to be on disk (in the log or in DuckDB)
        self._empty = os.fstat(self._fd).st_size == 0

    def append(self, lsn: int, row: StepRow) -> int:
        """Write one record (not yet synced); returns its size in bytes."""
        record = encode_record(lsn, row)
        if self._empty:
            record = _MAGIC + record
            self._empty = False
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written = lsn
        return len(record)

    def sync(self, lsn: int) -> None:
        """Return once the record ``lsn`` is on disk, sharing syncs with concurrent appenders."""
        if self._synced >= lsn:
            return
        with self._sync_lock:
            if self._synced >= lsn:
                return
            target = self._written  # every record up to here was written before this sync
            os.fdatasync(self._fd)
            self._synced = max(self._synced, target)

    def mark_durable(self, lsn: int) -> None:
        """Note that everything through ``lsn`` is durable elsewhere (committed to DuckDB)."""
        self._synced = max(self._synced, lsn)

    def reset(self) -> None:
        """Empty the file once its records are committed to DuckDB."""
        os.ftruncate(self._fd, 0)
        self._empty = True

    def close(self) -> None:
        """Close the file (its records stay for the next open to apply)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
