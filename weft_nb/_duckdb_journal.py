"""The DuckDB journal: one file, single writer, released to readers while idle.

Ownership has two layers:

1. A sidecar ``<journal>.lock`` file held with ``flock`` for the engine's whole life. It records
   the holder's PID, host and program, so a second engine gets :class:`JournalLockedError` naming
   them at once. The kernel releases ``flock`` when a process dies, even by SIGKILL, so a crash
   never leaves a stale lock behind.
2. The DuckDB file itself is open only while runs are active (see :meth:`acquire`). When the
   engine is idle, other processes can open the journal read-only (``DuckDBJournal(path,
   read_only=True)``, the CLI, a DuckDB shell) to inspect it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import duckdb

from ._faults import fault_point
from ._journal import (
    STEP_STARTED,
    AttemptRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    RunRecord,
    StepRecord,
)
from .errors import JournalClosedError, JournalCorruptError, JournalError, JournalLockedError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS weft_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, workflow VARCHAR NOT NULL, version VARCHAR NOT NULL,
    status VARCHAR NOT NULL, on_change VARCHAR NOT NULL, input_codec VARCHAR NOT NULL,
    input BLOB, result_codec VARCHAR, result BLOB, error VARCHAR,
    created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, activity VARCHAR NOT NULL,
    status VARCHAR NOT NULL, input_hash VARCHAR, source_hash VARCHAR, attempts INTEGER,
    result_codec VARCHAR, result BLOB, error VARCHAR, idempotency_key VARCHAR,
    started_at DOUBLE, finished_at DOUBLE, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS attempts (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    activity VARCHAR NOT NULL, started_at DOUBLE, finished_at DOUBLE, error_type VARCHAR,
    error_message VARCHAR, traceback VARCHAR, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS heartbeats (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    recorded_at DOUBLE NOT NULL, codec VARCHAR NOT NULL, details BLOB, beat INTEGER NOT NULL,
    superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL, created_at DOUBLE NOT NULL, path VARCHAR NOT NULL,
    size BIGINT NOT NULL, codec VARCHAR NOT NULL, superseded BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS events (
    run_id VARCHAR, position INTEGER, kind VARCHAR NOT NULL, message VARCHAR,
    created_at DOUBLE NOT NULL);
"""

_RUN_COLUMNS = (
    "run_id, workflow, version, status, on_change, input_codec, input, created_at, updated_at, "
    "result_codec, result, error"
)
_STEP_COLUMNS = (
    "run_id, position, activity, status, input_hash, source_hash, attempts, started_at, "
    "finished_at, result_codec, result, error, idempotency_key"
)
_INSERT_STEP = f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_HEARTBEAT = (
    "INSERT INTO heartbeats (run_id, position, attempt, recorded_at, codec, details, beat) "
    "VALUES (?,?,?,?,?,?,?)"
)
_PID_RE = re.compile(r"PID (\d+)")


def _lock_holder_text(holder: dict[str, Any]) -> str:
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("program"):
        parts.append(f"({holder['program']})")
    return " ".join(parts)


def _heartbeat_row(hb: HeartbeatRecord) -> tuple[Any, ...]:
    return (hb.run_id, hb.position, hb.attempt, hb.recorded_at, hb.codec, hb.details, hb.beat)


