"""The step log: the durability point of a completed step, ahead of DuckDB.

Committing one row to DuckDB costs about 1 ms of CPU per statement, five to ten times an fsync'd
append. So a completed step (the engine's hot path) is first appended to ``<journal>.steplog``
and synced with ``fdatasync``; the workflow moves on as soon as that returns. The rows are moved
into DuckDB's ``steps`` table in batches, and the log is then emptied:

- when a batch fills up (`APPLY_ROWS` rows or `APPLY_BYTES` bytes);
- before any other read or write of the journal, so every query sees every step;
- before the DuckDB file is released to other readers, and on close;
- on the next open after a crash (by the next engine, or by a reader when no engine holds the
  journal), so a step acknowledged to the workflow is never lost.

Recovery is idempotent: a record whose row is already in ``steps`` (same run, position,
activity, start and finish time, superseded or not) is skipped, so a crash between DuckDB's
commit and the log's truncation applies nothing twice. That check runs only on recovery, so the
hot path's commit carries no bookkeeping row. A record is framed as
``<length, crc32, lsn>`` and its payload is the step's row encoded with `marshal` (format 4,
stable since Python 3.4; it builds plain values and never runs code).

Damage: a failed or short append is cut off at once (`StepLog.append()`), so a record is
never written after a partial one. Reading (`scan()`) skips a torn or damaged record and
resynchronises on the next record whose header and CRC validate; recovery applies every intact
record and reports what it skipped (see `weft_nb.journal.step_log_recovery`).

Concurrent appends (parallel steps) share their syncs: a thread whose record was written before
another thread's ``fdatasync`` started needs no sync of its own (group commit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import marshal
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

from weft_nb.base import io_faults
from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.faults import fault_point
from weft_nb.journal.framing import walk
from weft_nb.journal.run_log import (
    RUN_FINISH_FIELDS,
    RUN_START_FIELDS,
    finish_runs,
    insert_runs,
    unapplied_starts,
)

# The steps table's columns (docs/journal-schema.md), in the order of a step row.
STEP_COLUMN_TYPES = {
    "run_id": "VARCHAR",
    "position": "INTEGER",
    "activity": "VARCHAR",
    "status": "VARCHAR",
    "input_hash": "VARCHAR",
    "source_hash": "VARCHAR",
    "attempts": "INTEGER",
    "started_at": "DOUBLE",
    "finished_at": "DOUBLE",
    "result_codec": "VARCHAR",
    "result": "BLOB",
    "error": "VARCHAR",
    "idempotency_key": "VARCHAR",
}
STEP_COLUMNS = ", ".join(STEP_COLUMN_TYPES)
STEP_TYPES = tuple(STEP_COLUMN_TYPES.values())
INSERT_STEP = f"INSERT INTO steps ({STEP_COLUMNS}) VALUES ({', '.join('?' * len(STEP_TYPES))})"
# One statement for a whole batch: each column travels as one list parameter. DuckDB's
# ``executemany`` runs a statement per row (about 0.6 ms each); this costs about 15 us a row.
_INSERT_STEPS_UNNESTED = f"INSERT INTO steps ({STEP_COLUMNS}) SELECT " + ", ".join(
    f"UNNEST(?::{kind}[])" for kind in STEP_TYPES
)
_SMALL_BATCH = 4  # below this, one INSERT per row is cheaper than planning the UNNEST statement

APPLY_ROWS = 1000
APPLY_BYTES = 8 * 1024 * 1024

LOG_MAGIC = b"WEFTSTEPLOG1\n"
RECORD_HEADER = struct.Struct("<IIq")  # payload length, crc32 of (lsn + payload), lsn
_LSN = struct.Struct("<q")

StepRow = tuple[Any, ...]  # a step's row, or a run's start or outcome (weft_nb.journal.run_log)
RECORD_FIELDS = (len(STEP_TYPES), RUN_START_FIELDS, RUN_FINISH_FIELDS)


def encode_record(lsn: int, row: StepRow) -> bytes:
    """Frame one step row as a log record."""
    payload = marshal.dumps(row, 4)
    crc = zlib.crc32(payload, zlib.crc32(_LSN.pack(lsn)))
    return RECORD_HEADER.pack(len(payload), crc, lsn) + payload


def read_records(path: str) -> Iterator[tuple[int, StepRow]]:
    """The intact records of a log file, in order, skipping damaged ones (see `scan()`)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return
    yield from scan(data).records


