"""Child workflows (``ctx.run_workflow``, ``ctx.start_workflow``): live, replayed, restarted."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.base.payloads import error_from_json
from weft_nb.errors import (
    ChildWorkflowDepthError,
    ChildWorkflowFailedError,
    WeftError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from weft_nb.testing import MemoryJournal, TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    calls.clear()


@weft_nb.activity
def score(config: dict[str, float]) -> float:
    calls["score"] += 1
    return round(1 - abs(config["lr"] - 0.01) * 10, 6)


@weft_nb.workflow
def trial(ctx: weft_nb.WorkflowContext, config: dict[str, float]) -> float:
    calls["trial"] += 1
    return ctx.run(score, config)


@weft_nb.workflow
def gated_trial(ctx: weft_nb.WorkflowContext, config: dict[str, float]) -> float:
    value = ctx.run(score, config)
    ctx.wait_for_signal("go")
    return value


@weft_nb.workflow
def failing_trial(ctx: weft_nb.WorkflowContext, config: dict[str, float]) -> float:
    ctx.run(score, config)
    raise ValueError(f"lr {config['lr']} diverged")


def child_rows(engine: TestEngine, run_id: str) -> list[tuple[Any, ...]]:
    return engine.journal.query(
        "SELECT position, status, result FROM steps WHERE run_id = ? AND activity = '<child>' "
        "AND NOT superseded ORDER BY position",
        [run_id],
    )


def test_a_child_is_a_linked_run_of_its_own_and_its_result_is_journaled_once(
    engine: TestEngine,
) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(trial, {"lr": 0.01})

    assert engine.run(sweep, run_id="p") == 1.0
    child = engine.journal.get_run("p.0")
    assert child is not None
    assert (child.workflow, child.status, child.parent_run_id) == ("trial", "completed", "p")
    assert engine.journal.get_run("p").parent_run_id is None  # type: ignore[union-attr]
    assert child_rows(engine, "p") == [(0, "completed", b"1.0")]
    # A replay answers from the parent's journal: the child does not run again.
    again = engine.simulate_restart()
    again.registry.workflows.pop("sweep")
    assert again.start(sweep, run_id="p").result(10) == 1.0
    assert calls == Counter(score=1, trial=1)
    again.close()


def test_start_workflow_futures_work_in_all_and_race(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> list[Any]:
        futures = [ctx.start_workflow(trial, {"lr": lr}) for lr in (0.01, 0.05)]
        scores = ctx.all(futures)
        named = ctx.start_workflow("trial", {"lr": 0.02}, run_id="named-trial")
        raced = ctx.race([named, ctx.timer("1h")])
        return [scores, raced]

    assert engine.run(sweep, run_id="s") == [[1.0, 0.6], (0, 0.9)]
    children = {r.run_id: r.parent_run_id for r in engine.journal.list_runs() if r.parent_run_id}
    assert children == {"s.0": "s", "s.1": "s", "named-trial": "s"}


def test_a_failed_child_raises_child_workflow_failed_error_with_its_cause_live_and_replayed(
    engine: TestEngine,
) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> list[str]:
        try:
            ctx.run_workflow(failing_trial, {"lr": 0.5})
        except ChildWorkflowFailedError as error:
            seen = [type(error.__cause__).__name__, error.child_run_id, error.reason]
        ctx.wait_for_signal("done")
        return seen

    handle = engine.start(sweep, run_id="f")
    wait_until(lambda: child_rows(engine, "f") and child_rows(engine, "f")[0][1] == "failed")
    restarted = engine.simulate_restart()
    resumed = restarted.resume("f")
    restarted.signal("f", "done")
    expected = ["WorkflowFailedError", "f.0", "ValueError: lr 0.5 diverged"]
    assert resumed.result(10) == expected
    assert handle.done
    assert calls["score"] == 1  # the failed child ran once
    child = restarted.journal.get_run("f.0")
    assert child is not None
    assert child.status == "failed"
    restarted.close()


def test_run_workflow_raises_when_not_caught(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(failing_trial, {"lr": 0.5})

    with pytest.raises(ChildWorkflowFailedError) as live:
        engine.run(sweep, run_id="u")
    assert isinstance(live.value.__cause__, WorkflowFailedError)
    recorded = engine.start(sweep, run_id="u")  # the finished run's recorded outcome
    with pytest.raises(ChildWorkflowFailedError) as caught:
        recorded.result(10)
    assert caught.value.fields["child_run_id"] == "u.0"


def test_a_parent_resumed_after_a_restart_reattaches_to_its_child(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(gated_trial, {"lr": 0.01}) + 1

    engine.start(sweep, run_id="r")
    wait_until(lambda: calls["score"] == 1)
    wait_until(
        lambda: (
            engine.journal.query(
                "SELECT 1 FROM steps WHERE run_id = 'r.0' AND activity = '<signal>'"
            )
            or engine.is_active("r.0")
        )
    )
    restarted = engine.simulate_restart()
    report = restarted.recover_all()  # both the parent and the child were interrupted
    assert sorted(h.run_id for h in report.resumed) == ["r", "r.0"]
    restarted.signal("r.0", "go")
    assert restarted.resume("r").result(10) == 2.0
    assert [r.run_id for r in restarted.journal.list_runs()] == ["r", "r.0"]  # one child
    assert calls["score"] == 1  # the child's step replayed, never run twice
    assert child_rows(restarted, "r") == [(0, "completed", b"1.0")]
    restarted.close()


def test_a_parent_resumed_alone_resumes_its_child(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(gated_trial, {"lr": 0.01})

    engine.start(sweep, run_id="a")
    wait_until(lambda: calls["score"] == 1)
    restarted = engine.simulate_restart()
    handle = restarted.resume("a")
    wait_until(lambda: restarted.is_active("a.0"))
    restarted.signal("a.0", "go")
    assert handle.result(10) == 1.0
    assert calls["score"] == 1
    restarted.close()


def test_cancelling_the_parent_cancels_the_child(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> list[float]:
        return ctx.all([ctx.start_workflow(gated_trial, {"lr": lr}) for lr in (0.01, 0.02)])

    handle = engine.start(sweep, run_id="c")
    wait_until(lambda: engine.is_active("c.0") and engine.is_active("c.1"))
    handle.cancel()
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)
    for child in ("c.0", "c.1"):
        wait_until(lambda child=child: not engine.is_active(child))
        assert engine.journal.get_run(child).status == "cancelled"  # type: ignore[union-attr]


def test_interrupting_the_parent_interrupts_the_child_and_both_resume(
    engine: TestEngine,
) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(gated_trial, {"lr": 0.01})

    engine.start(sweep, run_id="i")
    wait_until(lambda: engine.is_active("i.0"))
    assert engine.interrupt("i")
    wait_until(lambda: not engine.is_active("i.0"))
    assert engine.journal.get_run("i.0").status == "interrupted"  # type: ignore[union-attr]
    handle = engine.start(sweep, run_id="i")
    wait_until(lambda: engine.is_active("i.0"))
    engine.signal("i.0", "go")
    assert handle.result(10) == 1.0
    assert calls["score"] == 1


def test_a_child_cancelled_on_its_own_fails_the_parents_step(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> list[Any]:
        try:
            return [ctx.run_workflow(gated_trial, {"lr": 0.01})]
        except ChildWorkflowFailedError as error:
            return [error.reason, type(error.__cause__).__name__]

    handle = engine.start(sweep, run_id="k")
    wait_until(lambda: engine.is_active("k.0"))
    assert engine.cancel("k.0")
    assert handle.result(10) == ["it was cancelled", "WorkflowCancelledError"]
    assert child_rows(engine, "k") == [(0, "failed", None)]


def test_children_on_a_memory_journal() -> None:
    with TestEngine(MemoryJournal()) as memory:

        @weft_nb.workflow
        def sweep(ctx: weft_nb.WorkflowContext) -> list[float]:
            return ctx.all([ctx.start_workflow(trial, {"lr": lr}) for lr in (0.01, 0.02)])

        assert memory.run(sweep, run_id="m") == [1.0, 0.9]
        linked = [(r.run_id, r.parent_run_id) for r in memory.journal.list_runs()]
        assert linked == [("m", None), ("m.0", "m"), ("m.1", "m")]


def test_a_timer_that_beats_a_child_wins_and_the_child_keeps_running(engine: TestEngine) -> None:
    @weft_nb.workflow
    def sweep(ctx: weft_nb.WorkflowContext) -> list[Any]:
        child = ctx.start_workflow(gated_trial, {"lr": 0.01})
        index, _ = ctx.race([child, ctx.timer("10s")])
        ctx.wait_for_signal("finish")
        return [index, child.result()]

    handle = engine.start(sweep, run_id="t")
    wait_until(
        lambda: engine.journal.query(
            "SELECT 1 FROM steps WHERE activity = '<race>' AND run_id = 't'"
        )
    )
    assert engine.is_active("t.0")  # the losing child runs on
    engine.signal("t.0", "go")
    engine.signal("t", "finish")
    assert handle.result(10) == [1, 1.0]


def test_an_explicit_child_run_id_naming_an_unrelated_run_is_refused(engine: TestEngine) -> None:
    """review15: the parent silently took the outcome of a run that was not its child."""
    engine.run(trial, {"lr": 0.01}, run_id="top")

    @weft_nb.workflow
    def adopter(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow(trial, {"lr": 0.5}, run_id="top")

    with pytest.raises(WeftError, match="not a child of run 'p'"):
        engine.run(adopter, run_id="p")
    assert calls["score"] == 1  # only the top run's


def test_a_child_run_id_equal_to_the_parents_own_is_refused_not_a_deadlock(
    engine: TestEngine,
) -> None:
    """review15: the parent re-attached to itself and waited for itself forever."""

    @weft_nb.workflow
    def itself(ctx: weft_nb.WorkflowContext) -> float:
        return ctx.run_workflow("itself", run_id=ctx.run_id)

    handle = engine.start(itself, run_id="me")
    with pytest.raises(WeftError, match="choose another run_id"):
        handle.result(timeout=60)


def test_two_children_under_one_explicit_run_id_are_refused(engine: TestEngine) -> None:
    """review15: the second child answered with the first one's result; its input never ran."""

    @weft_nb.workflow
    def twice(ctx: weft_nb.WorkflowContext) -> list[float]:
        a = ctx.run_workflow(trial, {"lr": 0.01}, run_id="same")
        b = ctx.run_workflow(trial, {"lr": 0.02}, run_id="same")
        return [a, b]

    with pytest.raises(WeftError, match="already the child of step 0"):
        engine.run(twice, run_id="p")
    assert calls["score"] == 1


