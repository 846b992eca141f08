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

When the next engine opens the journal, `recover()` turns every ``start`` without an ``end``
into a failed attempt row (``ActivityCrashed``) of a run that has not finished, with an
``attempt_crashed`` audit event and a logged warning; spends that attempt's task token (a
completion of it would otherwise be accepted while the retry runs); and empties the log. A
resume then continues the attempt numbering (attempt 2 after a crash in attempt 1),
``last_heartbeat_details`` shows the crashed attempt's last flushed details, and the step fails
with ``ActivityCrashLoopError`` once it has started ``max_attempts`` times.

Reading skips a damaged range and resynchronises on the next intact record; damage is reported
and the damaged file kept aside. The log is best effort: when it cannot be created, read or
written (a full disk, a read-only folder), a one-time ``RuntimeWarning`` says crash loops are not
counted until the engine is reopened, and the engine works on.

A clean ``Engine.close()`` empties the log: attempts it stopped were not crashes.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import struct
import threading
import zlib
from typing import TYPE_CHECKING, Any

from weft_nb.base import io_faults
from weft_nb.base.operational import report
from weft_nb.errors import JournalDamageWarning
from weft_nb.journal.framing import describe_ranges, keep_aside, walk
from weft_nb.journal.protocol import TERMINAL_STATUSES, AttemptRecord, EventRecord

if TYPE_CHECKING:
    from weft_nb.journal.protocol import Journal

log = logging.getLogger("weft_nb.dispatch")

CRASHED = "ActivityCrashed"  # error_type of an attempt interrupted by the death of its process
_HEADER = struct.Struct("<II")  # payload length, crc32
_COMPACT_BYTES = 1024 * 1024  # rewrite the file with only the open attempts beyond this size

Key = tuple[str, int, int]  # run_id, position, attempt
OpenRecord = tuple[str, int, int, str, float]  # run_id, position, attempt, activity, started_at


def _frame(record: tuple[str | int | float, ...]) -> bytes:
    payload = marshal.dumps(record, 4)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _record_at(data: bytes, offset: int) -> tuple[tuple[Any, ...], int] | None:
    """The record starting at ``offset`` if its header, shape and CRC hold; and its end."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    start, end = offset + _HEADER.size, offset + _HEADER.size + length
    # marshal's small tuple (FLAG_REF cleared) of 6 fields (start) or 4 (end), before the CRC
    if end > len(data) or length < 2 or data[start] & 0x7F != 0x29 or data[start + 1] not in (4, 6):
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        record = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if not isinstance(record, tuple) or (record[0], len(record)) not in (("S", 6), ("E", 4)):
        return None
    return record, end


def read_log(path: str) -> tuple[list[OpenRecord], list[tuple[int, int]], int]:
    """The ``start`` records without an ``end``, the damaged byte ranges, and the file's size.

    A damaged range is skipped and reading resynchronises on the next intact record
    (`weft_nb.journal.framing.walk()`, shared with the step log), so one flipped byte does not
    hide
    the crashed attempts recorded after it.

    Raises:
        OSError: The file exists but cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return [], [], 0
    started: dict[Key, OpenRecord] = {}
    damaged: list[tuple[int, int]] = []
    for start, end, record in walk(data, 0, lambda offset: _record_at(data, offset)):
        if record is None:
            damaged.append((start, end))
            continue
        kind, run_id, position, attempt = record[:4]
        if kind == "S":
            started[(run_id, position, attempt)] = (run_id, position, attempt, record[4], record[5])
        else:
            started.pop((run_id, position, attempt), None)
    return list(started.values()), damaged, len(data)


def read_open(path: str) -> list[OpenRecord]:
    """The ``start`` records without an ``end`` in a log file (damaged ranges skipped)."""
    return read_log(path)[0]


