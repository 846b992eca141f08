"""Task tokens belong to one attempt: spent when it fails, times out or dies, or its run ends."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from helpers import parked_run, wait_until

import weft_nb
from weft_nb.errors import (
    AsyncTokenNotFoundError,
    JournalError,
    RunFinishedError,
    WorkflowCancelledError,
)
from weft_nb.journal.protocol import HeartbeatRecord, StepRecord
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def completed_rows(engine: TestEngine, run_id: str) -> list[tuple[int, int]]:
    return engine.journal.query(
        "SELECT position, count(*) FROM steps WHERE run_id = ? AND status = 'completed' "
        "AND NOT superseded GROUP BY position ORDER BY position",
        [run_id],
    )


class TokenThenFail:
    """Attempt 1 reads its token (hands it out) and fails; attempt 2 blocks until released."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.release = threading.Event()
        self.retrying = threading.Event()
        self.calls = 0

        @weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
        def flaky(_: object, activity: weft_nb.ActivityContext) -> str:
            self.calls += 1
            if activity.attempt == 1:
                self.tokens.append(activity.task_token)  # handed to a webhook, say
                raise ConnectionError("the webhook's provider hung up")
            self.retrying.set()
            assert self.release.wait(20)
            return f"attempt {activity.attempt}"

        @weft_nb.workflow
        def wf(ctx: weft_nb.WorkflowContext) -> object:
            return ctx.run(flaky)

        self.workflow = wf


def test_a_failed_attempts_token_is_spent_while_the_retry_runs(engine: TestEngine) -> None:
    job = TokenThenFail()
    handle = engine.start(job.workflow, run_id="stale")
    assert job.retrying.wait(20)
    with pytest.raises(AsyncTokenNotFoundError, match="spent"):
        engine.complete_async_activity(job.tokens[0], "stale completion")
    with pytest.raises(AsyncTokenNotFoundError):
        engine.fail_async_activity(job.tokens[0], "stale failure")
    job.release.set()
    assert handle.result(20) == "attempt 2"
    assert completed_rows(engine, "stale") == [(0, 1)]  # one completed row, never two


def test_a_crash_during_the_retry_resumes_into_a_new_attempt_not_the_dead_token(
    engine: TestEngine,
) -> None:
    job = TokenThenFail()
    engine.start(job.workflow, run_id="dies")
    assert job.retrying.wait(20)
    restarted = engine.simulate_restart()  # the process dies while attempt 2 runs
    job.release.set()
    with pytest.raises(AsyncTokenNotFoundError):
        restarted.complete_async_activity(job.tokens[0], "stale")
    assert restarted.resume("dies").result(20) == "attempt 3"
    assert completed_rows(restarted, "dies") == [(0, 1)]
    restarted.close()


def test_a_token_read_but_not_parked_before_a_crash_is_spent_and_the_step_retries(
    engine: TestEngine,
) -> None:
    tokens: list[str] = []
    hold = threading.Event()

    @weft_nb.activity
    def webhook(_: object, activity: weft_nb.ActivityContext) -> str:
        tokens.append(activity.task_token)
        if activity.attempt == 1:
            assert hold.wait(20)  # the process dies here, before complete_async()
            activity.complete_async()
        return f"attempt {activity.attempt} returned"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(webhook)

    engine.start(wf, run_id="unparked")
    wait_until(lambda: tokens, what="the token was read")
    restarted = engine.simulate_restart()
    hold.set()
    with pytest.raises(AsyncTokenNotFoundError):  # the attempt died: its token with it
        restarted.complete_async_activity(tokens[0], "late")
    # Before the fix the resume waited on attempt 1's token forever.
    assert restarted.resume("unparked").result(20) == "attempt 2 returned"
    assert completed_rows(restarted, "unparked") == [(0, 1)]
    restarted.close()


