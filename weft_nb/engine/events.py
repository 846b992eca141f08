"""The engine's events: what happened to runs and steps, sent to listeners (widgets, logs, tests).

Run code emits through `EventBus.emit()` (reached as ``rt.emit``); a failing listener is
reported as a warning and never stops the run that emitted. The kinds, and their data: runs
(``run_started``, ``run_finished``, ``run_interrupted``, ``run_cancelled``), steps executed live
(``step_started``, ``step_completed``, ``step_failed``), attempts (``attempt_started``,
``attempt_completed``, ``attempt_failed``), ``retry_scheduled`` (with the backoff), ``crash_loop``,
``async_pending``, ``async_completed``, ``signal``, ``definition_replaced`` and
``development_warning``; docs/guides/logging-and-tracing.md tabulates them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from weft_nb.base.clock import Clock


@dataclasses.dataclass(frozen=True)
class WeftEvent:
    """Something that happened in the engine, for listeners (widgets, logs, tests)."""

    kind: str
    run_id: str | None
    position: int | None
    at: float
    data: dict[str, Any]


class EventBus:
    """The listeners of one engine, and the clock that stamps their events."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._listeners: list[Callable[[WeftEvent], None]] = []

    @property
    def listening(self) -> bool:
        """Whether any listener is attached (run code skips building events when not)."""
        return bool(self._listeners)

    def add_listener(self, listener: Callable[[WeftEvent], None]) -> None:
        """Call ``listener(event)`` for every event from now on."""
        self._listeners.append(listener)

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Send an event to the listeners; a failing listener is reported, never fatal."""
        if not self._listeners:
            return
        event = WeftEvent(
            kind=kind, run_id=run_id, position=position, at=self._clock.now(), data=data
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                warnings.warn(
                    f"weft_nb event listener failed: {exc!r}", RuntimeWarning, stacklevel=2
                )
