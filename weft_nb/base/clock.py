"""Time for the engine: the real clock, and a virtual clock that tests drive without sleeping.

Two readings: `Clock.now()` (wall time, journaled, for deadlines that must survive a restart:
``ctx.sleep``, a signal's deadline, the schedule-to-close budget) and `Clock.monotonic()` (for
deadlines inside one process: per-attempt and heartbeat timeouts, how long a wait has left). Only
the monotonic one is safe when the system clock is stepped.

Every wait inside the engine (backoff, per-attempt and heartbeat timeouts, ``cancelled.wait``)
goes through `Clock.wait()` on an event made by `Clock.new_event()`, so a virtual clock
can see every sleeper.

The virtual clock advances in two ways:
[`VirtualClock.advance()`][weft_nb.testing.VirtualClock.advance] from a test, or on its own
(``auto_advance=True``) when every engine thread it knows of (workflow threads and activity
attempts, the *participants*) is blocked in a clock wait. Then nothing can happen until time moves,
so it jumps straight to the earliest deadline. That makes retry and timeout tests exact and instant,
with no real sleeping and no race: a participant that is computing holds time still.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the engine needs from time.

    Attributes:
        defers_syncs: Whether a parallel step's record may be synced after its thread moves on,
            shared with its siblings' (group commit: `weft_nb.journal.group_commit`). A virtual
            clock says no: a step settled later, by whichever thread leads the sync, would
            settle while no participant is running, and time could jump past it.
    """

    defers_syncs: bool

    def now(self) -> float:
        """Seconds since the epoch (virtual for a virtual clock); for what survives a restart."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps back: for deadlines inside this process."""

    def new_event(self) -> threading.Event:
        """An event whose ``wait`` follows this clock."""

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""

    def reserve_participant(self) -> None:
        """Count one more engine thread, before it starts (see the module docstring)."""

    def bind_participant(self) -> None:
        """Mark the calling thread as the participant reserved for it."""

    def release_participant(self) -> None:
        """The calling participant thread is finishing."""


class _Event(threading.Event):
    """A ``threading.Event`` three times cheaper to make: `RealClock`'s events.

    ``threading.Event()`` builds a ``Condition`` over a plain ``Lock``, and ``Condition`` probes
    that lock for three methods it lacks, raising and catching an ``AttributeError`` for each:
    about 7 us on a slow machine, paid twice per step (an attempt's wake-up and its
    ``cancelled``). An ``RLock`` has those methods; an event never takes its lock twice, so the
    condition behaves as over the plain lock.
    """

    def __init__(self) -> None:  # not super().__init__(): it builds the condition being avoided
        self._cond = threading.Condition(threading.RLock())
        self._flag = False


_EVENT_LAYOUT_KNOWN = set(vars(threading.Event())) == {"_cond", "_flag"}
"""Whether this Python's ``threading.Event`` keeps exactly the state `_Event` sets (CPython 3.10
to 3.13 do); on any other, `RealClock` makes plain events."""


class RealClock:
    """Wall-clock time; waits are plain ``threading.Event`` waits."""

    # ``time.time`` itself, not a method wrapping it: heartbeat() calls it on every batch of a
    # training loop, and a Python-level frame would add about a third to its cost.
    now = staticmethod(time.time)
    # In-process deadlines (per-attempt and heartbeat timeouts, the remaining time of a signal
    # wait or a sleep) follow this one: stepping the system clock back must not disable them.
    monotonic = staticmethod(time.monotonic)
    defers_syncs = True

    def new_event(self) -> threading.Event:
        """A plain event (a cheaper-to-make ``threading.Event``)."""
        return _Event() if _EVENT_LAYOUT_KNOWN else threading.Event()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait on ``event`` for at most ``timeout`` seconds."""
        return event.wait(timeout)

    def reserve_participant(self) -> None:
        """Nothing to count in real time."""

    def bind_participant(self) -> None:
        """Nothing to count in real time."""

    def release_participant(self) -> None:
        """Nothing to count in real time."""


class _VirtualEvent(threading.Event):
    """A ``threading.Event`` whose waits run on a [`VirtualClock`][weft_nb.testing.VirtualClock]."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def set(self) -> None:
        super().set()
        self._clock.notify()

    def wait(self, timeout: float | None = None) -> bool:
        return self._clock.wait(self, timeout)


