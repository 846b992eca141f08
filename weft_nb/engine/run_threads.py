"""The threads that run workflow functions: an idle one is reused, or a new one starts.

Starting a thread (``Thread.start()`` waits until the new thread runs) costs about 0.15 ms on a
slow 2-core VM, more than the ``fdatasync`` of a step; handing a run to a waiting thread costs a
queue put and a wake-up (~0.04 ms). A run's thread is its own while the run lasts: one thread
runs one run at a time, and there are as many threads as live runs (never a queue, unlike the
step pool: a waiting run would hold up its caller). A thread left idle for `IDLE_EXIT` seconds
ends, and `close()` ends the idle ones (daemon threads, as every thread the engine starts).

A run is handed over in a one-element list, its *slot*: the thread takes the run with
``slot.pop()``, and a launch interrupted by Ctrl-C takes it back the same way (`recall()`).
``list.pop`` is atomic, so exactly one of them gets it: either the run is running and cleans up
after itself, or it never will and the launcher undoes its launch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

Slot = list[Callable[[], None]]
IDLE_NAME = "weft-run-idle"


class RunThread:
    """One reusable run thread; ``thread`` is known before it is given its run."""

    def __init__(self, pool: RunThreads, name: str) -> None:
        self._pool = pool
        self._inbox: queue.SimpleQueue[Slot | None] = queue.SimpleQueue()
        self._first: Slot | None = None
        self._started = False
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def give(self, name: str, slot: Slot) -> None:
        """Run the slot's run on this thread, named ``name`` while it runs."""
        if not self._started:
            self._first, self._started = slot, True
            self.thread.start()
            return
        self.thread.name = name
        self._inbox.put(slot)

    def wake_to_exit(self) -> None:
        """End this idle thread."""
        self._inbox.put(None)

    def _serve(self) -> None:
        """The thread's loop: run a run, wait for the next, end when idle too long or closed."""
        slot, self._first = self._first, None
        me = threading.current_thread()
        while slot is not None:
            try:
                run = slot.pop()
            except IndexError:  # recalled by an interrupted launch
                pass
            else:
                run()  # never raises: the run thread settles its handle with any error
            me.name = IDLE_NAME
            slot = self._pool.wait_for_run(self, self._inbox)


class RunThreads:
    """An engine's run threads (see the module docstring)."""

    IDLE_EXIT = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[RunThread] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """How many threads wait for a run now."""
        with self._lock:
            return len(self._idle)

    def take(self, name: str) -> RunThread:
        """An idle thread, or a new one (not started yet) named ``name``, for a run to `give`."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return RunThread(self, name)

    def wait_for_run(self, worker: RunThread, inbox: queue.SimpleQueue[Slot | None]) -> Slot | None:
        """Wait idle for the next run's slot; None: the thread ends."""
        with self._lock:
            if self._closed:
                return None
            self._idle.append(worker)
        try:
            return inbox.get(timeout=self.IDLE_EXIT)
        except queue.Empty:
            with self._lock:
                if worker in self._idle:
                    self._idle.remove(worker)
                    return None
        try:  # taken just now: its slot is on its way (or its launch was interrupted)
            return inbox.get(timeout=self.IDLE_EXIT)
        except queue.Empty:
            return None

    def close(self) -> None:
        """End the idle threads; a thread still running a run ends when the run does."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake_to_exit()


def recall(slot: Slot) -> bool:
    """Take a run back from its slot: True when its thread had not taken it (it never will)."""
    try:
        slot.pop()
    except IndexError:
        return False
    return True
