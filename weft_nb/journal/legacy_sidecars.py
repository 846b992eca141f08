"""Files an older weft_nb left beside the name a journal was opened by, not beside the file.

Before the journal's files were keyed on the resolved file (`weft_nb.journal.paths`), an
engine opened by a symlink (or a hard link) kept its lock and step log beside that name:
``link.duckdb.lock`` and ``link.duckdb.steplog``. After an upgrade, the same name leads to
``real.duckdb.steplog``. Two things must still hold across the upgrade:

- an older engine that still runs by that name keeps the journal to itself: its lock file is
  locked too, so the newer engine gets [`JournalLockedError`][weft_nb.errors.JournalLockedError];
- the completed steps an older engine acknowledged before it crashed are not lost: its step log
  is applied like the journal's own (idempotently, damage reported), then renamed aside.
"""

from __future__ import annotations

import os

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.journal import step_log_recovery
from weft_nb.journal.framing import keep_aside
from weft_nb.journal.lock import lock_or_refuse


def legacy_name(given: str, journal_path: str) -> str | None:
    """The name an older weft_nb keyed the sidecar files on, if they are not the journal's own."""
    if os.path.realpath(given + ".steplog") == os.path.realpath(journal_path + ".steplog"):
        return None  # the same file (the same name, or a symlinked folder)
    return given


def take_legacy_lock(name: str, journal_path: str) -> int | None:
    """Lock an older engine's lock file beside ``name``; None when there is none.

    Raises:
        JournalLockedError: An older engine holds it: it is writing the journal now.
        JournalIOError: The lock could not be taken for another reason (no locking on NFS).
    """
    try:
        fd = os.open(name + ".lock", os.O_RDWR)
    except OSError:
        return None  # none (or unusable): no older engine can be holding it
    lock_or_refuse(
        fd,
        name + ".lock",
        journal_path,
        f", an older weft_nb that opened it as {name}",
        "Only one engine may write a journal: close that engine (or shut its kernel down), "
        "then open the journal again.",
    )
    return fd


def recover_legacy_log(con: duckdb.DuckDBPyConnection, journal_path: str, name: str) -> int:
    """Apply an older engine's step log beside ``name``; move it aside. Returns the next lsn."""
    log_path = name + ".steplog"
    try:
        if os.path.getsize(log_path) == 0:
            return 1
    except OSError:
        return 1
    next_lsn = step_log_recovery.recover(con, journal_path, log_path, {})
    if os.path.exists(log_path):  # intact: applied; a damaged one was already kept aside
        keep_aside(log_path, "applied")
    return next_lsn
