"""Opening a journal read-only for the ``weft-nb`` read commands, or asking its holder instead.

A journal whose engine keeps the file open (its runs are active) and serves its REST endpoint is
asked through the endpoint (`EndpointAnswered`); otherwise a busy or missing journal
becomes one clear [`CliError`][weft_nb.errors.CliError].
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.cli.holders import busy_message, describe_holder, lock_holder, serving_endpoint
from weft_nb.errors import CliError, JournalLockedError, JournalNotFoundError, RunNotFoundError
from weft_nb.journal.lock import names_a_lock

DEFAULT_JOURNAL = ".weft/journal.duckdb"
RUN_STATUSES = ("running", "interrupted", "completed", "failed", "cancelled")
JOURNAL_TABLES = (
    "runs",
    "steps",
    "attempts",
    "heartbeats",
    "checkpoints",
    "events",
    "signals",
    "async_tokens",
    "weft_meta",
)
RUN_TABLES = JOURNAL_TABLES[1:-1]  # the tables whose rows belong to a run
TMP_PREFIX = ".tmp-"  # as in weft_nb.activity.checkpoints


class Reader:
    """A read-only view of the journal.

    Every query opens and closes the file (as the engine expects of readers), so a long command
    never keeps the owner from writing for long.
    """

    def __init__(self, path: str) -> None:
        from weft_nb.journal.duckdb_journal import DuckDBJournal

        self.path = path
        self.journal = DuckDBJournal(path, read_only=True)
        self.tables = {row[0] for row in self.query("SELECT table_name FROM duckdb_tables()")}

    def close(self) -> None:
        """Release the journal object."""
        self.journal.close()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        return self.journal.query(sql, params)

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The open connection, for queries that need more than rows."""
        with self.journal.connection() as con:
            yield con

    def has(self, table: str) -> bool:
        """Whether the journal has this table (an old journal may lack the newer ones)."""
        return table in self.tables

    def rows(self, table: str, where: str, params: list[Any], order: str) -> list[dict[str, Any]]:
        """Rows of a table as dicts."""
        if not self.has(table):
            return []
        with self.connection() as con:
            cursor = con.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY {order}", params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's row; raises RunNotFoundError."""
        found = self.rows("runs", "run_id = ?", [run_id], "run_id")
        if not found:
            raise RunNotFoundError(run_id, self.path)
        return found[0]


def journals_near(path: str) -> list[str]:
    """The journals beside a missing one (``.weft/*.duckdb``), written as the user would type them.

    A notebook's journal is ``.weft/<notebook>.duckdb``, so ``weft-nb`` run beside a notebook
    misses the default ``.weft/journal.duckdb``. When the default's folder holds none, the
    ``.weft`` folders one level down (``notebooks/.weft/``) are looked at too.
    """
    found = glob.glob(os.path.join(glob.escape(os.path.dirname(path)), "*.duckdb"))
    if not found and path == os.path.abspath(DEFAULT_JOURNAL):
        found = glob.glob(os.path.join("*", os.path.dirname(DEFAULT_JOURNAL), "*.duckdb"))
    journals = [
        p for p in found if os.path.isfile(p) and not os.path.basename(p).startswith(TMP_PREFIX)
    ]
    return sorted(_as_typed(p) for p in journals)


def _as_typed(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return os.path.abspath(path) if outside else relative


def missing_journal(path: str, command: str = "") -> JournalNotFoundError:
    """The error for a missing journal, naming the journals nearby and how to pick one."""
    return JournalNotFoundError(path, found=journals_near(path), command=command)


@contextlib.contextmanager
def open_reader(
    path: str, *, via_endpoint: Callable[[dict[str, Any]], int] | None = None, command: str = ""
) -> Iterator[Reader]:
    """Open a `Reader`, turning a busy or missing journal into a clear message.

    With ``via_endpoint``, a journal whose holder keeps the file open and serves its REST
    endpoint is asked through the endpoint instead (raising `EndpointAnswered`).
    """
    if not os.path.exists(path):
        raise missing_journal(path, command)
    holder = lock_holder(path)
    endpoint = serving_endpoint(path, holder.get("pid")) if via_endpoint is not None else None

    def answer() -> EndpointAnswered:
        assert endpoint is not None
        assert via_endpoint is not None
        print(
            f"(journal in use by {describe_holder(holder)}; asking its endpoint {endpoint['url']})",
            file=sys.stderr,
        )
        return EndpointAnswered(via_endpoint(endpoint))

    if endpoint is not None and held_now(path):
        raise answer()  # its runs are active: no need to wait for the file
    try:
        reader = Reader(path)
    except JournalLockedError as exc:
        if endpoint is not None and getattr(exc, "holder_pid", None) == holder.get("pid"):
            raise answer() from None
        raise CliError(busy_message(path, exc)) from None
    try:
        yield reader
    except JournalLockedError as exc:  # the owner took the file back between two queries
        if endpoint is not None and getattr(exc, "holder_pid", None) == holder.get("pid"):
            raise answer() from None
        raise CliError(busy_message(path, exc)) from None
    finally:
        reader.close()


def held_now(path: str) -> bool:
    """Whether another process has the DuckDB file open right now (one try, no waiting)."""
    try:
        duckdb.connect(path, read_only=True).close()
    except duckdb.Error as exc:
        return names_a_lock(str(exc))  # "lock", never "block" (a damaged block's checksum)
    return False


class EndpointAnswered(Exception):
    """The endpoint answered a read command in the journal's place (carries the exit status)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def run_or_endpoint(action: Callable[[], int]) -> int:
    """Run a read command; when the endpoint answered in its place, the endpoint's status."""
    try:
        return action()
    except EndpointAnswered as answered:
        return answered.status
