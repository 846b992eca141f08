"""``weft-nb check``: the journal's integrity, row by row and file by file."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.cli.holders import busy_message, describe_holder, engine_holding
from weft_nb.cli.reading import JOURNAL_TABLES, RUN_TABLES, TMP_PREFIX, Reader, missing_journal
from weft_nb.cli.text import cut
from weft_nb.errors import (
    CliError,
    JournalCorruptError,
    JournalError,
    JournalIOError,
    JournalLockedError,
)
from weft_nb.journal.paths import OWNER_FILE, reading_checkpoint_root
from weft_nb.journal.schema import SCHEMA_VERSION

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
        raise missing_journal(path, "check")
    try:
        reader = Reader(path)
    except JournalLockedError as exc:
        raise CliError(busy_message(path, exc)) from None
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
        raise CliError(busy_message(path, exc)) from None
    finally:
        reader.close()


def _check(reader: Reader) -> int:
    path = reader.path
    report = _Report(path)
    if reader.journal.is_empty:
        report.ok("opens; it has no tables yet (its writer stopped before the first commit)")
        return report.end()
    version = reader.query("SELECT value FROM weft_meta WHERE key = 'schema_version'")
    report.ok(
        f"opens; schema version {version[0][0] if version else '?'} "
        f"(this weft_nb reads {SCHEMA_VERSION})"
    )
    missing = [t for t in JOURNAL_TABLES if not reader.has(t)]
    if missing:
        report.note(
            f"tables added since this journal was written, not there yet: "
            f"{', '.join(missing)} (the engine adds them when it opens it)"
        )

    total, unreadable = 0, []
    for table in [t for t in JOURNAL_TABLES if reader.has(t)]:
        try:
            with reader.connection() as con:
                cursor = con.execute(f"SELECT * FROM {table}")
                while batch := cursor.fetchmany(1024):
                    total += len(batch)
        except duckdb.Error as exc:
            unreadable.append(f"{table}: {cut(str(exc), 200)}")
    if unreadable:
        report.fail("some tables cannot be read back", unreadable)
    else:
        report.ok(f"every row reads back ({total:,} rows)")

    orphans = []
    for table in [t for t in RUN_TABLES if reader.has(t)]:
        for run_id, count in reader.query(
            f"SELECT run_id, count(*) FROM {table} WHERE run_id IS NOT NULL AND run_id NOT IN "
            "(SELECT run_id FROM runs) GROUP BY run_id ORDER BY run_id"
        ):
            orphans.append(f"{count} {table} row(s) of run {run_id!r}, which is not in runs")
    runs = reader.query("SELECT count(*) FROM runs")[0][0]
    if orphans:
        report.fail("rows that belong to no run", orphans)
    else:
        report.ok(
            f"every step, attempt, heartbeat, checkpoint and event belongs to a run ({runs} run(s))"
        )

    root = reading_checkpoint_root(reader.journal.path)  # as weft_nb.activity.checkpoints finds it
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
                if folder == root and name == OWNER_FILE:
                    continue
                if name.startswith(TMP_PREFIX):
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
        report.note(
            "a write-ahead log is pending (the last writer did not close cleanly); the "
            "next engine replays it when it opens the journal"
        )
    try:
        holder = engine_holding(reader.journal.path)
    except JournalIOError as exc:  # a file system without locks: nobody can tell
        report.note(f"cannot tell whether an engine holds this journal ({exc})")
    else:
        if holder is not None:
            report.note(
                f"an engine holds this journal ({describe_holder(holder)}); it was idle while "
                "checked, and files it writes meanwhile may show up as orphans"
            )
    return report.end()
