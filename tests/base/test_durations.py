"""Durations (issue 13.11): ``timedelta`` accepted everywhere, absurd values refused early."""

from __future__ import annotations

import datetime
import math

import pytest

import weft_nb
from weft_nb.base.retry import MAX_DURATION, RetryPolicy, parse_duration
from weft_nb.errors import ActivityPerAttemptTimeoutError, SignalTimeoutError
from weft_nb.testing import TestEngine

TWO_MINUTES = datetime.timedelta(minutes=2)


def test_timedelta_is_a_duration() -> None:
    assert parse_duration(TWO_MINUTES) == 120.0
    assert parse_duration(datetime.timedelta(milliseconds=250)) == 0.25
    policy = RetryPolicy(initial_backoff=datetime.timedelta(seconds=3), max_backoff=TWO_MINUTES)
    assert (policy.initial_backoff, policy.max_backoff) == (3.0, 120.0)


@pytest.mark.parametrize(
    "bad",
    [
        math.inf,
        -math.inf,
        math.nan,
        1e300,
        10**400,
        MAX_DURATION * 2,
        "1000000d",
        -1,
        datetime.timedelta(days=-1),
        datetime.timedelta(days=999_999_999),
        [1],
        b"5s",
    ],
    ids=lambda value: repr(value)[:24],
)
def test_absurd_durations_are_refused_at_parse_time_saying_what_was_given(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(bad, what="timeout")  # type: ignore[arg-type]  # deliberately wrong
    message = str(caught.value)
    assert "timeout" in message and "timedelta" in message and "100 years" in message


def test_an_infinite_timeout_is_refused_when_the_activity_is_defined() -> None:
    with pytest.raises(ValueError, match="timeout must be between 0 and 100 years; got inf"):
        weft_nb.activity(timeout=math.inf)(lambda: None)
    with pytest.raises(ValueError, match="initial_backoff"):
        weft_nb.activity(retry={"initial_backoff": 1e300})(lambda: None)


def test_an_infinite_call_option_fails_the_step_with_a_value_error(engine: TestEngine) -> None:
    @weft_nb.activity
    def noop() -> int:
        return 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return int(ctx.run(noop, timeout=1e300))

    with pytest.raises(ValueError, match="timeout must be between 0 and 100 years; got 1e"):
        engine.run(wf)


def test_backoff_never_overflows() -> None:
    policy = RetryPolicy(max_attempts=100_000, max_backoff=7)
    assert policy.backoff(5_000) == 7.0


def test_timedelta_everywhere_in_a_run(engine: TestEngine) -> None:
    @weft_nb.activity(timeout=datetime.timedelta(seconds=5), retry={"max_attempts": 1})
    def slow(_: None, activity: weft_nb.ActivityContext) -> str:
        activity.sleep(60)
        return "late"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[str]:
        start = ctx.now()
        ctx.sleep(datetime.timedelta(minutes=1))
        slept = ctx.now() - start
        outcomes = [f"slept {slept:g}"]
        try:
            ctx.wait_for_signal("never", timeout=datetime.timedelta(seconds=30))
        except SignalTimeoutError:
            outcomes.append("signal timed out")
        try:
            ctx.run(slow, heartbeat_timeout=datetime.timedelta(hours=1))
        except ActivityPerAttemptTimeoutError:
            outcomes.append("attempt timed out")
        return outcomes

    assert engine.run(wf) == ["slept 60", "signal timed out", "attempt timed out"]
