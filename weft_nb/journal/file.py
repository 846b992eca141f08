"""The journal file: ownership, opening, schema and transactions of one DuckDB file.

Ownership has two layers:

1. A sidecar ``<journal>.lock`` file held with ``flock`` for the engine's whole life
   (`weft_nb.journal.lock`). It records the holder's PID, host and program, so a second
   engine gets [`JournalLockedError`][weft_nb.errors.JournalLockedError] naming them at once. The
   kernel releases ``flock`` when a process dies, even by SIGKILL, so a crash never leaves a stale
   lock behind.
2. The DuckDB file itself is open only while runs are active (see `acquire()`) and for a
   short grace after the last use (``Engine(idle_release=...)``, default 1 s; the engine's
   background thread calls `release_if_idle()`). When the engine is idle, other processes can
   open the journal read-only (``DuckDBJournal(path, read_only=True)``, the CLI, a DuckDB shell) to
   inspect it. Readers wait up to 5 s for the file, writers 2 s, then get ``JournalLockedError``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.faults import fault_point
from weft_nb.errors import (
    JournalClosedError,
    JournalCorruptError,
    JournalError,
    JournalReadOnlyError,
)
from weft_nb.journal import group_commit, step_log_recovery
from weft_nb.journal.alias_lock import AliasLock, recorded_home, take_alias_lock
from weft_nb.journal.connection import connect, ctrl_c_stays_keyboard_interrupt, transaction
from weft_nb.journal.io_errors import from_duckdb_error, from_os_error
from weft_nb.journal.legacy_sidecars import legacy_name, recover_legacy_log, take_legacy_lock
from weft_nb.journal.lock import SidecarLock
from weft_nb.journal.paths import resolve_journal
from weft_nb.journal.pending_log import PendingLog
from weft_nb.journal.schema import SCHEMA, check_length, ensure_schema
from weft_nb.journal.sql_sandbox import query_journal
from weft_nb.journal.step_log import StepRow, apply_rows, stage_rows
from weft_nb.journal.stub import creation_stub, no_journal_yet, remove_stub, replace_creation_stub
from weft_nb.journal.version import journal_version_error


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
        # folder (weft_nb.journal.paths); a hard link is caught by the inode lock below.
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
        self._sidecar = SidecarLock(self.path)
        self._last_used = time.monotonic()
        self.had_wal = os.path.exists(self.path + ".wal")
        self._empty = False  # read-only view of a file with no schema yet
        self._log: PendingLog | None = None  # the step log while this journal writes
        self._previous_holder: dict[str, Any] = {}
        self._legacy = None if read_only else legacy_name(given, self.path)
        self._legacy_lock_fd: int | None = None
        creating = not read_only and not os.path.exists(self.path)
        if read_only:
            if not os.path.exists(self.path):
                raise JournalError(f"no journal at {self.path}", path=self.path)
            stub = creation_stub(self.path)
            if stub is not None:
                raise no_journal_yet(self.path, stub)
            step_log_recovery.recover_as_reader(
                self.path,
                self.read_lock_holder(),
                lambda: type(self)(self.path, program="weft_nb reader recovering the step log"),
            )
        else:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            except OSError as exc:
                raise from_os_error(
                    exc, os.path.dirname(self.path), "creating the folder"
                ) from None
            try:
                self._previous_holder = self._sidecar.take(program)
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
                raise JournalCorruptError(self.path, f"{damage} ({exc})") from None
            if not read_only:
                self._recover_step_log()
        except BaseException:
            self.close()
            if creating:
                remove_stub(self.path)
            raise
        self._close_connection()

    def _replace_creation_stub(self) -> bool:
        """Take the place of an interrupted creation's leftover (see weft_nb.journal.stub)."""
        if not replace_creation_stub(self.path):
            return False
        if self._alias_lock is not None:  # it locked the removed file's inode; relocked on open
            self._alias_lock.release()
            self._alias_lock = None
        return True

    @property
    def sidecar_base(self) -> str:
        """The prefix of the files beside the journal (checkpoints, dispatch log): its path."""
        return self.path

    @property
    def is_empty(self) -> bool:
        """True for a read-only view of a file whose writer stopped before the first commit."""
        return self._empty

    # -- the step log (see weft_nb.journal.step_log) ----------------------------------------------

    @property
    def step_log_path(self) -> str:
        """The append-only log of completed steps not yet moved into DuckDB."""
        return self.path + ".steplog"

    def _recover_step_log(self) -> None:
        """Move the records a crashed writer left in the step log into DuckDB, then empty it."""
        con = self._con
        assert con is not None
        try:
            next_lsn = step_log_recovery.recover(
                con, self.path, self.step_log_path, self._previous_holder
            )
            if self._legacy is not None:
                next_lsn = max(next_lsn, recover_legacy_log(con, self.path, self._legacy))
        except duckdb.Error as exc:  # the log is untouched: the next open tries again
            io_error = from_duckdb_error(exc, self.path, "moving the step log into the journal")
            if io_error is None:
                raise
            raise io_error from exc
        try:
            self._log = PendingLog(self.step_log_path, next_lsn)
        except OSError as exc:
            raise from_os_error(exc, self.step_log_path, "creating the step log") from None
        self._write_lock_info(steplog=step_log_recovery.LOG_OPEN)

    @property
    def _pending(self) -> list[StepRow]:
        """The step log's records that DuckDB does not hold yet, in order."""
        return self._log.rows if self._log is not None else []

    def append_step(self, row: StepRow) -> None:
        """Make a completed step durable in the step log; it reaches DuckDB in a later batch."""
        self.append_record(row, "recording a completed step", "steplog.appended")

    def append_record(
        self,
        row: StepRow,
        doing: str,
        fault: str,
        check: Callable[[PendingLog], bool] | None = None,
        sync: bool = True,
    ) -> bool:
        """Append a record to the step log; return once it is on disk (see `group_commit`).

        ``check`` runs under the journal's lock first, given the `PendingLog`; when it returns
        False nothing is written and False is returned. ``sync=False``: `Journal.create_run`.
        """
        with self._lock:
            if self._closed:
                raise JournalClosedError(self.path)
            if self.read_only or self._log is None:
                raise JournalReadOnlyError(self.path)
            if check is not None and not check(self._log):
                return False
            log = self._log
            try:
                lsn = log.append(row)
            except OSError as exc:  # the log was cut back to its last whole record
                raise from_os_error(exc, self.step_log_path, doing) from None
        deferral = group_commit.current() if sync else None
        if deferral is not None:  # a parallel step: its pool thread moves on (group_commit)
            deferral.note(log.commit, lsn)
            deferral.after.append(lambda: fault_point(fault))
        else:
            try:
                log.log.sync(lsn if sync else 0)  # 0: returns at once, the next sync covers it
            except OSError as exc:
                raise from_os_error(exc, self.step_log_path, doing) from None
            fault_point(fault)
        if log.full():
            with self._lock:
                if self._pending:
                    self._apply_pending(self._ensure_open())
        return True

    def _apply_pending(self, con: duckdb.DuckDBPyConnection) -> None:
        """Move the step log's rows into DuckDB (caller holds the lock), then empty the log."""
        try:
            apply_rows(con, self._pending)
        except duckdb.Error as exc:  # the rows stay in the step log, which stays durable
            io_error = from_duckdb_error(exc, self.path, "moving steps into the journal")
            if io_error is None:
                raise
            raise io_error from exc
        assert self._log is not None
        self._log.applied()

    # -- ownership -------------------------------------------------------------------------

    @property
    def lock_path(self) -> str:
        """The sidecar lock file."""
        return self._sidecar.path

    def _write_lock_info(self, **changes: Any) -> None:
        """Rewrite the lock file's holder record (once per open and close: not on the hot path)."""
        self._sidecar.write_info(**changes)

    def read_lock_holder(self) -> dict[str, Any]:
        """What the sidecar lock file says about its holder (empty when unreadable)."""
        return self._sidecar.read_holder()

    def _open(self) -> None:
        self._con = connect(
            self.path,
            read_only=self.read_only,
            holder_pid=lambda: self.read_lock_holder().get("pid"),
        )

    def _check_schema(self) -> None:
        assert self._con is not None
        state = ensure_schema(self._con, self.path, self.read_only, transaction)
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
        """Drop one user; with none left, `release_if_idle()` may close the file later."""
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
            raise JournalClosedError(self.path)
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
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._sidecar.held:
                if self._sidecar.info.get("steplog") == step_log_recovery.LOG_OPEN and clean:
                    with contextlib.suppress(JournalError):  # the next open reads the log anyway
                        self._write_lock_info(steplog=step_log_recovery.LOG_CLOSED)
                self._sidecar.release()
            if self._legacy_lock_fd is not None:
                os.close(self._legacy_lock_fd)  # releases its lock
                self._legacy_lock_fd = None
            if self._alias_lock is not None:
                self._alias_lock.release()
                self._alias_lock = None

    @contextlib.contextmanager
    def connection(self, *, apply_pending: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """The open connection for one operation, under the journal's lock (internal to weft_nb)."""
        with self._lock, ctrl_c_stays_keyboard_interrupt():
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

    @contextlib.contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction on the journal's connection: all of it commits, or none of it.

        Steps waiting in the step log commit with it. Used by the journal's own writes and by
        `weft_nb.journal.salvage`, which copies rows table by table.
        """
        if self.read_only:
            raise JournalReadOnlyError(self.path)
        with self.connection(apply_pending=False) as con:
            staged = bool(self._pending)
            try:
                with transaction(con):
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
                assert self._log is not None
                self._log.applied()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Internal: run weft_nb's own SQL on the journal's connection (read-write in an engine).

        Not part of the `Journal` protocol; for the CLI, chaos trials and tests. It runs whatever
        it is given, writes included. User SQL (``%weft sql``) goes through `select_frame()`.
        """
        with self.connection() as con:
            return list(con.execute(sql, params or []).fetchall())

    def select_frame(self, sql: str) -> Any:
        """Run a user's query over a snapshot of the journal and return a pandas DataFrame.

        It runs in a sandbox that cannot change the journal or write any file
        (`weft_nb.journal.sql_sandbox`); only ``SELECT``/``WITH``/``EXPLAIN SELECT`` pass.

        Raises:
            JournalError: Another kind of statement, a parse error, or a failed query.
        """
        return query_journal(self.connection, sql, self.path, lambda cursor: cursor.df())