def _unusable(path: str, exc: OSError, stacklevel: int, doing: str = "write") -> None:
    """Say once that crashes are not counted while the dispatch log cannot be used."""
    report(
        f"weft_nb could not {doing} its dispatch log {path} ({exc}); until the engine is opened "
        "again, attempts killed with their process are not counted toward max_attempts (crash "
        "loops are not stopped). Free disk space (or make the journal's folder writable), then "
        "restart the kernel or reopen the engine.",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


class Dispatch:
    """One started attempt; `end()` records that its handling finished (idempotent)."""

    __slots__ = ("_key", "_log")

    def __init__(self, log: DispatchLog, key: Key) -> None:
        self._log = log
        self._key: Key | None = key

    def end(self) -> None:
        """Record the end of the attempt (a second call does nothing)."""
        if self._key is not None:
            self._log.end_attempt(self._key)
            self._key = None


class DispatchLog:
    """The append-only ``<journal>.dispatch`` file of one engine (the journal's owner)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._open: dict[Key, bytes] = {}
        self._fd: int | None = None
        self._size = 0
        try:  # best effort: an unusable log must never fail Engine()
            if io_faults.ENABLED:
                io_faults.check("dispatch.write", path)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            _unusable(path, exc, stacklevel=3)

    def start(self, run_id: str, position: int, attempt: int, activity: str, at: float) -> Dispatch:
        """Record that an attempt is about to run; returns the handle that ends it."""
        key = (run_id, position, attempt)
        record = _frame(("S", run_id, position, attempt, activity, at))
        with self._lock:
            if self._fd is not None:
                self._open[key] = record
                self._write(record)
        return Dispatch(self, key)

    def end_attempt(self, key: Key) -> None:
        """Record that the attempt ``key`` ended (what `Dispatch.end()` calls)."""
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
        try:
            io_faults.write_all(self._fd, data, "dispatch.write", self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            _unusable(self.path, exc, stacklevel=4)
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

    Runs when an engine opens the journal, before any run resumes. Best effort, as the log
    itself: a log that cannot be read or emptied is reported with a warning, never raised.
    A damaged log is reported with [`JournalDamageWarning`][weft_nb.errors.JournalDamageWarning] and
    kept aside as ``<journal>.dispatch.damaged-<UTC time>``; its intact records still count.
    """
    try:
        open_records, damaged, size = read_log(path)
    except OSError as exc:
        _unusable(path, exc, stacklevel=3, doing="read")
        return 0
    counted = 0
    for run_id, position, attempt, activity, started_at in open_records:
        run = journal.get_run(run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            continue
        if journal.step_outcome(run_id, position) is not None or any(
            failed.attempt == attempt for failed in journal.attempts_of(run_id, position)
        ):
            continue  # its outcome was committed just before the process died
        message = (
            f"the process died while attempt {attempt} of activity {activity!r} (step "
            f"{position}, run {run_id!r}) ran (killed, out of memory, a segfault, os._exit); "
            "it counts as a failed attempt"
        )
        journal.record_attempt_failure(
            AttemptRecord(
                run_id=run_id,
                position=position,
                attempt=attempt,
                activity=activity,
                started_at=started_at,
                finished_at=now,
                error_type=CRASHED,
                error_message=message,
                traceback="",
            )
        )  # spends the attempt's task token in the same transaction
        journal.add_event(
            EventRecord(
                run_id=run_id,
                position=position,
                kind="attempt_crashed",
                message=message,
                created_at=now,
            )
        )
        log.warning("weft_nb: %s", message)
        counted += 1
    try:
        if damaged:
            kept = keep_aside(path)
            report(
                f"the dispatch log {path} is damaged: skipped {len(damaged)} damaged range(s) "
                f"(byte offsets {describe_ranges(damaged)} of {size}) and read the intact "
                f"records around them ({counted} crashed attempt(s) counted). An attempt whose "
                "record was damaged may run again without counting toward max_attempts. The "
                f"damaged file is kept at {kept}.",
                JournalDamageWarning,
                stacklevel=3,
            )
        else:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(path, 0)
    except OSError as exc:  # the records stay; a later recover skips the attempts counted now
        _unusable(path, exc, stacklevel=3, doing="empty")
    return counted
