"""The read commands of ``weft-nb``: ``runs``, ``sql`` and ``export`` (``show``: `cli.show`)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.cli.http import request_endpoint
from weft_nb.cli.reading import open_reader, run_or_endpoint
from weft_nb.cli.text import (
    cut,
    error_json,
    format_seconds,
    format_time,
    payload,
    print_table,
    span,
)
from weft_nb.errors import CliError, JournalError, JournalLockedError
from weft_nb.journal.sql_sandbox import query_journal

# -- runs -------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    """``weft-nb runs [--status S]``."""
    return run_or_endpoint(lambda: _runs(args))


def _runs(args: argparse.Namespace) -> int:
    with open_reader(
        args.journal, via_endpoint=lambda e: _runs_from(e, args.status), command="runs"
    ) as reader:
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
            r["run_id"],
            r["workflow"],
            r["version"],
            r["status"],
            str(counts.get(r["run_id"], 0)),
            format_time(r["created_at"]),
            format_seconds(span(r["created_at"], r["updated_at"]))
            if r["status"] in ("completed", "failed", "cancelled")
            else "-",
            r.get("parent_run_id") or "-",  # a child workflow's parent run
        ]
        for r in runs
    ]
    heads = ["RUN", "WORKFLOW", "VERSION", "STATUS", "STEPS", "STARTED", "TOOK", "PARENT"]
    print_table(heads, rows, sys.stdout)
    return 0


def _runs_from(endpoint: dict[str, Any], status: str | None) -> int:
    runs = request_endpoint(endpoint, "GET", "/api/v1/runs")
    if not isinstance(runs, list):
        raise CliError(f"the endpoint {endpoint['url']} answered something other than a list")
    runs = [r for r in runs if isinstance(r, dict) and (not status or r.get("status") == status)]
    if not runs:
        print("no runs" + (f" with status {status}" if status else ""))
        return 0
    rows = [
        [
            str(r.get("run_id")),
            str(r.get("workflow")),
            str(r.get("status")),
            "yes" if r.get("active") else "no",
            format_time(r.get("created_at")),
        ]
        for r in runs
    ]
    print_table(["RUN", "WORKFLOW", "STATUS", "LIVE", "STARTED"], rows, sys.stdout)
    return 0


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
    """``weft-nb sql QUERY``: the ``%weft sql`` sandbox (`weft_nb.journal.sql_sandbox`)."""

    def fetch(cursor: duckdb.DuckDBPyConnection) -> tuple[list[str], list[tuple[Any, ...]]]:
        return [d[0] for d in cursor.description or []], cursor.fetchall()

    with open_reader(args.journal, command="sql") as reader:
        try:
            names, rows = query_journal(reader.connection, args.query, reader.path, fetch)
        except JournalLockedError:
            raise
        except JournalError as exc:
            raise CliError(str(exc)) from None
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
        cells = [[cut(_cell(v), args.max_width) for v in row] for row in rows]
        print_table(names, cells, out)
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
        record["error"] = error_json(row["error"])
    return record


def cmd_export(args: argparse.Namespace) -> int:
    """``weft-nb export RUN --to FILE``."""
    with open_reader(args.journal, command="export") as reader:
        run_id = args.run
        document: dict[str, Any] = {
            "format": "weft_nb.export/1",
            "journal": args.journal,
            "exported_at": time.time(),
            "run": _exported("runs", reader.run(run_id)),
        }
        orders = {
            "steps": "position, superseded DESC",
            "attempts": "position, attempt",
            "heartbeats": "id",
            "checkpoints": "position, seq",
            "events": "created_at, id",
            "signals": "id",
            "async_tokens": "position, created_at",
        }
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
    counts = ", ".join(
        f"{len(document[t])} {t}" for t in ("steps", "attempts", "heartbeats", "events")
    )
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
