"""The journal's sidecar lock: ``<journal>.lock``, held with ``flock`` for an engine's whole life.

The lock file records its holder (PID, host, program, since when, and whether the holder still
has the step log open), so a second engine gets
[`JournalLockedError`][weft_nb.errors.JournalLockedError] naming them at once. The kernel releases
``flock`` when a process dies, even by SIGKILL, so a crash never leaves a stale lock behind. The
holder record is rewritten once per open and close, never on the hot path.

Also here, shared by every lock weft_nb takes: `try_flock()` (held by someone else, or an
error of the file system, such as ``ENOLCK`` on an NFS mount without locking, which becomes
[`JournalIOError`][weft_nb.errors.JournalIOError]), `holder_text()` (the words for a holder) and
`names_a_lock()` (whether a DuckDB error is about a lock); and `holder_now()`, which asks the lock
itself whether an engine holds it now (``weft-nb check``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from typing import Any

from weft_nb.base import io_faults
from weft_nb.errors import JournalIOError, JournalLockedError
from weft_nb.journal.io_errors import from_os_error

_LOCK_RE = re.compile(r"\block\b", re.IGNORECASE)


def names_a_lock(text: str) -> bool:
    """Whether an error's text is about a lock ("lock", never "block", as in a block checksum)."""
    return _LOCK_RE.search(text) is not None


def holder_text(holder: dict[str, Any]) -> str:
    """A lock holder in words: ``PID 123 on host (program)``."""
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("program"):
        parts.append(f"({holder['program']})")
    return " ".join(parts)


def read_holder_at(fd: int) -> dict[str, Any]:
    """The holder record in an open lock file (empty when unreadable)."""
    try:
        loaded = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def try_flock(fd: int, path: str) -> dict[str, Any] | None:
    """Take ``flock`` on ``fd`` without waiting: None when taken, else the holder's record.

    Raises:
        JournalIOError: The file system refused the lock for another reason (``ENOLCK`` on an
            NFS mount without locking); ``fd`` is left open for the caller to close.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise from_os_error(exc, path, "locking the journal") from None
        return read_holder_at(fd)
    return None


def holder_now(lock_path: str) -> dict[str, Any] | None:
    """Whether a process holds the lock at ``lock_path`` now: its record (maybe empty), or None.

    The lock itself answers, not the PID it records: an engine that closed lets go of the lock
    while its process lives on, and the record still names that PID. So a shared lock is asked
    for without waiting (it conflicts with an engine's exclusive one; two checks never conflict)
    and let go at once. The file is opened read-only and never created. An engine taking the
    journal in that instant is refused as if it were held; the window is two system calls.

    Raises:
        JournalIOError: The file system cannot lock (``ENOLCK`` on an NFS mount without locking).
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # no engine ever opened this journal for writing
    except OSError as exc:
        raise from_os_error(exc, lock_path, "reading the journal's lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise from_os_error(exc, lock_path, "testing the journal's lock") from None
        return read_holder_at(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_or_refuse(fd: int, lock_path: str, journal_path: str, suffix: str, advice: str) -> None:
    """Take ``flock`` on ``fd``; if another process holds it, close ``fd`` and say who.

    Raises:
        JournalLockedError: ``journal <path> is in use by <holder><suffix>. <advice>``.
        JournalIOError: The file system cannot lock (``fd`` is closed).
    """
    try:
        holder = try_flock(fd, lock_path)
    except JournalIOError:
        os.close(fd)
        raise
    if holder is not None:
        os.close(fd)
        raise JournalLockedError(
            journal_path,
            holder_text(holder),
            holder_pid=holder.get("pid"),
            detail=suffix,
            advice=advice,
        )


class SidecarLock:
    """``<journal>.lock``: taken once per engine, its holder record rewritten on open and close."""

    def __init__(self, journal_path: str) -> None:
        self.journal_path = journal_path
        self.path = journal_path + ".lock"
        self._fd: int | None = None
        self.info: dict[str, Any] = {}

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._fd is not None

    def take(self, program: str) -> dict[str, Any]:
        """Lock the file and record this process; returns what the previous holder recorded.

        Raises:
            JournalLockedError: Another engine holds it (named in the message).
            JournalIOError: The lock file cannot be created, locked or written.
        """
        try:
            if io_faults.ENABLED:
                io_faults.check("lock.write", self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise from_os_error(exc, self.path, "creating the journal's lock file") from None
        lock_or_refuse(
            fd,
            self.path,
            self.journal_path,
            "",
            "Only one engine may write a journal: close the other notebook's engine (or shut its "
            "kernel down), or use another journal path. Read-only inspection works while that "
            "engine is idle.",
        )
        previous = read_holder_at(fd)  # did the last writer close cleanly?
        self._fd = fd
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": program or " ".join(sys.argv[:2])[:200],
            "since": time.time(),
        }
        try:
            self.write_info()
        except JournalIOError:
            self.release()
            raise
        return previous

    def write_info(self, **changes: Any) -> None:
        """Rewrite the holder record with ``changes`` (once per open and close)."""
        assert self._fd is not None
        self.info.update(changes)
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(self.info).encode(), 0)
        except OSError as exc:
            raise from_os_error(exc, self.path, "writing the journal's lock file") from None

    def read_holder(self) -> dict[str, Any]:
        """What the lock file says about its holder (empty when unreadable)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                loaded = json.loads(handle.read() or "{}")
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def release(self) -> None:
        """Let go of the lock (closing the file releases it even if unlocking fails)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
