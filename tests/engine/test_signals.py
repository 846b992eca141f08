"""Signals: durable when sent, buffered, delivered once per id, consumed with their step."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import (
    PayloadError,
    RunFinishedError,
    RunNotFoundError,
    SignalTimeoutError,
    WorkflowCancelledError,
)
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


@weft_nb.workflow
def approval(ctx: weft_nb.WorkflowContext) -> list[object]:
    first = ctx.wait_for_signal("approve")
    second = ctx.wait_for_signal("approve")
    return [first, second]


def test_signals_are_buffered_and_delivered_in_order_once_per_id(engine: TestEngine) -> None:
    handle = engine.start(approval, run_id="a")
    assert engine.signal("a", "approve", {"by": "ada"}, signal_id="s1") is True
    assert engine.signal("a", "approve", {"by": "ada again"}, signal_id="s1") is False  # dedup
    assert engine.signal("a", "approve", {"by": "bob"}, signal_id="s2") is True
    assert handle.result(10) == [{"by": "ada"}, {"by": "bob"}]
    rows = engine.journal.query(
        "SELECT signal_id, consumed_position FROM signals WHERE run_id = 'a' ORDER BY id"
    )
    assert rows == [("s1", 0), ("s2", 1)]


def test_a_signal_wakes_a_waiting_workflow(engine: TestEngine, workflow_kind: str) -> None:
    got: list[object] = []

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        got.append(ctx.wait_for_signal("go"))

    handle = engine.start(wf, run_id="w")
    # wait until every participant blocks: the workflow thread in wait_for_signal (an async
    # workflow's loop and the thread its wait runs on)
    participants = 2 if workflow_kind == "async" else 1
    wait_until(lambda: engine.clock._blocked == participants)
    assert engine.journal.query("SELECT count(*) FROM signals") == [(0,)]
    engine.signal("w", "go", 42)
    handle.result(10)
    assert got == [42]


def test_signals_survive_a_restart_and_a_consumed_one_is_not_delivered_twice(
    engine: TestEngine,
) -> None:
    gate = threading.Event()
    calls: list[object] = []

    @weft_nb.activity
    def act(value: object) -> object:
        calls.append(value)
        assert gate.wait(10)
        return value

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        first = ctx.wait_for_signal("data")
        ctx.run(act, first)
        return [first, ctx.wait_for_signal("data")]

    engine.start(wf, run_id="r")
    engine.signal("r", "data", "one")
    engine.signal("r", "data", "two")
    wait_until(lambda: calls == ["one"])  # 'one' consumed; the process dies in the activity
    restarted = engine.simulate_restart()
    gate.set()
    assert restarted.resume("r").result(10) == ["one", "two"]  # 'one' replayed, not re-consumed
    restarted.close()


def test_a_buffered_signal_sent_before_a_crash_is_delivered_after_it(engine: TestEngine) -> None:
    @weft_nb.activity
    def block(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.cancelled.wait()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        ctx.run("block")  # by name: after the restart a fixed 'block' is registered
        return ctx.wait_for_signal("later")

    engine.register(block)
    engine.start(wf, run_id="b")
    engine.signal("b", "later", {"x": 1})
    restarted = engine.simulate_restart()

    @weft_nb.activity(name="block")
    def unblocked(_: object) -> None:
        return None

    restarted.register(unblocked)  # the step never completed: it simply runs again
    handle = restarted.resume("b")
    assert handle.result(10) == {"x": 1}
    restarted.close()


def test_wait_for_signal_timeout_is_durable_and_replays(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        try:
            ctx.wait_for_signal("never", timeout="10m")
        except SignalTimeoutError:
            return "timed out"
        return "got it"

    t0 = engine.clock.now()
    assert engine.run(wf, run_id="t") == "timed out"
    assert engine.clock.now() - t0 == 600
    assert engine.journal.query("SELECT status FROM steps WHERE run_id = 't'") == [("failed",)]


def test_bad_signals_are_refused_with_clear_errors(engine: TestEngine) -> None:
    @weft_nb.workflow
    def quick(ctx: weft_nb.WorkflowContext) -> int:
        return 1

    engine.run(quick, run_id="done")
    with pytest.raises(RunFinishedError, match="'done' is completed"):
        engine.signal("done", "approve")
    with pytest.raises(RunNotFoundError):
        engine.signal("nope", "approve")
    handle = engine.start(approval, run_id="p")
    with pytest.raises(PayloadError, match="payload of signal 'approve'"):
        engine.signal("p", "approve", threading.Lock())
    assert engine.journal.query("SELECT count(*) FROM signals WHERE run_id = 'p'") == [(0,)]
    engine.cancel("p")  # a waiting workflow wakes on cancellation
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)
