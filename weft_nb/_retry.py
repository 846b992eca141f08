"""Durations and the retry policy (Weft's defaults: 3 attempts, 1 s initial, x2, capped at 30 s)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._payloads import exception_text

Duration = float | int | str
"""Seconds as a number, or a string: ``"250ms"``, ``"1s"``, ``"5m"``, ``"1.5h"``, ``"2d"``."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Duration | None, *, what: str = "duration") -> float | None:
    """Return ``value`` in seconds.

    >>> parse_duration("250ms"), parse_duration("1.5h"), parse_duration(2)
    (0.25, 5400.0, 2.0)
    >>> parse_duration(None) is None
    True
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds or a string like '250ms', '5m'; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if match is None:
            raise ValueError(
                f"{what} {value!r} is not a duration; use seconds or a string like "
                "'250ms', '1s', '5m', '1.5h', '2d'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"{what} must be a non-negative number of seconds; got {value!r}")
    return seconds


ErrorMatcher = type[BaseException] | str
"""A non-retryable error: an exception class, a class name, or an exact message."""


def error_matches(error: BaseException, matchers: Iterable[ErrorMatcher]) -> bool:
    """True when ``error`` matches a class, a class name in its MRO, or an exact message.

    >>> error_matches(KeyError("x"), [LookupError])
    True
    >>> error_matches(ValueError("bad input"), ["bad input"])
    True
    >>> error_matches(ValueError(), ["KeyError"])
    False
    """
    names = {cls.__name__ for cls in type(error).__mro__} | {
        f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__
    }
    message = exception_text(error)
    for matcher in matchers:
        if isinstance(matcher, str):
            if matcher in names or matcher == message:
                return True
        elif isinstance(error, matcher):
            return True
    return False


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried. The defaults are Weft's.

    Attributes:
        max_attempts: Attempts in all, the first included (1 means no retry).
        initial_backoff: Wait before the second attempt (seconds, or a duration string).
        backoff_multiplier: Each further wait is the previous one times this.
        max_backoff: Cap on any single wait.
        non_retryable_errors: Exception classes, class names or exact messages that fail at once.

    >>> [RetryPolicy().backoff(n) for n in (1, 2, 3, 6)]
    [1.0, 2.0, 4.0, 30.0]
    """

    max_attempts: int = 3
    initial_backoff: Duration = 1.0
    backoff_multiplier: float = 2.0
    max_backoff: Duration = 30.0
    non_retryable_errors: tuple[ErrorMatcher, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an int >= 1; got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {self.max_attempts}")
        if self.backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1; got {self.backoff_multiplier}")
        object.__setattr__(
            self, "initial_backoff", parse_duration(self.initial_backoff, what="initial_backoff")
        )
        object.__setattr__(
            self, "max_backoff", parse_duration(self.max_backoff, what="max_backoff")
        )
        object.__setattr__(self, "non_retryable_errors", tuple(self.non_retryable_errors))

    def backoff(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        initial = float(self.initial_backoff)
        delay = initial * self.backoff_multiplier ** (failed_attempt - 1)
        return min(delay, float(self.max_backoff))

    def is_retryable(self, error: BaseException) -> bool:
        """False when ``error`` is listed in ``non_retryable_errors``."""
        return not error_matches(error, self.non_retryable_errors)

    def merged(self, override: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """This policy with a partial override applied (a mapping, or a whole policy)."""
        if override is None:
            return self
        if isinstance(override, RetryPolicy):
            return override
        unknown = set(override) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown retry option(s) {sorted(unknown)}; expected some of "
                f"{[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **override)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly description, for the journal and summaries."""
        return {
            "max_attempts": self.max_attempts,
            "initial_backoff": self.initial_backoff,
            "backoff_multiplier": self.backoff_multiplier,
            "max_backoff": self.max_backoff,
            "non_retryable_errors": [
                m if isinstance(m, str) else m.__name__ for m in self.non_retryable_errors
            ],
        }


DEFAULT_RETRY_POLICY = RetryPolicy()
