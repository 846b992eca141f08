"""Queue limits hold for every durable call and are settable from a notebook (issue 13.4).

No sleeps: each attempt of the limited queue, once inside, waits until the other one is either
inside too (an overlap: the limit failed) or visibly queued for the slot (the limit held). So an
overlap, when the limit does not hold, is certain, not a matter of timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until, weft_magics
from IPython.core.error import UsageError

import weft_nb
from weft_nb.engine.engine import Engine
from weft_nb.testing import TestEngine

GUARD = 30.0

pytestmark = pytest.mark.usefixtures("workflow_kind")


class Overlap:
    """Counts attempts inside the limited section; ``peak`` is the most at once."""

    def __init__(self, others_queued: Callable[[], bool]) -> None:
        self.others_queued = others_queued
        self.changed = threading.Condition()
        self.inside = self.entered = self.peak = 0

    def section(self, expected: int = 2) -> None:
        deadline = time.monotonic() + GUARD
        with self.changed:
            self.inside += 1
            self.entered += 1
            self.peak = max(self.peak, self.inside)
            self.changed.notify_all()
            # Leave once every expected attempt got in (overlapping, or after us) or another is
            # queued behind us. The queue shares no condition with us, so re-check every 10 ms.
            while not (self.entered >= expected or self.others_queued()):
                self.changed.wait(0.01)
                if time.monotonic() > deadline:
                    raise AssertionError("the other attempt neither ran nor queued")
            self.inside -= 1
            self.changed.notify_all()


def queued(engine: Engine, queue: str) -> Callable[[], bool]:
    limits = getattr(engine, "queue_limits", None)  # absent before the fix: nothing ever queues
    return lambda: limits is not None and limits.waiting(queue) > 0


@pytest.fixture
def real_engine(tmp_path: Path) -> Any:
    with Engine(tmp_path / "j.duckdb", queue_limits={"gpu": 1}) as engine:
        yield engine


def test_ctx_run_in_two_runs_never_overlaps_on_a_queue_of_one(real_engine: Engine) -> None:
    overlap = Overlap(queued(real_engine, "gpu"))

    @weft_nb.activity(queue="gpu")
    def train(i: int) -> int:
        overlap.section()
        return i

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, i: int) -> int:
        return int(ctx.run(train, i))

    handles = [real_engine.start(wf, i) for i in (1, 2)]
    assert [h.result(timeout=GUARD) for h in handles] == [1, 2]
    assert overlap.peak == 1


def test_the_queue_call_option_limits_ctx_run(real_engine: Engine) -> None:
    overlap = Overlap(queued(real_engine, "gpu"))

    @weft_nb.activity
    def train(i: int) -> int:
        overlap.section()
        return i

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, i: int) -> int:
        return int(ctx.run(train, i, queue="gpu"))

    handles = [real_engine.start(wf, i) for i in (1, 2)]
    assert [h.result(timeout=GUARD) for h in handles] == [1, 2]
    assert overlap.peak == 1


def test_parallel_branches_and_durable_activity_share_the_queue(real_engine: Engine) -> None:
    overlap = Overlap(queued(real_engine, "gpu"))

    @weft_nb.activity(queue="gpu")
    def train(i: int) -> int:
        overlap.section(expected=3)
        return i

    @weft_nb.workflow
    def branches(ctx: weft_nb.WorkflowContext) -> list[Any]:
        return ctx.all([ctx.submit(train, 1), ctx.submit(train, 2)])

    @weft_nb.workflow
    def helper(ctx: weft_nb.WorkflowContext) -> Any:
        return ctx.memo("m", lambda: weft_nb.durable_activity(train, 3))

    handles = [real_engine.start(branches), real_engine.start(helper)]
    assert [h.result(timeout=GUARD) for h in handles] == [[1, 2], 3]
    assert overlap.peak == 1


def test_a_run_cancelled_while_waiting_for_a_slot_stops_waiting(tmp_path: Path) -> None:
    holding, release = threading.Event(), threading.Event()

    @weft_nb.activity(queue="gpu")
    def hold() -> str:
        holding.set()
        release.wait(GUARD)
        return "held"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return str(ctx.run(hold))

    with Engine(tmp_path / "j.duckdb", queue_limits={"gpu": 1}) as engine:
        first = engine.start(wf)
        assert holding.wait(GUARD)
        second = engine.start(wf)
        wait_until(queued(engine, "gpu"), GUARD, "the second run queued")
        engine.cancel(second.run_id)
        with pytest.raises(weft_nb.errors.WorkflowCancelledError):
            second.result(timeout=GUARD)
        release.set()
        assert first.result(timeout=GUARD) == "held"
        assert engine.queue_limits.in_use("gpu") == 0


def test_queue_limits_on_a_virtual_clock_let_time_move_for_the_holder(
    engine: TestEngine,
) -> None:
    engine.queue_limits.set("gpu", 1)
    spans: list[tuple[float, float]] = []

    @weft_nb.activity(queue="gpu")
    def nap(_: int, activity: weft_nb.ActivityContext) -> None:
        start = engine.clock.now()
        activity.sleep(10)
        spans.append((start, engine.clock.now()))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.all([ctx.submit(nap, i) for i in range(3)])

    engine.run(wf)
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue 'gpu' must be an int >= 1; got 0"):
        Engine(tmp_path / "j.duckdb", queue_limits={"gpu": 0})


# -- the notebook ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    ['config WeftMagics.queue_limits = {"gpu": 1}', "weft queue gpu 1"],
)
def test_weft_activity_queue_is_limited_from_the_notebook(ip: Any, setting: str) -> None:
    magic, _, rest = setting.partition(" ")
    ip.run_line_magic(magic, rest)
    engine = weft_magics(ip).session.engine
    overlap = Overlap(queued(engine, "gpu"))
    ip.user_ns["overlap"] = overlap
    ip.run_cell_magic("weft_activity", "train(i) --queue gpu", "overlap.section()\ni")
    ip.run_cell_magic("weft_workflow", "pipeline(i)", "ctx.run(train, i)")
    handles = [ip.run_line_magic("weft", f"run pipeline i={i} --background") for i in (1, 2)]
    assert [h.result(timeout=GUARD) for h in handles] == [1, 2]
    assert overlap.peak == 1
    assert ip.run_line_magic("weft", "queue") == {"gpu": 1}


def test_weft_queue_changes_a_live_engine_and_checks_its_input(ip: Any) -> None:
    engine = weft_magics(ip).session.engine
    ip.run_line_magic("weft", "queue gpu 2")
    assert engine.queue_limits.limits() == {"gpu": 2}
    ip.run_line_magic("weft", "queue gpu none")
    assert engine.queue_limits.limits() == {}
    with pytest.raises(UsageError, match=">= 1 or none"):
        ip.run_line_magic("weft", "queue gpu 0")


# -- another executor: the slot is taken in the kernel, around the worker's attempt ----------


def test_ctx_run_on_worker_processes_never_overlaps_on_a_queue_of_one(tmp_path: Path) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()

    def train(args: dict[str, Any]) -> int:  # runs in a worker process: files are the evidence
        import os as worker_os
        import time as worker_time

        log, go = worker_os.path.join(args["dir"], "log"), worker_os.path.join(args["dir"], "go")
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"enter {args['i']}\n")
        deadline = worker_time.monotonic() + GUARD
        while not worker_os.path.exists(go):  # the kernel saw the other attempt queued or inside
            with open(log, encoding="utf-8") as handle:
                if handle.read().count("enter") >= 2:
                    break
            if worker_time.monotonic() > deadline:
                raise AssertionError("the other attempt neither ran nor queued")
            worker_time.sleep(0.01)  # polling a file another process writes
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"exit {args['i']}\n")
        return int(args["i"])

    gpu_train = weft_nb.activity(name="gpu_train", queue="gpu")(train)

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, args: dict[str, Any]) -> int:
        return int(ctx.run(gpu_train, args))

    executor = weft_nb.ProcessExecutor(max_workers=2)
    with Engine(tmp_path / "j.duckdb", executor=executor, queue_limits={"gpu": 1}) as engine:
        handles = [engine.start(wf, {"dir": str(folder), "i": i}) for i in (1, 2)]
        log = folder / "log"

        def someone_waits() -> bool:
            entered = log.exists() and log.read_text(encoding="utf-8").count("enter") >= 2
            return entered or queued(engine, "gpu")()

        wait_until(someone_waits, GUARD * 2, "a second attempt queued or inside")
        (folder / "go").touch()
        assert sorted(h.result(timeout=GUARD * 2) for h in handles) == [1, 2]
    events = [line.split()[0] for line in log.read_text(encoding="utf-8").splitlines()]
    assert events == ["enter", "exit", "enter", "exit"], events
