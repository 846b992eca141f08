"""Naming storage failures: an ``OSError`` or a DuckDB I/O failure becomes a ``JournalIOError``.

A full disk, a read-only mount, a permission problem or a failing disk is not a bug in the
workflow and not damage to the journal: the run stays resumable once the cause is fixed. So our
write sites turn those failures into [`JournalIOError`][weft_nb.errors.JournalIOError], naming the
file, the cause and what to do, and the engine never marks a run failed because of one.
"""

from __future__ import annotations

import errno
import re

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.errors import JournalIOError

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "I/O error",
    errno.ENOLCK: "no file locking",
}
# DuckDB reports the OS error as text; map the strerror back to its errno.
_DUCKDB_TEXTS = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "input/output error": errno.EIO,
}
# A write DuckDB could not do, whatever the OS said (and never "not a valid DuckDB file").
_DUCKDB_WRITE_FAILURES = ("could not write file", "could not fsync", "could not truncate")
_FILE_RE = re.compile(r'file "([^"]+)"')

_ADVICE = {
    "disk full": "Free space on that disk, then resume the run (start it again, or "
    "engine.recover_all()); nothing acknowledged was lost",
    "disk quota exceeded": "Raise the quota or free space, then resume the run; nothing "
    "acknowledged was lost",
    "read-only file system": "The location is read-only: to inspect the journal there, open it "
    "read-only (DuckDBJournal(path, read_only=True), or `weft-nb --journal PATH runs`); to run "
    "workflows, use a journal on a writable disk",
    "permission denied": "Give this user write access to the file and its folder (or open the "
    "journal read-only: DuckDBJournal(path, read_only=True), `weft-nb --journal PATH runs`)",
    "I/O error": "The disk reported an I/O error: check it (dmesg, SMART), then resume the run",
    "no file locking": "This file system cannot lock files (an NFS mount without its lock "
    "service, some network or FUSE mounts), so weft_nb cannot keep a second engine out: put the "
    "journal on a local disk, or enable locking on the mount",
}


def cause_of(code: int | None) -> str | None:
    """The words for an errno we treat as a storage failure, else None."""
    return _CAUSES.get(code) if code is not None else None


def journal_io_error(path: str, doing: str, code: int | None, detail: str) -> JournalIOError:
    """A `JournalIOError` naming ``path``, what we were ``doing`` and the cause."""
    cause = cause_of(code) or "I/O error"
    advice = _ADVICE.get(cause, _ADVICE["I/O error"])
    return JournalIOError(
        f"{doing} failed on {path}: {cause} ({detail}). {advice}.",
        path=path,
        cause=cause,
        errno=code,
    )


def from_os_error(exc: OSError, path: str, doing: str) -> JournalIOError:
    """Name an ``OSError`` raised by one of our writes."""
    return journal_io_error(exc.filename or path, doing, exc.errno, exc.strerror or str(exc))


def from_duckdb_error(exc: duckdb.Error, path: str, doing: str) -> JournalIOError | None:
    """Name a DuckDB failure caused by the disk; None when it is something else."""
    text = str(exc)
    lowered = text.lower()
    for words, code in _DUCKDB_TEXTS.items():
        if words in lowered:
            match = _FILE_RE.search(text)
            return journal_io_error(match.group(1) if match else path, doing, code, text)
    if any(words in lowered for words in _DUCKDB_WRITE_FAILURES):
        match = _FILE_RE.search(text)
        return journal_io_error(match.group(1) if match else path, doing, errno.EIO, text)
    return None


def is_storage_failure(exc: BaseException) -> JournalIOError | None:
    """The `JournalIOError` at ``exc`` or in its cause/context chain, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, JournalIOError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