def test_an_activity_passed_as_a_child_workflow_is_named(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> Any:
        return ctx.run_workflow(score, {"lr": 0.01})

    with pytest.raises(TypeError, match=r"'score' is an activity, not a workflow: call it with"):
        engine.run(wf)
    assert calls["score"] == 0


@weft_nb.workflow
def countdown(ctx: weft_nb.WorkflowContext, n: int) -> int:
    calls["countdown"] += 1
    return 0 if n == 0 else 1 + ctx.run_workflow(countdown, n - 1)


def test_children_nest_ten_levels_and_the_eleventh_is_refused(engine: TestEngine) -> None:
    assert engine.run(countdown, 10, run_id="ten") == 10  # ten children below the root
    calls.clear()
    with pytest.raises(ChildWorkflowFailedError) as caught:
        engine.run(countdown, 11, run_id="eleven")
    assert calls["countdown"] == 11  # the root and ten children ran; no eleventh child started
    assert engine.journal.get_run("eleven" + ".0" * 11) is None
    # the root's error says what went wrong at the bottom in one line, not ten nested messages
    deepest = "eleven" + ".0" * 10
    assert f"ChildWorkflowDepthError: step 0 of run {deepest!r}" in str(caught.value)
    assert str(caught.value).count("did not complete") == 1
    record = engine.journal.get_run(deepest)
    assert record is not None and record.error is not None
    error = error_from_json(record.error)
    assert isinstance(error, ChildWorkflowDepthError)
    assert error.fields["depth"] == 11 and error.fields["limit"] == 10
