"""Where a journal's files live, keyed on the file itself rather than on the name it was given.

A journal is one DuckDB file plus files beside it: ``<journal>.lock`` (the single-writer lock),
``<journal>.steplog`` (completed steps not yet in DuckDB), ``<journal>.wal`` (DuckDB's own) and
``<journal>.checkpoints/`` (checkpoint files). All of them are named from the journal's *resolved*
path (`resolve_journal()`: symlinks followed, ``..`` and relative parts removed), so every way
of naming one file finds the same lock, step log and checkpoints (issue 12, items 3 and 4).

A hard link is a second real name for the same file, which no path arithmetic can see; the
engine also locks the file's ``(st_dev, st_ino)`` (see `weft_nb.journal.alias_lock`).

Run ids become folder names under ``<journal>.checkpoints/``; `run_folder()` maps any run id
to a safe, collision-free name and `check_run_id()` rejects what cannot be a run id at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
from typing import Any

from weft_nb.base.operational import report
from weft_nb.errors import InvalidRunIdError
from weft_nb.journal.io_errors import from_os_error

CHECKPOINTS_SUFFIX = ".checkpoints"
OWNER_FILE = ".weft-owner.json"  # inside the checkpoint folder: which journal it belongs to
MAX_RUN_ID_LENGTH = 256

# A run id that is already a safe folder name on every file system (lower case, so that a
# case-insensitive file system cannot fold two of them together) is used as it is: the folders
# of existing journals keep their names.
_PLAIN_RUN_ID = re.compile(r"[a-z0-9_][a-z0-9._-]{0,99}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def resolve_journal(path: str | os.PathLike[str]) -> str:
    """The journal's canonical path: absolute, symlinks followed, ``.``/``..`` removed."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def endpoint_file(journal_path: str) -> str:
    """Where a serving engine records its endpoint for the journal at ``journal_path``."""
    return resolve_journal(journal_path) + ".endpoint.json"  # one file for every name of it


def checkpoint_root(journal_path: str) -> str:
    """The checkpoint folder of a (resolved) journal: its whole file name plus ``.checkpoints``."""
    return journal_path + CHECKPOINTS_SUFFIX


def legacy_checkpoint_root(journal_path: str) -> str:
    """The folder weft_nb used before: the name without its extension (shared by ``exp.db``...)."""
    return os.path.splitext(journal_path)[0] + CHECKPOINTS_SUFFIX


# -- run ids ---------------------------------------------------------------------------------------


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it can name a run; raise `InvalidRunIdError` if it cannot.

    A run id is any string of at most `MAX_RUN_ID_LENGTH` characters, not empty or only
    whitespace, without control characters (NUL, newline, tab, ...) and encodable as UTF-8.
    Slashes, dots, spaces and non-ASCII letters are fine: `run_folder()` turns every id into
    a safe folder name.
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(
            f"a run id must be a string, not {type(run_id).__name__} ({run_id!r})", run_id=None
        )
    problem = ""
    if not run_id:
        problem = "it is empty"
    elif run_id.isspace():  # looks empty in every listing, and " " vs "  " cannot be told apart
        problem = "it is only whitespace, which shows nothing to tell the run by"
    elif len(run_id) > MAX_RUN_ID_LENGTH:
        problem = f"it has {len(run_id)} characters (at most {MAX_RUN_ID_LENGTH})"
    else:
        bad = next((c for c in run_id if unicodedata.category(c) in ("Cc", "Cs")), None)
        if bad is not None:
            problem = f"it contains the character {bad!r} (control characters cannot name a run)"
    if problem:
        shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
        raise InvalidRunIdError(
            f"run id {shown!r} is not usable: {problem}. Pass a short printable name, or no "
            "run_id to get a generated one.",
            run_id=run_id,
        )
    return run_id


def run_folder(run_id: str) -> str:
    """A folder name for a run's checkpoints that cannot leave the checkpoint folder.

    Plain ids (``[a-z0-9_][a-z0-9._-]*``, up to 100 characters; every generated id) are used as
    they are. Any other id becomes a readable part (unsafe characters replaced by ``_``) plus
    ``~`` and 16 hex digits of its SHA-256: never ``..``, never absolute, never a separator, and
    distinct for distinct ids even on case-insensitive file systems (plain names are lower case
    and never contain ``~``).

    >>> run_folder("q1")
    'q1'
    >>> run_folder("../../x")
    'x~9cdf6a50100a862e'
    """
    if _PLAIN_RUN_ID.fullmatch(run_id):
        return run_id
    readable = _UNSAFE.sub("_", run_id).strip("._-")[:40] or "run"
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}~{digest}"


# -- who owns a checkpoint folder ------------------------------------------------------------------


def _identity(journal_path: str) -> dict[str, Any]:
    try:
        info = os.stat(journal_path)
    except OSError:
        return {"journal": journal_path}
    return {"journal": journal_path, "dev": info.st_dev, "ino": info.st_ino}


