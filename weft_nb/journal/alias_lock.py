"""The single-writer lock on the journal *file*, whatever name (hard link included) it is opened by.

The sidecar ``<journal>.lock`` goes by the resolved path, which covers symlinks, relative and
``..`` paths, but not hard links: two names of one file resolve to two paths. So a writer also
holds ``flock`` on a lock file named after the journal's ``(st_dev, st_ino)`` in a per-user folder
of the system's temporary directory (``$TMPDIR/weft_nb-<uid>-locks/<dev>-<ino>.lock``). Every
name of one file maps to the same lock file; the kernel drops the lock when its holder dies.

The lock file also records the name the journal was opened by; a later engine that opens the
same file by another name (a hard link) keeps using the first name's step log and checkpoint
folder (`AliasLock.home`), so a crash's unapplied steps and the checkpoints are found.

Assumptions (see docs/guarantees.md): engines that share a journal share the machine's temporary
directory and user id (two users writing one journal by hard links are not detected), and lock
files are never deleted while in use (they are a few hundred bytes each; removing one that a live
engine holds would let a second engine in). Where the folder cannot be created, only the sidecar
lock protects the journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import sys
import tempfile
import time

from weft_nb.base.operational import report
from weft_nb.errors import JournalIOError, JournalLockedError
from weft_nb.journal.lock import holder_text, read_holder_at, try_flock


def registry_folder() -> str:
    """The per-user folder of inode-keyed lock files."""
    return os.path.join(tempfile.gettempdir(), f"weft_nb-{os.getuid()}-locks")


def _private_folder() -> str | None:
    """The lock folder, created if needed; None (with a warning) when it is not ours alone.

    On a shared machine another user could create it first, or plant a lock file as a symlink
    to a file we can write (it would be truncated), or hold our locks to keep every journal out.
    So it must be a real folder (not a symlink), owned by us, with mode 0700.
    """
    folder = registry_folder()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None  # no usable temporary folder: the sidecar lock still guards this name
    if (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and stat.S_IMODE(info.st_mode) == 0o700
    ):
        return folder
    report(
        f"weft_nb's lock folder {folder} is not a private folder of this user (a symlink, "
        f"another owner, or mode {stat.S_IMODE(info.st_mode):o} instead of 700); journals opened "
        "by hard links are not detected while it is so (the sidecar lock still keeps a second "
        "engine off each name). Remove it, or set TMPDIR to a private folder.",
        RuntimeWarning,
        stacklevel=4,
    )
    return None


class AliasLock:
    """A held lock on one journal file's device and inode."""

    def __init__(self, fd: int, lock_path: str, home: str) -> None:
        self._fd: int | None = fd
        self.lock_path = lock_path
        self.home = home  # the name whose sidecar files this journal uses

    def release(self) -> None:
        """Let go of the lock (the file stays, see the module docstring)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _same_file(path: str, info: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)


def take_alias_lock(journal_path: str, program: str) -> AliasLock | None:
    """Lock the file at ``journal_path`` by device and inode; None when it does not exist yet.

    Raises:
        JournalLockedError: Another engine holds the same file, by this name or another one.
    """
    try:
        info = os.stat(journal_path)
    except FileNotFoundError:
        return None
    folder = _private_folder()
    if folder is None:
        return None
    lock_path = os.path.join(folder, f"{info.st_dev}-{info.st_ino}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None  # a symlink planted there, or no room: the sidecar lock still guards the name
    try:
        holder = try_flock(fd, lock_path)
    except JournalIOError:  # no locking there: the sidecar lock still guards this name
        os.close(fd)
        return None
    if holder is not None:
        os.close(fd)
        other = holder.get("journal")
        alias = f" (the same file, opened there as {other})" if other != journal_path else ""
        raise JournalLockedError(
            journal_path,
            holder_text(holder),
            holder_pid=holder.get("pid"),
            detail=alias,
            advice="Only one engine may write a journal, by any of its names (symlinks and hard "
            "links included): close the other engine, or use another journal path.",
        )
    previous = read_holder_at(fd).get("journal")
    home = journal_path
    if isinstance(previous, str) and previous != journal_path and _same_file(previous, info):
        home = previous  # a hard link: keep the name whose step log and checkpoints exist
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "program": program or " ".join(sys.argv[:2])[:200],
        "since": time.time(),
        "journal": home,
        "opened_as": journal_path,
    }
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
    return AliasLock(fd, lock_path, home)


def recorded_home(journal_path: str) -> str:
    """The name a reader should use: the one recorded for this file, if it still names it.

    A reader takes no lock, but it must look at the same step log as the writers (a hard link
    opened after a crash would otherwise miss the records a writer left under the first name).
    """
    try:
        info = os.stat(journal_path)
        lock_path = os.path.join(registry_folder(), f"{info.st_dev}-{info.st_ino}.lock")
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return journal_path
    try:
        home = read_holder_at(fd).get("journal")
    finally:
        os.close(fd)
    if isinstance(home, str) and home != journal_path and _same_file(home, info):
        return home
    return journal_path
