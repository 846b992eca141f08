"""Telling a journal written by another DuckDB version apart from a damaged one.

DuckDB reads files of older storage versions but not newer ones, and a newer DuckDB may even
change how the header is checksummed. A reader that says "corrupt" to a healthy newer file, and
tells its user to move it aside, loses them their journal. So before weft_nb calls a file
corrupt it reads the file's header itself:

- bytes 8-11 are ``DUCK``; bytes 12-19 are the storage version number (little-endian ``uint64``);
- since DuckDB 1.2, bytes 52-83 hold the version string of the library that created the file
  (``v2.0.1``), NUL-padded, and bytes 84-115 its source id.

(Layout read from DuckDB's ``storage_info.hpp`` ``MainHeader`` and checked on real files written
by DuckDB 1.5.6 and 2.0.1.) A file is another version's, not damaged, when DuckDB says so
("created with a newer/older version of DuckDB", "storage version") or when its header names a
DuckDB newer than the one installed. Then
[`JournalVersionError`][weft_nb.errors.JournalVersionError] names both versions and what to do; the
file is left untouched.

weft_nb pins ``duckdb`` to the major versions its tests run on (`SUPPORTED_DUCKDB`, the
same range as ``pyproject.toml``).
"""

from __future__ import annotations

import dataclasses
import re

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.errors import JournalVersionError

SUPPORTED_DUCKDB = ">=2.0,<3"  # keep equal to the duckdb pin in pyproject.toml

_MAGIC = b"DUCK"
_VERSION_TEXT = re.compile(rb"v?(\d+)\.(\d+)\.(\d+)[0-9A-Za-z.+-]*")
_MESSAGE = re.compile(
    r"newer version of duckdb|older version of duckdb|storage version|"
    r"read a database file with version number",
    re.IGNORECASE,
)
_RANGE = re.compile(r"between (\d+) and (\d+)")


@dataclasses.dataclass(frozen=True)
class FileHeader:
    """What a DuckDB file's main header says about the DuckDB that created it."""

    storage_version: int
    library_version: str | None  # e.g. "v2.0.1"; None in files older than DuckDB 1.2


def read_header(path: str) -> FileHeader | None:
    """The DuckDB main header of ``path``; None if it is not a DuckDB file (or unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(116)
    except OSError:
        return None
    if len(head) < 20 or head[8:12] != _MAGIC:
        return None
    storage = int.from_bytes(head[12:20], "little")
    text = head[52:84].rstrip(b"\0")
    match = _VERSION_TEXT.fullmatch(text) if len(head) >= 84 else None
    return FileHeader(storage, text.decode("ascii") if match else None)


def _numbers(version: str) -> tuple[int, ...]:
    match = _VERSION_TEXT.match(version.encode("ascii", "replace"))
    return tuple(int(g) for g in match.groups()) if match else ()


def reader_version() -> str:
    """The installed DuckDB's version, as DuckDB writes it (``v2.0.1``)."""
    return "v" + duckdb.__version__.lstrip("v")


def journal_version_error(path: str, duckdb_message: str) -> JournalVersionError | None:
    """A `JournalVersionError` if DuckDB failed to open ``path`` because of its version.

    Args:
        path: The journal DuckDB refused.
        duckdb_message: DuckDB's error text.

    Returns:
        The error to raise, or None when the file is not another version's (then it may be
        damaged, and the caller reports that).
    """
    header = read_header(path)
    if header is None:
        return None
    said_version = bool(_MESSAGE.search(duckdb_message))
    reader = reader_version()
    newer_writer = header.library_version is not None and _numbers(
        header.library_version
    ) > _numbers(reader)
    if not (said_version or newer_writer):
        return None
    readable = _RANGE.search(duckdb_message)
    reads = f", which reads storage versions {readable[1]} to {readable[2]}" if readable else ""
    writer = header.library_version or "a DuckDB older than 1.2 (it records no version string)"
    if header.library_version is not None and newer_writer:
        advice = (
            f"Open it with DuckDB {header.library_version} or newer: upgrade duckdb in this "
            f"environment (pip install 'duckdb=={header.library_version.lstrip('v')}'), within "
            f"the range this weft_nb supports ({SUPPORTED_DUCKDB}; a newer major needs a newer "
            "weft_nb)"
        )
    else:
        advice = (
            "Open it with the DuckDB version that wrote it, or export it there (EXPORT DATABASE) "
            "and import it with this one"
        )
    return JournalVersionError(
        f"journal {path} was written by DuckDB {writer} (storage version "
        f"{header.storage_version}); this Python has DuckDB {reader}{reads}, which cannot open "
        f"it. The file is not damaged and was left untouched: do not move it aside or delete it. "
        f"{advice}.",
        path=path,
        writer_version=header.library_version,
        storage_version=header.storage_version,
        reader_version=reader,
    )
