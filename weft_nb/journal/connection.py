"""One DuckDB connection to a journal file: opening it, its transactions, Ctrl-C during a query.

`JournalFile` decides when the file is open; these functions do the
opening (waiting a moment for a short-lived reader's lock), run a transaction that never stays
half-open, and keep a notebook's Interrupt Kernel an interrupt.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator

from weft_nb.base import io_faults
from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.faults import fault_point
from weft_nb.errors import JournalCorruptError, JournalLockedError
from weft_nb.journal.io_errors import from_duckdb_error
from weft_nb.journal.lock import names_a_lock
from weft_nb.journal.version import journal_version_error

_PID_RE = re.compile(r"PID (\d+)")
READER_WAIT = 5.0  # seconds a reader waits for another process's DuckDB lock
WRITER_WAIT = 2.0  # seconds a writer waits


@contextlib.contextmanager
def ctrl_c_stays_keyboard_interrupt() -> Iterator[None]:
    """Give back the ``KeyboardInterrupt`` DuckDB turns a Ctrl-C into (``Query interrupted``).

    DuckDB catches SIGINT during a query and raises ``RuntimeError``; a notebook's Interrupt
    Kernel that lands in a journal read must still interrupt the run (``%weft run``), not fail
    with a bare library error.
    """
    try:
        yield
    except RuntimeError as exc:
        if str(exc) == "Query interrupted":
            raise KeyboardInterrupt from exc
        raise


def connect(
    path: str, *, read_only: bool, holder_pid: Callable[[], int | None]
) -> duckdb.DuckDBPyConnection:
    """Open the journal file, waiting a moment while another process holds DuckDB's lock.

    Args:
        path: The journal file.
        read_only: Open for reading only.
        holder_pid: The lock holder's PID as the sidecar lock file says, for the message when
            DuckDB's own does not name it.

    Raises:
        JournalLockedError: Another process still holds the file after the wait.
        JournalCorruptError: The file is no DuckDB database.
    """
    deadline = time.monotonic() + (READER_WAIT if read_only else WRITER_WAIT)
    while True:
        try:
            if io_faults.ENABLED and not os.path.exists(path):
                io_faults.duckdb_create_fault(path)
            return duckdb.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            text = str(exc)
            version_error = journal_version_error(path, text)
            if version_error is not None:  # a healthy file of another DuckDB version
                raise version_error from None
            is_lock = names_a_lock(text)
            io_error = from_duckdb_error(exc, path, "opening the journal")
            if io_error is not None and not is_lock:
                raise io_error from None
            if not is_lock:
                raise JournalCorruptError(
                    path, f"cannot be opened as a DuckDB database ({text})"
                ) from None
            # A short-lived reader may hold DuckDB's lock; give it a moment.
            if time.monotonic() > deadline:
                match = _PID_RE.search(text)
                pid = int(match.group(1)) if match else holder_pid()
                raise JournalLockedError(
                    path,
                    f"PID {pid}",
                    holder_pid=pid,
                    advice="Close that process's connection (a notebook engine, a DuckDB "
                    "shell, a viewer) and retry.",
                ) from None
            time.sleep(0.05)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block in one transaction; roll back on any exception (or a failed commit)."""
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
