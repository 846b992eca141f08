"""How run code starts, cancels and interrupts other runs, without knowing the engine.

A child workflow (`weft_nb.engine.child_workflows`) is a run of its own, started by its parent's
workflow thread. Run code gets services (the `Runtime`), never the engine; the engine binds its
launcher and its cancel and interrupt to the runtime's `ChildRuns` once they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from weft_nb.engine.runs import RunHandle
from weft_nb.errors import WeftError


class StartChild(Protocol):
    """Start (or resume, or report) the run ``run_id`` of ``workflow`` as a child of a run."""

    def __call__(
        self, workflow: Any, run_id: str, input: Any, policy: str, *, parent_run_id: str
    ) -> RunHandle[Any]:
        """The child run's handle."""


class ChildRuns:
    """The engine's run launching, cancelling and interrupting, as the runtime offers them."""

    def __init__(self) -> None:
        self._start: StartChild | None = None
        self._cancel: Callable[[str], bool] | None = None
        self._interrupt: Callable[[str], bool] | None = None

    def bind(
        self,
        start: StartChild,
        cancel: Callable[[str], bool],
        interrupt: Callable[[str], bool],
    ) -> None:
        """Called once by the engine, when its launcher is built."""
        self._start, self._cancel, self._interrupt = start, cancel, interrupt

    def start(
        self, workflow: Any, run_id: str, input: Any, policy: str, *, parent_run_id: str
    ) -> RunHandle[Any]:
        """Start the child run ``run_id``; an existing one resumes, a finished one reports."""
        if self._start is None:
            raise WeftError("this runtime belongs to no engine: it cannot start child workflows")
        return self._start(workflow, run_id, input, policy, parent_run_id=parent_run_id)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run (and, through the engine, its own children)."""
        return self._cancel is not None and self._cancel(run_id)

    def interrupt(self, run_id: str) -> bool:
        """Interrupt a live run as a kernel interrupt does (it stays resumable)."""
        return self._interrupt is not None and self._interrupt(run_id)
