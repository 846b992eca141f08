"""A journal written by another DuckDB version is not called corrupt (issue 12.8).

The files are real journals whose DuckDB main header is patched the way a newer DuckDB writes it:
a higher storage version number and library version string, with the header checksum
recomputed (DuckDB's algorithm: 5381 XOR, over the 8-byte words after the checksum, of each word
times 0xbf58476d1ce4e5b9) so that DuckDB itself gets past the checksum and reports the version.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalCorruptError, JournalVersionError
from weft_nb.journal.duckdb_journal import DuckDBJournal

REPO = Path(__file__).resolve().parents[2]
_MASK = (1 << 64) - 1


@weft_nb.activity
def one(x: int) -> int:
    return x


@weft_nb.workflow
def flow(ctx: Any, x: int) -> int:
    return ctx.run(one, x)


def _checksum(header: bytes) -> int:
    result = 5381
    for offset in range(8, 4096, 8):
        (word,) = struct.unpack_from("<Q", header, offset)
        result ^= (word * 0xBF58476D1CE4E5B9) & _MASK
    return result


def _journal(path: Path) -> Path:
    with Engine(path) as eng:
        eng.run(flow, 1, run_id="r")
    return path


def _patch(path: Path, *, storage: int | None, library: bytes | None, checksum: bool) -> None:
    data = bytearray(path.read_bytes())
    assert data[8:12] == b"DUCK"
    if storage is not None:
        struct.pack_into("<Q", data, 12, storage)
    if library is not None:
        data[52:84] = library.ljust(32, b"\0")
    if checksum:
        struct.pack_into("<Q", data, 0, _checksum(bytes(data[:4096])))
    path.write_bytes(bytes(data))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "weft_nb", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def test_the_checksum_helper_matches_duckdb(tmp_path: Path) -> None:
    path = _journal(tmp_path / "j.duckdb")
    header = path.read_bytes()[:4096]
    assert struct.unpack_from("<Q", header, 0)[0] == _checksum(header)


def test_a_newer_duckdbs_journal_is_a_version_error_everywhere(tmp_path: Path) -> None:
    path = _journal(tmp_path / "j.duckdb")
    _patch(path, storage=1000, library=b"v9.9.9", checksum=True)
    before = _sha(path)
    with pytest.raises(duckdb.Error, match="newer version of DuckDB"):
        duckdb.connect(str(path), read_only=True)  # DuckDB itself says it: the file is fine
    for opener in (lambda: Engine(path), lambda: DuckDBJournal(path, read_only=True)):
        with pytest.raises(JournalVersionError) as caught:
            opener()
        error = caught.value
        assert not isinstance(error, JournalCorruptError)
        message = str(error)
        assert str(path) in message
        assert "v9.9.9" in message and f"v{duckdb.__version__}" in message
        assert "not damaged" in message and "do not move it aside" in message
        assert "upgrade duckdb" in message
        assert (error.writer_version, error.storage_version) == ("v9.9.9", 1000)
        assert error.reader_version == f"v{duckdb.__version__}"
    check = _cli("--journal", str(path), "check")
    assert check.returncode == 1
    assert "v9.9.9" in check.stdout and "not damaged" in check.stdout
    assert "salvage" not in check.stdout and "move it aside (" not in check.stdout
    salvage = _cli("salvage", str(path), str(tmp_path / "new.duckdb"))
    assert salvage.returncode == 1
    assert "v9.9.9" in salvage.stderr and "not damaged" in salvage.stderr
    assert not (tmp_path / "new.duckdb").exists()
    runs = _cli("--journal", str(path), "runs")
    assert runs.returncode == 1 and "v9.9.9" in runs.stderr and "Traceback" not in runs.stderr
    assert _sha(path) == before  # untouched throughout


def test_a_newer_header_whose_checksum_this_duckdb_cannot_verify_is_still_a_version_error(
    tmp_path: Path,
) -> None:
    """A newer DuckDB may checksum its header differently: judge the file by its header."""
    path = _journal(tmp_path / "j.duckdb")
    _patch(path, storage=1000, library=b"v9.0.0", checksum=False)
    with pytest.raises(JournalVersionError, match=re.escape("DuckDB v9.0.0")):
        Engine(path)


def test_damage_is_still_called_damage(tmp_path: Path) -> None:
    path = _journal(tmp_path / "j.duckdb")
    _patch(path, storage=None, library=None, checksum=False)  # unchanged: checksum still fine
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # a flipped byte in the header this DuckDB wrote: real damage
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError) as caught:
        Engine(path)
    assert not isinstance(caught.value, JournalVersionError)


def test_duckdb_is_pinned_to_the_majors_the_tests_run_on() -> None:
    from weft_nb.journal.version import SUPPORTED_DUCKDB

    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"duckdb{SUPPORTED_DUCKDB}"' in pyproject
    pin = re.fullmatch(r">=(\d+)\.(\d+),<(\d+)", SUPPORTED_DUCKDB)
    assert pin is not None
    major = int(duckdb.__version__.split(".")[0])
    assert int(pin[1]) <= major < int(pin[3])