def test_a_cancelled_runs_token_is_refused_and_nothing_is_written(engine: TestEngine) -> None:
    handle, tokens = parked_run(engine, "gone")
    assert handle.cancel()
    with pytest.raises(WorkflowCancelledError):
        handle.result(20)
    with pytest.raises(RunFinishedError, match="cancelled"):
        engine.complete_async_activity(tokens[0], "too late")
    with pytest.raises(RunFinishedError):
        engine.fail_async_activity(tokens[0], "too late")
    assert completed_rows(engine, "gone") == []
    assert engine.journal.get_run("gone").status == "cancelled"  # type: ignore[union-attr]


def test_an_outside_completion_that_beats_a_failing_attempt_settles_the_step(
    engine: TestEngine,
) -> None:
    completed = threading.Event()
    tokens: list[str] = []
    calls: list[int] = []

    @weft_nb.activity
    def webhook(_: object, activity: weft_nb.ActivityContext) -> str:
        calls.append(activity.attempt)
        tokens.append(activity.task_token)
        assert completed.wait(20)
        raise ConnectionError("lost the connection after the callback was sent")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(webhook)

    handle = engine.start(wf, run_id="beaten")
    wait_until(lambda: tokens)
    engine.complete_async_activity(tokens[0], "answered by the callback")
    completed.set()
    assert handle.result(20) == "answered by the callback"
    assert calls == [1]  # not retried: the step was settled
    assert completed_rows(engine, "beaten") == [(0, 1)]


def test_a_timed_out_attempts_token_is_spent(engine: TestEngine) -> None:
    tokens: list[str] = []
    retrying, release = threading.Event(), threading.Event()

    @weft_nb.activity(timeout=1, retry={"max_attempts": 2, "initial_backoff": 0.01})
    def slow(_: object, activity: weft_nb.ActivityContext) -> str:
        if activity.attempt == 1:
            tokens.append(activity.task_token)
            activity.cancelled.wait()  # the per-attempt timeout sets it
            return "attempt 1, too late"
        retrying.set()
        assert release.wait(20)
        return "attempt 2"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(slow)

    handle = engine.start(wf, run_id="slow")
    assert retrying.wait(20)
    with pytest.raises(AsyncTokenNotFoundError):
        engine.complete_async_activity(tokens[0], "late")
    release.set()
    assert handle.result(20) == "attempt 2"
    assert completed_rows(engine, "slow") == [(0, 1)]


def test_the_journal_refuses_a_second_outcome_for_a_step(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        return None

    engine.run(wf, run_id="one")
    step = StepRecord(
        run_id="one",
        position=0,
        activity="a",
        status="completed",
        input_hash="h",
        source_hash="s",
        attempts=1,
        started_at=1.0,
        finished_at=2.0,
        result_codec="json",
        result=b"1",
        error=None,
        idempotency_key="k",
    )
    beat = HeartbeatRecord(
        run_id="one",
        position=0,
        attempt=1,
        recorded_at=1.5,
        codec="json",
        details=b"{}",
        beat=1,
        activity="a",
    )
    engine.journal.record_step(step, beat)  # the transactional path (a key and a heartbeat)
    with pytest.raises(JournalError, match="already has an outcome"):
        engine.journal.record_step(dataclasses.replace(step, result=b"2"), beat)
    assert completed_rows(engine, "one") == [(0, 1)]


def test_a_keyed_step_parked_on_its_token_waits_after_a_restart_instead_of_failing_closed(
    engine: TestEngine, workflow_kind: str
) -> None:
    _, tokens = parked_run(engine, "keyed", idempotency_key="approval-1")
    restarted = engine.simulate_restart()
    handle = restarted.resume("keyed")  # before the fix: ActivityReconciliationIndeterminateError
    blocked = 2 if workflow_kind == "async" else 1  # async: the run's loop and the step's thread
    wait_until(lambda: restarted.clock._blocked == blocked, what="the resumed run waits")
    restarted.complete_async_activity(tokens[0], "approved")
    assert handle.result(20) == "approved"
    assert len(tokens) == 1
    assert completed_rows(restarted, "keyed") == [(0, 1)]
    restarted.close()
