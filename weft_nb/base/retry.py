"""Durations and the retry policy (Weft's defaults: 3 attempts, 1 s initial, x2, capped at 30 s)."""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from weft_nb.base.payloads import exception_text

Duration = float | int | str | datetime.timedelta
"""Seconds as a number, a ``datetime.timedelta``, or a string: ``"250ms"``, ``"1s"``, ``"5m"``,
``"1.5h"``, ``"2d"``."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
MAX_DURATION = 100 * 365.25 * 86400.0
"""The longest duration accepted (100 years): anything longer is a mistake, and an infinite or
astronomically long wait would fail later with ``OverflowError`` deep inside ``threading``."""
_ACCEPTED = (
    "use a finite number of seconds from 0 to 100 years, a datetime.timedelta, or a string like "
    "'250ms', '1s', '5m', '1.5h', '2d'; for no limit, leave the option unset (None)"
)


def parse_duration(value: Duration | None, *, what: str = "duration") -> float | None:
    """Return ``value`` in seconds; ``None`` stays ``None`` (no limit).

    Refused at once with ``ValueError`` (the message shows the value and the accepted forms): a
    negative, NaN or infinite value, one above `MAX_DURATION`, or something that is not a
    duration at all.

    >>> parse_duration("250ms"), parse_duration("1.5h"), parse_duration(2)
    (0.25, 5400.0, 2.0)
    >>> parse_duration(datetime.timedelta(minutes=2))
    120.0
    >>> parse_duration(None) is None
    True
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a duration; got {value!r}. {_ACCEPTED}")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"{what} {value!r} is not a duration. {_ACCEPTED}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(
            f"{what} must be a duration; got {type(value).__name__} {value!r}. {_ACCEPTED}"
        )
    if not 0 <= seconds <= MAX_DURATION:  # also rejects NaN and infinities
        raise ValueError(f"{what} must be between 0 and 100 years; got {value!r}. {_ACCEPTED}")
    return seconds


def required_duration(value: Duration, *, what: str) -> float:
    """`parse_duration` for a duration that has no "no limit" (a sleep, a timer): None refused.

    >>> required_duration("2s", what="ctx.timer duration")
    2.0
    """
    seconds = parse_duration(value, what=what)
    if seconds is None:
        raise ValueError(
            f"{what} is required; got None. Pass a number of seconds, a datetime.timedelta, or "
            "a string like '250ms', '5m'"
        )
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
        if not 1 <= self.backoff_multiplier < math.inf:  # also rejects NaN
            raise ValueError(
                f"backoff_multiplier must be a finite number >= 1; got {self.backoff_multiplier}"
            )
        object.__setattr__(
            self, "initial_backoff", parse_duration(self.initial_backoff, what="initial_backoff")
        )
        object.__setattr__(
            self, "max_backoff", parse_duration(self.max_backoff, what="max_backoff")
        )
        object.__setattr__(self, "non_retryable_errors", tuple(self.non_retryable_errors))

    def backoff(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        # Both are float seconds once __post_init__ ran; parse_duration keeps mypy informed.
        initial = parse_duration(self.initial_backoff) or 0.0
        cap = parse_duration(self.max_backoff) or 0.0
        try:
            delay = initial * self.backoff_multiplier ** (failed_attempt - 1)
        except OverflowError:  # thousands of attempts: the cap applies long before
            return cap
        return min(delay, cap)

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
