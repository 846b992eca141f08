"""The read commands of ``weft-nb``: ``runs``, ``show``, ``sql`` and ``export``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
import urllib.parse
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.cli.http import request_endpoint
from weft_nb.cli.reading import open_reader, run_or_endpoint
from weft_nb.cli.text import (
    cut,
    error_json,
    error_text,
    format_seconds,
    format_time,
    payload,
    payload_text,
    print_table,
    span,
)
from weft_nb.errors import CliError, JournalError, JournalLockedError
from weft_nb.journal.sql_sandbox import query_journal

# -- runs and show -------------------------------------------------------------------------------


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


def cmd_show(args: argparse.Namespace) -> int:
    """``weft-nb show RUN``."""
    return run_or_endpoint(lambda: _show(args))


def _show_from(endpoint: dict[str, Any], run_id: str) -> int:
    route = f"/api/v1/runs/{urllib.parse.quote(run_id, safe='')}?format=text"
    text = request_endpoint(endpoint, "GET", route)  # an older kernel sends a JSON string
    print(text if isinstance(text, str) else json.dumps(text, indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_reader(
        args.journal, via_endpoint=lambda e: _show_from(e, args.run), command="show"
    ) as reader:
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
        tokens = reader.rows(
            "async_tokens", "run_id = ? AND consumed_at IS NULL", [run_id], "position"
        )
        signals = reader.rows("signals", "run_id = ? AND consumed_at IS NULL", [run_id], "id")
        events = reader.rows("events", "run_id = ?", [run_id], "created_at, id")
        breakers = reader.rows("breakers", "state = 'open'", [], "activity")
        superseded = reader.query(
            "SELECT count(*) FROM steps WHERE run_id = ? AND superseded", [run_id]
        )[0][0]
    out = sys.stdout
    finished = run["status"] in ("completed", "failed", "cancelled")
    print(f"run {run['run_id']}: workflow {run['workflow']} (version {run['version']})", file=out)
    print(f"  status    {run['status']}", file=out)
    print(f"  parent    {run['parent_run_id']}", file=out) if run.get("parent_run_id") else None
    print(f"  started   {format_time(run['created_at'])}", file=out)
    updated = f"  updated   {format_time(run['updated_at'])}"
    if finished:
        updated += f"  (took {format_seconds(span(run['created_at'], run['updated_at']))})"
    print(updated, file=out)
    print(f"  input     {payload_text(run['input_codec'], run['input'])}", file=out)
    if run["result"] is not None:
        print(f"  result    {payload_text(run['result_codec'], run['result'])}", file=out)
    if run["error"]:
        print(f"  error     {error_text(run['error'])}", file=out)

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
            rows.append(
                [
                    str(position),
                    name,
                    status,
                    tries,
                    format_time(start),
                    format_seconds(span(start, end)),
                ]
            )
        print_table(["STEP", "ACTIVITY", "STATUS", "ATTEMPTS", "STARTED", "TOOK"], rows, out)
        for position in positions:
            notes = _step_notes(
                steps.get(position),
                failures.get(position, []),
                latest.get(position),
                saved.get(position, []),
                waiting.get(position),
            )
            if notes:
                print(f"step {position}:", file=out)
                for note in notes:
                    print(f"  {note}", file=out)
    names = {s["activity"] for s in steps.values()} | {a["activity"] for a in attempts}
    for breaker in (row for row in breakers if row["activity"] in names):
        since, trial = format_time(breaker["opened_at"]), format_time(breaker["half_open_at"])
        what = f"circuit breaker of {breaker['activity']!r} open since {since}"
        print(f"{what}; a trial attempt may run from {trial}", file=out)
    if signals:
        print(file=out)
        print("signals not yet received:", file=out)
        for sig in signals:
            ident = f" (id {sig['signal_id']})" if sig["signal_id"] else ""
            print(
                f"  {sig['name']}{ident} at {format_time(sig['created_at'])}: "
                f"{payload_text(sig['codec'], sig['payload'])}",
                file=out,
            )
    if events:
        print(file=out)
        print("events:", file=out)
        for event in events:
            where = f" step {event['position']}" if event["position"] is not None else ""
            print(
                f"  {format_time(event['created_at'])} {event['kind']}{where}: "
                f"{cut(event['message'] or '', 160)}",
                file=out,
            )
    if superseded:
        print(file=out)
        print(
            f"{superseded} superseded step record(s) kept for audit "
            f"(weft-nb export {run_id} --to FILE shows them)",
            file=out,
        )
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
        took = format_seconds(span(failure["started_at"], failure["finished_at"]))
        message = cut(f"{failure['error_type']}: {failure['error_message']}", 140)
        notes.append(f"attempt {failure['attempt']} failed after {took}: {message}")
    if step is not None and step["status"] == "failed" and step["error"]:
        notes.append(f"error: {cut(error_text(step['error']) or '', 200)}")
    if beat is not None:
        notes.append(
            f"latest heartbeat (attempt {beat['attempt']}, beat {beat['beat']}, "
            f"{format_time(beat['recorded_at'])}): {payload_text(beat['codec'], beat['details'])}"
        )
    if checkpoints:
        newest = checkpoints[0]
        notes.append(
            f"checkpoint {newest['seq']} (attempt {newest['attempt']}, {newest['size']:,} bytes, "
            f"{format_time(newest['created_at'])}); {len(checkpoints)} kept"
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
