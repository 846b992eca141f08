"""Helpers shared by the tests."""

from __future__ import annotations

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
