"""``weft-nb show RUN``: a run's steps, attempts, durations, errors, heartbeats and notes.

Read from the journal, or asked of the engine that holds it (its endpoint renders the same text).
The notes under a step (a timer's deadline, a child workflow's run) are the engine's own
`weft_nb.engine.step_notes`, as the run panel and ``%weft show`` print them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from weft_nb.cli.http import request_endpoint
from weft_nb.cli.reading import open_reader, run_or_endpoint
from weft_nb.cli.text import (
    cut,
    error_text,
    format_seconds,
    format_time,
    payload_text,
    print_table,
    span,
)
from weft_nb.engine.step_notes import marker_note


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
            notes = step_notes(
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


def step_notes(
    step: dict[str, Any] | None,
    failures: list[dict[str, Any]],
    beat: dict[str, Any] | None,
    checkpoints: list[dict[str, Any]],
    token: dict[str, Any] | None,
) -> list[str]:
    """The lines printed under a step.

    Failed attempts, its error, the newest heartbeat and checkpoint, a timer's deadline or a
    child's run, and an async token it waits on.
    """
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
    if step is not None:
        marker = marker_note(
            step["activity"], step["status"], step["result"], step["idempotency_key"], time.time()
        )
        if marker is not None:
            notes.append(marker)
    if token is not None and (step is None or step["status"] == "started"):
        notes.append(f"waiting for completion: token {token['token']}")
        notes.append(f"  (weft-nb complete {token['token']} JSON, or weft-nb fail TOKEN MESSAGE)")
    return notes