def _record_at(data: bytes, offset: int, after: int | None) -> tuple[int, StepRow, int] | None:
    """The record starting at ``offset`` if its header and CRC hold: (lsn, row, end offset).

    ``after`` is the previous intact record's lsn: lsns only grow, which rejects most random
    positions before any CRC is computed while resynchronising.
    """
    if offset + RECORD_HEADER.size > len(data):
        return None
    length, crc, lsn = RECORD_HEADER.unpack_from(data, offset)
    end = offset + RECORD_HEADER.size + length
    if end > len(data) or lsn < 1 or (after is not None and lsn <= after):
        return None
    if not _looks_like_row(data, offset + RECORD_HEADER.size, end):
        return None
    payload = data[offset + RECORD_HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(_LSN.pack(lsn))) != crc:
        return None
    try:
        row = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if not isinstance(row, tuple | list) or len(row) not in RECORD_FIELDS:
        return None
    return lsn, tuple(row), end


def _looks_like_row(data: bytes, start: int, end: int) -> bool:
    """Whether a payload starts as `marshal` writes a record (a tuple or list of a known size).

    Checked before the CRC: while resynchronising, most offsets inside a damaged record's payload
    (a pickled index array, say) read as a plausible length and lsn, and a CRC over each of them
    made the scan quadratic in the record's size.
    """
    if end - start < 5:
        return False
    code = data[start] & 0x7F  # without marshal's FLAG_REF bit
    if code == 0x29:  # TYPE_SMALL_TUPLE: a one-byte count
        return data[start + 1] in RECORD_FIELDS
    count = int.from_bytes(data[start + 1 : start + 5], "little")
    return code in (0x28, 0x5B) and count in RECORD_FIELDS  # TYPE_TUPLE, TYPE_LIST


@dataclasses.dataclass
class Scan:
    """What a step log holds: its intact records, and the byte ranges that were not records.

    Attributes:
        records: ``(lsn, row)`` of every intact record, in file order.
        damaged: ``(start, end)`` byte ranges skipped because they held no intact record.
        missing: Records known to be lost: gaps in the lsns around a damaged range (a damaged
            range at the very end hides how many records it held; it counts as at least one).
    """

    records: list[tuple[int, StepRow]] = dataclasses.field(default_factory=list)
    damaged: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    missing: int = 0


def scan(data: bytes) -> Scan:
    """Read every intact record of a log's bytes; skip and note damaged ranges.

    Records are self-delimiting and checksummed, so after a damaged range reading resumes at the
    next offset where a whole record (header, CRC and payload) validates. An empty file, or a
    crash before the magic reached the disk, holds nothing and is not damage.
    """
    found = Scan()
    if not data or LOG_MAGIC.startswith(data):
        return found
    intact_magic = data.startswith(LOG_MAGIC)
    latest: list[int] = []  # the last intact record's lsn, read by the lazy walk
    for start, end, record in walk(
        data,
        len(LOG_MAGIC) if intact_magic else 0,
        lambda offset: _record_from(data, offset, latest[-1] if latest else None),
        damaged_from=None if intact_magic else 0,
    ):
        if record is None:
            found.damaged.append((start, end))
            if start > 0 or end > len(LOG_MAGIC):  # a flipped magic alone holds no record
                found.missing += 1  # refined below when the next record's lsn shows the gap
            continue
        lsn = record[0]
        if found.damaged and found.damaged[-1][1] == start and latest:
            found.missing += max(1, lsn - latest[-1] - 1) - 1
        found.records.append(record)
        latest[:] = [lsn]
    return found


def _record_from(
    data: bytes, offset: int, after: int | None
) -> tuple[tuple[int, StepRow], int] | None:
    """`_record_at()` in the shape `weft_nb.journal.framing.walk()` takes."""
    found = _record_at(data, offset, after)
    return None if found is None else ((found[0], found[1]), found[2])


