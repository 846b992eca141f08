"""Reading a checkpoint back: check its bytes, skip damage, stop on a lacking environment.

Every checkpoint row records the size and a checksum of its bytes: the crc32 (codec
``pickle+crc32:<hex>``) for a file written beside the journal, the sha256 (``pickle+sha256:<hex>``)
for a storage object and for any file written before the crc32 (both are read and checked).
`first_readable()` walks a step's checkpoints newest first: bytes that are missing or fail the check
are damage, skipped with a warning for the previous checkpoint; intact bytes that fail to unpickle
need something this process lacks (a module, a class, a device, the class or package version that
wrote them), and the step stops with `CheckpointEnvironmentError` rather than silently starting from
an older checkpoint. A row written before checksums (codec ``pickle``) is told apart by the
unpickling error alone: `missing_from_environment`.

The same walk serves the checkpoint folder beside the journal and a checkpoint storage URL (see
`weft_nb.activity.storage`), in the kernel and on a worker; only how the bytes are opened differs.
A storage that cannot be reached is not damage: its `CheckpointStorageError` passes through.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

from weft_nb.base import evidence
from weft_nb.base.operational import report
from weft_nb.errors import CheckpointEnvironmentError
from weft_nb.journal.protocol import CheckpointRecord

CHECKSUMMED = "pickle+sha256:"  # codec of a checkpoint whose row records its bytes' sha256
CRC32 = "pickle+crc32:"  # codec of a checkpoint whose row records its bytes' crc32
_READ_CHUNK = 1 << 20
_DEVICE = re.compile(r"\bdevice\b", re.IGNORECASE)

Opener = Callable[[CheckpointRecord], contextlib.AbstractContextManager[IO[bytes]]]
"""Opens a checkpoint's bytes once they passed the check (FileNotFoundError, ValueError if not)."""


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
    """The sha256 a checkpoint row records; None for a row without one (see `recorded_checksum`).

    Rows of files written before checksums have none, and files written since the crc32 record
    that instead (``pickle+crc32:``).
    """
    return codec[len(CHECKSUMMED) :] if codec.startswith(CHECKSUMMED) else None


class Checksum(Protocol):
    """A running checksum, as ``hashlib`` objects are: `Crc32` and ``hashlib.sha256()``."""

    @property
    def name(self) -> str:
        """The algorithm's name, for messages (``"crc32"``, ``"sha256"``)."""
        ...

    def update(self, data: Any, /) -> None:
        """Add bytes (any buffer) to the checksum."""
        ...

    def hexdigest(self) -> str:
        """The checksum of every byte added so far, in hex."""
        ...


class Crc32:
    """The crc32 of the bytes fed to `update()`, with ``hashlib``'s interface.

    What new checkpoint files record (codec ``pickle+crc32:``): it detects damage (flipped
    bits, truncation, garbled or swapped blocks; a random change escapes it with odds of 2**-32)
    at less CPU than sha256 (whose collision resistance guards against no one here), and
    ``zlib`` releases the GIL for large buffers, so a helper thread checksums an array while this
    one writes it. See docs/performance.md for the measurements.
    """

    name = "crc32"

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: Any, /) -> None:
        """Add bytes (any buffer; ``zlib`` releases the GIL for large ones)."""
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        """The crc32 so far: 8 hex digits."""
        return f"{self._value:08x}"


def recorded_checksum(codec: str) -> tuple[Checksum, str] | None:
    """A fresh checksum of the kind a row's codec records, and the recorded hex; None if none."""
    if codec.startswith(CRC32):
        return Crc32(), codec[len(CRC32) :]
    if codec.startswith(CHECKSUMMED):
        return hashlib.sha256(), codec[len(CHECKSUMMED) :]
    return None  # codec "pickle": written before checksums


def check_intact(path: str, size: int, sha256: str | None) -> None:
    """Raise ValueError (or OSError) unless the file has the recorded size and sha256."""
    check_file(path, size, CHECKSUMMED + sha256 if sha256 is not None else "pickle")


def check_file(path: str, size: int, codec: str) -> None:
    """Raise ValueError (or OSError) unless the file has the size and checksum its row records."""
    if os.path.getsize(path) != size:
        raise ValueError(f"size {os.path.getsize(path)} != recorded {size}")
    recorded = recorded_checksum(codec)
    if recorded is None:
        return
    digest, expected = recorded
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{digest.name} {digest.hexdigest()[:12]}... != recorded {expected[:12]}..."
        )


def local_opener(root: str) -> Opener:
    """Open checkpoint files of the folder ``root`` (rows hold paths relative to it)."""

    @contextlib.contextmanager
    def open_checked(record: CheckpointRecord) -> Iterator[IO[bytes]]:
        path = os.path.join(root, record.path)
        check_file(path, record.size, record.codec)
        with open(path, "rb") as handle:
            yield handle

    return open_checked


def _warn_unreadable(where: str, run_id: str, position: int, exc: Exception) -> None:
    report(
        f"checkpoint {where} of step {position} (run {run_id!r}) is unreadable "
        f"({type(exc).__name__}: {exc}); falling back to the previous one",
        RuntimeWarning,
        stacklevel=5,
        logger="weft_nb.activity",  # the reader of last_checkpoint
    )


def first_readable(
    current: Callable[[], list[CheckpointRecord]],
    run_id: str,
    position: int,
    opener: Opener,
    where: Callable[[CheckpointRecord], str],
) -> Any:
    """The newest readable checkpoint among the rows ``current()`` reads (newest first), or None.

    A missing checkpoint whose row is gone too (``current()`` read again) was pruned
    (``checkpoint_keep``) by a newer one while this read: reading starts again from the current
    rows, with no damage warning.

    Raises:
        CheckpointEnvironmentError: The newest intact checkpoint does not unpickle here (it
            needs a module, a class, a device or a class or package version this process
            lacks). Falling back to an older one (or to None) would silently restart the work.
    """
    pending, restarts = current(), 0
    while pending:
        record = pending.pop(0)
        checked = recorded_checksum(record.codec) is not None
        try:
            with opener(record) as handle:
                try:
                    state = pickle.load(handle)
                except Exception as exc:
                    missing = missing_from_environment(exc)
                    if missing is None and not checked:  # no checksum: the error says damage
                        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
                    raise CheckpointEnvironmentError(
                        where(record),
                        run_id=run_id,
                        position=position,
                        missing=missing or "version",  # intact bytes: the code reading differs
                        cause=f"{type(exc).__name__}: {exc}",
                    ) from exc
        except (OSError, ValueError) as exc:  # damaged or missing: try the previous one
            if isinstance(exc, FileNotFoundError) and restarts < 8:
                fresh = current()
                if all(row.seq != record.seq for row in fresh):  # pruned while we read it
                    pending, restarts = fresh, restarts + 1
                    continue
            _warn_unreadable(where(record), run_id, position, exc)
            continue
        if evidence.ENABLED:
            evidence.record("restore", run_id=run_id, position=position, seq=record.seq)
        return state
    return None