class VirtualClock:
    """A clock that moves only when told to, or when every participant waits on it.

    Args:
        start: The initial time, in seconds since the epoch.
        auto_advance: Jump to the earliest deadline whenever all participants are blocked.
    """

    defers_syncs = False  # every step's record is synced before its participant thread ends

    def __init__(self, start: float = 1_700_000_000.0, *, auto_advance: bool = True) -> None:
        self._now = float(start)
        self.auto_advance = auto_advance
        self._cond = threading.Condition()
        self._deadlines: list[float] = []
        self._participants = 0
        self._blocked = 0
        self._waits: list[tuple[threading.Event, float | None]] = []  # participants' waits
        self._local = threading.local()

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def monotonic(self) -> float:
        """The virtual time too: it never goes backwards (`advance()` refuses that)."""
        return self._now

    def new_event(self) -> threading.Event:
        """An event whose ``wait(timeout)`` counts virtual seconds."""
        return _VirtualEvent(self)

    def notify(self) -> None:
        """Wake waiters so they re-check their events (called when an event is set)."""
        with self._cond:
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every waiter whose deadline passed."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def pending_deadlines(self) -> list[float]:
        """Deadlines of the current timed waits, earliest first."""
        with self._cond:
            return sorted(self._deadlines)

    def wait_for_sleepers(self, count: int = 1, timeout: float = 30.0) -> None:
        """Block in real time until ``count`` timed waits are pending (manual-advance tests)."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._deadlines) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} clock waits appeared in {timeout}s")
                self._cond.wait(left)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Wait until ``event`` is set or ``timeout`` virtual seconds pass."""
        with self._cond:
            if event.is_set():
                return True
            if timeout is not None and timeout <= 0:
                return False
            deadline = None if timeout is None else self._now + timeout
            counted = bool(getattr(self._local, "participant", False))
            if deadline is not None:
                self._deadlines.append(deadline)
            wait = (event, deadline)
            if counted:
                self._blocked += 1
                self._waits.append(wait)
            self._cond.notify_all()  # wait_for_sleepers and other waiters re-check
            try:
                while not event.is_set():
                    if deadline is not None and self._now >= deadline:
                        return False
                    self._maybe_advance()
                    if deadline is not None and self._now >= deadline:
                        return False
                    self._cond.wait()
                return True
            finally:
                if deadline is not None:
                    self._deadlines.remove(deadline)
                if counted:
                    self._blocked -= 1
                    self._waits.remove(wait)

    def _maybe_advance(self) -> None:
        # Called with the condition held. A participant whose event was set, or whose deadline
        # has come, is runnable even before it wakes: time must not jump past it (with a fast
        # journal the workflow thread would otherwise wait on its backoff before a timed-out
        # attempt's thread has woken, and the clock would skip to the attempt's own deadline).
        stuck = sum(
            1
            for event, deadline in self._waits
            if not event.is_set() and (deadline is None or self._now < deadline)
        )
        if (
            self.auto_advance
            and self._participants > 0
            and stuck >= self._participants
            and self._deadlines
        ):
            target = min(self._deadlines)
            self._now = max(self._now, target)
            self._cond.notify_all()

    def reserve_participant(self) -> None:
        """Count an engine thread before it starts, so time cannot jump ahead of it."""
        with self._cond:
            self._participants += 1

    def bind_participant(self) -> None:
        """Mark the calling thread as a participant whose waits count as blocked."""
        self._local.participant = True

    def release_participant(self) -> None:
        """Stop counting the calling thread; the others may now all be blocked."""
        with self._cond:
            self._participants -= 1
            self._local.participant = False
            self._maybe_advance()
