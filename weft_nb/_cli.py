"""``weft-nb`` (and ``python -m weft_nb``): a journal from the terminal.

Read commands (``runs``, ``show``, ``sql``, ``export``, ``check``) open the journal read-only, so
they work while the engine that owns it is idle (it lets go of the file about a second after its
runs stop; a reader waits up to 5 s). While that engine's runs keep the file open, they say who
holds it, and ``runs`` and ``show`` ask the engine's REST endpoint instead when it serves one.

Write commands (``complete``, ``fail``, ``signal``) open an :class:`~weft_nb.Engine` on the
journal when no process holds it. When a kernel holds it they go through the kernel's REST
endpoint (``engine.serve(...)`` records its URL and token in ``<journal>.endpoint.json``), since
only the holder may write the journal; without an endpoint they name the holder and what to do.

Exit status: 0 done, 1 an error (a message on stderr, never a traceback), 2 bad arguments (usage
on stderr, nothing read or written), 3 ``salvage`` left damaged runs out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import duckdb

from ._journal_schema import SCHEMA_VERSION
from ._server import endpoint_file, read_endpoint
from .errors import JournalCorruptError, JournalError, JournalLockedError, WeftError

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


# -- the command line ----------------------------------------------------------------------------


def _json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON ({exc}); quote it for the shell, e.g. '{{\"approved\": true}}' or "
            "'\"a string\"'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``weft-nb`` argument parser."""
    journal_help = f"the journal file (default {DEFAULT_JOURNAL})"
    parser = argparse.ArgumentParser(
        prog="weft-nb",
        description="Inspect a weft_nb journal, and complete, fail or signal its runs.",
        epilog="See docs/cli.md for every command with examples.",
    )
    parser.add_argument("--journal", default=DEFAULT_JOURNAL, metavar="PATH", help=journal_help)
    # --journal is accepted after the command too (`weft-nb runs --journal x.duckdb`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--journal", default=argparse.SUPPRESS, metavar="PATH", help=journal_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    runs = command("runs", cmd_runs, "list the runs, oldest first")
    runs.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")

    show = command("show", cmd_show, "a run's steps, attempts, durations, errors, heartbeats")
    show.add_argument("run", metavar="RUN", help="the run id")

    sql = command("sql", cmd_sql, "run a read-only query (SELECT, WITH ... SELECT, EXPLAIN)")
    sql.add_argument("query", metavar="QUERY", help='e.g. "SELECT run_id, status FROM runs"')
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument(
        "--max-width", type=int, default=60, metavar="N",
        help="cut table cells to N characters (0: never; default 60)",
    )  # fmt: skip

    export = command("export", cmd_export, "write a run's whole record as JSON")
    export.add_argument("run", metavar="RUN", help="the run id")
    export.add_argument("--to", required=True, metavar="FILE", help="the JSON file ('-': stdout)")

    command("check", cmd_check, "check the journal's integrity; exit 1 if anything is wrong")

    complete = command("complete", cmd_complete, "complete a parked activity with a JSON result")
    complete.add_argument("token", metavar="TOKEN", help="the activity's task token")
    complete.add_argument("result", metavar="JSON", type=_json_argument, help="its result")

    fail = command("fail", cmd_fail, "fail a parked activity")
    fail.add_argument("token", metavar="TOKEN", help="the activity's task token")
    fail.add_argument("message", metavar="MESSAGE", nargs="+", help="why it failed")

    signal = command("signal", cmd_signal, "send a signal to a run")
    signal.add_argument("run", metavar="RUN", help="the run id")
    signal.add_argument("name", metavar="NAME", help="the signal's name")
    signal.add_argument(
        "payload", metavar="JSON", type=_json_argument, nargs="?", default=None,
        help="its payload (default null)",
    )  # fmt: skip
    signal.add_argument(
        "--id", dest="signal_id", metavar="SIGNAL_ID",
        help="deliver once: a repeated id is ignored",
    )  # fmt: skip

    salvage = command(
        "salvage", cmd_salvage, "copy every intact run of a damaged journal into a new journal"
    )
    salvage.add_argument("broken", help="the damaged journal (left untouched)")
    salvage.add_argument("target", help="the new journal to write (must not exist)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.journal = os.path.abspath(args.journal)
    try:
        return int(args.handler(args))
    except (CliError, WeftError) as exc:
        _error(str(exc))
    except duckdb.Error as exc:
        _error(f"DuckDB: {exc}")
    except BrokenPipeError:  # `weft-nb runs | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback; the message says what broke
        if os.environ.get("WEFT_NB_DEBUG"):
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (set WEFT_NB_DEBUG=1 for the traceback)")
    return 1


def _error(message: str) -> None:
    print(f"weft-nb: error: {message}", file=sys.stderr)


# -- who holds the journal -----------------------------------------------------------------------


def _lock_holder(path: str) -> dict[str, Any]:
    """What the sidecar ``<journal>.lock`` says about the last engine that took it."""
    try:
        with open(path + ".lock", encoding="utf-8") as handle:
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
        return "lock" in str(exc).lower()
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


# -- runs and show -------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    """``weft-nb runs [--status S]``."""
    return _answered(lambda: _runs(args))


def _runs(args: argparse.Namespace) -> int:
    with _reading(args.journal, via_endpoint=lambda e: _runs_from(e, args.status)) as reader:
        where, params = ("status = ?", [args.status]) if args.status else ("true", [])
        runs = reader.rows("runs", where, params, "created_at, run_id")
        counts = dict(
            reader.query("SELECT run_id, count(*) FROM steps WHERE NOT superseded GROUP BY run_id")
        )
    if not runs:
        which = f" with status {args.status}" if args.status else ""
        print(f"no runs{which} in journal {args.journal}")
        return 0
    rows = [
        [
            r["run_id"], r["workflow"], r["version"], r["status"], str(counts.get(r["run_id"], 0)),
            _when(r["created_at"]),
            _seconds(_span(r["created_at"], r["updated_at"]))
            if r["status"] in ("completed", "failed", "cancelled") else "-",
        ]
        for r in runs
    ]  # fmt: skip
    _table(["RUN", "WORKFLOW", "VERSION", "STATUS", "STEPS", "STARTED", "TOOK"], rows, sys.stdout)
    return 0


def _runs_from(endpoint: dict[str, Any], status: str | None) -> int:
    runs = _request(endpoint, "GET", "/api/v1/runs")
    if not isinstance(runs, list):
        raise CliError(f"the endpoint {endpoint['url']} answered something other than a list")
    runs = [r for r in runs if isinstance(r, dict) and (not status or r.get("status") == status)]
    if not runs:
        print("no runs" + (f" with status {status}" if status else ""))
        return 0
    rows = [
        [str(r.get("run_id")), str(r.get("workflow")), str(r.get("status")),
         "yes" if r.get("active") else "no", _when(r.get("created_at"))]
        for r in runs
    ]  # fmt: skip
    _table(["RUN", "WORKFLOW", "STATUS", "LIVE", "STARTED"], rows, sys.stdout)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``weft-nb show RUN``."""
    return _answered(lambda: _show(args))


def _show_from(endpoint: dict[str, Any], run_id: str) -> int:
    text = _request(endpoint, "GET", "/api/v1/runs/" + urllib.parse.quote(run_id, safe=""))
    print(text if isinstance(text, str) else json.dumps(text, indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _reading(args.journal, via_endpoint=lambda e: _show_from(e, args.run)) as reader:
        run_id = args.run
        run = reader.run(run_id)
        current = "run_id = ? AND NOT superseded"
        steps = {s["position"]: s for s in reader.rows("steps", current, [run_id], "position")}
        attempts = reader.rows("attempts", current, [run_id], "position, attempt")
        beats = reader.rows(
            "heartbeats",
            f"{current} AND id IN (SELECT max(id) FROM heartbeats WHERE {current} "
            "GROUP BY position)",
            [run_id, run_id],
            "position",
        )
        checkpoints = reader.rows("checkpoints", current, [run_id], "position, seq DESC")
        tokens = reader.rows("async_tokens", "run_id = ? AND consumed_at IS NULL", [run_id],
                             "position")  # fmt: skip
        signals = reader.rows("signals", "run_id = ? AND consumed_at IS NULL", [run_id], "id")
        events = reader.rows("events", "run_id = ?", [run_id], "created_at, id")
        superseded = reader.query(
            "SELECT count(*) FROM steps WHERE run_id = ? AND superseded", [run_id]
        )[0][0]
    out = sys.stdout
    finished = run["status"] in ("completed", "failed", "cancelled")
    print(f"run {run['run_id']}: workflow {run['workflow']} (version {run['version']})", file=out)
    print(f"  status    {run['status']}", file=out)
    print(f"  started   {_when(run['created_at'])}", file=out)
    updated = f"  updated   {_when(run['updated_at'])}"
    if finished:
        updated += f"  (took {_seconds(_span(run['created_at'], run['updated_at']))})"
    print(updated, file=out)
    print(f"  input     {_payload_text(run['input_codec'], run['input'])}", file=out)
    if run["result"] is not None:
        print(f"  result    {_payload_text(run['result_codec'], run['result'])}", file=out)
    if run["error"]:
        print(f"  error     {_error_text(run['error'])}", file=out)

    failures: dict[int, list[dict[str, Any]]] = {}
    for attempt in attempts:
        failures.setdefault(attempt["position"], []).append(attempt)
    latest = {b["position"]: b for b in beats}
    saved: dict[int, list[dict[str, Any]]] = {}
    for checkpoint in checkpoints:
        saved.setdefault(checkpoint["position"], []).append(checkpoint)
    waiting = {t["position"]: t for t in tokens}
    positions = sorted(set(steps) | set(failures) | set(latest) | set(waiting))
    print(file=out)
    if not positions:
        print("no steps recorded yet", file=out)
    else:
        rows = []
        for position in positions:
            step = steps.get(position)
            if step is not None:
                status = "dispatched" if step["status"] == "started" else step["status"]
                name, tries = step["activity"], str(step["attempts"] or "")
                start, end = step["started_at"], step["finished_at"]
            else:
                first = (failures.get(position) or [{}])[0]
                name = (
                    first.get("activity")
                    or (waiting.get(position) or {}).get("activity")
                    or (latest.get(position) or {}).get("activity")
                    or "?"
                )
                status = "unfinished"  # no outcome recorded: running now, or stopped mid-way
                tries = str(len(failures.get(position, [])) + 1)
                start = first.get("started_at") or (waiting.get(position) or {}).get("created_at")
                end = None
            if position in waiting and (step is None or step["status"] == "started"):
                status = "waiting"
            rows.append([str(position), name, status, tries, _when(start),
                         _seconds(_span(start, end))])  # fmt: skip
        _table(["STEP", "ACTIVITY", "STATUS", "ATTEMPTS", "STARTED", "TOOK"], rows, out)
        for position in positions:
            notes = _step_notes(
                steps.get(position), failures.get(position, []), latest.get(position),
                saved.get(position, []), waiting.get(position),
            )  # fmt: skip
            if notes:
                print(f"step {position}:", file=out)
                for note in notes:
                    print(f"  {note}", file=out)
    if signals:
        print(file=out)
        print("signals not yet received:", file=out)
        for sig in signals:
            ident = f" (id {sig['signal_id']})" if sig["signal_id"] else ""
            print(f"  {sig['name']}{ident} at {_when(sig['created_at'])}: "
                  f"{_payload_text(sig['codec'], sig['payload'])}", file=out)  # fmt: skip
    if events:
        print(file=out)
        print("events:", file=out)
        for event in events:
            where = f" step {event['position']}" if event["position"] is not None else ""
            print(f"  {_when(event['created_at'])} {event['kind']}{where}: "
                  f"{_cut(event['message'] or '', 160)}", file=out)  # fmt: skip
    if superseded:
        print(file=out)
        print(f"{superseded} superseded step record(s) kept for audit "
              f"(weft-nb export {run_id} --to FILE shows them)", file=out)  # fmt: skip
    return 0


def _step_notes(
    step: dict[str, Any] | None,
    failures: list[dict[str, Any]],
    beat: dict[str, Any] | None,
    checkpoints: list[dict[str, Any]],
    token: dict[str, Any] | None,
) -> list[str]:
    notes = []
    for failure in failures:
        took = _seconds(_span(failure["started_at"], failure["finished_at"]))
        message = _cut(f"{failure['error_type']}: {failure['error_message']}", 140)
        notes.append(f"attempt {failure['attempt']} failed after {took}: {message}")
    if step is not None and step["status"] == "failed" and step["error"]:
        notes.append(f"error: {_cut(_error_text(step['error']) or '', 200)}")
    if beat is not None:
        notes.append(
            f"latest heartbeat (attempt {beat['attempt']}, beat {beat['beat']}, "
            f"{_when(beat['recorded_at'])}): {_payload_text(beat['codec'], beat['details'])}"
        )
    if checkpoints:
        newest = checkpoints[0]
        notes.append(
            f"checkpoint {newest['seq']} (attempt {newest['attempt']}, {newest['size']:,} bytes, "
            f"{_when(newest['created_at'])}); {len(checkpoints)} kept"
        )
    if token is not None and (step is None or step["status"] == "started"):
        notes.append(f"waiting for completion: token {token['token']}")
        notes.append(f"  (weft-nb complete {token['token']} JSON, or weft-nb fail TOKEN MESSAGE)")
    return notes


# -- sql -----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value)):,} bytes>"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_cell(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value)):,} bytes>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_cell(v) for k, v in value.items()}
    return str(value)


def cmd_sql(args: argparse.Namespace) -> int:
    """``weft-nb sql QUERY``: the same read-only rule as ``%weft sql``."""
    with _reading(args.journal) as reader, reader.connection() as con:
        try:
            statements = con.extract_statements(args.query)
        except duckdb.Error as exc:
            raise CliError(f"the query does not parse: {exc}") from None
        kinds = {str(s.type).rsplit(".", 1)[-1] for s in statements}
        if not statements or kinds - {"SELECT", "EXPLAIN"}:
            raise CliError(
                "only read-only queries (SELECT, WITH ... SELECT, EXPLAIN) run over the journal; "
                f"this one holds {', '.join(sorted(kinds)) or 'nothing'}"
            )
        try:
            cursor = con.execute(args.query)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except duckdb.Error as exc:
            raise CliError(f"the query failed: {exc}") from None
    out = sys.stdout
    if args.format == "json":
        records = [dict(zip(names, map(_json_cell, row), strict=True)) for row in rows]
        json.dump(records, out, indent=2)
        print(file=out)
    elif args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[("" if v is None else _cell(v)) for v in row] for row in rows])
    elif names == ["explain_key", "explain_value"]:  # a plan reads best as it is drawn
        for row in rows:
            print(row[1], file=out)
    else:
        cells = [[_cut(_cell(v), args.max_width) for v in row] for row in rows]
        _table(names, cells, out)
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)
    return 0


# -- export --------------------------------------------------------------------------------------

_PAYLOAD_COLUMNS = {
    "runs": [("input_codec", "input"), ("result_codec", "result")],
    "steps": [("result_codec", "result")],
    "heartbeats": [("codec", "details")],
    "signals": [("codec", "payload")],
}


def _exported(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row for export: payloads decoded or described, errors parsed, the rest JSON-safe."""
    record = {key: _json_cell(value) for key, value in row.items()}
    for codec, column in _PAYLOAD_COLUMNS.get(table, []):
        record[column] = payload(row[codec], row[column])
    if "error" in row:
        record["error"] = _error_json(row["error"])
    return record


def cmd_export(args: argparse.Namespace) -> int:
    """``weft-nb export RUN --to FILE``."""
    with _reading(args.journal) as reader:
        run_id = args.run
        document: dict[str, Any] = {
            "format": "weft_nb.export/1",
            "journal": args.journal,
            "exported_at": time.time(),
            "run": _exported("runs", reader.run(run_id)),
        }
        orders = {"steps": "position, superseded DESC", "attempts": "position, attempt",
                  "heartbeats": "id", "checkpoints": "position, seq", "events": "created_at, id",
                  "signals": "id", "async_tokens": "position, created_at"}  # fmt: skip
        for table, order in orders.items():
            document[table] = [
                _exported(table, row) for row in reader.rows(table, "run_id = ?", [run_id], order)
            ]
    text = json.dumps(document, indent=2, default=str) + "\n"
    if args.to == "-":
        sys.stdout.write(text)
        return 0
    target = os.path.abspath(args.to)
    _write_atomically(target, text)
    counts = ", ".join(f"{len(document[t])} {t}" for t in ("steps", "attempts", "heartbeats",
                                                            "events"))  # fmt: skip
    print(f"exported run {run_id} ({counts}) to {target}")
    return 0


def _write_atomically(target: str, text: str) -> None:
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {target}: no folder {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".weft-export-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- check ---------------------------------------------------------------------------------------


class _Report:
    def __init__(self, path: str) -> None:
        self.problems = 0
        print(f"journal {path}")

    def ok(self, text: str) -> None:
        print(f"  ok    {text}")

    def note(self, text: str) -> None:
        print(f"  note  {text}")

    def fail(self, text: str, details: Sequence[str] = ()) -> None:
        self.problems += 1
        print(f"  FAIL  {text}")
        for line in details[:10]:
            print(f"        {line}")
        if len(details) > 10:
            print(f"        ... and {len(details) - 10} more")

    def end(self) -> int:
        print("clean" if not self.problems else f"{self.problems} problem(s) found")
        return 0 if not self.problems else 1


def cmd_check(args: argparse.Namespace) -> int:
    """``weft-nb check``: can the journal be opened, read whole, and do its files match."""
    path = args.journal
    if not os.path.exists(path):
        raise CliError(f"no journal at {path} (pass --journal PATH)")
    try:
        reader = Reader(path)
    except JournalLockedError as exc:
        raise CliError(_busy(path, exc)) from None
    except JournalCorruptError as exc:
        report = _Report(path)
        report.fail(f"opens: {exc}", [f"to copy its intact runs out: weft-nb salvage {path} NEW"])
        return report.end()
    except JournalError as exc:  # a schema version this weft_nb does not read
        report = _Report(path)
        report.fail(f"opens: {exc}")
        return report.end()
    try:
        return _check(reader)
    except JournalLockedError as exc:
        raise CliError(_busy(path, exc)) from None
    finally:
        reader.close()


def _check(reader: Reader) -> int:
    path = reader.path
    report = _Report(path)
    if reader.journal._empty:
        report.ok("opens; it has no tables yet (its writer stopped before the first commit)")
        return report.end()
    version = reader.query("SELECT value FROM weft_meta WHERE key = 'schema_version'")
    report.ok(f"opens; schema version {version[0][0] if version else '?'} "
              f"(this weft_nb reads {SCHEMA_VERSION})")  # fmt: skip
    missing = [t for t in _TABLES if not reader.has(t)]
    if missing:
        report.note(f"tables added since this journal was written, not there yet: "
                    f"{', '.join(missing)} (the engine adds them when it opens it)")  # fmt: skip

    total, unreadable = 0, []
    for table in [t for t in _TABLES if reader.has(t)]:
        try:
            with reader.connection() as con:
                cursor = con.execute(f"SELECT * FROM {table}")
                while batch := cursor.fetchmany(1024):
                    total += len(batch)
        except duckdb.Error as exc:
            unreadable.append(f"{table}: {_cut(str(exc), 200)}")
    if unreadable:
        report.fail("some tables cannot be read back", unreadable)
    else:
        report.ok(f"every row reads back ({total:,} rows)")

    orphans = []
    for table in [t for t in _RUN_TABLES if reader.has(t)]:
        for run_id, count in reader.query(
            f"SELECT run_id, count(*) FROM {table} WHERE run_id IS NOT NULL AND run_id NOT IN "
            "(SELECT run_id FROM runs) GROUP BY run_id ORDER BY run_id"
        ):
            orphans.append(f"{count} {table} row(s) of run {run_id!r}, which is not in runs")
    runs = reader.query("SELECT count(*) FROM runs")[0][0]
    if orphans:
        report.fail("rows that belong to no run", orphans)
    else:
        report.ok(f"every step, attempt, heartbeat, checkpoint and event belongs to a run "
                  f"({runs} run(s))")  # fmt: skip

    root = os.path.splitext(path)[0] + ".checkpoints"  # as weft_nb._checkpoints names it
    recorded = reader.query("SELECT path, size, run_id, position, seq FROM checkpoints")
    damaged = []
    for rel, size, run_id, position, seq in recorded:
        full = os.path.join(root, rel)
        where = f"checkpoint {seq} of step {position} (run {run_id!r})"
        try:
            actual = os.path.getsize(full)
        except OSError:
            damaged.append(f"{where}: {full} is missing")
            continue
        if actual != size:
            damaged.append(f"{where}: {full} has {actual:,} bytes, recorded {size:,}")
    if damaged:
        report.fail("checkpoint files missing or of the wrong size", damaged)
    else:
        report.ok(f"{len(recorded)} checkpoint file(s) present with their recorded sizes")

    referenced = {row[0] for row in recorded}
    strays = []
    if os.path.isdir(root):
        for folder, _dirs, files in os.walk(root):
            for name in sorted(files):
                full = os.path.join(folder, name)
                if name.startswith(_TMP_PREFIX):
                    strays.append(f"{full} (a checkpoint write that never finished)")
                elif os.path.relpath(full, root) not in referenced:
                    strays.append(f"{full} (no journal row names it)")
    if strays:
        report.fail(
            "orphan checkpoint files (a crash left them; the engine deletes them when it next "
            "opens the journal)",
            strays,
        )
    else:
        report.ok(f"no orphan files under {root}")

    if reader.journal.had_wal:
        report.note("a write-ahead log is pending (the last writer did not close cleanly); the "
                    "next engine replays it when it opens the journal")  # fmt: skip
    holder = _lock_holder(path)
    if holder and holder.get("pid") != os.getpid() and _alive(holder):
        report.note(f"an engine holds this journal ({_describe(holder)}); it was idle while "
                    "checked, and files it writes meanwhile may show up as orphans")  # fmt: skip
    return report.end()


# -- writing -------------------------------------------------------------------------------------


def cmd_complete(args: argparse.Namespace) -> int:
    """``weft-nb complete TOKEN JSON``."""
    _write(
        args.journal,
        "complete",
        direct=lambda engine: engine.complete_async_activity(args.token, args.result),
        remote=("/api/v1/activities/complete", {"token": args.token, "result": args.result}),
    )
    print(f"completed {args.token}")
    return 0


def cmd_fail(args: argparse.Namespace) -> int:
    """``weft-nb fail TOKEN MESSAGE``."""
    message = " ".join(args.message)
    _write(
        args.journal,
        "fail",
        direct=lambda engine: engine.fail_async_activity(args.token, message),
        remote=("/api/v1/activities/fail", {"token": args.token, "error": message}),
    )
    print(f"failed {args.token}: {message}")
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    """``weft-nb signal RUN NAME JSON [--id SIGNAL_ID]``."""
    route = (
        f"/api/v1/runs/{urllib.parse.quote(args.run, safe='')}/signals/"
        f"{urllib.parse.quote(args.name, safe='')}"
    )
    answer = _write(
        args.journal,
        "signal",
        direct=lambda engine: engine.signal(
            args.run, args.name, args.payload, signal_id=args.signal_id
        ),
        remote=(route, {"payload": args.payload, "signal_id": args.signal_id}),
    )
    delivered = answer.get("delivered") if isinstance(answer, dict) else answer
    if delivered is False:
        print(f"signal {args.name!r} with id {args.signal_id!r} was already sent to run "
              f"{args.run!r}; ignored")  # fmt: skip
    else:
        print(f"sent signal {args.name!r} to run {args.run!r}")
    return 0


def _write(
    path: str, command: str, *, direct: Callable[[Any], Any], remote: tuple[str, dict[str, Any]]
) -> Any:
    """Apply a write: on the journal itself when free, else through its holder's endpoint."""
    if not os.path.exists(path):
        raise CliError(f"no journal at {path} (pass --journal PATH)")
    from ._engine import Engine

    try:
        engine = Engine(path, program=f"weft-nb {command}")
    except JournalLockedError as exc:
        holder = _lock_holder(path)
        if not holder or holder.get("pid") == os.getpid():
            raise  # no engine holds it; the DuckDB file is open elsewhere (the message says)
        endpoint = _endpoint_of(path, holder.get("pid"))
        if endpoint is None:
            raise CliError(
                f"journal {path} is held by a weft_nb engine: {_describe(holder)}, which serves "
                "no REST endpoint, and only the holder may write the journal. Either run "
                "`engine.serve(port=0, auth_token=...)` in that kernel and retry (weft-nb finds "
                "the endpoint by itself), or use %weft complete / %weft fail / engine.signal(...) "
                "there, or close that engine (engine.close(), or shut the kernel down) and retry."
            ) from exc
        route, body = remote
        return _request(endpoint, "POST", route, body)
    try:
        with contextlib.suppress(OSError):  # we hold the journal: an endpoint file is stale
            os.unlink(endpoint_file(path))
        return direct(engine)
    finally:
        engine.close()


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


# -- salvage -------------------------------------------------------------------------------------


def cmd_salvage(args: argparse.Namespace) -> int:
    """``weft-nb salvage BROKEN TARGET``."""
    from ._salvage import salvage

    report = salvage(args.broken, args.target)
    print(report.describe())
    return 0 if not report.damaged else 3
