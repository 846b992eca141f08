"""`weft_nb.CircuitBreaker`: the settings, their short form, and the values refused."""

from __future__ import annotations

import datetime

import pytest

import weft_nb
from weft_nb.base.circuit_breaker import CircuitBreaker, circuit_breaker_from
from weft_nb.base.definitions import definition_of


def test_defaults_and_durations_in_seconds() -> None:
    breaker = weft_nb.CircuitBreaker()
    assert (breaker.failure_threshold, breaker.reset_seconds, breaker.half_open_max_calls) == (
        5,
        30.0,
        1,
    )
    assert CircuitBreaker(reset_timeout=datetime.timedelta(minutes=2)).reset_seconds == 120.0
    assert CircuitBreaker(2, "250ms") == CircuitBreaker(2, 0.25)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/30s", CircuitBreaker(5, 30.0, 1)), ("3/1m/2", CircuitBreaker(3, 60.0, 2))],
)
def test_the_short_form_parses_and_round_trips(text: str, expected: CircuitBreaker) -> None:
    assert CircuitBreaker.parse(text) == expected
    assert CircuitBreaker.parse(expected.describe()) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", "expected 'FAILURES/RESET_TIMEOUT'"),
        ("5/30s/1/2", "expected"),
        ("x/30s", "must be integers"),
        ("5/30s/-1", "must be integers"),
        ("0/30s", "failure_threshold must be an integer >= 1"),
        ("5/0s", "reset_timeout must be longer than 0"),
        ("5/soon", "not a duration"),
    ],
)
def test_bad_short_forms_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker.parse(text)


def test_the_activity_option_takes_a_breaker_a_string_or_a_mapping() -> None:
    assert circuit_breaker_from(None) is None
    assert circuit_breaker_from("2/5s") == CircuitBreaker(2, 5)
    assert circuit_breaker_from({"failure_threshold": 2}) == CircuitBreaker(2)
    with pytest.raises(ValueError, match="circuit_breaker must be"):
        circuit_breaker_from(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="half_open_max_calls"):
        CircuitBreaker(half_open_max_calls=True)  # type: ignore[arg-type]


def test_the_decorator_keeps_it_on_the_definition() -> None:
    @weft_nb.activity(circuit_breaker="4/10s")
    def call(x: int) -> int:
        return x

    definition = definition_of(call)
    assert isinstance(definition, weft_nb.ActivityDefinition)
    assert definition.circuit_breaker == CircuitBreaker(4, 10)
    assert "circuit breaker 4/10s" in definition.summary()


def test_bad_settings_get_a_breaker_s_own_message() -> None:
    with pytest.raises(ValueError, match="counts must be integers"):
        CircuitBreaker.parse("\u0661/30s")  # an Arabic-Indic one: isdigit() says yes, int() too
    with pytest.raises(ValueError, match=r"unknown circuit breaker option\(s\) \['bogus'\]"):
        circuit_breaker_from({"bogus": 1})
    with pytest.raises(ValueError, match="reset_timeout") as info:
        CircuitBreaker(reset_timeout=-5)
    assert "no limit" not in str(info.value)  # "leave it unset" is no advice for a breaker
