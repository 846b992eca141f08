"""Helpers shared by the tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll a condition with a deadline (for threads under test that signal nothing else)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        pause.wait(0.01)
    raise AssertionError(f"condition not reached within {timeout}s")


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().split()[2] != "Z"
