"""Durable heartbeat details, checkpoints, current_activity()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import weft_nb
from weft_nb.base.payloads import decode
from weft_nb.errors import PayloadError
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


def test_last_heartbeat_details_read_after_own_heartbeats_and_a_flush_is_the_previous_attempts(
    engine: TestEngine,
) -> None:
    # The first read comes after this attempt's own heartbeats reached the journal: it must
    # still show the previous attempt's details (None on attempt 1), never the attempt's own.
    seen: list[tuple[int, object]] = []

    @weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
    def resumable(_: object, activity: weft_nb.ActivityContext) -> str:
        for i in range(3):
            activity.heartbeat({"attempt": activity.attempt, "i": i})
        engine.flusher.flush()
        assert engine.journal.latest_heartbeat(activity.run_id, activity.position) is not None
        seen.append((activity.attempt, activity.last_heartbeat_details))
        activity.heartbeat({"attempt": activity.attempt, "i": 99})
        engine.flusher.flush()
        seen.append((activity.attempt, activity.last_heartbeat_details))  # fixed at the start
        if activity.attempt < 3:
            raise ConnectionError("flaky")
        return "done"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(resumable)

    assert engine.run(wf) == "done"
    assert seen == [
        (1, None),
        (1, None),
        (2, {"attempt": 1, "i": 99}),
        (2, {"attempt": 1, "i": 99}),
        (3, {"attempt": 2, "i": 99}),
        (3, {"attempt": 2, "i": 99}),
    ]


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


def test_background_checkpoints_are_snapshots_and_durable_before_the_retry(
    engine: TestEngine,
) -> None:
    seen: list[tuple[int, object]] = []

    @weft_nb.activity
    def train(steps: int, activity: weft_nb.ActivityContext) -> int:
        seen.append((activity.attempt, activity.last_checkpoint))
        state = {"step": 0, "weights": np.zeros(10_000)}
        for step in range(1, steps + 1):
            state["step"] = step  # mutated after each snapshot: the snapshot must not follow
            state["weights"] += 1
            activity.checkpoint(state, background=True)
        if activity.attempt == 1:
            raise MemoryError("simulated OOM after the last snapshot")
        return int(activity.last_checkpoint["weights"][0])

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(train, 30)

    assert engine.run(wf, run_id="bg") == 30
    assert seen[0] == (1, None)
    attempt, restored = seen[1]
    assert attempt == 2
    assert isinstance(restored, dict)
    assert restored["step"] == 30  # the newest snapshot reached the disk before the retry
    assert float(restored["weights"][0]) == 30.0
    newest = engine.journal.checkpoints_of("bg", 0)[0]
    assert newest.attempt == 2


def test_an_unpicklable_background_checkpoint_fails_on_the_callers_thread(
    engine: TestEngine,
) -> None:
    @weft_nb.activity(retry={"max_attempts": 1})
    def train(_: object, activity: weft_nb.ActivityContext) -> str:
        activity.checkpoint({"lock": __import__("threading").Lock()}, background=True)
        return "unreachable"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(train)

    with pytest.raises(PayloadError, match="cannot be pickled"):
        engine.run(wf, run_id="bad-bg")
    assert engine.journal.checkpoints_of("bad-bg", 0) == []
