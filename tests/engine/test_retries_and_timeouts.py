"""Retries, backoff, per-attempt / heartbeat / schedule-to-close timeouts, on a virtual clock."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import weft_nb
from weft_nb.errors import (
    ActivityFailedError,
    ActivityHeartbeatTimeoutError,
    ActivityPerAttemptTimeoutError,
    ActivityScheduleToCloseTimeoutError,
)
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def test_default_policy_retries_with_exponential_backoff(engine: TestEngine) -> None:
    starts: list[float] = []

    @weft_nb.activity
    def flaky(x: int) -> int:
        starts.append(engine.clock.now())
        if len(starts) < 3:
            raise ConnectionError("flaky network")
        return x * 10

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(flaky, x)

    assert engine.run(wf, 4) == 40
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [1.0, 2.0]


def test_last_error_surfaces_after_max_attempts(engine: TestEngine) -> None:
    calls: list[int] = []

    @weft_nb.activity
    def broken(_: object) -> None:
        calls.append(1)
        raise ValueError(f"bad row {len(calls)}")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(broken)

    with pytest.raises(ActivityFailedError) as info:
        engine.run(wf)
    error = info.value
    assert len(calls) == 3
    assert (error.attempts, error.cause_type, error.cause_message) == (3, "ValueError", "bad row 3")
    assert "broken" in str(error) and "step 0" in str(error)
    assert "ValueError" in error.traceback_text
    assert isinstance(error.__cause__, ValueError)
    # every failed attempt is journaled
    rows = engine.journal.query("SELECT attempt, error_type FROM attempts ORDER BY attempt")
    assert rows == [(1, "ValueError"), (2, "ValueError"), (3, "ValueError")]


@pytest.mark.parametrize(
    "matcher", [KeyError, LookupError, "KeyError", "weft_nb-permanent", "builtins.KeyError"]
)
def test_non_retryable_errors_fail_at_once(engine: TestEngine, matcher: object) -> None:
    calls: list[int] = []

    @weft_nb.activity(non_retryable_errors=[matcher])  # type: ignore[list-item]
    def lookup(_: object) -> None:
        calls.append(1)
        raise (
            KeyError("weft_nb-permanent")
            if matcher != "weft_nb-permanent"
            else RuntimeError("weft_nb-permanent")
        )

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(lookup)

    with pytest.raises(ActivityFailedError) as info:
        engine.run(wf)
    assert len(calls) == 1
    assert info.value.attempts == 1


def test_call_option_retry_is_a_partial_override(engine: TestEngine) -> None:
    starts: list[float] = []

    @weft_nb.activity(retry={"initial_backoff": "250ms"})
    def flaky(_: object) -> None:
        starts.append(engine.clock.now())
        raise OSError("disk busy")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(flaky, retry={"max_attempts": 4, "max_backoff": "0.6s"})

    with pytest.raises(ActivityFailedError):
        engine.run(wf)
    gaps = [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == [0.25, 0.5, 0.6]


def test_per_attempt_timeout_sets_cancelled_and_retries_with_a_fresh_cap(
    engine: TestEngine,
) -> None:
    seen: list[tuple[int, float, bool]] = []

    @weft_nb.activity(timeout="5s")
    def stuck(_: object, activity: weft_nb.ActivityContext) -> None:
        started = engine.clock.now()
        cancelled = activity.cancelled.wait(100)  # virtual seconds
        seen.append((activity.attempt, engine.clock.now() - started, cancelled))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(stuck)

    t0 = engine.clock.now()
    with pytest.raises(ActivityPerAttemptTimeoutError) as info:
        engine.run(wf)
    assert info.value.attempts == 3
    assert "timeout of 5s" in str(info.value)
    # three attempts of 5 s each, with 1 s and 2 s backoff between them
    assert engine.clock.now() - t0 == 5 + 1 + 5 + 2 + 5
    assert sorted(seen) == [(1, 5.0, True), (2, 5.0, True), (3, 5.0, True)]


def test_timeout_call_option_overrides_the_definition(engine: TestEngine) -> None:
    @weft_nb.activity(timeout="1h")
    def slow(_: object, activity: weft_nb.ActivityContext) -> str:
        return "late" if not activity.sleep(30) else "cancelled"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> str:
        return ctx.run(slow, timeout=10, retry={"max_attempts": 1})

    with pytest.raises(ActivityPerAttemptTimeoutError):
        engine.run(wf)


def test_schedule_to_close_fails_at_the_retry_decision_without_waiting(
    engine: TestEngine,
) -> None:
    calls: list[float] = []

    @weft_nb.activity(schedule_to_close_timeout="4s", retry={"max_attempts": 10})
    def flaky(_: object) -> None:
        calls.append(engine.clock.now())
        raise TimeoutError("upstream slow")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(flaky)

    t0 = engine.clock.now()
    with pytest.raises(ActivityScheduleToCloseTimeoutError) as info:
        engine.run(wf)
    # attempts at 0, 1, 3; the next backoff (4 s) would start at 7 >= 4: give up at 3 at once
    assert [c - t0 for c in calls] == [0.0, 1.0, 3.0]
    assert engine.clock.now() - t0 == 3.0
    assert info.value.attempts == 3
    assert info.value.cause_type == "TimeoutError"


def test_schedule_to_close_has_no_effect_without_retries(engine: TestEngine) -> None:
    @weft_nb.activity(schedule_to_close_timeout="1ms", retry={"max_attempts": 1})
    def once(_: object) -> None:
        raise RuntimeError("nope")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(once)

    with pytest.raises(ActivityFailedError) as info:
        engine.run(wf)
    assert type(info.value) is ActivityFailedError


def test_heartbeat_timeout_fails_a_silent_attempt_and_retries(engine: TestEngine) -> None:
    attempts: list[int] = []

    @weft_nb.activity(heartbeat_timeout="3s", retry={"max_attempts": 2})
    def goes_quiet(_: object, activity: weft_nb.ActivityContext) -> str:
        attempts.append(activity.attempt)
        for i in range(5):  # 5 beats, 1 s apart: alive
            activity.heartbeat({"i": i})
            activity.sleep(1)
        if activity.attempt == 1:
            activity.sleep(60)  # silent: the watchdog fires at 3 s
            activity.raise_if_cancelled()
        return "done"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> str:
        return ctx.run(goes_quiet)

    assert engine.run(wf) == "done"
    assert attempts == [1, 2]
    rows = engine.journal.query("SELECT attempt, error_type FROM attempts")
    assert rows == [(1, "ActivityHeartbeatTimeoutError")]


def test_heartbeat_timeout_error_after_last_attempt(engine: TestEngine) -> None:
    @weft_nb.activity
    def silent(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.sleep(10)

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(silent, heartbeat_timeout=2, retry={"max_attempts": 1})

    with pytest.raises(ActivityHeartbeatTimeoutError) as info:
        engine.run(wf)
    assert "no heartbeat for 2s" not in str(info.value)  # message names the option
    assert "heartbeat_timeout of 2s" in str(info.value)


def test_async_activity_runs_and_is_cancelled_at_an_await_on_timeout(tmp_path: Path) -> None:
    saw_cancel = threading.Event()

    @weft_nb.activity
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @weft_nb.activity(timeout=0.2, retry={"max_attempts": 1})
    async def hang(_: object) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: int) -> int:
        value = ctx.run(fetch, x)
        try:
            ctx.run(hang)
        except ActivityPerAttemptTimeoutError:
            return value
        return -1

    with weft_nb.Engine(tmp_path / "j.duckdb") as engine:
        assert engine.run(wf, 1, timeout=30) == 2
    assert saw_cancel.wait(10), "the coroutine was not cancelled at its await"


def test_sync_and_async_take_optional_context(engine: TestEngine) -> None:
    @weft_nb.activity
    def no_args() -> str:
        return "a"

    @weft_nb.activity
    async def with_ctx(x: str, activity: weft_nb.ActivityContext) -> str:
        return f"{x}{activity.activity_name}{activity.attempt}"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.run(with_ctx, ctx.run(no_args))

    assert engine.run(wf) == "awith_ctx1"
