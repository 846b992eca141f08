"""Recovering the step log on open: apply every intact record, report and keep any damage.

A crashed writer leaves completed steps in ``<journal>.steplog`` that DuckDB does not hold yet
(see `weft_nb.journal.step_log`). On the next open they are moved into DuckDB. Damage does not
stop
that: a torn, flipped or overwritten range is skipped, reading resynchronises on the next intact
record, and every intact record is applied. What was skipped is reported with
[`JournalDamageWarning`][weft_nb.errors.JournalDamageWarning] (how many records, at which byte
offsets), and the damaged file is kept aside as ``<journal>.steplog.damaged-<UTC time>`` instead of
being emptied, so the evidence survives.

A step log that is missing although the previous writer did not shut down cleanly is reported
too. The sidecar lock file carries the marker (``"steplog": "open"`` while a writer holds the
journal, ``"closed"`` once it closed with an empty log), written once per open and once per
close, so the hot path (one append and one ``fdatasync`` per step) pays nothing for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.operational import report
from weft_nb.errors import JournalDamageWarning, JournalIOError, JournalLockedError
from weft_nb.journal.framing import describe_ranges, keep_aside
from weft_nb.journal.run_log import RUN_START_FIELDS
from weft_nb.journal.step_log import StepRow, apply_rows, scan, unapplied

LOG_OPEN = "open"
LOG_CLOSED = "closed"


def recover(
    con: duckdb.DuckDBPyConnection, journal_path: str, log_path: str, previous: dict[str, object]
) -> int:
    """Apply a crashed writer's step log to DuckDB; warn about damage. Returns the next lsn.

    Args:
        con: The journal's read-write connection.
        journal_path: The journal, for the messages.
        log_path: The step log.
        previous: What the lock file said about the previous writer (see the module docstring).
    """
    try:
        with open(log_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if previous.get("steplog") == LOG_OPEN:
            report(
                f"the step log {log_path} of journal {journal_path} is missing, although the "
                f"last writer (PID {previous.get('pid', '?')}) did not shut down cleanly: the "
                "steps it had completed but not yet moved into the journal are lost and will "
                "run again when their runs resume. Something deleted the file; do not delete "
                "weft_nb's files beside a journal.",
                JournalDamageWarning,
                stacklevel=4,
            )
        return 1
    found = scan(data)
    rows = unapplied(con, [row for _lsn, row in found.records])
    if rows:
        apply_rows(con, rows)
    if found.damaged:
        kept = keep_aside(log_path)  # only after the intact records are committed
        lost = runless(con, [row for _lsn, row in found.records])
        report(
            f"the step log {log_path} of journal {journal_path} is damaged: skipped "
            f"{len(found.damaged)} damaged range(s) holding at least {found.missing} record(s) "
            f"(byte offsets {describe_ranges(found.damaged)} of {len(data)}) and applied the "
            f"{len(found.records)} intact record(s) ({len(rows)} new). Steps whose records "
            "were damaged will run again when their runs resume; a run whose outcome record "
            "was damaged resumes, replays its steps and records its outcome again. "
            + (
                f"The start records of runs {', '.join(map(repr, lost))} were damaged: their "
                "steps are kept, their input is lost; start each again under the same run id and "
                "input: its kept steps replay, none runs again. "
                if lost
                else ""
            )
            + f"The damaged file is kept at {kept}.",
            JournalDamageWarning,
            stacklevel=4,
        )
    return max((lsn for lsn, _row in found.records), default=0) + 1


def runless(con: duckdb.DuckDBPyConnection, rows: list[StepRow]) -> list[str]:
    """The run ids of intact step or outcome records whose run is not in ``runs``."""
    run_ids = sorted({row[0] for row in rows if len(row) != RUN_START_FIELDS})
    if not run_ids:
        return []
    present = con.execute(
        "SELECT run_id FROM runs WHERE run_id IN (SELECT UNNEST(?::VARCHAR[]))", [run_ids]
    ).fetchall()
    return sorted(set(run_ids) - {found[0] for found in present})


def needs_writer(log_path: str, holder: dict[str, object]) -> bool:
    """Whether a reader should recover the log as a writer (when no engine holds the journal)."""
    try:
        return os.path.getsize(log_path) > 0
    except FileNotFoundError:
        return holder.get("steplog") == LOG_OPEN


def recover_as_reader(
    journal_path: str, holder: dict[str, object], writer: Callable[[], Any]
) -> None:
    """Apply a crashed writer's step log before reading, if no engine holds the journal.

    A live engine applies its own log before it lets readers in; a dead one cannot, so a reader
    that finds records and a free lock recovers them by opening the journal as a writer once
    (``writer()``, closed at once), as SQLite readers roll back a hot journal. With the lock
    taken by a live engine, the reader sees DuckDB as it is.
    """
    if not needs_writer(journal_path + ".steplog", holder):
        return
    try:
        opened = writer()
    except JournalLockedError:
        return
    except (OSError, JournalIOError) as exc:  # e.g. read-only: read DuckDB, and say so
        report(
            f"completed steps of journal {journal_path} are still in its step log "
            f"and could not be moved into it ({exc}); open the journal once with write "
            "access (an Engine, or any weft-nb command run by its owner) to apply them",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    opened.close()
