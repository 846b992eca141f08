"""What the REST endpoint needs from the process that serves it: `EndpointTarget`.

A structural protocol, so the endpoint imports nothing of the engine (which satisfies it) and a
test can serve a stand-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class RunRow(Protocol):
    """One run as ``GET /api/v1/runs`` lists it."""

    @property
    def run_id(self) -> str:
        """The run's id."""

    @property
    def workflow(self) -> str:
        """Its workflow's name."""

    @property
    def status(self) -> str:
        """Its journaled status."""

    @property
    def created_at(self) -> float:
        """When it was created (clock seconds)."""

    @property
    def updated_at(self) -> float:
        """When its status last changed (clock seconds)."""

    @property
    def active(self) -> bool:
        """True while it executes in the serving process."""


class RunState(Protocol):
    """A run's state, as ``GET /api/v1/runs/{id}`` sends it."""

    def to_json(self) -> dict[str, Any]:
        """The state as JSON types, in the versioned shape the route documents (``"schema"``)."""

    def text(self) -> str:
        """The state as plain text (``?format=text``)."""


class EndpointTarget(Protocol):
    """The calls the endpoint's routes make; each raises the named errors of ``weft_nb.errors``."""

    def runs(self, status: str | None = None) -> Sequence[RunRow]:
        """Every run in the journal."""

    def snapshot(self, run_id: str) -> RunState:
        """One run's state now (``RunNotFoundError`` when there is no such run)."""

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> bool:
        """Deliver a signal durably; False when ``signal_id`` was already delivered."""

    def complete_async_activity(self, token: str, result: Any = None) -> None:
        """Complete a parked activity."""

    def fail_async_activity(self, token: str, error: BaseException | str) -> None:
        """Fail a parked activity."""
