"""Testing helpers: an engine on a virtual clock, and a simulated process restart.

>>> import tempfile, weft_nb
>>> from weft_nb.testing import TestEngine
>>> @weft_nb.activity
... def double(x):
...     return 2 * x
>>> @weft_nb.workflow
... def pipeline(ctx, x):
...     return ctx.run(double, x) + 1
>>> with TestEngine(tempfile.mkdtemp() + "/j.duckdb") as engine:
...     engine.run(pipeline, 20)
41
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ._clock import VirtualClock
from ._engine import Engine

__all__ = ["TestEngine", "VirtualClock"]


class TestEngine(Engine):
    """An :class:`Engine` on a :class:`VirtualClock` (auto-advancing by default).

    Backoffs, timeouts and heartbeat timeouts take no real time: when every workflow and activity
    thread waits on the clock, it jumps to the earliest deadline. ``clock.advance()`` moves it by
    hand (pass ``VirtualClock(auto_advance=False)`` for full control).

    Args:
        journal: Journal path; a fresh temporary file when omitted.
        clock: The virtual clock to use.
        **options: Passed to :class:`Engine`.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        journal: str | os.PathLike[str] | None = None,
        *,
        clock: VirtualClock | None = None,
        **options: Any,
    ) -> None:
        if journal is None:
            journal = os.path.join(tempfile.mkdtemp(prefix="weft-test-"), "journal.duckdb")
        self.clock: VirtualClock = clock or VirtualClock()
        self._options = options
        super().__init__(journal, clock=self.clock, **options)

    def simulate_restart(self, *, keep_registrations: bool = True) -> TestEngine:
        """Drop every in-memory state as a crash would, then reopen the same journal.

        Unflushed heartbeat details are lost (as in a real crash); live runs stop where they are,
        and their threads can no longer write. Returns the new engine, on the same virtual clock;
        this one is closed. Registrations carry over unless ``keep_registrations`` is false.
        """
        self._shutdown(flush=False)
        fresh = TestEngine(self.journal.path, clock=self.clock, **self._options)
        if keep_registrations:
            fresh.registry.activities.update(self.registry.activities)
            fresh.registry.workflows.update(self.registry.workflows)
        return fresh
