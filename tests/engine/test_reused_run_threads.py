"""Review of the reused run threads and `engine.run()`'s unsynced start (issue 17).

Run threads are reused (`weft_nb.engine.run_threads`): per-thread state a run installs (the
development mode's clock watch is a ``sys.setprofile`` hook) ends with the run. `engine.run()`
leaves its start record to its first step's sync: whatever hands out the run before that (a
handle from `engine.resume`) makes it durable first.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from tests.engine.test_run_fixed_cost import START, spy_step_log_syncs
from weft_nb import DevelopmentWarning
from weft_nb.engine.engine import Engine
from weft_nb.journal.step_log import read_records


@weft_nb.activity
def noop(x: object) -> object:
    return x


def _idle_thread_of(engine: Engine) -> None:
    """Block until a finished run's thread is idle, so the next run is handed to it."""
    wait_until(lambda: engine.runtime.run_threads.idle, timeout=30, what="an idle run thread")


def _assert_start_durable(journal: Path, syncs: list[list[int]]) -> None:
    """The run's start record is synced in the step log, or committed to DuckDB (log emptied)."""
    in_log = [len(row) for _lsn, row in read_records(str(journal) + ".steplog")]
    assert START not in in_log or any(START in sync for sync in syncs), (in_log, syncs)


def _warnings_of(engine: Engine, wf: Any, run_id: str) -> tuple[int, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ident = engine.run(wf, run_id=run_id)
    return ident, [str(w.message) for w in seen if issubclass(w.category, DevelopmentWarning)]


def test_a_reused_run_thread_watches_the_next_runs_clock_reads(tmp_path: Path) -> None:
    @weft_nb.workflow
    def careful(ctx: weft_nb.WorkflowContext) -> int:
        ctx.run(noop, 1)
        return threading.get_ident()

    @weft_nb.workflow
    def careless(ctx: weft_nb.WorkflowContext) -> int:
        ctx.run(noop, 1)
        time.time()
        return threading.get_ident()

    with Engine(tmp_path / "j.duckdb", development=True) as engine:
        first, seen = _warnings_of(engine, careful, "first")
        assert seen == []
        _idle_thread_of(engine)
        second, seen = _warnings_of(engine, careless, "second")
        assert second == first  # the same thread: what the first run installed on it is gone
        assert len(seen) == 1, seen
        assert "workflow 'careless' (run 'second')" in seen[0] and "after step 0" in seen[0]
        _idle_thread_of(engine)
        third, seen = _warnings_of(engine, careless, "third")
        assert third == first
        assert len(seen) == 1, seen
        assert "(run 'third')" in seen[0]


def test_resuming_a_live_engine_run_makes_its_start_durable_before_the_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`engine.run()` leaves its start to its first step's sync; a handle from `resume` may not."""
    journal = tmp_path / "j.duckdb"
    inside, go = threading.Event(), threading.Event()

    @weft_nb.workflow
    def gated(ctx: weft_nb.WorkflowContext) -> object:
        inside.set()
        assert go.wait(30)
        return ctx.run(noop, 1)

    with Engine(journal) as engine:
        syncs = spy_step_log_syncs(monkeypatch, journal)
        caller = threading.Thread(target=engine.run, args=(gated,), kwargs={"run_id": "r"})
        caller.start()
        try:
            assert inside.wait(30)
            assert syncs == []  # engine.run(): the start is written, not synced yet
            handle = engine.resume("r")  # an acknowledgement of the run, as engine.start's is
            _assert_start_durable(journal, syncs)
        finally:
            go.set()
            caller.join(30)
        assert handle.result(30) == 1


def test_an_engine_run_that_times_out_has_made_its_start_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TimeoutError names the run and says it keeps running: an acknowledgement."""
    journal = tmp_path / "j.duckdb"
    go = threading.Event()

    @weft_nb.workflow
    def gated(ctx: weft_nb.WorkflowContext) -> object:
        assert go.wait(30)
        return ctx.run(noop, 1)

    with Engine(journal) as engine:
        syncs = spy_step_log_syncs(monkeypatch, journal)
        try:
            with pytest.raises(TimeoutError, match="'r' did not finish"):
                engine.run(gated, run_id="r", timeout=0.05)
            _assert_start_durable(journal, syncs)
        finally:
            go.set()
        assert engine.resume("r").result(30) == 1
