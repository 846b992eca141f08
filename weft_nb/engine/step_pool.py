"""The engine's pool of step threads, shared by every run's ``ctx.submit``/``all``/``race``.

Its own module so the runtime can hold it without importing the parallel step API.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable


class StepPool:
    """Runs submitted steps first come, first served, on at most ``size`` reused daemon threads.

    Daemon threads, as for every other thread the engine starts: an activity that ignores
    cancellation must not keep the interpreter (or a kernel restart) from exiting. A thread
    idle for `IDLE_EXIT` seconds ends; the next submission starts a new one.
    """

    IDLE_EXIT = 5.0

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0

    def run(self, work: Callable[[], None]) -> None:
        """Queue ``work``; a free thread runs it, or a new one if fewer than ``size`` exist."""
        with self._cond:
            self._queue.append(work)
            if self._idle >= len(self._queue):
                self._cond.notify()
            elif self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._serve, name="weft-step", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._idle += 1
                    woken = self._cond.wait(self.IDLE_EXIT)
                    self._idle -= 1
                    if not woken and not self._queue:
                        self._threads -= 1
                        return
                work = self._queue.popleft()
            work()  # never raises: submit()'s work settles its future with any exception
