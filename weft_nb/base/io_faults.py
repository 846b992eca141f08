"""I/O fault injection for storage tests: make one of our write sites fail like a bad disk.

Set ``WEFT_NB_IO_FAULT="site:kind"``, ``"site:kind:N"`` (the N-th time the site is reached) or
``"site:kind:N:M"`` (M times in a row from the N-th; ``M=0``: every time from the N-th) before the
process imports weft_nb, so child processes and kernels inherit it; tests in one process call
`configure()`. Sites, each one of our writes:

- ``steplog.append`` / ``steplog.sync``: the append of a completed step's record, its
  ``fdatasync``;
- ``checkpoint.write``: the bytes of a checkpoint file;
- ``lock.write``: creating and writing the sidecar lock file;
- ``journal.create``: creating a new DuckDB journal file (leaves a 4 KiB stub, as a full disk
  does);
- ``journal.commit``: a DuckDB commit (raised as DuckDB raises a full disk);
- ``dispatch.write``: creating the dispatch log and each append to it (best effort: a warning).

Kinds: ``enospc`` (disk full), ``eio`` (I/O error), ``erofs`` (read-only file system),
``eacces`` (permission denied) and ``short`` (a short write: part of the bytes land, then the
disk is full). When the variable is unset, `ENABLED` is False and every call site checks
that one global before anything else. A fault that fires is logged as an ``io_fault_fired``
event when ``WEFT_NB_EVIDENCE_LOG`` is set (see `weft_nb.base.evidence`).
"""

from __future__ import annotations

import errno
import os

from weft_nb.base import evidence
from weft_nb.base.duckdb_engine import duckdb

SITES = (
    "steplog.append",
    "steplog.sync",
    "checkpoint.write",
    "lock.write",
    "journal.create",
    "journal.commit",
    "dispatch.write",
)
KINDS = {
    "enospc": errno.ENOSPC,
    "eio": errno.EIO,
    "erofs": errno.EROFS,
    "eacces": errno.EACCES,
    "short": errno.ENOSPC,
}

ENABLED = False
_site = ""
_kind = ""
_first = 1
_times = 1
_hits = 0


def configure(spec: str) -> None:
    """Arm one fault (``"site:kind[:nth[:times]]"``), or disarm with ``""``; resets the count.

    Raises:
        ValueError: Unknown site or kind, or a count that is not a positive number.
    """
    global ENABLED, _site, _kind, _first, _times, _hits
    _hits = 0
    if not spec:
        ENABLED = False
        return
    parts = spec.split(":")
    site, kind = parts[0], parts[1] if len(parts) > 1 else ""
    if site not in SITES or kind not in KINDS or len(parts) > 4:
        raise ValueError(
            f"WEFT_NB_IO_FAULT={spec!r}: expected SITE:KIND[:NTH[:TIMES]] with SITE one of "
            f"{', '.join(SITES)} and KIND one of {', '.join(KINDS)}"
        )
    first = int(parts[2]) if len(parts) > 2 else 1
    times = int(parts[3]) if len(parts) > 3 else 1
    if first < 1 or times < 0:
        raise ValueError(f"WEFT_NB_IO_FAULT={spec!r}: NTH must be >= 1 and TIMES >= 0")
    _site, _kind, _first, _times = site, kind, first, times
    ENABLED = True


def fires(site: str) -> str | None:
    """Count a visit to ``site``; the fault's kind if it fails this time, else None."""
    global _hits
    if not ENABLED or site != _site:
        return None
    _hits += 1
    if _hits < _first or (_times and _hits >= _first + _times):
        return None
    if evidence.ENABLED:  # a harness must know the fault was reached, or its trial proves nothing
        evidence.record("io_fault_fired", site=site, kind=_kind, visit=_hits)
    return _kind


def os_error(kind: str, path: str) -> OSError:
    """The ``OSError`` a real disk raises for ``kind``."""
    code = KINDS[kind]
    return OSError(code, os.strerror(code), path)


def check(site: str, path: str) -> None:
    """Raise the armed fault's ``OSError`` if ``site`` fails now."""
    kind = fires(site)
    if kind is not None:
        raise os_error(kind, path)


def write_all(fd: int, data: bytes, site: str, path: str) -> None:
    """Write all of ``data`` to ``fd``; a short-write fault lands half of it, then fails."""
    view = memoryview(data)
    kind = fires(site) if ENABLED else None
    if kind == "short":
        os.write(fd, view[: max(1, len(view) // 2)])
    if kind is not None:
        raise os_error(kind, path)
    while view:
        view = view[os.write(fd, view) :]


def duckdb_commit_fault(con: duckdb.DuckDBPyConnection) -> None:
    """Fail a DuckDB commit as a full (or read-only, or failing) disk makes DuckDB fail it."""
    kind = fires("journal.commit")
    if kind is None:
        return
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    path = row[0] if row else "journal"
    con.execute("ROLLBACK")
    raise duckdb.TransactionException(
        f'TransactionContext Error: Failed to commit: Could not write file "{path}.wal": '
        f"{os.strerror(KINDS[kind])}"
    )


def duckdb_create_fault(path: str) -> None:
    """Fail the creation of a new journal file as a full disk does: a 4 KiB stub is left."""
    kind = fires("journal.create")
    if kind is None:
        return
    with open(path, "wb") as stub:
        stub.write(bytes(4096))
    raise duckdb.IOException(f'IO Error: Could not write file "{path}": {os.strerror(KINDS[kind])}')


configure(os.environ.get("WEFT_NB_IO_FAULT", ""))
