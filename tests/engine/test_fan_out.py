"""Wide fan-outs: the pool's threads bound them, syncs are shared, ``ctx.all`` waits once.

``ctx.all`` waits on one count-down latch for the steps its worker threads settle (not on each
future in turn), a `StepFuture` has one wake mechanism (callbacks; ``watch`` is one of them), and
the engine's clock says whether a parallel step's sync may be shared (`Clock.defers_syncs`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import weft_nb
from weft_nb.testing import TestEngine


def test_a_real_clock_fan_out_runs_exactly_max_parallel_steps_at_once(tmp_path: Path) -> None:
    running, peak, lock = [0], [0], threading.Lock()
    together = threading.Barrier(3, timeout=10)  # the first three must overlap, or it breaks
    later = threading.Event()  # set by any later step: with the bound kept, only after them

    @weft_nb.activity
    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if i < 3:
            together.wait()
            # Not a race hidden by a sleep: a leaking bound gets a second to start a fourth step.
            later.wait(1)
        else:
            later.set()
        with lock:
            running[0] -= 1
        return i

    @weft_nb.workflow
    def fan(ctx: weft_nb.WorkflowContext, n: int) -> list[int]:
        return ctx.all([ctx.submit(work, i) for i in range(n)])

    with weft_nb.Engine(tmp_path / "journal.duckdb", max_parallel=3) as engine:
        engine.register(work, fan)
        assert engine.run(fan, 40) == list(range(40))
    assert peak[0] == 3  # reached (the barrier passed) and never exceeded


def test_ctx_all_returns_when_the_last_step_settles_whatever_the_order(engine: TestEngine) -> None:
    gates = [threading.Event() for _ in range(4)]

    @weft_nb.activity
    def gated(i: int) -> int:
        assert gates[i].wait(10)
        return i * 10

    @weft_nb.workflow
    def fan(ctx: weft_nb.WorkflowContext) -> list[int]:
        first = ctx.submit(gated, 0)
        assert first.result() == 0  # settled before ctx.all: the latch skips it
        return ctx.all([first, *(ctx.submit(gated, i) for i in (1, 2, 3))])

    gates[0].set()
    handle = engine.start(fan)
    for gate in reversed(gates[1:]):  # settle in reverse order: the last to settle is step 1
        gate.set()
    assert handle.result(10) == [0, 10, 20, 30]


def test_watch_sets_the_event_once_the_step_settles_or_at_once_if_it_has(
    engine: TestEngine,
) -> None:
    gate = threading.Event()
    seen: dict[str, bool] = {}

    @weft_nb.activity
    def gated(_: object) -> int:
        assert gate.wait(10)
        return 1

    @weft_nb.workflow
    def fan(ctx: weft_nb.WorkflowContext) -> int:
        future = ctx.submit(gated)
        pending, late = threading.Event(), threading.Event()
        future.watch(pending)
        seen["before"] = pending.is_set()
        gate.set()
        value = future.result()
        seen["after"] = pending.is_set()
        future.watch(late)  # settled: set at once
        seen["late"] = late.is_set()
        return value

    assert engine.run(fan) == 1
    assert seen == {"before": False, "after": True, "late": True}


def test_a_real_clock_fan_out_runs_steps_while_a_sync_is_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool thread hands its record's sync to group commit and takes the next step."""
    ran, lock, enough = [0], threading.Lock(), threading.Event()
    first, waited = threading.Lock(), []
    real = os.fdatasync

    def held_first(fd: int) -> None:  # the first sync of a step thread waits for 6 steps to run
        if threading.current_thread().name == "weft-step" and first.acquire(blocking=False):
            waited.append(enough.wait(10))
        real(fd)

    @weft_nb.activity
    def count(i: int) -> int:
        with lock:
            ran[0] += 1
            if ran[0] >= 6:
                enough.set()
        return i

    @weft_nb.workflow
    def fan(ctx: weft_nb.WorkflowContext, n: int) -> list[int]:
        return ctx.all([ctx.submit(count, i) for i in range(n)])

    monkeypatch.setattr(os, "fdatasync", held_first)
    with weft_nb.Engine(tmp_path / "journal.duckdb", max_parallel=2) as engine:
        engine.register(count, fan)
        assert engine.run(fan, 20) == list(range(20))
    assert waited == [True]  # the other thread ran steps meanwhile; none settled before its sync