class DuckDBJournal:
    """A weft_nb journal in one DuckDB file.

    Args:
        path: The ``.duckdb`` file; created (with its folder) when missing.
        read_only: Open for inspection only; takes no sidecar lock and writes nothing.
        program: Shown to other processes that find the journal locked (a notebook name).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, program: str = ""
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.read_only = read_only
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._users = 0
        self._closed = False
        self._lock_fd: int | None = None
        if read_only:
            if not os.path.exists(self.path):
                raise JournalError(f"no journal at {self.path}", path=self.path)
        else:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._take_sidecar_lock(program)
        try:
            self._open()
            self._check_schema()
        except BaseException:
            self.close()
            raise
        self._close_connection()

    # -- ownership -------------------------------------------------------------------------

    @property
    def lock_path(self) -> str:
        """The sidecar lock file."""
        return self.path + ".lock"

    def _take_sidecar_lock(self, program: str) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = self.read_lock_holder()
            raise JournalLockedError(
                f"journal {self.path} is in use by {_lock_holder_text(holder)}. Only one engine "
                "may write a journal: close the other notebook's engine (or shut its kernel "
                "down), or use another journal path. Read-only inspection works while that "
                "engine is idle.",
                path=self.path,
                holder_pid=holder.get("pid"),
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": program or " ".join(sys.argv[:2])[:200],
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._lock_fd = fd

    def read_lock_holder(self) -> dict[str, Any]:
        """What the sidecar lock file says about its holder (empty when unreadable)."""
        try:
            with open(self.lock_path, encoding="utf-8") as handle:
                loaded: dict[str, Any] = json.loads(handle.read() or "{}")
                return loaded
        except (OSError, ValueError):
            return {}

    def _open(self) -> None:
        if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
            raise JournalCorruptError(
                f"journal {self.path} is an empty file, not a DuckDB database. weft_nb will not "
                "start a new journal over it: move it aside if it is not needed.",
                path=self.path,
            )
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self._con = duckdb.connect(self.path, read_only=self.read_only)
                return
            except duckdb.Error as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    raise JournalCorruptError(
                        f"journal {self.path} cannot be opened as a DuckDB database ({text}). "
                        "It is left untouched; `weft-nb salvage` copies out intact runs, or move "
                        "the file aside to start a new journal.",
                        path=self.path,
                    ) from None
                # A short-lived reader may hold DuckDB's lock; give it a moment.
                if time.monotonic() > deadline:
                    match = _PID_RE.search(text)
                    pid = int(match.group(1)) if match else self.read_lock_holder().get("pid")
                    raise JournalLockedError(
                        f"journal {self.path} is locked by PID {pid}. Close that process's "
                        "connection (a notebook engine, a DuckDB shell, a viewer) and retry.",
                        path=self.path,
                        holder_pid=pid,
                    ) from None
                time.sleep(0.05)

    def _check_schema(self) -> None:
        con = self._con
        assert con is not None
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if tables and "weft_meta" not in tables:
            raise JournalCorruptError(
                f"{self.path} is a DuckDB database but not a weft_nb journal (tables: "
                f"{sorted(tables)[:5]}). Point the engine at another path.",
                path=self.path,
            )
        if not tables:
            if self.read_only:
                raise JournalCorruptError(f"{self.path} holds no weft_nb journal", path=self.path)
            with self._transaction(con):
                con.execute(_SCHEMA)
                con.execute(
                    "INSERT INTO weft_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
                )
            return
        row = con.execute("SELECT value FROM weft_meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}; this weft_nb reads "
                f"version {SCHEMA_VERSION}. Upgrade weft_nb (or open it with the version that "
                "wrote it).",
                path=self.path,
            )

    def acquire(self) -> None:
        """Keep the DuckDB file open while a run is active."""
        with self._lock:
            self._ensure_open()
            self._users += 1

    def release(self) -> None:
        """Drop one user; with none left, close DuckDB so readers can open the file."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._close_connection()

    def _ensure_open(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise JournalClosedError(f"journal {self.path} is closed", path=self.path)
        if self._con is None:
            self._open()
        assert self._con is not None
        return self._con

    def _close_connection(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None

    def close(self) -> None:
        """Close DuckDB and release the sidecar lock."""
        with self._lock:
            self._closed = True
            self._close_connection()
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextlib.contextmanager
    def _use(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = self._ensure_open()
            try:
                yield con
            finally:
                if self._users == 0:
                    self._close_connection()

    @staticmethod
    @contextlib.contextmanager
    def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        fault_point("journal.before_commit")
        con.execute("COMMIT")
        fault_point("journal.after_commit")

    @contextlib.contextmanager
    def _write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.read_only:
            raise JournalError(f"journal {self.path} was opened read-only", path=self.path)
        with self._use() as con, self._transaction(con):
            yield con

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Insert a new run."""
        with self._write() as con:
            con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
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
                ],
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        with self._use() as con:
            row = con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
        return RunRecord(*row) if row else None

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        with self._use() as con:
            rows = con.execute(sql + " ORDER BY created_at, run_id", params).fetchall()
        return [RunRecord(*row) for row in rows]

    def finish_run(
        self,
        run_id: str,
        status: str,
        at: float,
        result_codec: str | None = None,
        result: bytes | None = None,
        error: str | None = None,
    ) -> None:
        """Record a run's final status and outcome."""
        with self._write() as con:
            con.execute(
                "UPDATE runs SET status = ?, updated_at = ?, result_codec = ?, result = ?, "
                "error = ? WHERE run_id = ?",
                [status, at, result_codec, result, error, run_id],
            )

    def set_run_status(self, run_id: str, status: str, at: float) -> None:
        """Change a run's status."""
        with self._write() as con:
            con.execute(
                "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", [status, at, run_id]
            )

    # -- steps and attempts ----------------------------------------------------------------

    def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        """Current step records by position."""
        with self._use() as con:
            rows = con.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? AND NOT superseded",
                [run_id],
            ).fetchall()
        return {row[1]: StepRecord(*row) for row in rows}

    @staticmethod
    def _step_row(step: StepRecord) -> list[Any]:
        return [
            step.run_id,
            step.position,
            step.activity,
            step.status,
            step.input_hash,
            step.source_hash,
            step.attempts,
            step.started_at,
            step.finished_at,
            step.result_codec,
            step.result,
            step.error,
            step.idempotency_key,
        ]

    def record_step(self, step: StepRecord, heartbeat: HeartbeatRecord | None = None) -> None:
        """Record a step's outcome, replacing a keyed dispatch marker if there is one."""
        if heartbeat is None and step.idempotency_key is None:
            # The hot path: one statement, one implicit transaction.
            with self._use() as con:
                if self.read_only:
                    raise JournalError(f"journal {self.path} was opened read-only", path=self.path)
                con.execute(_INSERT_STEP, self._step_row(step))
            return
        with self._write() as con:
            if step.idempotency_key is not None:
                con.execute(
                    "DELETE FROM steps WHERE run_id = ? AND position = ? AND status = ? "
                    "AND NOT superseded",
                    [step.run_id, step.position, STEP_STARTED],
                )
            con.execute(_INSERT_STEP, self._step_row(step))
            if heartbeat is not None:
                con.execute(_INSERT_HEARTBEAT, _heartbeat_row(heartbeat))

    def record_marker(self, step: StepRecord) -> None:
        """Record a keyed activity's dispatch marker."""
        with self._write() as con:
            con.execute(_INSERT_STEP, self._step_row(step))

    def record_attempt_failure(
        self, attempt: AttemptRecord, heartbeat: HeartbeatRecord | None = None
    ) -> None:
        """Record a failed attempt and its last heartbeat together."""
        with self._write() as con:
            con.execute(
                "INSERT INTO attempts (run_id, position, attempt, activity, started_at, "
                "finished_at, error_type, error_message, traceback) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    attempt.run_id,
                    attempt.position,
                    attempt.attempt,
                    attempt.activity,
                    attempt.started_at,
                    attempt.finished_at,
                    attempt.error_type,
                    attempt.error_message,
                    attempt.traceback,
                ],
            )
            if heartbeat is not None:
                con.execute(_INSERT_HEARTBEAT, _heartbeat_row(heartbeat))

    def attempts_of(self, run_id: str, position: int) -> list[AttemptRecord]:
        """Current failed attempts of a step, oldest first."""
        with self._use() as con:
            rows = con.execute(
                "SELECT run_id, position, attempt, activity, started_at, finished_at, error_type, "
                "error_message, traceback FROM attempts WHERE run_id = ? AND position = ? "
                "AND NOT superseded ORDER BY attempt",
                [run_id, position],
            ).fetchall()
        return [AttemptRecord(*row) for row in rows]

    # -- heartbeats and checkpoints --------------------------------------------------------

    def record_heartbeats(self, heartbeats: list[HeartbeatRecord]) -> None:
        """Append heartbeat rows in one transaction."""
        if not heartbeats:
            return
        with self._write() as con:
            con.executemany(_INSERT_HEARTBEAT, [_heartbeat_row(hb) for hb in heartbeats])

    def latest_heartbeat(self, run_id: str, position: int) -> HeartbeatRecord | None:
        """The newest current heartbeat of a step."""
        with self._use() as con:
            row = con.execute(
                "SELECT run_id, position, attempt, recorded_at, codec, details, beat FROM heartbeats "
                "WHERE run_id = ? AND position = ? AND NOT superseded "
                "ORDER BY attempt DESC, beat DESC, recorded_at DESC LIMIT 1",
                [run_id, position],
            ).fetchone()
        return HeartbeatRecord(*row) if row else None

    def add_checkpoint(self, checkpoint: CheckpointRecord, keep: int) -> list[CheckpointRecord]:
        """Add a checkpoint row and drop all but the newest ``keep`` of that step."""
        cp = checkpoint
        with self._write() as con:
            con.execute(
                "INSERT INTO checkpoints (run_id, position, attempt, seq, created_at, path, size, "
                "codec) VALUES (?,?,?,?,?,?,?,?)",
                [
                    cp.run_id,
                    cp.position,
                    cp.attempt,
                    cp.seq,
                    cp.created_at,
                    cp.path,
                    cp.size,
                    cp.codec,
                ],
            )
            stale = con.execute(
                "SELECT run_id, position, attempt, seq, created_at, path, size, codec "
                "FROM checkpoints WHERE run_id = ? AND position = ? AND NOT superseded "
                "ORDER BY seq DESC OFFSET ?",
                [cp.run_id, cp.position, keep],
            ).fetchall()
            if stale:
                con.execute(
                    "DELETE FROM checkpoints WHERE run_id = ? AND position = ? AND seq <= ?",
                    [cp.run_id, cp.position, max(row[3] for row in stale)],
                )
        return [CheckpointRecord(*row) for row in stale]

    def checkpoints_of(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """Current checkpoints of a step, newest first."""
        with self._use() as con:
            rows = con.execute(
                "SELECT run_id, position, attempt, seq, created_at, path, size, codec "
                "FROM checkpoints WHERE run_id = ? AND position = ? AND NOT superseded "
                "ORDER BY seq DESC",
                [run_id, position],
            ).fetchall()
        return [CheckpointRecord(*row) for row in rows]

    def all_checkpoint_paths(self) -> set[str]:
        """Every referenced checkpoint path."""
        with self._use() as con:
            return {row[0] for row in con.execute("SELECT path FROM checkpoints").fetchall()}

    # -- supersession and events -----------------------------------------------------------

    def supersede_from(self, run_id: str, position: int, event: EventRecord) -> None:
        """Supersede everything recorded at ``position`` and after, with an audit event."""
        with self._write() as con:
            for table in ("steps", "attempts", "heartbeats", "checkpoints"):
                con.execute(
                    f"UPDATE {table} SET superseded = true "
                    "WHERE run_id = ? AND position >= ? AND NOT superseded",
                    [run_id, position],
                )
            self._insert_event(con, event)

    @staticmethod
    def _insert_event(con: duckdb.DuckDBPyConnection, event: EventRecord) -> None:
        con.execute(
            "INSERT INTO events (run_id, position, kind, message, created_at) VALUES (?,?,?,?,?)",
            [event.run_id, event.position, event.kind, event.message, event.created_at],
        )

    def add_event(self, event: EventRecord) -> None:
        """Append an audit event."""
        with self._write() as con:
            self._insert_event(con, event)

    def events_of(self, run_id: str) -> list[EventRecord]:
        """A run's events, oldest first."""
        with self._use() as con:
            rows = con.execute(
                "SELECT run_id, position, kind, message, created_at FROM events "
                "WHERE run_id = ? ORDER BY created_at",
                [run_id],
            ).fetchall()
        return [EventRecord(*row) for row in rows]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query over the journal's tables (for tests, the CLI and ``%weft sql``)."""
        with self._use() as con:
            result: list[tuple[Any, ...]] = con.execute(sql, params or []).fetchall()
            return result
