"""Durable activity checkpoints: files beside the journal (or storage objects), in journal rows.

A checkpoint can be hundreds of megabytes (model weights, optimiser state), too big for a journal
row, so its bytes go to a file and the journal keeps its path and size. The write is atomic:

1. pickle (protocol 5, so numpy buffers stream straight to the file) into a temporary file;
2. ``fsync`` it, ``rename`` it into place, ``fsync`` the folder;
3. commit the journal row, then delete the checkpoints beyond the newest ``keep``.

A crash before step 3 leaves an unreferenced file that the next open deletes, and the previous
checkpoint is still the latest one the journal names. Nothing is ever half-visible.

The journal row also records the crc32 of the file's bytes, in its codec
(``pickle+crc32:<hex>``), computed as they are written (files written before it record their sha256,
``pickle+sha256:<hex>``, and are checked against that). Reading checks size and checksum before
unpickling (`weft_nb.activity.restore`): damage falls back to the previous checkpoint, intact bytes
that do not unpickle stop the step with `CheckpointEnvironmentError`.

With ``Engine(checkpoint_storage=URL)`` the bytes go to a `CheckpointStorage` instead
(`weft_nb.activity.storage`: S3, GCS, a shared path), written by whoever runs the attempt, and
the row records the object's URL. The kernel journals a reference only once the object is
published; stale objects are deleted as stale files are.

Background checkpoints (``checkpoint(state, background=True)``) are written through the same
store by `weft_nb.activity.background.BackgroundWriter`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any

from weft_nb.activity.restore import (
    CHECKSUMMED,
    CRC32,
    Crc32,
    first_readable,
    local_opener,
    missing_from_environment,
    needs_environment,
    recorded_checksum,
    recorded_sha256,
)
from weft_nb.activity.storage import CheckpointStorage, StoredCheckpoint, is_url, open_record
from weft_nb.base import evidence, io_faults
from weft_nb.base.clock import Clock
from weft_nb.base.faults import fault_point
from weft_nb.base.operational import report
from weft_nb.errors import PayloadError, WeftError
from weft_nb.journal.io_errors import from_os_error
from weft_nb.journal.paths import OWNER_FILE, claim_root, prepare_checkpoint_root, run_folder
from weft_nb.journal.protocol import CheckpointRecord, Journal

__all__ = [  # the reading side is weft_nb.activity.restore; these names stay importable here
    "CheckpointStore",
    "PickledState",
    "missing_from_environment",
    "needs_environment",
    "recorded_checksum",
    "recorded_sha256",
]

_TMP_PREFIX = ".tmp-"


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


_PARALLEL_HASH_BYTES = 4 * 1024 * 1024


class _HashingWriter:
    """A write-only file that checksums (crc32) every byte on its way to ``handle``.

    A large chunk (a numpy array's buffer, pickled in-band) is checksummed on a helper thread while
    this one writes it and fsyncs the file: ``zlib.crc32`` releases the GIL, so a checkpoint costs
    about the longer of the two, not their sum. Updates stay in order (each waits for the previous);
    the chunk is the caller's own object (the pickler's finished frame, the user's array, a
    snapshot's bytes), unchanged until `hexdigest()` returns, which `CheckpointStore` calls before
    ``checkpoint()`` returns.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self._digest = Crc32()
        self._hashing: threading.Thread | None = None

    def write(self, data: Any) -> int:
        self._wait()
        if memoryview(data).nbytes >= _PARALLEL_HASH_BYTES:
            self._hashing = threading.Thread(
                target=self._digest.update, args=(data,), name="weft-checkpoint-hash", daemon=True
            )
            self._hashing.start()
        else:
            self._digest.update(data)
        written: int = self.handle.write(data)
        return written

    def hexdigest(self) -> str:
        """The crc32 of every byte written, in hex (waits for the helper thread)."""
        self._wait()
        return self._digest.hexdigest()

    def _wait(self) -> None:
        if self._hashing is not None:
            self._hashing.join()
            self._hashing = None


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


class CheckpointStore:
    """Writes and reads the checkpoints of one journal (files, or objects in ``storage``)."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        keep: int = 2,
        storage: CheckpointStorage | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"checkpoint_keep must be >= 1; got {keep}")
        self.journal = journal
        self.clock = clock
        self.keep = keep
        self.storage = storage
        """Where new checkpoints go; None: the folder beside the journal."""
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
        if isinstance(state, StoredCheckpoint):  # written to the storage by a worker already
            return self.record_stored(run_id, position, attempt, state)
        if isinstance(state, PickledState):  # pickled by a worker already
            return self.save_snapshot(run_id, position, attempt, state.data)

        def dump(handle: Any) -> None:
            self.dump_into(handle, run_id, position, state)

        if self.storage is not None:
            return self.record_stored(
                run_id, position, attempt, self.storage.write(run_id, position, attempt, dump)
            )
        return self._write(run_id, position, attempt, dump)

    @staticmethod
    def dump_into(handle: Any, run_id: str, position: int, state: Any) -> None:
        """Pickle ``state`` into a file; a state that does not pickle raises `PayloadError`."""
        try:
            pickle.dump(state, handle, protocol=5)
        except (OSError, WeftError):
            raise  # the disk or the storage, not the state: retryable, never "unpicklable"
        except Exception as exc:
            raise _unpicklable(run_id, position, exc) from exc

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
        if self.storage is not None:
            ref = self.storage.write(run_id, position, attempt, lambda handle: handle.write(data))
            return self.record_stored(run_id, position, attempt, ref)
        return self._write(run_id, position, attempt, lambda handle: handle.write(data))

    def _next_seq(self, run_id: str, position: int) -> int:
        with self._seq_lock:
            # Two saves of one step at once (a timed-out attempt beside its retry) must not share a
            # number, or keep-N could drop both; superseded rows count too (never overwrite an
            # audited file). Asked once per step: after that only this store adds rows.
            key = (run_id, position)
            issued = self._issued.get(key)
            seq = (self.journal.last_checkpoint_seq(*key) if issued is None else issued) + 1
            self._issued[key] = seq
            return seq

    def _give_back(self, run_id: str, position: int, seq: int) -> None:
        with self._seq_lock:
            if self._issued.get((run_id, position)) == seq:  # nothing was recorded under it
                self._issued[(run_id, position)] = seq - 1

    def record_stored(
        self, run_id: str, position: int, attempt: int, ref: StoredCheckpoint
    ) -> CheckpointRecord:
        """Journal a checkpoint object published in the storage (by a worker or by us).

        The object is checked first (there, with its size): the journal never points at an
        unpublished object. A crash after the check leaves an orphan, removed by a later open.

        Raises:
            CheckpointStorageError: The object is not there, or the storage cannot be reached.
        """
        storage = self.storage or CheckpointStorage(ref.url.rsplit("/", 1)[0])
        storage.check_published(ref)
        fault_point("checkpoint.published")
        record = CheckpointRecord(
            run_id=run_id,
            position=position,
            attempt=attempt,
            seq=self._next_seq(run_id, position),
            created_at=self.clock.now(),
            path=ref.url,
            size=ref.size,
            codec=CHECKSUMMED + ref.sha256,
        )
        return self._journal(record)

    def _journal(self, record: CheckpointRecord) -> CheckpointRecord:
        try:
            dropped = self.journal.add_checkpoint(record, self.keep)
        except BaseException:
            self._give_back(record.run_id, record.position, record.seq)
            raise
        if evidence.ENABLED:  # only now is it durable
            evidence.record(
                "checkpoint_saved", run_id=record.run_id, position=record.position, seq=record.seq
            )
        objects = [r.path for r in dropped if is_url(r.path)]
        files = [os.path.join(self.root, r.path) for r in dropped if not is_url(r.path)]
        if objects or files:
            # Deleting hundreds of MB takes a while; keep it off the training thread. Something
            # left behind by a crash here is unreferenced and removed on the next open.
            cleaner = threading.Thread(
                target=self._delete,
                args=(files, objects),
                name="weft-checkpoint-prune",
                daemon=True,
            )
            cleaner.start()
            with self._seq_lock:
                self._cleaners = [t for t in self._cleaners if t.is_alive()] + [cleaner]
        return record

    def _delete(self, files: list[str], objects: list[str]) -> None:
        _unlink_all(files)
        if objects:
            (self.storage or CheckpointStorage(objects[0].rsplit("/", 1)[0])).delete(objects)

    def _write(
        self, run_id: str, position: int, attempt: int, dump: Callable[[_HashingWriter], Any]
    ) -> CheckpointRecord:
        folder = self._step_dir(run_id, position)
        if not self._claimed and self.owned:
            claim_root(self.root, self.journal.sidecar_base)
            self._claimed = True
        os.makedirs(folder, exist_ok=True)
        seq = self._next_seq(run_id, position)
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
            self._give_back(run_id, position, seq)
            if isinstance(exc, OSError):  # retryable, like any I/O error; never "unpicklable"
                raise from_os_error(exc, tmp, f"writing a checkpoint of step {position}") from exc
            raise
        return self._journal(
            CheckpointRecord(
                run_id=run_id,
                position=position,
                attempt=attempt,
                seq=seq,
                created_at=self.clock.now(),
                path=os.path.relpath(final, self.root),
                size=size,
                codec=CRC32 + writer.hexdigest(),
            )
        )

    def drain(self) -> None:
        """Wait until older checkpoints dropped by keep-N are deleted."""
        with self._seq_lock:
            cleaners, self._cleaners = self._cleaners, []
        for cleaner in cleaners:
            cleaner.join()

    def records(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """The current checkpoint rows of a step, newest first."""
        return self.journal.checkpoints_of(run_id, position)

    def load_latest(self, run_id: str, position: int) -> Any:
        """The newest readable checkpoint of a step, or None; skips (with a warning) bad ones.

        See `weft_nb.activity.restore.first_readable` (``CheckpointEnvironmentError``); a
        storage that cannot be reached raises ``CheckpointStorageError``.
        """
        return first_readable(
            lambda: self.records(run_id, position), run_id, position, self.open_checked, self.where
        )

    def where(self, record: CheckpointRecord) -> str:
        """Where a checkpoint's bytes are: its URL, or its file's path."""
        return record.path if is_url(record.path) else os.path.join(self.root, record.path)

    def open_checked(
        self, record: CheckpointRecord
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A checkpoint's bytes, checked: from the storage (a URL row) or the local folder."""
        if is_url(record.path):
            return open_record(self.storage, record)
        return local_opener(self.root)(record)

    def remove_orphans(self) -> int:
        """Delete temporary and unreferenced checkpoints left by a crash; return the count.

        In the storage, only objects older than its ``orphan_grace`` (a worker may have just
        published one); a storage that cannot be reached is warned about, not raised.
        """
        local = self.owned and os.path.isdir(self.root)  # never clean a folder another owns
        if self.storage is None and not local:
            return 0  # nothing to clean: no query (every engine open asks)
        referenced = self.journal.all_checkpoint_paths()
        removed = 0
        if self.storage is not None:
            try:
                runs = {run.run_id for run in self.journal.list_runs()}
                removed += self.storage.remove_orphans(referenced, self.journal.sidecar_base, runs)
            except Exception as exc:  # CheckpointStorageError: the engine opens anyway
                report(
                    f"could not clean checkpoint storage {self.storage.url}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                    logger="weft_nb.activity",
                )
        if not local:
            return removed
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
