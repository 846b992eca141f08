"""Durations, retry policy validation, definitions, and the doctests of the pure modules."""

from __future__ import annotations

import doctest
from collections.abc import Iterator

import pytest

import weft_nb
from weft_nb import testing
from weft_nb.base import circuit_breaker as _circuit_breaker
from weft_nb.base import payloads as _payloads
from weft_nb.base import retry as _retry
from weft_nb.base.retry import RetryPolicy, parse_duration


@pytest.mark.parametrize("module", [_retry, _payloads, _circuit_breaker, testing])
def test_doctests(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert tried > 0
    assert failures == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("5m", 300.0), ("1.5h", 5400.0), ("2d", 172800.0), (3, 3.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["soon", "-1s", "1 week", True, -2])
def test_bad_durations_say_what_is_accepted(bad: object) -> None:
    with pytest.raises(ValueError, match="duration|non-negative|seconds"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_retry_policy_defaults_are_wefts() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff, policy.backoff_multiplier) == (3, 1.0, 2.0)
    assert policy.max_backoff == 30.0
    assert [policy.backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"max_attempts": 1.5}, {"backoff_multiplier": 0.5}]
)
def test_retry_policy_rejects_nonsense(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_partial_override_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown retry option"):
        RetryPolicy().merged({"attempts": 5})


def test_decorators_bare_and_called_keep_the_function_callable() -> None:
    @weft_nb.activity
    def plain(x: int) -> int:
        return x + 1

    @weft_nb.activity(name="renamed", timeout="2s", queue="gpu", retry={"max_attempts": 5})
    def configured(x: int) -> int:
        return x

    assert plain(1) == 2
    definition = configured.__weft_definition__  # type: ignore[attr-defined]
    assert (definition.name, definition.timeout, definition.queue) == ("renamed", 2.0, "gpu")
    assert definition.retry.max_attempts == 5
    assert "renamed" in definition.summary()


def test_activities_with_too_many_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match=r"\(input\) or \(input, ctx\)"):

        @weft_nb.activity
        def three(a: int, b: int, c: int) -> int:
            return a

    with pytest.raises(TypeError, match="not a generator"):

        @weft_nb.workflow
        def generator(ctx: object) -> Iterator[int]:
            yield 1


def test_unknown_call_option_is_refused(tmp_path: object) -> None:
    @weft_nb.activity
    def noop(_: object) -> None:
        return None

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(noop, retries=3)

    with testing.TestEngine() as engine, pytest.raises(TypeError, match="unknown ctx.run option"):
        engine.run(wf)
