"""Circuit breaker settings: how many failed attempts open an activity's breaker, and for how long.

`CircuitBreaker` is only the configuration an activity carries (``@activity(circuit_breaker=...)``
or ``%%weft_activity --circuit-breaker 5/30s``); the breaker's state, shared by every run of the
activity in one engine and kept in the journal, is `weft_nb.engine.circuit_breakers`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from weft_nb.base.retry import Duration, parse_duration

_FORM = "'FAILURES/RESET_TIMEOUT' or 'FAILURES/RESET_TIMEOUT/HALF_OPEN_CALLS', e.g. '5/30s'"


@dataclasses.dataclass(frozen=True)
class CircuitBreaker:
    """A circuit breaker for one activity: closed, open after failures, half-open after a pause.

    Args:
        failure_threshold: Consecutive failed attempts (of any runs) that open the breaker.
        reset_timeout: How long an open breaker rejects attempts before it half-opens: a
            duration (``"30s"``, ``"5m"``, seconds as a number, a ``timedelta``).
        half_open_max_calls: Trial attempts let through at once while half-open; the first
            outcome closes the breaker (success) or opens it again (failure).

    Raises:
        ValueError: A count below 1, or a reset timeout that is not a positive duration.
    """

    failure_threshold: int = 5
    reset_timeout: Duration = 30.0
    half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "half_open_max_calls"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"circuit breaker {name} must be an integer >= 1; got {count!r}")
        try:
            seconds = parse_duration(self.reset_timeout, what="circuit breaker reset_timeout")
        except ValueError as exc:  # its advice "None for no limit" does not fit a breaker
            raise ValueError(str(exc).split("; for no limit")[0]) from None
        if not seconds:
            raise ValueError(
                "circuit breaker reset_timeout must be longer than 0 (seconds, or a string like "
                f"'30s' or '5m'); got {self.reset_timeout!r}"
            )
        object.__setattr__(self, "reset_timeout", seconds)  # stored in seconds, as the policy's

    @property
    def reset_seconds(self) -> float:
        """The reset timeout in seconds."""
        return float(parse_duration(self.reset_timeout) or 0.0)

    def describe(self) -> str:
        """The short form ``%%weft_activity --circuit-breaker`` takes: ``5/30s`` (``/2`` added)."""
        text = f"{self.failure_threshold}/{self.reset_seconds:g}s"
        return text if self.half_open_max_calls == 1 else f"{text}/{self.half_open_max_calls}"

    @classmethod
    def parse(cls, text: str) -> CircuitBreaker:
        """A breaker from its short form: ``"5/30s"`` or ``"5/30s/2"`` (see `describe()`).

        >>> CircuitBreaker.parse("5/30s")
        CircuitBreaker(failure_threshold=5, reset_timeout=30.0, half_open_max_calls=1)
        """
        parts = [part.strip() for part in text.split("/")]
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"circuit breaker {text!r}: expected {_FORM}")
        counts = [parts[0], *parts[2:]]
        if not all(count.isascii() and count.isdigit() for count in counts):
            raise ValueError(f"circuit breaker {text!r}: the counts must be integers; {_FORM}")
        half_open = int(parts[2]) if len(parts) == 3 else 1
        return cls(int(parts[0]), parts[1], half_open)


def circuit_breaker_from(
    value: CircuitBreaker | str | Mapping[str, Any] | None,
) -> CircuitBreaker | None:
    """An activity's ``circuit_breaker`` option as a `CircuitBreaker` (None: no breaker)."""
    if value is None or isinstance(value, CircuitBreaker):
        return value
    if isinstance(value, str):
        return CircuitBreaker.parse(value)
    if isinstance(value, Mapping):
        unknown = set(value) - {f.name for f in dataclasses.fields(CircuitBreaker)}
        if unknown:
            raise ValueError(
                f"unknown circuit breaker option(s) {sorted(unknown)}; expected some of "
                "['failure_threshold', 'reset_timeout', 'half_open_max_calls']"
            )
        return CircuitBreaker(**value)
    raise ValueError(
        f"circuit_breaker must be a weft_nb.CircuitBreaker, a string like '5/30s' or a mapping; "
        f"got {value!r}"
    )
