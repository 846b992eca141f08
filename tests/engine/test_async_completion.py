"""Out-of-band completion: task tokens, single use, payload checks, the recovery window."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError, AsyncTokenNotFoundError, PayloadError
from weft_nb.testing import TestEngine


class Approval:
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.calls = 0
        tokens = self.tokens

        @weft_nb.activity
        def ask(question: str, activity: weft_nb.ActivityContext) -> None:
            self.calls += 1
            tokens.append(activity.task_token)
            activity.complete_async()

        @weft_nb.workflow
        def review(ctx: weft_nb.WorkflowContext, question: str) -> object:
            return ctx.run(ask, question)

        self.ask, self.workflow = ask, review


def test_complete_async_parks_the_step_and_a_completion_finishes_it(engine: TestEngine) -> None:
    job = Approval()
    pending: list[str] = []
    engine.add_listener(
        lambda e: pending.append(e.data["token"]) if e.kind == "async_pending" else None
    )
    handle = engine.start(job.workflow, "ship it?", run_id="a")
    wait_until(lambda: pending)
    assert pending == job.tokens == ["async-act:v1:a:0:1"]
    assert not handle.done
    engine.complete_async_activity(pending[0], {"approved": True})
    assert handle.result(10) == {"approved": True}
    with pytest.raises(AsyncTokenNotFoundError, match="single-use"):
        engine.complete_async_activity(pending[0], {"approved": False})  # replayed token


def test_fail_async_activity_raises_in_the_workflow(engine: TestEngine) -> None:
    job = Approval()
    handle = engine.start(job.workflow, "ship it?", run_id="f")
    wait_until(lambda: job.tokens)  # read by the activity: journaled already
    engine.fail_async_activity(job.tokens[0], "rejected by ada")
    with pytest.raises(ActivityFailedError, match="rejected by ada"):
        handle.result(10)


def test_unknown_tokens_and_bad_payloads_leave_the_workflow_waiting(engine: TestEngine) -> None:
    job = Approval()
    handle = engine.start(job.workflow, "ship it?", run_id="p")
    wait_until(lambda: job.tokens)
    with pytest.raises(AsyncTokenNotFoundError):
        engine.complete_async_activity("async-act:v1:nope:0:1", 1)
    with pytest.raises(PayloadError, match="completion of activity 'ask'"):
        engine.complete_async_activity(job.tokens[0], threading.Lock())
    assert not handle.done  # the token was not consumed
    engine.complete_async_activity(job.tokens[0], "finally")
    assert handle.result(10) == "finally"


def test_a_completion_in_the_recovery_window_is_kept_and_used(engine: TestEngine) -> None:
    job = Approval()
    parked: list[str] = []
    engine.add_listener(lambda e: parked.append(e.kind) if e.kind == "async_pending" else None)
    engine.start(job.workflow, "ship it?", run_id="w")
    # Parked, not only handed out: a restart while the attempt still runs counts it as crashed.
    wait_until(lambda: parked)
    restarted = engine.simulate_restart()
    # the kernel restarted; the run is not resumed yet when the completion arrives
    restarted.complete_async_activity(job.tokens[0], "approved while down")
    assert restarted.resume("w").result(10) == "approved while down"
    assert job.calls == 1  # the activity was not dispatched again
    restarted.close()


def test_a_parked_step_is_not_re_run_after_a_restart(engine: TestEngine) -> None:
    job = Approval()
    parked: list[str] = []
    engine.add_listener(lambda e: parked.append(e.kind) if e.kind == "async_pending" else None)
    engine.start(job.workflow, "ship it?", run_id="r")
    # Parked, not only handed out: a token read by an attempt still running when the kernel
    # dies is an attempt that crashed, and runs again (at least once).
    wait_until(lambda: parked)
    restarted = engine.simulate_restart()
    handle = restarted.resume("r")  # resumed before any completion: it waits again
    wait_until(lambda: restarted.clock._blocked == 1)
    assert job.calls == 1
    restarted.complete_async_activity(job.tokens[0], "late")
    assert handle.result(10) == "late"
    restarted.close()


def test_a_completion_may_arrive_before_complete_async_is_called(engine: TestEngine) -> None:
    handed_out: list[str] = []
    completed = threading.Event()

    @weft_nb.activity
    def webhook(_: object, activity: weft_nb.ActivityContext) -> None:
        handed_out.append(activity.task_token)  # e.g. POSTed to a service that answers at once
        assert completed.wait(10)
        activity.complete_async()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(webhook)

    handle = engine.start(wf, run_id="early")
    wait_until(lambda: handed_out)
    engine.complete_async_activity(handed_out[0], "fast answer")
    completed.set()
    assert handle.result(10) == "fast answer"


def test_an_activity_that_returns_after_handing_out_its_token_spends_it(
    engine: TestEngine,
) -> None:
    tokens: list[str] = []

    @weft_nb.activity
    def maybe(_: object, activity: weft_nb.ActivityContext) -> str:
        tokens.append(activity.task_token)
        return "returned itself"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(maybe)

    assert engine.run(wf, run_id="own") == "returned itself"
    with pytest.raises(AsyncTokenNotFoundError):
        engine.complete_async_activity(tokens[0], "too late")
    assert engine.journal.query("SELECT count(*) FROM steps WHERE run_id = 'own'") == [(1,)]