def read_owner(root: str) -> dict[str, Any] | None:
    """The owner record of a checkpoint folder; None when it has none (or it is unreadable)."""
    try:
        with open(os.path.join(root, OWNER_FILE), encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def owned_by(owner: dict[str, Any] | None, journal_path: str) -> bool:
    """Whether an owner record names this journal (by resolved path, or by device and inode)."""
    if owner is None:
        return False
    if owner.get("journal") == journal_path:
        return True
    mine = _identity(journal_path)
    return "ino" in mine and (owner.get("dev"), owner.get("ino")) == (mine["dev"], mine["ino"])


def _belongs_elsewhere(owner: dict[str, Any] | None, root: str, journal_path: str) -> bool:
    """Whether a live journal other than ours names this folder as its checkpoint folder."""
    if owner is None or owned_by(owner, journal_path):
        return False
    other = owner.get("journal")
    if not isinstance(other, str) or not os.path.exists(other):
        return False  # its journal is gone: the folder moved or was copied along with ours
    return root in (checkpoint_root(other), legacy_checkpoint_root(other))


def _write_owner(root: str, journal_path: str) -> None:
    record = {**_identity(journal_path), "written_by": "weft_nb"}
    tmp = os.path.join(root, OWNER_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.replace(tmp, os.path.join(root, OWNER_FILE))


def _other_journals_sharing(legacy_root: str, journal_path: str) -> list[str]:
    """Other DuckDB files whose old-style checkpoint folder would also be ``legacy_root``."""
    folder = os.path.dirname(legacy_root)
    stem = os.path.basename(legacy_root)[: -len(CHECKPOINTS_SUFFIX)]
    others = []
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            full = os.path.join(folder, name)
            if full == journal_path or os.path.splitext(name)[0] != stem:
                continue
            with contextlib.suppress(OSError), open(full, "rb") as handle:
                if handle.read(12)[8:12] == b"DUCK":
                    others.append(full)
    return sorted(others)


def prepare_checkpoint_root(journal_path: str) -> tuple[str, bool]:
    """Find (and if needed migrate) a writer's checkpoint folder; say whether it may clean it.

    Returns ``(root, owned)``. ``owned`` is False only when the folder's owner file names another
    journal that still exists and uses this folder: then nothing in it is ever deleted.

    Migration: a journal written before the folder was named from the whole file name has its
    checkpoints in ``<name without extension>.checkpoints``. That folder is adopted (renamed to
    the new name; journal rows hold paths relative to the folder, so they stay valid) only when
    its owner file names this journal, or when it has none and no other DuckDB file beside this
    one would share it. Otherwise it is left alone, with a warning.
    """
    root = checkpoint_root(journal_path)
    legacy = legacy_checkpoint_root(journal_path)
    if not os.path.isdir(root) and legacy != root and os.path.isdir(legacy):
        owner = read_owner(legacy)
        sharing = [] if owner is not None else _other_journals_sharing(legacy, journal_path)
        if owned_by(owner, journal_path) or (owner is None and not sharing):
            try:
                os.rename(legacy, root)
            except OSError as exc:
                raise from_os_error(
                    exc, legacy, f"renaming the checkpoint folder (the old naming) to {root}"
                ) from None
        else:
            whose = (
                f"its owner file names {owner.get('journal')!r}"
                if owner is not None
                else f"other journals beside it would share it: {', '.join(sharing)}"
            )
            report(
                f"checkpoint folder {legacy} (the old naming) was not adopted by journal "
                f"{journal_path}: {whose}. Its files are left untouched. If it belongs to this "
                f"journal, rename it to {root}.",
                RuntimeWarning,
                stacklevel=3,
            )
    if not os.path.isdir(root):
        return root, True  # created, with its owner file, by the first checkpoint (claim_root)
    owner = read_owner(root)
    if _belongs_elsewhere(owner, root, journal_path):
        return root, False
    claim_root(root, journal_path)
    return root, True


def claim_root(root: str, journal_path: str) -> None:
    """Create the checkpoint folder if needed and record this journal as its owner.

    An owner file that cannot be written (a read-only folder) is skipped: the folder is still
    named after this journal alone.
    """
    os.makedirs(root, exist_ok=True)
    owner = read_owner(root)
    if owner is None or owner.get("journal") != journal_path or owner.get("ino") is None:
        with contextlib.suppress(OSError):
            _write_owner(root, journal_path)


def reading_checkpoint_root(journal_path: str) -> str:
    """The checkpoint folder a reader looks in: the new name, or an old one not yet migrated."""
    root = checkpoint_root(journal_path)
    legacy = legacy_checkpoint_root(journal_path)
    if os.path.isdir(root) or legacy == root or not os.path.isdir(legacy):
        return root
    owner = read_owner(legacy)
    if owned_by(owner, journal_path) or (
        owner is None and not _other_journals_sharing(legacy, journal_path)
    ):
        return legacy
    return root
