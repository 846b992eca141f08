"""Replay from the journal, simulated restarts, on_change policies, recovery and cancellation."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import (
    ActivityFailedError,
    NonDeterminismError,
    RunNotFoundError,
    WeftError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotRegisteredError,
    WorkflowVersionMismatchError,
)
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


class Pipeline:
    """Three steps; the third blocks on a gate until released, so a 'crash' can happen there."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.gate = threading.Event()
        self.in_step_c = threading.Event()
        calls, gate, in_c = self.calls, self.gate, self.in_step_c

        @weft_nb.activity
        def step_a(x: int) -> int:
            calls["a"] += 1
            return x + 1

        @weft_nb.activity
        def step_b(x: int) -> int:
            calls["b"] += 1
            return x * 2

        @weft_nb.activity
        def step_c(x: int, activity: weft_nb.ActivityContext) -> dict[str, object]:
            calls["c"] += 1
            seen = {"checkpoint": activity.last_checkpoint, "hb": activity.last_heartbeat_details}
            activity.heartbeat({"progress": 0.5})
            activity.checkpoint({"half": x})
            in_c.set()
            gate.wait()
            return {"value": x - 1, "seen": seen}

        @weft_nb.workflow
        def pipeline(ctx: weft_nb.WorkflowContext, x: int) -> dict[str, object]:
            return ctx.run(step_c, ctx.run(step_b, ctx.run(step_a, x)))

        self.step_a, self.step_b, self.step_c, self.workflow = step_a, step_b, step_c, pipeline


def _crash_in_step_c(engine: TestEngine, pipe: Pipeline, run_id: str = "run-1") -> TestEngine:
    handle = engine.start(pipe.workflow, 5, run_id=run_id)
    assert pipe.in_step_c.wait(10)
    engine.flusher.flush()  # what a heartbeat interval would have written
    restarted = engine.simulate_restart()
    assert not handle.done or handle.status == "running"
    pipe.in_step_c.clear()
    pipe.gate.set()  # the abandoned thread finishes but can no longer write
    return restarted


def test_resume_replays_completed_steps_and_restores_checkpoint_and_heartbeat(
    engine: TestEngine,
) -> None:
    pipe = Pipeline()
    engine = _crash_in_step_c(engine, pipe)
    handle = engine.resume("run-1")
    result = handle.result(10)
    assert result == {"value": 11, "seen": {"checkpoint": {"half": 12}, "hb": {"progress": 0.5}}}
    assert pipe.calls == Counter({"a": 1, "b": 1, "c": 2})
    assert (handle.replayed_steps, handle.executed_steps) == (2, 1)
    engine.close()


def test_start_with_existing_run_id_resumes_or_returns_recorded_result(
    engine: TestEngine,
) -> None:
    pipe = Pipeline()
    engine = _crash_in_step_c(engine, pipe)
    first = engine.start(pipe.workflow, 5, run_id="run-1").result(10)
    again = engine.start(pipe.workflow, 5, run_id="run-1")
    assert again.done and again.replayed_from_journal
    assert again.result() == first
    assert pipe.calls == Counter({"a": 1, "b": 1, "c": 2})
    assert [r.status for r in engine.runs()] == ["completed"]
    engine.close()


def test_start_with_a_run_id_of_another_workflow_is_refused(engine: TestEngine) -> None:
    pipe = Pipeline()
    pipe.gate.set()
    engine.run(pipe.workflow, 1, run_id="shared")

    @weft_nb.workflow
    def other(ctx: weft_nb.WorkflowContext) -> None:
        return None

    with pytest.raises(WeftError, match="belongs to workflow 'pipeline'"):
        engine.start(other, run_id="shared")


def test_changed_activity_source_reruns_from_that_step_with_a_warning(
    engine: TestEngine,
) -> None:
    pipe = Pipeline()
    engine = _crash_in_step_c(engine, pipe)

    @weft_nb.activity(name="step_b")
    def step_b_fixed(x: int) -> int:
        pipe.calls["b2"] += 1
        return x * 3

    engine.register(step_b_fixed)

    @weft_nb.workflow(name="pipeline")
    def pipeline_v2(ctx: weft_nb.WorkflowContext, x: int) -> object:
        return ctx.run(pipe.step_c, ctx.run("step_b", ctx.run(pipe.step_a, x)))

    engine.register(pipeline_v2)
    with pytest.warns(weft_nb.StepChangedWarning, match="step 1 .*source changed"):
        result = engine.resume("run-1").result(10)
    # step c reran too, from scratch: its checkpoint belonged to the superseded attempt
    assert result == {"value": 17, "seen": {"checkpoint": None, "hb": None}}
    assert pipe.calls == Counter({"a": 1, "b": 1, "b2": 1, "c": 2})
    events = engine.journal.events_of("run-1")
    # the crash in step c was counted as a failed attempt when the journal reopened
    assert [(e.kind, e.position) for e in events] == [("attempt_crashed", 2), ("step_changed", 1)]
    superseded = engine.journal.query(
        "SELECT position FROM steps WHERE run_id = 'run-1' AND superseded ORDER BY position"
    )
    assert superseded == [(1,)]  # kept for audit
    engine.close()


