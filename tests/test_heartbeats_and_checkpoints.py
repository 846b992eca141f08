"""Durable heartbeat details, checkpoints, current_activity()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import weft_nb
from weft_nb._payloads import decode
from weft_nb.testing import TestEngine


def test_final_heartbeat_is_committed_with_the_step(engine: TestEngine) -> None:
    @weft_nb.activity
    def train(_: object, activity: weft_nb.ActivityContext) -> str:
        for epoch in range(5):
            activity.heartbeat({"epoch": epoch, "loss": 1 / (epoch + 1)})
        return "ok"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(train)

    engine.run(wf, run_id="h")
    record = engine.journal.latest_heartbeat("h", 0)
    assert record is not None
    assert decode(record.codec, record.details) == {"epoch": 4, "loss": 0.2}


def test_next_attempt_sees_previous_attempts_heartbeat_and_checkpoint(engine: TestEngine) -> None:
    seen: list[tuple[int, object, object]] = []

    @weft_nb.activity
    def resumable(total: int, activity: weft_nb.ActivityContext) -> int:
        seen.append((activity.attempt, activity.last_heartbeat_details, activity.last_checkpoint))
        start = (activity.last_checkpoint or {"done": 0})["done"]
        for i in range(start, total):
            activity.heartbeat({"i": i})
            if i % 10 == 9:
                activity.checkpoint({"done": i + 1})
            if activity.attempt == 1 and i == 24:
                raise MemoryError("simulated OOM at item 24")
        return total

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(resumable, 40)

    assert engine.run(wf) == 40
    assert seen == [(1, None, None), (2, {"i": 24}, {"done": 20})]


def test_checkpoints_keep_the_newest_n(journal_path: object) -> None:
    @weft_nb.activity
    def many(_: object, activity: weft_nb.ActivityContext) -> object:
        for i in range(5):
            activity.checkpoint({"i": i, "weights": np.full(1000, i, dtype=np.float64)})
        return activity.last_checkpoint["i"]

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(many)

    with TestEngine(journal_path, checkpoint_keep=3) as engine:  # type: ignore[arg-type]
        assert engine.run(wf, run_id="c") == 4
        kept = engine.journal.checkpoints_of("c", 0)
        assert [c.seq for c in kept] == [5, 4, 3]
        engine.checkpoints.drain()
        files = sorted(p.name for p in (Path(engine.checkpoints.root) / "c" / "0").iterdir())
        assert files == [f"0000000{n}-a1.pkl" for n in (3, 4, 5)]


def test_current_activity_reaches_helpers_and_fails_outside(engine: TestEngine) -> None:
    def training_helper(step: int) -> None:
        weft_nb.current_activity().heartbeat({"helper_step": step})

    @weft_nb.activity
    def train(_: object) -> str:
        training_helper(3)
        return weft_nb.current_activity().activity_name

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(train)

    assert engine.run(wf, run_id="ca") == "train"
    record = engine.journal.latest_heartbeat("ca", 0)
    assert record is not None and decode(record.codec, record.details) == {"helper_step": 3}
    with pytest.raises(RuntimeError, match="outside an activity"):
        weft_nb.current_activity()


def test_unserialisable_heartbeat_details_warn_once_and_do_not_fail(engine: TestEngine) -> None:
    @weft_nb.activity
    def noisy(_: object, activity: weft_nb.ActivityContext) -> int:
        for _i in range(3):
            activity.heartbeat({"handle": (lambda: None)})
        return 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(noisy)

    with pytest.warns(RuntimeWarning, match="heartbeat details of 'noisy'"):
        assert engine.run(wf) == 1
