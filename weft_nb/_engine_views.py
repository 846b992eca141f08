"""What an engine shows about its runs: events, the run list, live attempts and snapshots.

``Engine`` inherits these read-only views; the widgets, the magics, the REST endpoint and the
CLI build on them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._run_handle import RunInfo, WeftEvent
from ._snapshot import RunSnapshot, take_snapshot

if TYPE_CHECKING:
    from ._activity_context import ActivityContext
    from ._clock import Clock
    from ._engine import Engine
    from ._journal import Journal
    from ._run_handle import RunState


class EngineViews:
    """Events and read-only views of runs (mixed into :class:`~weft_nb.Engine`)."""

    journal: Journal
    clock: Clock
    _lock: threading.RLock
    _active: dict[str, RunState]
    _listeners: list[Callable[[WeftEvent], None]]

    # -- events ----------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[WeftEvent], None]) -> None:
        """Call ``listener(event)`` for every engine event (run and step lifecycle)."""
        self._listeners.append(listener)

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Send an event to the listeners; a failing listener is reported, never fatal."""
        if not self._listeners:
            return
        event = WeftEvent(kind, run_id, position, self.clock.now(), data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                warnings.warn(
                    f"weft_nb event listener failed: {exc!r}", RuntimeWarning, stacklevel=2
                )

    def runs(self, status: str | None = None) -> list[RunInfo]:
        """Every run in the journal (oldest first), optionally of one status."""
        with self._lock:
            active = set(self._active)
        return [
            RunInfo(r.run_id, r.workflow, r.status, r.created_at, r.updated_at, r.run_id in active)
            for r in self.journal.list_runs(status)
        ]

    def live_attempts(self, run_id: str) -> list[tuple[ActivityContext, int | None]]:
        """The attempts of a run in flight right now, with their ``max_attempts``."""
        with self._lock:
            state = self._active.get(run_id)
        if state is None:
            return []
        return [(ctx, ctx.max_attempts) for ctx, _wake in list(state.live)]

    def is_active(self, run_id: str) -> bool:
        """True while the run executes in this engine."""
        with self._lock:
            state = self._active.get(run_id)
        return state is not None and not state.stopped

    def live_backoff(self, run_id: str) -> tuple[int, float] | None:
        """``(position, retry time)`` while a step of the run waits out a retry backoff."""
        with self._lock:
            state = self._active.get(run_id)
        return None if state is None else state.backoff

    def snapshot(self, run_id: str) -> RunSnapshot:
        """The run's state now: recorded steps, latest heartbeats and attempts in flight."""
        engine: Engine = self  # type: ignore[assignment]  # only Engine mixes this in
        return take_snapshot(engine, run_id)
