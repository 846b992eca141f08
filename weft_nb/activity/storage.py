"""Checkpoint storage by URL: objects in S3, GCS, a shared file system or memory, via fsspec.

``Engine(checkpoint_storage="s3://bucket/prefix", storage_options={...})`` puts checkpoint bytes
in a `CheckpointStorage` instead of the folder beside the journal. Whoever runs the activity
writes them there directly (the kernel for a thread attempt, the worker process or Dask worker
otherwise) and the kernel journals only the reference: the object's URL, its size and the sha256
of its bytes (a `StoredCheckpoint`). The kernel stays the only journal writer; the bytes never
pass through it.

A write goes to a temporary key (``.tmp-<uuid>``) beside the final one, hashed on the way, and is
then published (``fs.mv``: a rename on a file system, a server-side copy and delete on an object
store) under a name no other write uses (``a<attempt>-<uuid>.pkl``), and its published size is
checked. The kernel checks again that the object is there with that size before it journals the
reference, so the journal never points at an unpublished object. A crash in between leaves an
object no journal row references: `CheckpointStorage.remove_orphans()` (at engine open) deletes
such objects once they are older than ``orphan_grace`` seconds (a live worker may have just
published one whose reference is on its way).

Errors: a missing object (``FileNotFoundError``), a wrong size or digest (``ValueError``) are
*damage*, and the reader falls back to the previous checkpoint with a warning. Anything else the
storage raises (unreachable endpoint, denied, timeouts) is
[`CheckpointStorageError`][weft_nb.errors.CheckpointStorageError]: the attempt fails with it and
is retried per its retry policy; nothing is journaled and no checkpoint is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from weft_nb.base.extras import import_extra
from weft_nb.base.faults import fault_point
from weft_nb.base.operational import report
from weft_nb.errors import CheckpointStorageError, WeftError
from weft_nb.journal.paths import run_folder
from weft_nb.journal.protocol import CheckpointRecord

TMP_PREFIX = ".tmp-"
OWNER_KEY = ".weft-owner.json"  # at the prefix: which journal cleans it
# The names `CheckpointStorage.write` gives objects: only these are ever cleaned up.
_OUR_NAME = re.compile(r"a[0-9]+-[0-9a-f]{16}\.pkl|" + re.escape(TMP_PREFIX) + "[0-9a-f]{32}")
_SPOOL = 64 << 20  # a checkpoint read is spooled to memory up to this, then to a temporary file
_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """A published checkpoint object: what a worker sends the kernel instead of the bytes."""

    url: str
    size: int
    sha256: str


def is_url(path: str) -> bool:
    """Whether a journaled checkpoint path is a storage URL (else: relative to the local folder)."""
    return "://" in path


class _CountingHasher:
    """A write-only file that hashes and counts every byte on its way to ``handle``."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.size += memoryview(data).nbytes
        self.handle.write(data)
        return memoryview(data).nbytes


def _modified(info: Mapping[str, Any]) -> float | None:
    """An object's modification time (seconds since the epoch) from an fsspec ``info``."""
    for key in ("LastModified", "mtime", "updated", "created", "last_modified"):
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.UTC)
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def storage_from(
    spec: str | os.PathLike[str] | CheckpointStorage | None,
    storage_options: Mapping[str, Any] | None = None,
) -> CheckpointStorage | None:
    """The storage ``Engine(checkpoint_storage=..., storage_options=...)`` names; None: default."""
    if spec is None:
        if storage_options:
            raise ValueError("storage_options need a checkpoint_storage URL to apply to")
        return None
    if isinstance(spec, CheckpointStorage):
        if storage_options:
            raise ValueError("pass storage_options to the CheckpointStorage itself")
        return spec
    return CheckpointStorage(os.fspath(spec), storage_options)


def open_record(
    storage: CheckpointStorage | None, record: CheckpointRecord
) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A URL row's bytes, checked; through ``storage`` when the URL is under it."""
    if storage is None or not record.path.startswith(storage.url + "/"):
        storage = CheckpointStorage(record.path.rsplit("/", 1)[0])  # written elsewhere: defaults
    sha256 = record.codec.partition("sha256:")[2] or None
    return storage.open_intact(record.path, record.size, sha256)


