"""Child process for the journal locking tests (``tests/test_journal_locking.py``).

Every mode prints one JSON object per line on stdout (flushed), so the parent can read outcomes
with a deadline. Modes:

``hold PATH [--active]``
    Open ``Engine(PATH)``; with ``--active``, start a run (id ``held``) whose first step completes
    and whose second step blocks forever, so the DuckDB file stays open. Prints
    ``{"ready": true, "pid": ...}``, then waits for a line on stdin: ``close`` closes the engine
    and prints ``{"closed": true}``, and the process lives on (as a kernel whose engine was
    closed) until end of input, which exits. The parent may SIGKILL it instead.
``open PATH``
    Try ``Engine(PATH)`` once, timing only that call; prints the outcome, closes the engine.
``read PATH [--wait]``
    Open ``DuckDBJournal(PATH, read_only=True)`` (retrying until a deadline while the file is
    held), list the runs and try one write. With ``--wait``, keep the read-only journal object
    and, for each ``again`` line on stdin, list the runs once more.
``probe PATH``
    Open PATH with plain ``duckdb.connect(read_only=True)`` once, no retry: shows whether another
    process holds the DuckDB file right now.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import duckdb

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalError, JournalLockedError, WeftError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import RunRecord

_BLOCK = threading.Event()  # never set: the held run's second step waits for the process to die


@weft_nb.activity
def first_step(x: int) -> int:
    return x + 1


@weft_nb.activity
def blocking_step(x: int) -> int:
    _BLOCK.wait()
    return x


@weft_nb.workflow
def held_workflow(ctx: Any, x: int) -> int:
    y = ctx.run(first_step, x)
    return ctx.run(blocking_step, y)


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def describe_error(exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "error_type": type(exc).__name__,
        "is_journal_error": isinstance(exc, JournalError),
        "message": str(exc),
        "holder_pid": getattr(exc, "holder_pid", None),
        "path": getattr(exc, "path", None),
    }


def hold(path: str, active: bool) -> None:
    engine = Engine(path)
    if active:
        engine.start(held_workflow, 41, run_id="held")
        deadline = time.monotonic() + 60
        while 0 not in engine.journal.load_steps("held"):
            if time.monotonic() > deadline:
                emit({"ready": False, "error": "first step never recorded"})
                sys.exit(1)
            time.sleep(0.01)
    emit({"ready": True, "pid": os.getpid()})
    open_engine: Engine | None = engine
    for line in sys.stdin:  # after "close", live on without the engine until end of input
        if line.strip() == "close" and open_engine is not None:
            open_engine.close()
            open_engine = None
            emit({"closed": True})


def try_open(path: str) -> None:
    started = time.monotonic()
    try:
        engine = Engine(path)
    except WeftError as exc:
        outcome = describe_error(exc)
    else:
        outcome = {"ok": True, "runs": [r.run_id for r in engine.runs()]}
        engine.close()
    outcome["elapsed"] = time.monotonic() - started
    emit(outcome)


def _list(journal: DuckDBJournal) -> list[list[str]]:
    return [[r.run_id, r.status] for r in journal.list_runs()]


def read(path: str, wait: bool) -> None:
    started = time.monotonic()
    deadline = started + 10
    while True:
        try:
            journal = DuckDBJournal(path, read_only=True)
            runs = _list(journal)
            break
        except JournalLockedError as exc:
            if wait and time.monotonic() < deadline:
                continue  # the writer may still be inside its idle grace
            emit({**describe_error(exc), "elapsed": time.monotonic() - started})
            return
        except WeftError as exc:
            emit({**describe_error(exc), "elapsed": time.monotonic() - started})
            return
    outcome: dict[str, Any] = {"ok": True, "runs": runs, "elapsed": time.monotonic() - started}
    try:
        journal.create_run(
            RunRecord(
                run_id="intruder",
                workflow="wf",
                version="v",
                status="running",
                on_change="rerun",
                input_codec="json",
                input=b"1",
                created_at=0,
                updated_at=0,
            )
        )
    except WeftError as exc:
        outcome["write_error"] = type(exc).__name__
    else:
        outcome["write_error"] = None
    emit(outcome)
    if not wait:
        journal.close()
        return
    for line in sys.stdin:
        if line.strip() == "again":
            try:
                emit({"ok": True, "runs": _list(journal)})
            except WeftError as exc:
                emit(describe_error(exc))
    journal.close()


def probe(path: str) -> None:
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        emit({"ok": False, "message": str(exc)})
    else:
        con.close()
        emit({"ok": True})


def main(argv: list[str]) -> None:
    mode, path, *flags = argv
    if mode == "hold":
        hold(path, active="--active" in flags)
    elif mode == "open":
        try_open(path)
    elif mode == "read":
        read(path, wait="--wait" in flags)
    elif mode == "probe":
        probe(path)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
