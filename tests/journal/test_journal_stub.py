"""A file an interrupted creation left is a new journal, not a corrupt one (review F7).

A kill (SIGKILL, OOM, power loss) while DuckDB creates the journal file, on a full disk say,
leaves an empty or all-zero file; the failing process cannot remove it. It was refused as
corrupt on every open after that. Now a writer recognises it, under the sidecar lock, and starts
a new journal there with a warning; any file with a non-zero byte is still refused untouched
(see tests/test_journal_locking.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import weft_nb
from weft_nb.errors import JournalCorruptError, JournalError
from weft_nb.journal.duckdb_journal import DuckDBJournal

STUBS: list[Callable[[Path], object]] = [
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(bytes(4096)),  # DuckDB's reserved header, never written
    lambda path: path.write_bytes(bytes(256 * 1024)),  # one whole block
]


@pytest.mark.parametrize("make", STUBS, ids=["empty", "4-KiB-of-zeros", "one-block-of-zeros"])
def test_an_interrupted_creations_file_opens_as_a_new_journal(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "j.duckdb"
    make(path)
    size = path.stat().st_size
    with pytest.warns(RuntimeWarning, match=rf"was {size} zero byte\(s\).*starts a new journal"):
        engine = weft_nb.Engine(path)
    with engine:

        @weft_nb.workflow
        def wf(ctx: weft_nb.WorkflowContext) -> int:
            return 7

        assert engine.run(wf, run_id="r") == 7
    journal = DuckDBJournal(path, read_only=True)  # a real journal now
    try:
        assert [run.run_id for run in journal.list_runs()] == ["r"]
    finally:
        journal.close()


def test_zeros_beside_a_write_ahead_log_are_not_a_stub(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    path.write_bytes(bytes(4096))
    Path(str(path) + ".wal").write_bytes(b"\x01" * 64)  # DuckDB wrote something: keep it all
    with pytest.raises(JournalCorruptError):
        weft_nb.Engine(path)
    assert path.read_bytes() == bytes(4096)


def test_a_reader_is_told_there_is_no_journal_yet(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    path.write_bytes(b"")
    with pytest.raises(JournalError, match="holds no journal yet") as caught:
        DuckDBJournal(path, read_only=True)
    assert not isinstance(caught.value, JournalCorruptError)
    assert path.read_bytes() == b""  # a reader changes nothing


KILLED_CREATION = """
import os, signal, sys
from weft_nb.base import io_faults as _io_faults
path = sys.argv[1]
try:
    _io_faults.duckdb_create_fault(path)  # the stub a full disk leaves, then DuckDB's error
except Exception:
    os.kill(os.getpid(), signal.SIGKILL)  # killed before it could remove the stub
"""


def test_a_creation_killed_on_a_full_disk_leaves_a_file_the_next_engine_takes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.duckdb"
    env = {**os.environ, "WEFT_NB_IO_FAULT": "journal.create:enospc"}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CREATION, str(path)], env=env, timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL
    assert path.exists() and path.stat().st_size > 0
    with pytest.warns(RuntimeWarning, match="interrupted"):
        weft_nb.Engine(path).close()
