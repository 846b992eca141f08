"""Shared pieces of the ``weft-nb`` command line: who holds a journal, reading it, formatting."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import duckdb

from ._journal_lock import names_a_lock
from ._journal_paths import resolve_journal
from ._server import endpoint_file, read_endpoint
from .errors import JournalLockedError

DEFAULT_JOURNAL = ".weft/journal.duckdb"
RUN_STATUSES = ("running", "interrupted", "completed", "failed", "cancelled")
_TABLES = (
    "runs", "steps", "attempts", "heartbeats", "checkpoints", "events", "signals", "async_tokens",
    "weft_meta",
)  # fmt: skip
_RUN_TABLES = _TABLES[1:-1]  # the tables whose rows belong to a run
_TMP_PREFIX = ".tmp-"  # as in weft_nb._checkpoints
_HTTP_TIMEOUT = 30.0


class CliError(Exception):
    """A failure to report as one message on stderr, exit status 1."""


def _error(message: str) -> None:
    print(f"weft-nb: error: {message}", file=sys.stderr)


# -- who holds the journal -----------------------------------------------------------------------


def _lock_holder(path: str) -> dict[str, Any]:
    """What the sidecar ``<journal>.lock`` says about the last engine that took it."""
    try:
        with open(resolve_journal(path) + ".lock", encoding="utf-8") as handle:
            loaded = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    text = f"PID {holder.get('pid', '?')}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        text += f" on {holder['host']}"
    if holder.get("program"):
        text += f" ({holder['program']})"
    if isinstance(holder.get("since"), int | float):
        text += f", since {_when(holder['since'])}"
    return text


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (on this host)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _endpoint_of(path: str, holder_pid: int | None) -> dict[str, Any] | None:
    """The REST endpoint recorded by the engine that holds the journal, if it serves one."""
    where = endpoint_file(path)
    endpoint = read_endpoint(where)
    if endpoint is None or endpoint.get("pid") != holder_pid:
        return None  # none, or left behind by a process that no longer holds the journal
    if endpoint.get("host") not in (None, socket.gethostname()) or not _alive(endpoint):
        return None  # on another machine (its loopback address is there), or its process died
    return {**endpoint, "file": where}


def _busy(path: str, exc: JournalLockedError) -> str:
    """Why a read cannot open the file now: who holds it and what to do."""
    holder = _lock_holder(path)
    pid = getattr(exc, "holder_pid", None)
    if holder and holder.get("pid") == pid:
        return (
            f"journal {path} is in use by a weft_nb engine: {_describe(holder)}. Its runs are "
            "active, and it keeps the file open until they finish (it lets go about 1 s after "
            "it goes idle). Retry then, or inspect it from that notebook (%weft sql, %weft "
            "show), or serve its REST endpoint (engine.serve(port=0, auth_token=...)) so that "
            "`weft-nb runs` and `weft-nb show` can ask it."
        )
    return (
        f"journal {path} is open in PID {pid if pid is not None else '?'}, which is not the "
        "weft_nb engine recorded in its lock file (a DuckDB shell, a viewer, another reader?). "
        "Close that connection and retry."
    )


# -- reading -------------------------------------------------------------------------------------


class Reader:
    """A read-only view of the journal.

    Every query opens and closes the file (as the engine expects of readers), so a long command
    never keeps the owner from writing for long.
    """

    def __init__(self, path: str) -> None:
        from ._duckdb_journal import DuckDBJournal

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
        with self.journal._use() as con:
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
        """The run's row, or a CliError."""
        found = self.rows("runs", "run_id = ?", [run_id], "run_id")
        if not found:
            raise CliError(f"no run {run_id!r} in journal {self.path}")
        return found[0]


