"""Per-queue concurrency limits, taken in the kernel around every attempt, whatever the executor.

An activity (or one call: ``ctx.run(..., queue="gpu")``) can name a queue; the engine option
``queue_limits={"gpu": 1}`` (or ``%config WeftMagics.queue_limits``, or ``%weft queue gpu 1`` in a
notebook) caps how many attempts of that queue run at once, across all runs of the engine. The slot
is held for one attempt, not across its retry backoff, and is taken for ``ctx.run``, ``ctx.submit``,
``ctx.all``/``ctx.race``/``ctx.run_all`` branches and ``durable_activity`` alike, on the thread,
process and Dask executors (the Dask executor may also map a queue to worker resources).

Waiting for a slot is a clock wait on the attempt's wake event: a cancelled or stopped run stops
waiting at once, and a virtual clock counts the waiter as blocked, so time can still move for the
attempt that holds the slot.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weft_nb.base.clock import Clock


def _checked(queue: str, limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(
            f"the limit of queue {queue!r} must be an int >= 1; got {limit!r} (remove the queue "
            "from the limits for no limit)"
        )
    return limit


class QueueLimits:
    """The limits of an engine's queues and the attempts holding their slots."""

    def __init__(self, clock: Clock, limits: Mapping[str, int] | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limits = {q: _checked(q, n) for q, n in (limits or {}).items()}
        self._busy: collections.Counter[str] = collections.Counter()
        self._waiters: dict[str, list[threading.Event]] = collections.defaultdict(list)

    def limits(self) -> dict[str, int]:
        """A copy of the current limits."""
        with self._lock:
            return dict(self._limits)

    def set(self, queue: str, limit: int | None) -> None:
        """Set (or with ``None`` remove) the limit of ``queue``; waiting attempts re-check."""
        with self._lock:
            if limit is None:
                self._limits.pop(queue, None)
            else:
                self._limits[queue] = _checked(queue, limit)
            self._wake_all()

    def replace(self, limits: Mapping[str, int]) -> None:
        """Replace every limit at once (``%config WeftMagics.queue_limits = {...}``)."""
        checked = {q: _checked(q, n) for q, n in limits.items()}
        with self._lock:
            self._limits = checked
            self._wake_all()

    def in_use(self, queue: str) -> int:
        """Attempts of ``queue`` running now."""
        with self._lock:
            return self._busy[queue]

    def waiting(self, queue: str) -> int:
        """Attempts of ``queue`` waiting for a slot now."""
        with self._lock:
            return len(self._waiters.get(queue, ()))

    def acquire(self, queue: str | None, wake: threading.Event, cancelled: threading.Event) -> bool:
        """Take a slot of ``queue`` for one attempt; False when ``cancelled`` was set first.

        ``wake`` is the attempt's wake event (set by a release here, or by the run's cancel or
        stop); it is cleared before this returns.
        """
        if queue is None:
            return True
        while True:
            with self._lock:
                limit = self._limits.get(queue)
                if limit is None or self._busy[queue] < limit:
                    self._busy[queue] += 1
                    wake.clear()
                    return True
                self._waiters[queue].append(wake)
            try:
                if cancelled.is_set():
                    return False
                self._clock.wait(wake, None)
                wake.clear()
                if cancelled.is_set():
                    return False
            finally:
                with self._lock:
                    if wake in self._waiters[queue]:
                        self._waiters[queue].remove(wake)

    def release(self, queue: str | None) -> None:
        """Give back a slot taken by `acquire()`."""
        if queue is None:
            return
        with self._lock:
            self._busy[queue] -= 1
            for event in self._waiters.pop(queue, ()):  # each re-checks; the first one wins
                event.set()

    def _wake_all(self) -> None:
        # Called with the lock held, when limits change: every waiter re-checks.
        waiters, self._waiters = self._waiters, collections.defaultdict(list)
        for events in waiters.values():
            for event in events:
                event.set()
