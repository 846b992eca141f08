"""What a journal creation that was interrupted leaves, and how a writer takes its place.

DuckDB creates a journal file before it writes its header. A kill, an out-of-memory kill or a
power loss in between (on a full disk, say) leaves an empty file or one of only zero bytes; the
dying process cannot remove it (a failed creation that survives does, see `remove_stub()`).
Such a file never held a journal, and refusing it as corrupt forever would make the user delete it
by hand. So a writer, under the journal's sidecar lock, removes it and creates a new journal, with
a warning; a reader is told that no journal is there yet. A file with any non-zero byte, or with
DuckDB's write-ahead log or a non-empty step log beside it, is never taken for one.
"""

from __future__ import annotations

import contextlib
import os

from weft_nb.base.operational import report
from weft_nb.errors import JournalError
from weft_nb.journal.io_errors import from_os_error

# DuckDB's default block size: a creation killed before DuckDB wrote its header leaves at most
# this much, all zero (the space DuckDB reserved), or nothing at all.
_STUB_LIMIT = 256 * 1024


def creation_stub(journal_path: str) -> int | None:
    """The size of an interrupted creation's leftover at ``journal_path``, None if it is not one.

    A leftover is a file of only zero bytes, at most one DuckDB block long (0 bytes included),
    with no DuckDB write-ahead log and no non-empty step log beside it: it never held a journal.
    A file with any non-zero byte is never one (it may be a damaged journal; it is not touched).
    """
    try:
        with open(journal_path, "rb") as handle:
            data = handle.read(4096)  # a real journal's checksum is in its first 8 bytes
            if data.count(0) != len(data):
                return None
            data += handle.read(_STUB_LIMIT + 1 - len(data))
    except OSError:
        return None
    if len(data) > _STUB_LIMIT or data.count(0) != len(data):
        return None
    if os.path.exists(journal_path + ".wal"):
        return None
    with contextlib.suppress(OSError):
        if os.path.getsize(journal_path + ".steplog"):
            return None
    return len(data)


def no_journal_yet(journal_path: str, size: int) -> JournalError:
    """The error a reader gets for a creation's leftover."""
    return JournalError(
        f"journal {journal_path} holds no journal yet: it is {size} zero byte(s), as an "
        "interrupted creation (a kill, a full disk) leaves. Nothing in it can be read; opening "
        "it with an Engine starts a new journal there.",
        path=journal_path,
    )


def replace_creation_stub(journal_path: str) -> bool:
    """Remove a creation's leftover (the caller holds the sidecar lock); True if there was one.

    Raises:
        JournalIOError: It could not be removed.
    """
    size = creation_stub(journal_path)
    if size is None:
        return False
    try:
        os.unlink(journal_path)
    except OSError as exc:
        raise from_os_error(exc, journal_path, "removing an interrupted creation's file") from None
    report(
        f"journal {journal_path} was {size} zero byte(s), not a DuckDB database: a creation that "
        "was interrupted (a kill, a full disk) left it, and it held no data. weft_nb starts a "
        "new journal there.",
        RuntimeWarning,
        stacklevel=5,
    )
    return True


def remove_stub(journal_path: str) -> None:
    """Delete the partial file a failed creation left (a full disk), so a retry starts anew."""
    for stub in (journal_path, journal_path + ".wal"):
        with contextlib.suppress(OSError):
            os.unlink(stub)
