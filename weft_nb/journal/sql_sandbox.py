"""Users' SQL over a journal (``%weft sql``, ``weft-nb sql``), run where it cannot change anything.

Checking the statement type is not enough: ``EXPLAIN ANALYZE DELETE FROM runs`` is an ``EXPLAIN``
and deletes every run, and ``COPY ... TO`` inside it writes files. So a user's query never runs on
a connection to the journal at all:

1. **Policy** (for a clear message): only ``SELECT``/``WITH``/``EXPLAIN`` statements, and an
   ``EXPLAIN`` only of a ``SELECT``; anything else is refused before any data is touched.
2. **Sandbox** (the guarantee): the journal's tables are copied, through the journal's own
   connection and by weft_nb's fixed SQL, to Parquet files in a fresh private temporary folder;
   a new in-memory DuckDB loads them, then loses all file access (``enable_external_access =
   false``: no ``COPY ... TO``, ``ATTACH``, ``INSTALL``/``LOAD``, ``EXPORT``, file readers) and
   locks its configuration (``lock_configuration``: no ``SET``/``RESET``/``PRAGMA`` setting).
   It has no spill folder either, so it cannot write a single file. The user's SQL runs there.
   Whatever it does changes only that throwaway copy; the folder is deleted afterwards.
   ``CHECKPOINT`` of an in-memory database writes nothing. ``LOAD`` of an extension built into
   DuckDB succeeds and reads no file; any other ``LOAD``/``INSTALL`` is refused.

The magic and the command line both call `query_journal()`; they differ only in how they
show the result.

Cost, and what live runs see: every query copies the tables it reads (the others empty, so the
catalog still lists them), about their size in memory and temporary disk for the length of the
query. BLOB columns (step inputs and results, heartbeat details, async payloads: most of a
journal's bytes) are copied as NULL unless the query names them or may read them unnamed
(`weft_nb.journal.sql_columns`). The engine's journal lock is held only to move pending steps
from
the step log into DuckDB and to open a read transaction on a second connection (``cursor()``);
DuckDB's snapshot isolation then keeps that copy at that instant while live runs record steps.
So a query sees every step acknowledged before it started, and none recorded during the copy.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.errors import JournalError, JournalIOError
from weft_nb.journal.sql_columns import named_columns

T = TypeVar("T")
Use = Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]]

READ_ONLY_KINDS = frozenset({"SELECT", "EXPLAIN"})
# A table named inside a string (``query('SELECT ... FROM steps')``) is invisible to DuckDB's
# table-name extraction: such a query gets every table.
_TABLE_IN_TEXT = re.compile(r"\bquery\s*\(", re.IGNORECASE)
_PARSER_LOCK = threading.Lock()
# For tests: called as (event, table, parquet file) with "start" before and "done" after each
# table's copy, in the copying thread.
copy_observer: Callable[[str, str, str], None] | None = None
_parser: duckdb.DuckDBPyConnection | None = None  # parses only; never sees a journal
_SANDBOX_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    # No spill folder: DuckDB lets a database without external access write into its temp
    # directory, and the sandbox must write nowhere (a query that outgrows memory fails).
    "temp_directory": "",
}


def _kind(statement: duckdb.Statement) -> str:
    return str(statement.type).rsplit(".", 1)[-1]


def _explained(query: str) -> str | None:
    """The statement an ``EXPLAIN [ANALYZE | (options)]`` explains, or None if none is found."""
    tokens = [
        (pos, kind) for pos, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment
    ]
    words = [
        (
            pos,
            query[pos]
            if kind == duckdb.token_type.operator
            else query[pos:].split(maxsplit=1)[0].upper(),
        )
        for pos, kind in tokens
    ]
    if not words or not words[0][1].startswith("EXPLAIN"):
        return None
    index = 1
    if index < len(words) and words[index][1].startswith("ANALY"):
        index += 1
    elif index < len(words) and words[index][1] == "(":
        depth = 0
        while index < len(words):
            depth += {"(": 1, ")": -1}.get(words[index][1], 0)
            index += 1
            if depth == 0:
                break
    return query[words[index][0] :] if index < len(words) else None


class Reads(NamedTuple):
    """What a query may read: which tables, and which columns by name (None: cannot be told)."""

    tables: set[str] | None
    columns: set[str] | None


def check_user_sql(sql: str, path: str) -> Reads:
    """Refuse (with a clear message) what is not a read-only query; see the module docstring.

    Returns:
        The lower-case names of the tables the query reads and of the columns it names, each
        None when that cannot be told (then everything is copied).

    Raises:
        JournalError: It does not parse, is empty, or holds another kind of statement.
    """
    global _parser  # one parser per process: a connection costs about 20 ms
    with _PARSER_LOCK:
        if _parser is None:
            _parser = duckdb.connect(":memory:")
        statements = _check(_parser, sql, path)
        selects = [
            _explained(s.query) or "" if _kind(s) == "EXPLAIN" else s.query for s in statements
        ]
        return Reads(_referenced(_parser, statements), named_columns(_parser, selects))


def _check(parser: duckdb.DuckDBPyConnection, sql: str, path: str) -> list[duckdb.Statement]:
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise JournalError(f"the query does not parse: {exc}", path=path) from None
    kinds = {_kind(s) for s in statements}
    if "MULTI" in kinds:  # what DuckDB parses PIVOT (and UNPIVOT) into
        raise JournalError(
            "PIVOT is not supported here; use GROUP BY instead (for example SELECT status, "
            "count(*) FROM steps GROUP BY status)",
            path=path,
        )
    if not statements or kinds - READ_ONLY_KINDS:
        raise JournalError(
            f"only read-only queries (SELECT, WITH ... SELECT, EXPLAIN) run over the "
            f"journal; this one holds {', '.join(sorted(kinds)) or 'nothing'}",
            path=path,
        )
    for statement in statements:
        if _kind(statement) != "EXPLAIN":
            continue
        inner = _explained(statement.query)
        try:
            inner_kinds = {_kind(s) for s in parser.extract_statements(inner or "")}
        except duckdb.Error:
            inner_kinds = set()
        if inner_kinds != {"SELECT"}:
            raise JournalError(
                "only read-only queries run over the journal: EXPLAIN (and EXPLAIN ANALYZE, "
                "which runs what it explains) is allowed for SELECT queries only; this one "
                f"explains {', '.join(sorted(inner_kinds)) or 'something else'}",
                path=path,
            )
    return statements


def _referenced(
    parser: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement]
) -> set[str] | None:
    """The (lower-case) table names the statements read; None when that cannot be told."""
    names: set[str] = set()
    for statement in statements:
        if _TABLE_IN_TEXT.search(statement.query):
            return None
        try:
            names |= {name.lower() for name in parser.get_table_names(statement.query)}
        except duckdb.Error:
            return None
    return names


@contextlib.contextmanager
def _staging(path: str) -> Iterator[str]:
    try:
        folder = tempfile.mkdtemp(prefix="weft-sql-")  # private (0700), in $TMPDIR
    except OSError as exc:
        raise JournalIOError(
            f"cannot make a temporary folder to query journal {path} in ({exc}); set TMPDIR to a "
            "writable folder with room for a copy of the journal",
            path=path,
            cause=exc.strerror,
            errno=exc.errno,
        ) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _export(
    con: duckdb.DuckDBPyConnection,
    folder: str,
    wanted: set[str] | None = None,
    columns: set[str] | None = None,
) -> list[tuple[str, str]]:
    """Copy the journal's tables to Parquet files; weft_nb's fixed SQL only.

    With ``wanted``, the other tables are copied empty (their columns only): a query that names
    one table does not pay for copying the rest. With ``columns``, BLOB columns not among them
    are copied as NULL (see `weft_nb.journal.sql_columns`).
    """
    return _write(con, folder, _plan(con, wanted, columns))


def _plan(
    con: duckdb.DuckDBPyConnection, wanted: set[str] | None, columns: set[str] | None
) -> list[tuple[str, str]]:
    """(table, SELECT that copies it) per journal table; reads the catalog (pins a snapshot)."""
    rows = con.execute(
        "SELECT t.table_name, coalesce(list(c.column_name) FILTER (c.data_type = 'BLOB'), []) "
        "FROM duckdb_tables() t JOIN duckdb_columns() c USING (database_name, schema_name, "
        "table_name) WHERE t.database_name = current_database() AND t.schema_name = 'main' "
        "GROUP BY t.table_name ORDER BY t.table_name"
    ).fetchall()
    plan = []
    for table, blobs in rows:
        quoted = _identifier(table)
        skipped = [
            f"NULL::BLOB AS {_identifier(column)}"
            for column in blobs
            if columns is not None and column.lower() not in columns
        ]
        replace = f" REPLACE ({', '.join(skipped)})" if skipped else ""
        limit = "" if wanted is None or table.lower() in wanted else " LIMIT 0"
        plan.append((table, f"SELECT *{replace} FROM {quoted}{limit}"))
    return plan


def _write(
    con: duckdb.DuckDBPyConnection, folder: str, plan: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    files = []
    for index, (table, select) in enumerate(plan):
        target = f"{folder}/t{index}.parquet"
        if copy_observer is not None:
            copy_observer("start", table, target)
        con.execute(f"COPY ({select}) TO {_literal(target)} (FORMAT parquet)")
        if copy_observer is not None:
            copy_observer("done", table, target)
        files.append((_identifier(table), target))
    return files


def _copy(
    use: Use, folder: str, wanted: set[str] | None, columns: set[str] | None
) -> list[tuple[str, str]]:
    """Copy the journal to ``folder``, holding ``use``'s lock only to pin a snapshot.

    Under the lock (``use`` has moved pending steps into DuckDB by then) a second connection to
    the same database opens a transaction and reads the catalog, which fixes its snapshot; the
    copy itself runs on that connection after the lock is released, so live runs go on
    recording steps. Closing the journal's connection closes that cursor too: a reader's ``use``
    does so on leaving, an idle engine may do so (``idle_release``) between two tables. Then the
    copy starts again under ``use`` as a whole, which nothing can close.
    """
    with use() as con:
        cursor = con.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            plan = _plan(cursor, wanted, columns)
        except BaseException:
            cursor.close()
            raise
    try:
        return _write(cursor, folder, plan)
    except duckdb.ConnectionException:  # closed with its parent: copy under the lock
        with use() as con:
            return _export(con, folder, wanted, columns)
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.close()  # ends the read transaction


def _sandbox(folder: str, files: list[tuple[str, str]]) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB holding copies of the tables, with no file access left."""
    box = duckdb.connect(":memory:", config=_SANDBOX_CONFIG)
    try:
        for quoted, target in files:
            box.execute(f"CREATE TABLE {quoted} AS SELECT * FROM read_parquet({_literal(target)})")
        box.execute("SET enable_external_access = false")
        box.execute("SET lock_configuration = true")
    except BaseException:
        box.close()
        raise
    return box