class CheckpointStorage:
    """Where checkpoint objects live: one fsspec URL prefix (``s3://bucket/prefix``).

    Args:
        url: The prefix: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``memory://name``, a
            path on a shared file system (``/mnt/shared/ckpt`` or ``file:///mnt/...``). Use one
            prefix per journal: orphan cleanup deletes what this journal does not reference.
        storage_options: Passed to the fsspec file system (``s3fs.S3FileSystem(**options)``):
            credentials, ``client_kwargs={"endpoint_url": ...}``, timeouts. They travel with
            every remote attempt, so workers reach the same storage.
        orphan_grace: Seconds an unreferenced object is left alone before cleanup deletes it.
        temporary_key: Write to a temporary key, then publish (a rename on a file system, a
            server-side copy and delete on an object store). False writes to the final key
            directly: on S3 and GCS an upload becomes visible only once complete, so it is
            atomic too, without the copy (half the time on large checkpoints; see the
            scaling guide). Either way the kernel journals only a checked, complete object.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        orphan_grace: float = 3600.0,
        temporary_key: bool = True,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"checkpoint_storage must be a URL or a path; got {url!r}")
        if "://" not in url:  # a path (a shared file system): a URL, so rows say where it is
            url = "file://" + os.path.abspath(os.path.expanduser(url))
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.orphan_grace = orphan_grace
        self.temporary_key = temporary_key
        self._fs: Any = None

    def __repr__(self) -> str:
        return f"CheckpointStorage({self.url!r})"

    @property
    def reaches_workers(self) -> bool:
        """Whether other processes see the same objects (``memory://`` is this process's own)."""
        return not self.url.startswith("memory://")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None  # a worker opens its own client
        return state

    @property
    def fs(self) -> Any:
        """The fsspec file system (opened on first use; fsspec caches instances)."""
        if self._fs is None:
            fsspec = import_extra("fsspec", extra="s3", feature="checkpoint_storage")
            self._fs, _ = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return self._fs

    def _path(self, url: str) -> str:
        """The file system's own path of one of our URLs."""
        fsspec = import_extra("fsspec", extra="s3", feature="checkpoint_storage")
        path: str = fsspec.core.strip_protocol(url)
        return path

    def _url(self, path: str) -> str:
        """Our URL of a path the file system listed."""
        root = self._path(self.url)
        return self.url + path[len(root) :] if path.startswith(root) else path

    @contextlib.contextmanager
    def _errors(self, operation: str, url: str) -> Iterator[None]:
        """Map what the storage raises: FileNotFoundError stays (damage), the rest is ours."""
        try:
            yield
        except (FileNotFoundError, ValueError, WeftError):  # damage, or ours (unpicklable)
            raise
        except Exception as exc:
            raise CheckpointStorageError(
                url, operation=operation, cause=f"{type(exc).__name__}: {exc}"
            ) from exc

    # -- writing ---------------------------------------------------------------------------------

    def write(
        self, run_id: str, position: int, attempt: int, dump: Callable[[Any], Any]
    ) -> StoredCheckpoint:
        """Write one checkpoint: ``dump(file)`` to a temporary key, publish, check its size.

        With ``temporary_key=False``, to the final key (an upload that fails is deleted).

        Raises:
            CheckpointStorageError: The storage failed (the temporary key is removed if it can
                be); the exception ``dump`` raises (an unpicklable state) passes through.
        """
        folder = f"{self.url}/{run_folder(run_id)}/{position}"
        final = f"{folder}/a{attempt}-{uuid.uuid4().hex[:16]}.pkl"
        tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}" if self.temporary_key else final
        try:
            self._ensure_folder(folder, "write")
            with self._errors("write", tmp), self.fs.open(self._path(tmp), "wb") as handle:
                writer = _CountingHasher(handle)
                dump(writer)
            fault_point("checkpoint.object_written")
            if tmp != final:
                with self._errors("publish", final):
                    self.fs.mv(self._path(tmp), self._path(final))
            ref = StoredCheckpoint(final, writer.size, writer.digest.hexdigest())
            self.check_published(ref)
        except BaseException:
            with contextlib.suppress(Exception):  # never referenced: no row can name it
                self.fs.rm(self._path(tmp))
            raise
        return ref

    def _ensure_folder(self, url: str, operation: str) -> None:
        if getattr(self.fs, "local_file", False):  # a file system needs its folders
            with self._errors(operation, url):
                self.fs.makedirs(self._path(url), exist_ok=True)

    def check_published(self, ref: StoredCheckpoint) -> None:
        """Raise unless ``ref``'s object is there with its size (before journaling it).

        Raises:
            CheckpointStorageError: It is not (or the storage cannot be reached).
        """
        with self._errors("check", ref.url):
            try:
                size = int(self.fs.info(self._path(ref.url))["size"])
            except FileNotFoundError:
                size = -1
        if size != ref.size:
            what = "missing" if size < 0 else f"{size} bytes, not {ref.size}"
            raise CheckpointStorageError(
                ref.url, operation="check", cause=f"the published object is {what}"
            )

    def delete(self, urls: list[str]) -> None:
        """Delete objects (checkpoints beyond ``checkpoint_keep``); failures are left to cleanup."""
        for url in urls:
            with contextlib.suppress(Exception):
                self.fs.rm(self._path(url))

    # -- reading ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_intact(self, url: str, size: int, sha256: str | None) -> Iterator[IO[bytes]]:
        """The object's bytes, read once and checked against ``size`` and ``sha256``.

        Raises:
            FileNotFoundError: The object is missing.
            ValueError: Its size or digest differs (damage: the caller falls back).
            CheckpointStorageError: The storage failed (not damage: the caller must not fall back).
        """
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 - yielded
        try:
            digest = hashlib.sha256()
            try:
                with self._errors("read", url), self.fs.open(self._path(url), "rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        spool.write(chunk)
            except FileNotFoundError:
                self._check_prefix(url)  # one object missing is damage; its whole prefix is not
                raise
            got = spool.tell()
            if got != size:
                raise ValueError(f"size {got} != recorded {size}")
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ValueError(
                    f"sha256 {digest.hexdigest()[:12]}... != recorded {sha256[:12]}..."
                )
            spool.seek(0)
            yield spool
        finally:
            spool.close()

    def _check_prefix(self, url: str) -> None:
        """Raise `CheckpointStorageError` if nothing at all is under the prefix of ``url``.

        A wrong bucket or prefix, other credentials or a deleted bucket make every object read as
        missing: that is the storage, not one damaged checkpoint to fall back from.
        """
        prefix = url.rsplit("/", 3)[0]  # <prefix>/<run folder>/<position>/<name>
        with self._errors("read", prefix):
            try:
                there = bool(self.fs.exists(self._path(prefix)))
            except FileNotFoundError:
                there = False
        if not there:
            raise CheckpointStorageError(
                url,
                operation="read",
                cause=f"nothing is stored under {prefix} (a wrong or deleted bucket or prefix, or "
                "other credentials?); not taken for one damaged checkpoint",
            )

    # -- orphans ---------------------------------------------------------------------------------

    def claim(self, journal: str) -> bool:
        """Record this journal as the prefix's owner; False if another journal owns it."""
        owner_url = f"{self.url}/{OWNER_KEY}"
        mine = {"journal": journal, "host": socket.gethostname()}
        with self._errors("claim", owner_url):
            try:
                with self.fs.open(self._path(owner_url), "rb") as handle:
                    owner = json.loads(handle.read() or b"{}")
            except (FileNotFoundError, ValueError):
                owner = None
            if owner is None:
                self._ensure_folder(self.url, "claim")
                self.fs.pipe_file(self._path(owner_url), json.dumps(mine).encode())
                return True
        return bool(owner == mine)

    def remove_orphans(
        self, referenced: set[str], journal: str, run_ids: Iterable[str] = ()
    ) -> int:
        """Delete objects under the prefix that no row references, once ``orphan_grace`` old.

        Only under a prefix this journal owns (see `claim()`), and only objects named as `write()`
        names them (``<run folder>/<position>/a<attempt>-<id>.pkl`` or a temporary key) in the
        folder of one of ``run_ids`` (this journal's runs): a user's objects beside them, and the
        checkpoints of another journal's runs, are never touched. Returns how many were deleted.
        """
        if not self.claim(journal):
            report(
                f"checkpoint storage {self.url} belongs to another journal; its unreferenced "
                "objects are left alone (use one prefix per journal)",
                RuntimeWarning,
                stacklevel=3,
                logger="weft_nb.activity",
            )
            return 0
        with self._errors("list", self.url):
            try:
                listing = self.fs.find(self._path(self.url), detail=True)
            except FileNotFoundError:
                return 0
        cutoff = time.time() - self.orphan_grace
        folders = {run_folder(run_id) for run_id in run_ids}
        stale = []
        for path, info in listing.items():
            url = self._url(path)
            parts = url[len(self.url) + 1 :].split("/")
            ours = len(parts) == 3 and parts[0] in folders and parts[1].isdigit()
            if url in referenced or not ours or not _OUR_NAME.fullmatch(parts[-1]):
                continue
            modified = _modified(info)
            if modified is not None and modified <= cutoff:
                stale.append(url)
        self.delete(stale)
        return len(stale)
