"""Durable activity checkpoints: files beside the journal, referenced by journal rows.

A checkpoint can be hundreds of megabytes (model weights, optimiser state), too big for a journal
row, so its bytes go to a file and the journal keeps its path and size. The write is atomic:

1. pickle (protocol 5, so numpy buffers stream straight to the file) into a temporary file;
2. ``fsync`` it, ``rename`` it into place, ``fsync`` the folder;
3. commit the journal row, then delete the checkpoints beyond the newest ``keep``.

A crash before step 3 leaves an unreferenced file that the next open deletes, and the previous
checkpoint is still the latest one the journal names. Nothing is ever half-visible.

The journal row also records the sha256 of the file's bytes, in its codec
(``pickle+sha256:<hex>``), hashed as they are written. Reading checks size and checksum before
unpickling, which is what tells damage from environment: bytes that fail the check (or a missing
file) are damage, skipped with a warning for the previous checkpoint; intact bytes that fail to
unpickle, for any reason, need something this process lacks (a module, a class, a device, the
class or package version that wrote them), and the step stops with `CheckpointEnvironmentError`
rather than silently starting from an older checkpoint. A row written before checksums (codec
``pickle``) is told apart by the unpickling error alone, as before: `missing_from_environment`.

``checkpoint(state, background=True)`` pickles ``state`` into memory on the caller's thread (the
snapshot: later changes to ``state`` do not leak into it) and hands the bytes to a
`BackgroundWriter`, which runs the same three steps on its own thread. If a newer snapshot
arrives while one is still waiting, the waiting one is dropped (latest wins), so a fast training
loop never queues up hundreds of megabytes. The attempt's end waits for the writer, so a retry
always sees the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any

from weft_nb.base import evidence, io_faults
from weft_nb.base.clock import Clock
from weft_nb.base.faults import fault_point
from weft_nb.base.operational import report
from weft_nb.errors import CheckpointEnvironmentError, PayloadError
from weft_nb.journal.io_errors import from_os_error
from weft_nb.journal.paths import OWNER_FILE, claim_root, prepare_checkpoint_root, run_folder
from weft_nb.journal.protocol import CheckpointRecord, Journal

_TMP_PREFIX = ".tmp-"
_CHECKSUMMED = "pickle+sha256:"  # codec of a checkpoint whose row records its bytes' sha256
_READ_CHUNK = 1 << 20


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_DEVICE = re.compile(r"\bdevice\b", re.IGNORECASE)


def missing_from_environment(exc: BaseException) -> str | None:
    """What an intact checkpoint needs that this process lacks, told from its unpickling error.

    ``"module"`` (``ModuleNotFoundError``, ``ImportError``), ``"class"`` (``AttributeError``:
    pickle found the module but not the class, as after a kernel restart before the defining cell
    ran again) or ``"device"`` (a ``RuntimeError`` about a device: PyTorch's "Attempting to
    deserialize object on a CUDA device but torch.cuda.is_available() is False"). None for
    anything else. For a checkpoint with a checksum, None means the class or package version
    differs from the writer's (``"version"``); for an older one without, it is taken for damage.
    """
    if isinstance(exc, ImportError):
        return "module"
    if isinstance(exc, AttributeError):
        return "class"
    if isinstance(exc, RuntimeError) and _DEVICE.search(str(exc)):
        return "device"
    return None


def needs_environment(exc: BaseException) -> CheckpointEnvironmentError | None:
    """``exc`` if it is the `CheckpointEnvironmentError` that reading a checkpoint raised.

    Only the exception itself counts, never its cause or context: an activity (or workflow) that
    catches it and raises an error of its own has handled it, and its error fails (or retries)
    the step like any other instead of stopping the run as interrupted.
    """
    return exc if isinstance(exc, CheckpointEnvironmentError) else None


def recorded_sha256(codec: str) -> str | None:
    """The sha256 a checkpoint row records for its file; None for a row written before them."""
    return codec[len(_CHECKSUMMED) :] if codec.startswith(_CHECKSUMMED) else None


def _check_intact(path: str, size: int, sha256: str | None) -> None:
    """Raise ValueError (or OSError) unless the file has the recorded size and checksum."""
    if os.path.getsize(path) != size:
        raise ValueError(f"size {os.path.getsize(path)} != recorded {size}")
    if sha256 is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise ValueError(f"sha256 {digest.hexdigest()[:12]}... != recorded {sha256[:12]}...")


def _warn_unreadable(path: str, run_id: str, position: int, exc: Exception) -> None:
    report(
        f"checkpoint {path} of step {position} (run {run_id!r}) is unreadable "
        f"({type(exc).__name__}: {exc}); falling back to the previous one",
        RuntimeWarning,
        stacklevel=4,
        logger="weft_nb.activity",  # the reader of last_checkpoint
    )


class _HashingWriter:
    """A write-only file that hashes every byte on its way to ``handle``."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


class PickledState:
    """A checkpoint pickled elsewhere (by a worker process or a Dask worker): written as is."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _unpicklable(run_id: str, position: int, exc: Exception) -> PayloadError:
    return PayloadError(
        f"checkpoint of step {position} (run {run_id!r}) cannot be pickled: "
        f"{type(exc).__name__}: {exc}. Checkpoint plain state (arrays, dicts, state_dicts), not "
        "live objects.",
        run_id=run_id,
    )


class BackgroundWriter:
    """Writes one step's checkpoint snapshots on a thread of its own, newest first.

    At most one snapshot waits while another is written; a newer one replaces it. A failed
    write is raised by the next `submit()` or `flush()`, on the activity's thread.
    """

    def __init__(self, store: CheckpointStore, run_id: str, position: int, attempt: int) -> None:
        self._store = store
        self._key = (run_id, position, attempt)
        self._cond = threading.Condition()
        self._waiting: bytes | None = None
        self._busy = False
        self._error: BaseException | None = None
        self.dropped = 0  # snapshots replaced by newer ones before they were written

    def submit(self, data: bytes) -> None:
        """Queue a snapshot for writing; returns at once."""
        with self._cond:
            self._raise_error()
            if self._waiting is not None:
                self.dropped += 1
            self._waiting = data
            if not self._busy:
                self._busy = True
                threading.Thread(target=self._drain, name="weft-checkpoint", daemon=True).start()

    def flush(self) -> None:
        """Wait until every queued snapshot is durable; raise a failed write's error."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _drain(self) -> None:
        while True:
            with self._cond:
                data, self._waiting = self._waiting, None
                if data is None:
                    self._busy = False
                    self._cond.notify_all()
                    return
            try:
                self._store.save_snapshot(*self._key, data)
            except BaseException as exc:  # surfaced on the activity's thread
                with self._cond:
                    self._error = exc


class CheckpointStore:
    """Writes and reads checkpoint files for one journal."""

    def __init__(self, journal: Journal, clock: Clock, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"checkpoint_keep must be >= 1; got {keep}")
        self.journal = journal
        self.clock = clock
        self.keep = keep
        # <journal file name>.checkpoints/, claimed by an owner file (weft_nb.journal.paths)
        self.root, self.owned = prepare_checkpoint_root(journal.sidecar_base)
        self._claimed = False
        self._seq_lock = threading.Lock()
        self._cleaners: list[threading.Thread] = []
        self._issued: dict[tuple[str, int], int] = {}

    def _step_dir(self, run_id: str, position: int) -> str:
        return os.path.join(self.root, run_folder(run_id), str(position))

    def save(self, run_id: str, position: int, attempt: int, state: Any) -> CheckpointRecord:
        """Write ``state`` durably and record it; see the module docstring for the protocol."""
        if isinstance(state, PickledState):  # pickled by a worker already
            return self.save_snapshot(run_id, position, attempt, state.data)

        def dump(handle: _HashingWriter) -> None:
            try:
                pickle.dump(state, handle, protocol=5)
            except OSError:
                raise  # the disk, not the state: reported as a JournalIOError by _write
            except Exception as exc:
                raise _unpicklable(run_id, position, exc) from exc

        return self._write(run_id, position, attempt, dump)

    @staticmethod
    def snapshot(run_id: str, position: int, state: Any) -> bytes:
        """Pickle ``state`` into memory now, for a background write."""
        try:
            return pickle.dumps(state, protocol=5)
        except Exception as exc:
            raise _unpicklable(run_id, position, exc) from exc

    def save_snapshot(
        self, run_id: str, position: int, attempt: int, data: bytes
    ) -> CheckpointRecord:
        """Write bytes from `snapshot()` durably and record them."""
        return self._write(run_id, position, attempt, lambda handle: handle.write(data))

    def _write(
        self, run_id: str, position: int, attempt: int, dump: Callable[[_HashingWriter], Any]
    ) -> CheckpointRecord:
        folder = self._step_dir(run_id, position)
        if not self._claimed and self.owned:
            claim_root(self.root, self.journal.sidecar_base)
            self._claimed = True
        os.makedirs(folder, exist_ok=True)
        with self._seq_lock:
            # Superseded rows count too: a rerun must never overwrite an audited file.
            recorded = self.journal.last_checkpoint_seq(run_id, position)
            # Two saves of one step at once (a timed-out attempt still running beside its retry)
            # must not share a number, or keep-N could drop both.
            key = (run_id, position)
            seq = max(recorded, self._issued.get(key, 0)) + 1
            self._issued[key] = seq
        final = os.path.join(folder, f"{seq:08d}-a{attempt}.pkl")
        tmp = os.path.join(folder, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as handle:
                if io_faults.ENABLED:
                    io_faults.check("checkpoint.write", tmp)
                writer = _HashingWriter(handle)
                dump(writer)
                handle.flush()
                os.fsync(handle.fileno())
                size = handle.tell()
            fault_point("checkpoint.tmp_written")
            os.replace(tmp, final)
            _fsync_dir(folder)
            fault_point("checkpoint.renamed")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with self._seq_lock:
                if self._issued.get(key) == seq:  # nothing was recorded under it: give it back
                    self._issued[key] = seq - 1
            if isinstance(exc, OSError):  # retryable, like any I/O error; never "unpicklable"
                raise from_os_error(exc, tmp, f"writing a checkpoint of step {position}") from exc
            raise
        record = CheckpointRecord(
            run_id=run_id,
            position=position,
            attempt=attempt,
            seq=seq,
            created_at=self.clock.now(),
            path=os.path.relpath(final, self.root),
            size=size,
            codec=_CHECKSUMMED + writer.digest.hexdigest(),
        )
        stale = [
            os.path.join(self.root, r.path) for r in self.journal.add_checkpoint(record, self.keep)
        ]
        if evidence.ENABLED:  # only now is it durable
            evidence.record("checkpoint_saved", run_id=run_id, position=position, seq=seq)
        if stale:
            # Unlinking hundreds of MB takes milliseconds; keep it off the training thread. A file
            # left behind by a crash here is unreferenced and removed on the next open.
            cleaner = threading.Thread(target=_unlink_all, args=(stale,), daemon=True)
            cleaner.start()
            with self._seq_lock:
                self._cleaners = [t for t in self._cleaners if t.is_alive()] + [cleaner]
        return record

    def drain(self) -> None:
        """Wait until older checkpoint files dropped by keep-N are deleted."""
        with self._seq_lock:
            cleaners, self._cleaners = self._cleaners, []
        for cleaner in cleaners:
            cleaner.join()

    def load_latest(self, run_id: str, position: int) -> Any:
        """The newest readable checkpoint of a step, or None; skips (with a warning) bad files.

        Raises:
            CheckpointEnvironmentError: The newest file is intact (its checksum matches) but
                does not unpickle here: it needs a module, a class, a device or a class or
                package version this process lacks. Falling back to an older checkpoint (or to
                None) would silently restart the work, so the step stops instead.
        """
        for record in self.journal.checkpoints_of(run_id, position):
            path = os.path.join(self.root, record.path)
            sha256 = recorded_sha256(record.codec)
            try:
                _check_intact(path, record.size, sha256)
            except (OSError, ValueError) as exc:  # damaged or missing: try the previous one
                _warn_unreadable(path, run_id, position, exc)
                continue
            try:
                with open(path, "rb") as handle:
                    state = pickle.load(handle)
            except Exception as exc:
                missing = missing_from_environment(exc)
                if missing is None and sha256 is None:  # no checksum: the error says damage
                    _warn_unreadable(path, run_id, position, exc)
                    continue
                raise CheckpointEnvironmentError(
                    path,
                    run_id=run_id,
                    position=position,
                    missing=missing or "version",  # intact bytes: the code reading them differs
                    cause=f"{type(exc).__name__}: {exc}",
                ) from exc
            if evidence.ENABLED:
                evidence.record("restore", run_id=run_id, position=position, seq=record.seq)
            return state
        return None

    def remove_orphans(self) -> int:
        """Delete temporary and unreferenced checkpoint files left by a crash; return the count."""
        if not self.owned or not os.path.isdir(self.root):
            return 0  # never clean a folder another journal owns
        referenced = self.journal.all_checkpoint_paths()
        removed = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                full = os.path.join(folder, name)
                if folder == self.root and name == OWNER_FILE:
                    continue
                if (
                    name.startswith(_TMP_PREFIX)
                    or os.path.relpath(full, self.root) not in referenced
                ):
                    with contextlib.suppress(OSError):
                        os.unlink(full)
                        removed += 1
        return removed
