"""How a crash-test child leaves evidence that survives its SIGKILL (shared by the children).

Everything is flushed and fsynced before the call returns, so a kill right after it cannot lose
it: JSON lines appended to a file, whole files replaced atomically, and markers (small files the
parent polls for, ``markers/<name>``, holding the child's PID and a payload). Also what the
checkpoint files under a folder are, which a child and its parent both list.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

PID = os.getpid()


def read_config() -> dict[str, Any]:
    """The child's JSON config, from the file named by its first argument."""
    with open(sys.argv[1], encoding="utf-8") as handle:
        config: dict[str, Any] = json.load(handle)
    return config


def append_json_line(path: str, record: dict[str, Any], sort_keys: bool = False) -> None:
    """Append one JSON line to ``path`` durably: it survives a SIGKILL that follows."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=sort_keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class EvidenceFiles:
    """The evidence folder of one child process."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.markers = os.path.join(folder, "markers")

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line durably: it survives a SIGKILL that follows."""
        append_json_line(os.path.join(self.folder, name), {"pid": PID, **record}, sort_keys=True)

    def write_json(self, path: str, value: Any) -> None:
        """Write a file atomically and durably (readers see nothing or all of it)."""
        tmp = f"{path}.{PID}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def mark(self, name: str, payload: Any = None) -> None:
        """Tell the parent we reached a point."""
        os.makedirs(self.markers, exist_ok=True)
        self.write_json(os.path.join(self.markers, name), {"pid": PID, "payload": payload})


def checkpoint_files(root: str) -> list[str]:
    """The files under a checkpoint folder ``root``, relative to it, sorted."""
    found = []
    for folder, _dirs, files in os.walk(root):
        found.extend(
            os.path.relpath(os.path.join(folder, name), root)
            for name in files
            if name != ".weft-owner.json"  # the folder's owner record, not a checkpoint
        )
    return sorted(found)
