"""The runs executing in this process right now, keyed by run id.

One lock guards the set and whether the engine is closed, so a run is never added to an engine
that is shutting down. Everything that reaches into a live run from outside (a signal, a
completion, a cancel, an interrupt, a view) goes through here.
"""

from __future__ import annotations

import threading

from weft_nb.activity.context import ActivityContext
from weft_nb.engine.runs import RunState
from weft_nb.errors import JournalClosedError


class LiveRuns:
    """The live runs of one engine, and whether that engine is closed.

    Args:
        closed_message: The message of the error raised once the engine is closed.
    """

    def __init__(self, closed_message: str) -> None:
        self._closed_message = closed_message
        self._lock = threading.RLock()
        self._states: dict[str, RunState] = {}
        self._closed = False

    # -- membership ------------------------------------------------------------------------

    def add(self, state: RunState) -> RunState:
        """Make ``state`` live and return it, or the state already live under its id.

        Raises:
            JournalClosedError: The engine is closed.
        """
        with self._lock:
            self.check_open()
            return self._states.setdefault(state.run_id, state)

    def get(self, run_id: str) -> RunState | None:
        """The live state of ``run_id`` (a stopped one included), or None."""
        with self._lock:
            return self._states.get(run_id)

    def pop(self, run_id: str, state: RunState | None = None) -> None:
        """Forget ``run_id`` (only while it is ``state``, when given): its execution ended."""
        with self._lock:
            if state is None or self._states.get(run_id) is state:
                self._states.pop(run_id, None)

    def ids(self) -> set[str]:
        """The ids of the live runs."""
        with self._lock:
            return set(self._states)

    def close(self) -> list[RunState] | None:
        """Refuse new runs from now on; the live ones, or None when already closed."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            return list(self._states.values())

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    def check_open(self) -> None:
        """Raise `JournalClosedError` once the engine is closed."""
        if self._closed:
            raise JournalClosedError(self._closed_message)

    # -- reaching into a live run ----------------------------------------------------------

    def wake(self, run_id: str) -> None:
        """Wake the run if it waits here for a signal or a completion (it re-reads the journal)."""
        state = self.get(run_id)
        if state is not None and state.signal_arrived is not None:
            state.signal_arrived.set()
        for waiter in list(state.signal_waiters) if state is not None else ():
            waiter.set()

    def cancel(self, run_id: str) -> None:
        """Set ``cancelled`` on the run and its attempts in flight (after the journal says so)."""
        state = self.get(run_id)
        if state is not None:
            _cancel_in_flight(state, "the run was cancelled")

    @staticmethod
    def stop(state: RunState, reason: str) -> None:
        """Stop a run's execution (it stays resumable): its attempts see ``cancelled``."""
        state.stop_reason = reason
        state.stopped = True
        _cancel_in_flight(state, reason)

    # -- views -----------------------------------------------------------------------------

    def is_active(self, run_id: str) -> bool:
        """True while the run executes here (not stopped)."""
        state = self.get(run_id)
        return state is not None and not state.stopped

    def live_attempts(self, run_id: str) -> list[tuple[ActivityContext, int | None]]:
        """The attempts of a run in flight right now, with their ``max_attempts``."""
        state = self.get(run_id)
        if state is None:
            return []
        return [(ctx, ctx.max_attempts) for ctx, _wake in list(state.live)]

    def backoff(self, run_id: str) -> tuple[int, float] | None:
        """``(position, retry time)`` while a step of the run waits out a retry backoff."""
        state = self.get(run_id)
        return None if state is None else state.backoff


def _cancel_in_flight(state: RunState, reason: str) -> None:
    state.cancel_requested.set()
    if state.signal_arrived is not None:
        state.signal_arrived.set()
    for waiter in list(state.signal_waiters):
        waiter.set()
    for ctx, wake in list(state.live):
        ctx.cancel(reason)
        wake.set()
