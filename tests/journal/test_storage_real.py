"""Failures around storage that need no fault injection: a real full disk (tmpfs, root only),
an exception whose ``__str__`` raises, and a heartbeat flush whose commit fails.

What must hold: no acknowledged step is lost or runs again; the caller gets a named error; every
run thread settles its handle; an attempt's final heartbeat is not lost to a failed flush.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_status

import weft_nb
from weft_nb.activity.heartbeats import HeartbeatFlusher
from weft_nb.errors import ActivityFailedError, JournalIOError, WorkflowFailedError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import HeartbeatRecord
from weft_nb.testing import TestEngine

HANG_GUARD = 60.0  # seconds; only stops a hang from blocking the suite


class Unprintable(ValueError):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_exception_whose_str_raises_is_recorded_by_its_type(engine: TestEngine) -> None:
    @weft_nb.workflow
    def broken(ctx: weft_nb.WorkflowContext) -> None:
        raise Unprintable()

    handle = engine.start(broken, run_id="u")
    with pytest.raises(Unprintable):
        handle.result(timeout=HANG_GUARD)  # on 8d3cf07: TimeoutError, the thread had died
    assert handle.status == "failed"
    record = engine.journal.get_run("u")
    assert record is not None and record.status == "failed"
    resumed = engine.resume("u")
    with pytest.raises(WorkflowFailedError, match=r"<unprintable Unprintable>"):
        resumed.result(timeout=HANG_GUARD)


def test_an_activity_exception_whose_str_raises_keeps_its_type(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 0.01})
    def bad(_: object) -> None:
        raise Unprintable()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(bad)

    # On 8d3cf07: the RuntimeError raised by __str__ replaced the activity's error.
    with pytest.raises(ActivityFailedError, match=r"Unprintable: <unprintable Unprintable>"):
        engine.run(wf, run_id="a", timeout=HANG_GUARD)
    first = engine.journal.attempts_of("a", 0)[0]
    assert (first.error_type, first.error_message) == ("Unprintable", "<unprintable Unprintable>")


class _Attempt:
    """The attributes of an activity attempt that the heartbeat flusher reads."""

    def __init__(self) -> None:
        self.run_id, self.position, self.attempt, self.activity_name = "h", 0, 1, "train"
        self.heartbeat_count = 0
        self.details: Any = None
        self.first_heartbeat_at: float | None = None
        self.last_heartbeat_at = 0.0

    def settle_beats(self) -> None:
        """Every beat here reads the clock already: nothing to date."""

    def beat(self, details: Any) -> None:
        self.details = details
        self.heartbeat_count += 1
        self.last_heartbeat_at = float(self.heartbeat_count)


class _FailingOnce:
    """A real journal whose next heartbeat commit fails like a full disk."""

    def __init__(self, journal: DuckDBJournal) -> None:
        self.journal = journal
        self.fail = True

    def record_heartbeats(self, heartbeats: list[HeartbeatRecord]) -> None:
        if self.fail:
            self.fail = False
            raise JournalIOError("writing the journal failed: disk full", path=self.journal.path)
        self.journal.record_heartbeats(heartbeats)

    def release_if_idle(self, min_idle: float) -> bool:
        return False


def test_a_failed_heartbeat_flush_keeps_the_final_details(tmp_path: Path) -> None:
    journal = DuckDBJournal(tmp_path / "j.duckdb")
    flusher = HeartbeatFlusher(_FailingOnce(journal), clock=None, interval=3600)  # type: ignore[arg-type]  # only the two methods above are used
    attempt = _Attempt()
    flusher.track(attempt)  # type: ignore[arg-type]  # duck-typed attempt
    attempt.beat({"epoch": 7})
    with pytest.raises(JournalIOError):
        flusher.flush()
    final = flusher.finish(attempt)  # type: ignore[arg-type]
    assert final is not None  # on 8d3cf07: None, the details were marked written
    assert final.beat == 1
    flusher.stop(flush=False)
    journal.close()


# -- a real full disk --------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only); skips with the reason."""
    if os.geteuid() != 0:
        pytest.skip("a real tmpfs needs root (mount -t tmpfs); not root here")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (an unprivileged container?): {done.stderr}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


