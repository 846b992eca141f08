"""What an engine shows about its runs: the run list and snapshots.

Functions over the journal, the live runs and the clock; the engine's public ``runs()`` and
``snapshot()`` delegate here, and the widgets, the magics, the REST endpoint and the CLI build on
them.
"""

from __future__ import annotations

from weft_nb.base.clock import Clock
from weft_nb.engine.live_runs import LiveRuns
from weft_nb.engine.runs import RunInfo
from weft_nb.engine.snapshot import RunSnapshot, take_snapshot
from weft_nb.journal.protocol import Journal


def list_runs(journal: Journal, live: LiveRuns, status: str | None = None) -> list[RunInfo]:
    """Every run in the journal (oldest first), optionally of one status."""
    active = live.ids()
    return [
        RunInfo(
            run_id=r.run_id,
            workflow=r.workflow,
            status=r.status,
            created_at=r.created_at,
            updated_at=r.updated_at,
            active=r.run_id in active,
            parent_run_id=r.parent_run_id,
        )
        for r in journal.list_runs(status)
    ]


def snapshot(journal: Journal, live: LiveRuns, clock: Clock, run_id: str) -> RunSnapshot:
    """The run's state now: recorded steps, latest heartbeats and attempts in flight."""
    return take_snapshot(journal, live, clock, run_id)
