"""Locks and folder migration fail with named errors, and the /tmp lock folder is not trusted.

Review findings F9 (bare ``OSError`` from ``flock`` and from the checkpoint-folder migration)
and F10 (the per-user inode-lock folder in the temporary directory was used whatever it was: a
symlink, another user's folder, a lock file planted as a symlink to a file we can write).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import JournalIOError
from weft_nb.journal import lock as _journal_lock
from weft_nb.journal.alias_lock import registry_folder


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own, as ``tempfile.gettempdir()``."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _open_quietly(journal: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with weft_nb.Engine(journal):
            pass
    return [str(w.message) for w in caught]


def test_a_symlinked_lock_folder_is_not_used(tmp_path: Path, private_tmp: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    Path(registry_folder()).symlink_to(elsewhere)
    messages = _open_quietly(tmp_path / "j.duckdb")
    assert any("is not a private folder" in m for m in messages)
    assert list(elsewhere.iterdir()) == []  # nothing created or truncated through the link


def test_a_lock_folder_others_can_enter_is_not_used(tmp_path: Path, private_tmp: Path) -> None:
    os.makedirs(registry_folder())
    os.chmod(registry_folder(), 0o777)
    messages = _open_quietly(tmp_path / "j.duckdb")
    assert any("mode 777 instead of 700" in m for m in messages)
    assert os.listdir(registry_folder()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="giving the folder to another user needs root")
def test_a_lock_folder_of_another_user_is_not_used(tmp_path: Path, private_tmp: Path) -> None:
    os.makedirs(registry_folder(), mode=0o700)
    os.chown(registry_folder(), 65534, -1)
    messages = _open_quietly(tmp_path / "j.duckdb")
    assert any("is not a private folder" in m for m in messages)


def test_a_lock_file_planted_as_a_symlink_is_not_followed(
    tmp_path: Path, private_tmp: Path
) -> None:
    journal = tmp_path / "j.duckdb"
    weft_nb.Engine(journal).close()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    info = journal.stat()
    planted = Path(registry_folder()) / f"{info.st_dev}-{info.st_ino}.lock"
    planted.unlink()
    planted.symlink_to(victim)
    _open_quietly(journal)
    assert victim.read_text() == "precious"  # not truncated, not overwritten with JSON


def test_a_file_system_without_locking_is_a_journal_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flock = fcntl.flock

    def no_locks(fd: int, operation: int) -> Any:  # as an NFS mount without its lock service
        if operation & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return real_flock(fd, operation)

    monkeypatch.setattr(_journal_lock.fcntl, "flock", no_locks)
    with pytest.raises(JournalIOError, match="no file locking") as caught:
        weft_nb.Engine(tmp_path / "j.duckdb")
    assert str(tmp_path / "j.duckdb.lock") in str(caught.value)
    monkeypatch.setattr(_journal_lock.fcntl, "flock", real_flock)
    weft_nb.Engine(tmp_path / "j.duckdb").close()  # nothing was left locked


def test_a_failed_checkpoint_folder_migration_is_a_journal_io_error(tmp_path: Path) -> None:
    journal = tmp_path / "j.duckdb"
    legacy = tmp_path / "j.checkpoints"  # the old naming, to be renamed to j.duckdb.checkpoints
    legacy.mkdir()
    (legacy / "keep.bin").write_bytes(b"x")
    Path(str(journal) + ".checkpoints").write_bytes(b"")  # a file in the way: rename fails
    with pytest.raises(JournalIOError, match="renaming the checkpoint folder") as caught:
        weft_nb.Engine(journal)
    assert str(legacy) in str(caught.value)
    assert (legacy / "keep.bin").read_bytes() == b"x"
    Path(str(journal) + ".checkpoints").unlink()
    with weft_nb.Engine(journal) as engine:  # once it is out of the way, the migration runs
        assert engine.checkpoints.root == str(journal) + ".checkpoints"
