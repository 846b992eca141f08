"""The journal file: ownership, opening, schema and transactions of one DuckDB file.

Ownership has two layers:

1. A sidecar ``<journal>.lock`` file held with ``flock`` for the engine's whole life. It records
   the holder's PID, host and program, so a second engine gets :class:`JournalLockedError` naming
   them at once. The kernel releases ``flock`` when a process dies, even by SIGKILL, so a crash
   never leaves a stale lock behind.
2. The DuckDB file itself is open only while runs are active (see :meth:`acquire`) and for a
   short grace after the last use (``Engine(idle_release=...)``, default 1 s; the engine's
   background thread calls :meth:`release_if_idle`). When the engine is idle, other processes can
   open the journal read-only (``DuckDBJournal(path, read_only=True)``, the CLI, a DuckDB shell) to
   inspect it. Readers wait up to 5 s for the file, writers 2 s, then get ``JournalLockedError``.
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
import warnings
from collections.abc import Iterator
from typing import Any

import duckdb

from . import _io_faults as io_faults
from . import _step_log_recovery as step_log_recovery
from ._faults import fault_point
from ._io_errors import from_duckdb_error, from_os_error
from ._journal_alias_lock import AliasLock, recorded_home, take_alias_lock
from ._journal_paths import creation_stub, resolve_journal
from ._journal_schema import SCHEMA, check_length, ensure_schema
from ._journal_version import journal_version_error
from ._legacy_sidecars import legacy_name, recover_legacy_log, take_legacy_lock
from ._sql_sandbox import query_journal
from ._step_log import (
    APPLY_BYTES,
    APPLY_ROWS,
    StepLog,
    StepRow,
    apply_rows,
    stage_rows,
)
from .errors import (
    JournalClosedError,
    JournalCorruptError,
    JournalError,
    JournalIOError,
    JournalLockedError,
)

_PID_RE = re.compile(r"PID (\d+)")
_LOCK_RE = re.compile(r"\block\b", re.IGNORECASE)


def _lock_holder_text(holder: dict[str, Any]) -> str:
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("program"):
        parts.append(f"({holder['program']})")
    return " ".join(parts)


class JournalFile:
    """One DuckDB journal file: who owns it, when it is open, how it is written.

    Args:
        path: The ``.duckdb`` file; created (with its folder) when missing.
        read_only: Open for inspection only; takes no sidecar lock and writes nothing.
        program: Shown to other processes that find the journal locked (a notebook name).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, program: str = ""
    ) -> None:
        # Keyed on the resolved file, so every name of it finds one lock, step log and checkpoint
        # folder (weft_nb._journal_paths); a hard link is caught by the inode lock below.
        self.path = resolve_journal(path)
        given = os.path.abspath(os.fspath(path))  # an older weft_nb's files may lie beside it
        self.read_only = read_only
        self._alias_lock: AliasLock | None = None
        if not read_only:
            self._alias_lock = take_alias_lock(self.path, program)
            if self._alias_lock is not None:
                self.path = self._alias_lock.home
        else:
            self.path = recorded_home(self.path)
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._users = 0
        self._closed = False
        self._lock_fd: int | None = None
        self._last_used = time.monotonic()
        self.had_wal = os.path.exists(self.path + ".wal")
        self._empty = False  # read-only view of a file with no schema yet
        self._step_log: StepLog | None = None
        self._pending: list[StepRow] = []  # in the step log, not yet in DuckDB
        self._pending_bytes = 0
        self._next_lsn = 1
        self._lock_info: dict[str, Any] = {}
        self._previous_holder: dict[str, Any] = {}
        self._legacy = None if read_only else legacy_name(given, self.path)
        self._legacy_lock_fd: int | None = None
        creating = not read_only and not os.path.exists(self.path)
        if read_only:
            if not os.path.exists(self.path):
                raise JournalError(f"no journal at {self.path}", path=self.path)
            stub = creation_stub(self.path)
            if stub is not None:
                raise JournalError(
                    f"journal {self.path} holds no journal yet: it is {stub} zero byte(s), as an "
                    "interrupted creation (a kill, a full disk) leaves. Nothing in it can be "
                    "read; opening it with an Engine starts a new journal there.",
                    path=self.path,
                )
            self._recover_step_log_as_reader()
        else:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            except OSError as exc:
                raise from_os_error(
                    exc, os.path.dirname(self.path), "creating the folder"
                ) from None
            try:
                self._take_sidecar_lock(program)
                if self._legacy is not None:
                    self._legacy_lock_fd = take_legacy_lock(self._legacy, self.path)
                creating = creating or self._replace_creation_stub()
            except BaseException:
                self.close()
                raise
        try:
            self._open()
            if not read_only and self._alias_lock is None:  # the file was created just now
                self._alias_lock = take_alias_lock(self.path, program)
            try:
                self._check_schema()
            except duckdb.Error as exc:
                version_error = journal_version_error(self.path, str(exc))
                if version_error is not None:
                    raise version_error from None
                io_error = from_duckdb_error(exc, self.path, "creating the journal")
                if io_error is not None:
                    raise io_error from None
                damage = "is truncated" if "read enough bytes" in str(exc) else "cannot be read"
                raise JournalCorruptError(
                    f"journal {self.path} {damage} ({exc}). It is left untouched: move it "
                    "aside (or restore a backup) to start a new journal.",
                    path=self.path,
                ) from None
            if not read_only:
                self._recover_step_log()
        except BaseException:
            self.close()
            if creating:
                self._remove_stub()
            raise
        self._close_connection()

    def _replace_creation_stub(self) -> bool:
        """Remove what an interrupted creation left (under the sidecar lock); True if it did.

        A kill (or power loss) while DuckDB creates the file leaves an empty or all-zero file that
        never held a journal (:func:`weft_nb._journal_paths.creation_stub`); refusing it as
        corrupt would need the user to delete it by hand. A file with any other byte is kept.
        """
        size = creation_stub(self.path)
        if size is None:
            return False
        try:
            os.unlink(self.path)
        except OSError as exc:
            raise from_os_error(exc, self.path, "removing an interrupted creation's file") from None
        if self._alias_lock is not None:  # it locked the removed file's inode; relocked on open
            self._alias_lock.release()
            self._alias_lock = None
        warnings.warn(
            f"journal {self.path} was {size} zero byte(s), not a DuckDB database: a creation that "
            "was interrupted (a kill, a full disk) left it, and it held no data. weft_nb starts a "
            "new journal there.",
            RuntimeWarning,
            stacklevel=4,
        )
        return True

    def _remove_stub(self) -> None:
        """Delete the partial file a failed creation left (a full disk), so a retry starts anew."""
        for stub in (self.path, self.path + ".wal"):
            with contextlib.suppress(OSError):
                os.unlink(stub)

    # -- the step log (see weft_nb._step_log) ----------------------------------------------

    @property
    def step_log_path(self) -> str:
        """The append-only log of completed steps not yet moved into DuckDB."""
        return self.path + ".steplog"

    def _recover_step_log(self) -> None:
        """Move the records a crashed writer left in the step log into DuckDB, then empty it."""
        con = self._con
        assert con is not None
        try:
            self._next_lsn = step_log_recovery.recover(
                con, self.path, self.step_log_path, self._previous_holder
            )
            if self._legacy is not None:
                legacy_next = recover_legacy_log(con, self.path, self._legacy)
                self._next_lsn = max(self._next_lsn, legacy_next)
        except duckdb.Error as exc:  # the log is untouched: the next open tries again
            io_error = from_duckdb_error(exc, self.path, "moving the step log into the journal")
            if io_error is None:
                raise
            raise io_error from exc
        try:
            self._step_log = StepLog(self.step_log_path)
            self._step_log.reset()
        except OSError as exc:
            raise from_os_error(exc, self.step_log_path, "creating the step log") from None
        self._write_lock_info(steplog=step_log_recovery.LOG_OPEN)

    def _recover_step_log_as_reader(self) -> None:
        """Apply a crashed writer's step log before reading, if no engine holds the journal.

        A live engine applies its own log before it lets readers in; a dead one cannot, so a
        reader that finds records and a free lock recovers them, as SQLite readers roll back a
        hot journal. With the lock taken by a live engine, the reader sees DuckDB as it is.
        """
        if not step_log_recovery.needs_writer(self.step_log_path, self.read_lock_holder()):
            return
        try:
            writer = type(self)(self.path, program="weft_nb reader recovering the step log")
        except JournalLockedError:
            return
        except (OSError, JournalIOError) as exc:  # e.g. read-only: read DuckDB, and say so
            warnings.warn(
                f"completed steps of journal {self.path} are still in its step log "
                f"and could not be moved into it ({exc}); open the journal once with write "
                "access (an Engine, or any weft-nb command run by its owner) to apply them",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        writer.close()

    def append_step(self, row: StepRow) -> None:
        """Make a completed step durable in the step log; it reaches DuckDB in a later batch."""
        with self._lock:
            if self._closed:
                raise JournalClosedError(f"journal {self.path} is closed", path=self.path)
            if self.read_only or self._step_log is None:
                raise JournalError(f"journal {self.path} was opened read-only", path=self.path)
            lsn = self._next_lsn
            try:
                self._pending_bytes += self._step_log.append(lsn, row)
            except OSError as exc:  # the log was cut back to its last whole record
                raise from_os_error(exc, self.step_log_path, "recording a completed step") from None
            self._next_lsn += 1
            self._pending.append(row)
            log = self._step_log
        try:
            log.sync(lsn)
        except OSError as exc:
            raise from_os_error(exc, self.step_log_path, "syncing a completed step") from None
        fault_point("steplog.appended")
        if len(self._pending) >= APPLY_ROWS or self._pending_bytes >= APPLY_BYTES:
            with self._lock:
                if self._pending:
                    self._apply_pending(self._ensure_open())

    def _apply_pending(self, con: duckdb.DuckDBPyConnection) -> None:
        """Move the step log's rows into DuckDB (caller holds the lock), then empty the log."""
        try:
            apply_rows(con, self._pending)
        except duckdb.Error as exc:  # the rows stay in the step log, which stays durable
            io_error = from_duckdb_error(exc, self.path, "moving steps into the journal")
            if io_error is None:
                raise
            raise io_error from exc
        self._pending_applied()

    def _pending_applied(self) -> None:
        """Forget rows that a committed DuckDB transaction now holds; empty the log."""
        assert self._step_log is not None
        self._step_log.mark_durable(self._next_lsn - 1)
        self._step_log.reset()
        self._pending = []
        self._pending_bytes = 0

    # -- ownership -------------------------------------------------------------------------

    @property
    def lock_path(self) -> str:
        """The sidecar lock file."""
        return self.path + ".lock"

    def _take_sidecar_lock(self, program: str) -> None:
        try:
            if io_faults.ENABLED:
                io_faults.check("lock.write", self.lock_path)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise from_os_error(exc, self.lock_path, "creating the journal's lock file") from None
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
        self._previous_holder = self.read_lock_holder()  # did the last writer close cleanly?
        self._lock_fd = fd
        self._lock_info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": program or " ".join(sys.argv[:2])[:200],
            "since": time.time(),
        }
        try:
            self._write_lock_info()
        except JournalIOError:
            os.close(fd)  # releases the lock too
            self._lock_fd = None
            raise

    def _write_lock_info(self, **changes: Any) -> None:
        """Rewrite the lock file's holder record (once per open and close: not on the hot path)."""
        assert self._lock_fd is not None
        self._lock_info.update(changes)
        try:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, json.dumps(self._lock_info).encode(), 0)
        except OSError as exc:
            raise from_os_error(exc, self.lock_path, "writing the journal's lock file") from None

    def read_lock_holder(self) -> dict[str, Any]:
        """What the sidecar lock file says about its holder (empty when unreadable)."""
        try:
            with open(self.lock_path, encoding="utf-8") as handle:
                loaded: dict[str, Any] = json.loads(handle.read() or "{}")
                return loaded
        except (OSError, ValueError):
            return {}

    def _open(self) -> None:
        deadline = time.monotonic() + (5.0 if self.read_only else 2.0)
        while True:
            try:
                if io_faults.ENABLED and not os.path.exists(self.path):
                    io_faults.duckdb_create_fault(self.path)
                self._con = duckdb.connect(self.path, read_only=self.read_only)
                return
            except duckdb.Error as exc:
                text = str(exc)
                version_error = journal_version_error(self.path, text)
                if version_error is not None:  # a healthy file of another DuckDB version
                    raise version_error from None
                is_lock = _LOCK_RE.search(text) is not None  # "lock", not "block" (a checksum)
                io_error = from_duckdb_error(exc, self.path, "opening the journal")
                if io_error is not None and not is_lock:
                    raise io_error from None
                if not is_lock:
                    raise JournalCorruptError(
                        f"journal {self.path} cannot be opened as a DuckDB database ({text}). "
                        "It is left untouched: move it aside (or restore a backup) to start a "
                        "new journal.",
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
        assert self._con is not None
        state = ensure_schema(self._con, self.path, self.read_only, self._transaction)
        self._empty = state == "empty"
        if state == "existing" and not self.had_wal:
            # With a write-ahead log pending, DuckDB may hold replayed blocks in memory that are
            # not in the file yet; a false alarm would lock users out of a good journal.
            check_length(self._con, self.path)

    def acquire(self) -> None:
        """Keep the DuckDB file open while a run is active."""
        with self._lock:
            self._ensure_open()
            self._users += 1

    def release(self) -> None:
        """Drop one user; with none left, :meth:`release_if_idle` may close the file later."""
        with self._lock:
            self._users = max(0, self._users - 1)
            self._last_used = time.monotonic()

    def release_if_idle(self, min_idle: float) -> bool:
        """Close DuckDB (keeping the sidecar lock) if unused for ``min_idle`` seconds."""
        with self._lock:
            idle = time.monotonic() - self._last_used >= min_idle
            if self._con is not None and self._users == 0 and idle:
                if self._pending:
                    self._apply_pending(self._con)
                self._close_connection()
                return True
            return False

    def _ensure_open(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise JournalClosedError(f"journal {self.path} is closed", path=self.path)
        if self._con is None and self._empty:
            self._con = duckdb.connect(":memory:")  # the empty schema, to read nothing from
            self._con.execute(SCHEMA)
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
            if self._pending and not self._closed:
                with contextlib.suppress(duckdb.Error, JournalError):  # the log keeps them
                    self._apply_pending(self._ensure_open())
            clean = not self._pending  # everything the log held is in DuckDB
            self._closed = True
            self._close_connection()
            if self._step_log is not None:
                self._step_log.close()
                self._step_log = None
            if self._lock_fd is not None:
                if self._lock_info.get("steplog") == step_log_recovery.LOG_OPEN and clean:
                    with contextlib.suppress(JournalError):  # the next open reads the log anyway
                        self._write_lock_info(steplog=step_log_recovery.LOG_CLOSED)
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
            if self._legacy_lock_fd is not None:
                os.close(self._legacy_lock_fd)  # releases its lock
                self._legacy_lock_fd = None
            if self._alias_lock is not None:
                self._alias_lock.release()
                self._alias_lock = None

    @contextlib.contextmanager
    def _use(self, *, apply_pending: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = self._ensure_open()
            if self._pending and apply_pending:
                self._apply_pending(con)
            try:
                yield con
            finally:
                if self.read_only:
                    self._close_connection()  # readers never hold the file between calls
                else:
                    self._last_used = time.monotonic()

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
        if io_faults.ENABLED:
            io_faults.duckdb_commit_fault(con)
        try:
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed commit must not stay half-open
                con.execute("ROLLBACK")
            raise
        fault_point("journal.after_commit")

    @contextlib.contextmanager
    def _write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.read_only:
            raise JournalError(f"journal {self.path} was opened read-only", path=self.path)
        with self._use(apply_pending=False) as con:
            staged = bool(self._pending)
            try:
                with self._transaction(con):
                    if staged:  # pending steps commit with this write: one commit, not two
                        stage_rows(con, self._pending)
                    yield con
            except duckdb.Error as exc:
                io_error = from_duckdb_error(exc, self.path, "writing the journal")
                if io_error is None:
                    raise
                raise io_error from exc
            if staged:
                fault_point("steplog.after_apply_commit")
                self._pending_applied()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query over the journal's tables (for tests, the CLI and ``%weft sql``)."""
        with self._use() as con:
            result: list[tuple[Any, ...]] = con.execute(sql, params or []).fetchall()
            return result

    def select_frame(self, sql: str) -> Any:
        """Run a user's query over a snapshot of the journal and return a pandas DataFrame.

        The query runs in a sandbox that cannot change the journal or write any file
        (:mod:`weft_nb._sql_sandbox`); only ``SELECT``/``WITH``/``EXPLAIN SELECT`` are accepted.

        Raises:
            JournalError: Another kind of statement, a parse error, or a failed query.
        """
        return query_journal(self._use, sql, self.path, lambda cursor: cursor.df())
