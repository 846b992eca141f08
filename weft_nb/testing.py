"""Testing helpers: an engine on a virtual clock, an in-memory journal, a simulated restart.

>>> import weft_nb
>>> from weft_nb.testing import MemoryJournal, TestEngine
>>> @weft_nb.activity
... def double(x):
...     return 2 * x
>>> @weft_nb.workflow
... def pipeline(ctx, x):
...     return ctx.run(double, x) + 1
>>> with TestEngine(MemoryJournal()) as engine:
...     engine.run(pipeline, 20)
41
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from weft_nb.base.clock import VirtualClock
from weft_nb.engine.engine import Engine
from weft_nb.journal.memory_journal import MemoryJournal
from weft_nb.journal.protocol import Journal

__all__ = ["MemoryJournal", "TestEngine", "VirtualClock"]


class TestEngine(Engine):
    """An `Engine` on a `VirtualClock` (auto-advancing by default).

    Backoffs, timeouts and heartbeat timeouts take no real time: when every workflow and activity
    thread waits on the clock, it jumps to the earliest deadline. ``clock.advance()`` moves it by
    hand (pass ``VirtualClock(auto_advance=False)`` for full control).

    ``TestEngine(MemoryJournal())`` keeps the journal in memory: no database file, and a fresh
    journal per test. It behaves as a file journal does (the same contract suite checks both),
    [`simulate_restart()`][weft_nb.testing.TestEngine.simulate_restart] included; only ``%weft sql``
    and the ``weft-nb`` command line, which read journal files, cannot see it. Checkpoint files and
    the dispatch log go to a temporary folder of the memory journal's own.

    Args:
        journal: A journal path, or an open journal such as
            [`MemoryJournal`][weft_nb.testing.MemoryJournal] (the engine owns and closes it); a
            fresh temporary journal file when omitted.
        clock: The virtual clock to use.
        **options: Passed to [`Engine`][weft_nb.Engine].
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        journal: str | os.PathLike[str] | Journal | None = None,
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
        this one is closed. Registrations carry over unless ``keep_registrations`` is false. A
        [`MemoryJournal`][weft_nb.testing.MemoryJournal] is reopened on the same records, as a
        process reopens its file.
        """
        self._shutdown(flush=False)
        journal = self.journal
        reopened = MemoryJournal(journal.store) if isinstance(journal, MemoryJournal) else None
        fresh = TestEngine(reopened or journal.path, clock=self.clock, **self._options)
        if keep_registrations:
            fresh.registry.activities.update(self.registry.activities)
            fresh.registry.workflows.update(self.registry.workflows)
        return fresh