def query_journal(
    use: Use, sql: str, path: str, fetch: Callable[[duckdb.DuckDBPyConnection], T]
) -> T:
    """Run a user's query over a snapshot of the journal; return ``fetch`` of its result.

    Args:
        use: Gives the journal's connection (as ``JournalFile._use``); held only to pin the
            snapshot that is copied (see `_copy()`).
        sql: The user's text.
        path: The journal, for messages.
        fetch: Turns the executed sandbox cursor into the result (a DataFrame, rows...).

    Raises:
        JournalError: Refused by the policy, or failed in the sandbox (message says which).
    """
    reads = check_user_sql(sql, path)
    with _staging(path) as folder:
        try:
            box = _sandbox(folder, _copy(use, folder, reads.tables, reads.columns))
        except duckdb.Error as exc:  # e.g. no room in the temporary folder for the copy
            raise JournalIOError(
                f"could not copy journal {path} to {folder} for the query ({exc}); nothing was "
                "changed. Free space there, or set TMPDIR to a folder with room for a copy of "
                "the tables the query reads.",
                path=path,
                cause=str(exc).splitlines()[0],
                errno=None,
            ) from None
        try:
            try:
                return fetch(box.execute(sql))
            except duckdb.Error as exc:
                hint = (
                    " (queries run on a copy of the journal with no file access)"
                    if "disabled by configuration" in str(exc) or "lock_configuration" in str(exc)
                    else ""
                )
                raise JournalError(f"the query failed: {exc}{hint}", path=path) from None
        finally:
            box.close()