@contextlib.contextmanager
def _reading(
    path: str, *, via_endpoint: Callable[[dict[str, Any]], int] | None = None
) -> Iterator[Reader]:
    """Open a :class:`Reader`, turning a busy or missing journal into a clear message.

    With ``via_endpoint``, a journal whose holder keeps the file open and serves its REST
    endpoint is asked through the endpoint instead (raising :class:`_Answered`).
    """
    if not os.path.exists(path):
        raise CliError(f"no journal at {path} (pass --journal PATH)")
    holder = _lock_holder(path)
    endpoint = _endpoint_of(path, holder.get("pid")) if via_endpoint is not None else None

    def answer() -> _Answered:
        assert endpoint is not None
        assert via_endpoint is not None
        print(
            f"(journal in use by {_describe(holder)}; asking its endpoint {endpoint['url']})",
            file=sys.stderr,
        )
        return _Answered(via_endpoint(endpoint))

    if endpoint is not None and _held_now(path):
        raise answer()  # its runs are active: no need to wait for the file
    try:
        reader = Reader(path)
    except JournalLockedError as exc:
        if endpoint is not None and getattr(exc, "holder_pid", None) == holder.get("pid"):
            raise answer() from None
        raise CliError(_busy(path, exc)) from None
    try:
        yield reader
    except JournalLockedError as exc:  # the owner took the file back between two queries
        if endpoint is not None and getattr(exc, "holder_pid", None) == holder.get("pid"):
            raise answer() from None
        raise CliError(_busy(path, exc)) from None
    finally:
        reader.close()


def _held_now(path: str) -> bool:
    """Whether another process has the DuckDB file open right now (one try, no waiting)."""
    try:
        duckdb.connect(path, read_only=True).close()
    except duckdb.Error as exc:
        return names_a_lock(str(exc))  # "lock", never "block" (a damaged block's checksum)
    return False


class _Answered(Exception):
    """The endpoint answered a read command in the journal's place (carries the exit status)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _answered(action: Callable[[], int]) -> int:
    try:
        return action()
    except _Answered as answered:
        return answered.status


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def _cut(text: str, width: int) -> str:
    text = text.replace("\r", "").replace("\n", "\\n")
    return text if width <= 0 or len(text) <= width else text[: max(1, width - 3)] + "..."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for line in (header, ["-" * w for w in widths], *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


# -- payloads ------------------------------------------------------------------------------------


def payload(codec: str | None, data: bytes | None) -> dict[str, Any] | None:
    """A stored payload for export: decoded when its codec is JSON text, else described.

    ``json`` and ``pydantic:`` payloads are JSON text and decode without running any code;
    ``pickle`` payloads would need the classes they name (and unpickling runs code), so they
    are described by codec and size only.
    """
    if data is None:
        return None
    described: dict[str, Any] = {"codec": codec, "size": len(data)}
    if codec == "json" or (codec or "").startswith("pydantic:"):
        try:
            described["value"] = json.loads(data)
        except ValueError as exc:
            described["decode_error"] = str(exc)
    return described


def _payload_text(codec: str | None, data: bytes | None, width: int = 100) -> str:
    described = payload(codec, data)
    if described is None:
        return "-"
    if "value" in described:
        return _cut(json.dumps(described["value"], separators=(", ", ": "), default=str), width)
    return f"<{codec}, {described['size']:,} bytes>"


def _error_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _error_text(text: str | None) -> str | None:
    error = _error_json(text)
    if error is None:
        return None
    if isinstance(error, dict):
        return f"{error.get('class', 'Error')}: {error.get('message', '')}"
    return str(error)


def _request(endpoint: dict[str, Any], method: str, route: str, body: Any = None) -> Any:
    """Call the holder's REST endpoint; its refusals become messages."""
    url = str(endpoint["url"]).rstrip("/") + route
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if endpoint.get("token"):
        request.add_header("Authorization", f"Bearer {endpoint['token']}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(request, timeout=_HTTP_TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error")
        except (ValueError, AttributeError):
            detail = None
        raise CliError(
            f"the kernel's endpoint ({endpoint['url']}, PID {endpoint.get('pid')}) refused: "
            f"{detail or exc.reason} (HTTP {exc.code})"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"the kernel's endpoint {endpoint['url']} (PID {endpoint.get('pid')}, recorded in "
            f"{endpoint.get('file')}) did not answer: {reason}"
        ) from None