def test_changed_input_with_on_change_error_raises_non_determinism(
    journal_path: object,
) -> None:
    pipe = Pipeline()
    engine = TestEngine(journal_path, on_change="error")  # type: ignore[arg-type]
    engine = _crash_in_step_c(engine, pipe)
    offset = {"value": 100}

    @weft_nb.workflow(name="pipeline")
    def drifting(ctx: weft_nb.WorkflowContext, x: int) -> object:
        return ctx.run(pipe.step_b, ctx.run(pipe.step_a, x) + offset["value"])

    engine.register(drifting)
    with pytest.raises(NonDeterminismError, match="step 1 .*input changed"):
        engine.resume("run-1").result(10)
    assert pipe.calls["b"] == 1
    engine.close()


def test_version_mismatch_on_resume(engine: TestEngine) -> None:
    pipe = Pipeline()
    engine = _crash_in_step_c(engine, pipe)

    @weft_nb.workflow(name="pipeline", version="2")
    def pipeline_v2(ctx: weft_nb.WorkflowContext, x: int) -> None:
        return None

    engine.register(pipeline_v2)
    with pytest.raises(WorkflowVersionMismatchError, match="version '1'"):
        engine.resume("run-1")
    engine.close()


def test_recover_all_resumes_registered_and_reports_unregistered(engine: TestEngine) -> None:
    pipe = Pipeline()
    engine = _crash_in_step_c(engine, pipe)
    engine.register(pipe.workflow)  # registered below only after the restart drops it

    @weft_nb.activity
    def wait_forever(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.cancelled.wait()

    @weft_nb.workflow
    def orphan(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(wait_forever)

    orphan_handle = engine.start(orphan, run_id="orphan-1")
    restarted = engine.simulate_restart(keep_registrations=False)
    assert orphan_handle.status == "running"
    restarted.register(pipe.workflow, pipe.step_a, pipe.step_b, pipe.step_c)
    with pytest.warns(RuntimeWarning, match="'orphan' \\(1 run"):
        report = restarted.recover_all()
    assert [h.run_id for h in report.resumed] == ["run-1"]
    assert report.unregistered == {"orphan": ["orphan-1"]}
    assert report.resumed[0].result(10)["value"] == 11
    with pytest.raises(WorkflowNotRegisteredError, match="'orphan'"):
        restarted.resume("orphan-1")
    restarted.close()


def test_cancel_sets_cancelled_persists_and_is_never_resumed(engine: TestEngine) -> None:
    started = threading.Event()
    observed: list[bool] = []

    @weft_nb.activity
    def long_job(_: object, activity: weft_nb.ActivityContext) -> None:
        started.set()
        observed.append(activity.cancelled.wait())
        activity.raise_if_cancelled()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(long_job)

    handle = engine.start(wf, run_id="c1")
    assert started.wait(10)
    assert handle.cancel() is True
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)
    assert observed == [True]
    assert handle.status == "cancelled"
    assert [(r.run_id, r.status) for r in engine.runs()] == [("c1", "cancelled")]
    restarted = engine.simulate_restart()
    assert restarted.recover_all().resumed == []
    with pytest.raises(WorkflowCancelledError):
        restarted.start(wf, run_id="c1").result(1)
    assert restarted.cancel("c1") is False  # already final
    with pytest.raises(RunNotFoundError):
        restarted.cancel("nope")
    restarted.close()


def test_cancel_with_several_activities_in_flight_in_ctx_all(engine: TestEngine) -> None:
    # Three branches of ctx.all run when the run is cancelled: each sees `cancelled`, one of
    # them returns a result anyway (ignoring it), and none of them completes a step afterwards.
    running: list[int] = []
    saw_cancel: dict[int, bool] = {}
    lock = threading.Lock()
    every_one_running = threading.Event()
    finished = threading.Event()

    @weft_nb.activity(retry={"max_attempts": 1})
    def branch(i: int, activity: weft_nb.ActivityContext) -> int:
        with lock:
            running.append(i)
            if len(running) == 3:
                every_one_running.set()
        saw_cancel[i] = activity.cancelled.wait()  # virtual clock: no timeout, or it advances
        with lock:
            if len(saw_cancel) == 3:
                finished.set()
        if i == 1:
            return i * 10  # ignores the cancellation: a late result that must be discarded
        activity.raise_if_cancelled()
        return i

    @weft_nb.workflow
    def fan_out(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.all([ctx.submit(branch, i) for i in range(3)])

    handle = engine.start(fan_out, run_id="fan")
    assert every_one_running.wait(20)
    assert handle.cancel() is True
    with pytest.raises(WorkflowCancelledError):
        handle.result(20)
    assert finished.wait(20)
    assert saw_cancel == {0: True, 1: True, 2: True}
    assert handle.status == "cancelled"
    for thread in threading.enumerate():
        if thread.name == "weft-run-fan":
            thread.join(20)
            assert not thread.is_alive()  # the run thread settled
    wait_until(lambda: not engine.live_attempts("fan"), what="every attempt left the run")
    assert engine.journal.get_run("fan").status == "cancelled"  # type: ignore[union-attr]
    assert engine.journal.query("SELECT count(*) FROM steps WHERE run_id = 'fan'") == [(0,)]


def test_cancel_during_backoff_stops_retrying(engine: TestEngine) -> None:
    engine.clock.auto_advance = False
    calls: list[int] = []

    @weft_nb.activity
    def failing(_: object) -> None:
        calls.append(1)
        raise RuntimeError("try again")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(failing)

    handle = engine.start(wf)
    engine.clock.wait_for_sleepers(1)  # the 1 s backoff has begun
    handle.cancel()
    with pytest.raises(WorkflowCancelledError):
        handle.result(10)
    assert calls == [1]


def test_failed_workflow_is_recorded_and_replayed_as_such(engine: TestEngine) -> None:
    @weft_nb.workflow
    def boom(ctx: weft_nb.WorkflowContext, x: int) -> None:
        raise ValueError(f"bad input {x}")

    with pytest.raises(ValueError, match="bad input 3"):
        engine.run(boom, 3, run_id="f1")
    assert engine.runs()[0].status == "failed"
    with pytest.raises(WorkflowFailedError, match="ValueError: bad input 3") as info:
        engine.simulate_restart().start(boom, 3, run_id="f1").result()
    assert info.value.cause_type == "ValueError"
    assert "bad input 3" in info.value.traceback_text


def test_a_failed_step_caught_by_the_workflow_replays_as_the_same_error(
    engine: TestEngine,
) -> None:
    calls: Counter[str] = Counter()
    gate = threading.Event()
    reached = threading.Event()

    @weft_nb.activity(retry={"max_attempts": 2})
    def fragile(_: object) -> None:
        calls["fragile"] += 1
        raise KeyError("missing column")

    @weft_nb.activity
    def fallback(_: object) -> str:
        calls["fallback"] += 1
        reached.set()
        gate.wait()
        return "fallback"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> tuple[str, int, str]:
        try:
            ctx.run(fragile)
        except ActivityFailedError as exc:
            return (exc.cause_type, exc.attempts, ctx.run(fallback))
        return ("", 0, "")

    engine.start(wf, run_id="w")
    assert reached.wait(10)
    restarted = engine.simulate_restart()
    gate.set()
    assert restarted.resume("w").result(10) == ("KeyError", 2, "fallback")
    assert calls == Counter({"fragile": 2, "fallback": 2})
    restarted.close()


def test_registering_again_replaces_and_never_raises(engine: TestEngine) -> None:
    @weft_nb.activity(name="greet")
    def greet_v1(name: str) -> str:
        return f"hi {name}"

    @weft_nb.activity(name="greet")
    def greet_v2(name: str) -> str:
        return f"hello {name}"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, name: str) -> str:
        return ctx.run("greet", name)

    engine.register(greet_v1, wf)
    engine.register(greet_v1, wf)
    assert engine.run(wf, "ada") == "hi ada"
    engine.register(greet_v2)
    assert engine.run(wf, "ada") == "hello ada"


def test_unknown_activity_name_lists_what_exists(engine: TestEngine) -> None:
    @weft_nb.activity
    def known(_: object) -> None:
        return None

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run("unknown_thing")

    engine.register(known)
    with pytest.raises(weft_nb.errors.ActivityNotRegisteredError, match=r"\['known'\]"):
        engine.run(wf)


def test_closed_engine_refuses_work(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return 1

    engine.close()
    with pytest.raises(weft_nb.errors.JournalClosedError, match="closed"):
        engine.start(wf)


def test_listeners_see_the_run_lifecycle_and_a_failing_listener_is_not_fatal(
    engine: TestEngine,
) -> None:
    seen: list[tuple[str, object]] = []

    @weft_nb.activity
    def flaky(_: object, activity: weft_nb.ActivityContext) -> int:
        if activity.attempt == 1:
            raise OSError("once")
        return 7

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(flaky)

    def broken_listener(event: weft_nb.WeftEvent) -> None:
        raise RuntimeError("listener bug")

    engine.add_listener(lambda event: seen.append((event.kind, event.data.get("status"))))
    engine.add_listener(broken_listener)
    with pytest.warns(RuntimeWarning, match="listener failed"):
        assert engine.run(wf, run_id="ev") == 7
    assert seen == [  # step and attempt events too (issue 16.4)
        ("run_started", None),
        ("step_started", None),
        ("attempt_started", None),
        ("attempt_failed", None),
        ("retry_scheduled", None),
        ("attempt_started", None),
        ("attempt_completed", None),
        ("step_completed", None),
        ("run_finished", "completed"),
    ]
