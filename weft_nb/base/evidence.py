"""An opt-in execution log, kept outside the journal, for fault-injection harnesses.

With ``WEFT_NB_EVIDENCE_LOG=path`` in a process's environment, the engine appends one JSON line
per event there (attempt started and ended, step completed or replayed, checkpoint saved or
restored, first heartbeat of an attempt, backoff begun), fsynced before it goes on. A harness that
kills the process can then tell, from outside, what ran and how often. When the variable is unset,
each call site costs one global lookup.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

PATH = os.environ.get("WEFT_NB_EVIDENCE_LOG", "")
ENABLED = bool(PATH)


def record(event: str, **fields: Any) -> None:
    """Append one event, durably (the process may be killed right after)."""
    if not ENABLED:
        return
    line = json.dumps(
        {"event": event, "pid": os.getpid(), "t": time.time(), **fields}, default=repr
    )
    fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