RESULT_BYTES = {"size": 64 * 1024}


@weft_nb.activity
def blob(i: int) -> bytes:
    FULL_DISK_RAN[i] += 1
    return os.urandom(RESULT_BYTES["size"])  # incompressible: the step log fills the disk


FULL_DISK_RAN: collections.Counter[int] = collections.Counter()
FULL_DISK_ACKED: list[int] = []


@weft_nb.workflow
def fill_the_disk(ctx: weft_nb.WorkflowContext) -> int:
    for i in range(400):
        ctx.run(blob, i)
        FULL_DISK_ACKED.append(i)  # acknowledged: ctx.run returned
    return 400


def test_a_really_full_disk_loses_no_acknowledged_step(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "16m") as disk:
        journal = disk / "j.duckdb"
        DuckDBJournal(journal).close()
        reserve = disk / "reserve"
        reserve.write_bytes(bytes(11 * 1024 * 1024))  # freed later, as a user frees space
        with TestEngine(journal) as engine:
            with pytest.raises(JournalIOError) as caught:
                engine.run(fill_the_disk, run_id="full", timeout=HANG_GUARD)
            assert caught.value.cause == "disk full"
            assert str(disk) in str(caught.value)
        acknowledged = list(FULL_DISK_ACKED)
        assert 0 < len(acknowledged) < 400
        reserve.unlink()
        # Not failed: resumable. (Read once space is back: the run's start, like its steps, may
        # still be only in the step log, which a reader cannot move into a full disk.)
        assert run_status(journal, "full") == "running"
        RESULT_BYTES["size"] = 16  # the disk stays small: finish with small results
        with TestEngine(journal) as engine:
            assert engine.run(fill_the_disk, run_id="full", timeout=HANG_GUARD) == 400
            done = {
                row[0]
                for row in engine.journal.query(
                    "SELECT position FROM steps WHERE run_id = 'full' AND status = 'completed' "
                    "AND NOT superseded"
                )
            }
        assert done == set(range(400))
        assert all(FULL_DISK_RAN[i] == 1 for i in acknowledged)  # none lost, none ran twice
        assert set(FULL_DISK_RAN.values()) <= {1, 2}


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until only about ``leave`` bytes are free; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    os.truncate(filler, os.path.getsize(filler) - leave)  # the disk was full: free ``leave``
    return filler


def test_creating_a_journal_on_a_really_full_disk_leaves_no_stub(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "2m") as disk:
        filler = fill(disk, 8192)
        journal = disk / "j.duckdb"
        with pytest.raises(JournalIOError) as caught:  # on 8d3cf07: JournalCorruptError
            DuckDBJournal(journal)
        assert caught.value.cause == "disk full"
        assert not journal.exists()
        filler.unlink()
        DuckDBJournal(journal).close()  # a new journal, not a "corrupt" stub


def test_a_read_only_mount_says_how_to_read_the_journal(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "4m") as disk:
        journal = disk / "j.duckdb"
        DuckDBJournal(journal).close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(JournalIOError) as caught:  # on 8d3cf07: a bare OSError
            DuckDBJournal(journal)
        assert caught.value.cause == "read-only file system"
        assert "read_only=True" in str(caught.value)
        DuckDBJournal(journal, read_only=True).close()  # what the message says works


def test_a_checkpoint_on_a_really_full_disk_is_retried(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "4m") as disk:

        @weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 0.01})
        def save(_: object, activity: weft_nb.ActivityContext) -> int:
            # The first attempt's state does not fit on the disk; the retry's does.
            activity.checkpoint(os.urandom(8 * 1024 * 1024 if activity.attempt == 1 else 1024))
            return activity.attempt

        @weft_nb.workflow
        def wf(ctx: weft_nb.WorkflowContext) -> int:
            return ctx.run(save)

        with TestEngine(disk / "j.duckdb") as engine:
            # On 8d3cf07: PayloadError "cannot be pickled", not retried, the run failed.
            assert engine.run(wf, run_id="cp", timeout=HANG_GUARD) == 2
            (failed,) = engine.journal.attempts_of("cp", 0)
            assert failed.error_type == "JournalIOError"
            assert "disk full" in (failed.error_message or "")
