"""The dispatch log: which attempts started and never ended, so crash loops are counted and end.

An activity that kills its process (out of memory, a segfault, ``os._exit``, a SIGKILL) leaves
nothing in the journal: no failed attempt, no outcome. Without a record of the dispatch, every
resume would run it again as attempt 1, forever. So before an attempt runs, the engine appends a
``start`` record to ``<journal>.dispatch``; when the attempt's handling ends (its outcome recorded,
it parked on a task token, its run was stopped or cancelled), an ``end`` record.

Cost: two ``write()`` calls per attempt and no ``fsync``. A written record is in the operating
system's page cache, which survives the death of the process, the failure this log exists for.
A power loss or an operating-system crash may lose the latest records; then the interrupted
attempt is not counted (the engine behaves as before: it runs the attempt again with the same
number). Nothing else depends on the log.

When the next engine opens the journal, :func:`recover` turns every ``start`` without an ``end``
into a failed attempt row (``ActivityCrashed``) of a run that has not finished, with an
``attempt_crashed`` audit event and a logged warning; spends that attempt's task token (a
completion of it would otherwise be accepted while the retry runs); and empties the log. A
resume then continues the attempt numbering (attempt 2 after a crash in attempt 1),
``last_heartbeat_details`` shows the crashed attempt's last flushed details, and the step fails
with ``ActivityCrashLoopError`` once it has started ``max_attempts`` times.

A clean ``Engine.close()`` empties the log: attempts it stopped were not crashes.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import struct
import threading
import warnings
import zlib
from typing import TYPE_CHECKING

from ._journal import TERMINAL_STATUSES, AttemptRecord, EventRecord

if TYPE_CHECKING:
    from ._journal import Journal

log = logging.getLogger("weft_nb.dispatch")

CRASHED = "ActivityCrashed"  # error_type of an attempt interrupted by the death of its process
_HEADER = struct.Struct("<II")  # payload length, crc32
_COMPACT_BYTES = 1024 * 1024  # rewrite the file with only the open attempts beyond this size

Key = tuple[str, int, int]  # run_id, position, attempt


def _frame(record: tuple[str | int | float, ...]) -> bytes:
    payload = marshal.dumps(record, 4)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_open(path: str) -> list[tuple[str, int, int, str, float]]:
    """The ``start`` records without an ``end`` in a log file (stops at a torn record)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    started: dict[Key, tuple[str, int, int, str, float]] = {}
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            record = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            break
        offset += _HEADER.size + length
        kind, run_id, position, attempt = record[:4]
        if kind == "S":
            started[(run_id, position, attempt)] = (run_id, position, attempt, record[4], record[5])
        else:
            started.pop((run_id, position, attempt), None)
    return list(started.values())


class Dispatch:
    """One started attempt; :meth:`end` records that its handling finished (idempotent)."""

    __slots__ = ("_key", "_log")

    def __init__(self, log: DispatchLog, key: Key) -> None:
        self._log = log
        self._key: Key | None = key

    def end(self) -> None:
        """Record the end of the attempt (a second call does nothing)."""
        if self._key is not None:
            self._log._end(self._key)
            self._key = None


class DispatchLog:
    """The append-only ``<journal>.dispatch`` file of one engine (the journal's owner)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._open: dict[Key, bytes] = {}
        self._size = os.fstat(self._fd).st_size

    def start(self, run_id: str, position: int, attempt: int, activity: str, at: float) -> Dispatch:
        """Record that an attempt is about to run; returns the handle that ends it."""
        key = (run_id, position, attempt)
        record = _frame(("S", run_id, position, attempt, activity, at))
        with self._lock:
            if self._fd is not None:
                self._open[key] = record
                self._write(record)
        return Dispatch(self, key)

    def _end(self, key: Key) -> None:
        with self._lock:
            if self._fd is None:
                return
            self._open.pop(key, None)
            self._write(_frame(("E", *key)))
            if self._fd is not None and self._size > _COMPACT_BYTES:
                try:
                    self._compact()
                except OSError:  # keep appending to the long file; the next end tries again
                    self._size = 0

    def _write(self, data: bytes) -> None:
        """Append ``data``; on a write error (a full disk) stop recording, with one warning.

        Best effort by design: the log only counts crashes, so a failed write must never fail
        the attempt (or hide its outcome, when it happens as the attempt ends).
        """
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            warnings.warn(
                f"weft_nb could not write its dispatch log {self.path} ({exc}); until the "
                "engine is opened again, attempts killed with their process are not counted "
                "toward max_attempts (crash loops are not stopped). Free disk space, then "
                "restart the kernel or reopen the engine.",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self._size += len(data)

    def _compact(self) -> None:
        """Rewrite the file with only the attempts still open (caller holds the lock)."""
        assert self._fd is not None
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        data = b"".join(self._open.values())
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
            os.replace(temporary, self.path)
        except OSError:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self._size = fd, len(data)

    def close(self, *, clean: bool) -> None:
        """Stop recording; ``clean`` (an orderly close) empties the file first.

        After a simulated or real crash (``clean=False``) the records stay for the next engine,
        and the attempts still running can no longer end theirs.
        """
        with self._lock:
            if self._fd is None:
                return
            if clean:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def recover(journal: Journal, path: str, now: float) -> int:
    """Record the attempts a dead process left open as crashed; empty the log. Returns the count.

    Runs when an engine opens the journal, before any run resumes.
    """
    open_records = read_open(path)
    counted = 0
    for run_id, position, attempt, activity, started_at in open_records:
        run = journal.get_run(run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            continue
        if journal.query(
            "SELECT 1 FROM attempts WHERE run_id = ? AND position = ? AND attempt = ? "
            "AND NOT superseded UNION ALL SELECT 1 FROM steps WHERE run_id = ? AND position = ? "
            "AND NOT superseded AND status IN ('completed', 'failed')",
            [run_id, position, attempt, run_id, position],
        ):
            continue  # its outcome was committed just before the process died
        message = (
            f"the process died while attempt {attempt} of activity {activity!r} (step "
            f"{position}, run {run_id!r}) ran (killed, out of memory, a segfault, os._exit); "
            "it counts as a failed attempt"
        )
        journal.record_attempt_failure(
            AttemptRecord(
                run_id, position, attempt, activity, started_at, now, CRASHED, message, ""
            )
        )  # spends the attempt's task token in the same transaction
        journal.add_event(EventRecord(run_id, position, "attempt_crashed", message, now))
        log.warning("weft_nb: %s", message)
        counted += 1
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, 0)
    return counted
