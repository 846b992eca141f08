"""How a crash-test child leaves evidence that survives its SIGKILL (shared by the children).

Everything is flushed and fsynced before the call returns, so a kill right after it cannot lose
it: JSON lines appended to a file, whole files replaced atomically, and markers (small files the
parent polls for, ``markers/<name>``, holding the child's PID and a payload).
"""

from __future__ import annotations

import json
import os
from typing import Any

PID = os.getpid()


class EvidenceFiles:
    """The evidence folder of one child process."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.markers = os.path.join(folder, "markers")

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line durably: it survives a SIGKILL that follows."""
        record = {"pid": PID, **record}
        with open(os.path.join(self.folder, name), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

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