def insert_rows(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> None:
    """Insert step rows into ``steps`` (inside the caller's transaction)."""
    if len(rows) < _SMALL_BATCH:
        for row in rows:
            con.execute(INSERT_STEP, list(row))
    else:
        con.execute(_INSERT_STEPS_UNNESTED, [list(column) for column in zip(*rows, strict=True)])


def unapplied(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> list[StepRow]:
    """The records of a crashed writer's log that DuckDB does not hold yet (recovery only).

    A run's outcome is always kept: applying it again changes nothing (it only updates an
    unfinished run).
    """
    steps = [row for row in rows if len(row) == len(STEP_TYPES)]
    starts = [row for row in rows if len(row) == RUN_START_FIELDS]
    keep = {id(row) for row in unapplied_steps(con, steps)}
    keep.update(id(row) for row in unapplied_starts(con, starts))
    return [row for row in rows if id(row) in keep or len(row) == RUN_FINISH_FIELDS]


def unapplied_steps(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> list[StepRow]:
    """The step rows of a crashed writer's log that ``steps`` does not hold yet."""
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
    """Apply the log's records to DuckDB, inside the caller's transaction.

    Run starts first, then steps, then run outcomes: each run's own order in the log.
    """
    insert_runs(con, [row for row in rows if len(row) == RUN_START_FIELDS])
    insert_rows(con, [row for row in rows if len(row) == len(STEP_TYPES)])
    finish_runs(con, [row for row in rows if len(row) == RUN_FINISH_FIELDS])
    fault_point("steplog.before_apply_commit")


def apply_rows(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> None:
    """`stage_rows()` in a DuckDB transaction of its own."""
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

    `append()` and `reset()` must be called under the journal's lock; `sync()` is
    called outside it so that concurrent appenders can share one ``fdatasync``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._sync_lock = threading.Lock()
        self._written = 0  # highest lsn written to the file
        self._synced = 0  # highest lsn known to be on disk (in the log or in DuckDB)
        self._size = os.fstat(self._fd).st_size  # the end of the last whole record
        self._empty = self._size == 0
        self._broken = False

    def append(self, lsn: int, row: StepRow) -> int:
        """Write one record (not yet synced); returns its size in bytes.

        A failed or short write (a full disk) is cut off again, so the file ends at its last
        whole record and a later append never lands after a partial one.

        Raises:
            OSError: The write failed; the file is as it was before the call.
        """
        if self._broken:  # a partial record may be at the end: never append after it
            raise OSError(errno.EIO, "a failed write could not be cut back", self.path)
        record = encode_record(lsn, row)
        if self._empty:
            record = LOG_MAGIC + record
        try:
            if io_faults.ENABLED:
                io_faults.write_all(self._fd, record, "steplog.append", self.path)
            else:
                view = memoryview(record)
                while view:
                    view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = True  # until the journal is reopened (recovery skips the tail)
            raise
        self._size += len(record)
        self._empty = False
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
            if io_faults.ENABLED:
                io_faults.check("steplog.sync", self.path)
            os.fdatasync(self._fd)
            self._synced = max(self._synced, target)

    @property
    def written(self) -> int:
        """The highest lsn written to the file."""
        return self._written

    @property
    def synced(self) -> int:
        """The highest lsn known to be durable (on disk in the log, or committed to DuckDB)."""
        return self._synced

    def mark_durable(self, lsn: int) -> None:
        """Note that everything through ``lsn`` is durable elsewhere (committed to DuckDB)."""
        self._synced = max(self._synced, lsn)

    def reset(self) -> None:
        """Empty the file once its records are committed to DuckDB."""
        os.ftruncate(self._fd, 0)
        self._size = 0
        self._empty = True

    def close(self) -> None:
        """Close the file (its records stay for the next open to apply).

        Records written and not yet durable (an ``engine.run()`` start whose first sync never
        came, when the batch into DuckDB at close failed) are synced first: a close is the last
        chance to make what the file holds survive a power loss.
        """
        with contextlib.suppress(OSError):
            if self._written > self._synced:
                os.fdatasync(self._fd)
            os.close(self._fd)
