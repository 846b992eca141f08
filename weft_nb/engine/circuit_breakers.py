"""Circuit breakers: an activity whose attempts keep failing is not called until it may recover.

One `CircuitBreakers` per engine (``rt.breakers``) holds the breaker of every activity that has a
`CircuitBreaker` setting, shared by all runs. ``closed``: attempts run, and consecutive failed
attempts are counted; ``failure_threshold`` of them open it. ``open``: an attempt fails at once
with `CircuitOpenError`, the activity not called, and its retry waits until the breaker may
half-open. Once ``reset_timeout`` has passed the breaker is half-open: up to
``half_open_max_calls`` trial attempts run at once; a success closes it, a failure opens it again.

The state is written to the journal (`Journal.save_breaker`) whenever it changes, so an engine
opened on the same journal after a restart finds an open breaker open. Half-open is not stored:
it is an open breaker past its reset timeout, and trial attempts in flight die with their
process. Writing the state is best effort: when the journal refuses it (a full disk), the
breaker still moves in this engine, the failure is logged on ``weft_nb.journal``, and the
attempt's own outcome is journaled as usual.

Only attempts of the activity that failed count (an exception, a timeout): cancelled attempts, an
engine that stopped, a parked step and `CircuitOpenError` itself do not. An activity without a
breaker pays one attribute test per attempt.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from weft_nb.activity.checkpoints import needs_environment
from weft_nb.base.circuit_breaker import CircuitBreaker
from weft_nb.base.clock import Clock
from weft_nb.base.definitions import ActivityDefinition
from weft_nb.base.operational import QuietLogger
from weft_nb.errors import ActivityTimeoutError, CircuitOpenError
from weft_nb.executors.attempts import AttemptOutcome, AttemptRequest
from weft_nb.journal.protocol import BREAKER_CLOSED, BREAKER_OPEN, BreakerRecord, Journal

RunAttempt = Callable[[AttemptRequest, threading.Event], AttemptOutcome | None]


@dataclasses.dataclass
class _Breaker:
    record: BreakerRecord  # as last written to the journal
    trials: int = 0  # half-open trial attempts running now (never durable)


_LOG = QuietLogger("weft_nb.journal")


class CircuitBreakers:
    """The circuit breakers of one engine's activities, loaded from its journal on first use."""

    def __init__(self, journal: Journal, clock: Clock) -> None:
        self._journal = journal
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, _Breaker] | None = None

    def guard(
        self, request: AttemptRequest, wake: threading.Event, run: RunAttempt
    ) -> AttemptOutcome | None:
        """Run one attempt through its activity's breaker: ``run(request, wake)``, or a rejection.

        An activity without a breaker runs as it is (None: cancelled, as `Executor.run()`).
        While the breaker is open the outcome is a `CircuitOpenError` and ``run`` is not called;
        otherwise the attempt's outcome moves the breaker (see the module docstring).
        """
        config = request.definition.circuit_breaker
        if config is None:
            return run(request, wake)
        name = request.definition.name
        trial, rejection = self._admit(name, config)
        if rejection is not None:
            return AttemptOutcome(ok=False, error=rejection)
        outcome: AttemptOutcome | None = None
        try:
            outcome = run(request, wake)
        finally:
            self._settle(name, config, trial, _verdict(request, outcome))
        return outcome

    def backoff(self, definition: ActivityDefinition, delay: float) -> float:
        """The wait before a retry: ``delay``, or longer while the activity's breaker is open."""
        config = definition.circuit_breaker
        if config is None:
            return delay
        with self._lock:
            breaker = self._breaker(definition.name)
            if breaker.record.state != BREAKER_OPEN:
                return delay
            now = self._clock.now()
            return max(delay, _retry_at(breaker, config, now) - now)

    def states(self) -> list[BreakerRecord]:
        """Every breaker this engine knows (the journal's, and those used since), by activity."""
        with self._lock:
            known = self._known()
            return [dataclasses.replace(known[name].record) for name in sorted(known)]

    def _known(self) -> dict[str, _Breaker]:
        """The breakers by activity name (under the lock), read from the journal the first time."""
        if self._breakers is None:
            self._breakers = {b.activity: _Breaker(b) for b in self._journal.breakers()}
        return self._breakers

    def _breaker(self, name: str) -> _Breaker:
        """The breaker of activity ``name`` (under the lock); a new, closed one if none is known."""
        known = self._known()
        found = known.get(name)
        if found is None:
            record = BreakerRecord(
                activity=name,
                state=BREAKER_CLOSED,
                failures=0,
                opened_at=None,
                updated_at=self._clock.now(),
            )
            found = known[name] = _Breaker(record)
        return found

    def _admit(self, name: str, config: CircuitBreaker) -> tuple[bool, CircuitOpenError | None]:
        """Whether an attempt may run now: ``(is a half-open trial, rejection or None)``."""
        with self._lock:
            breaker = self._breaker(name)
            record = breaker.record
            if record.state != BREAKER_OPEN:
                return False, None
            now = self._clock.now()
            retry_at = _retry_at(breaker, config, now)
            if retry_at <= now:
                breaker.trials += 1
                return True, None
            assert record.opened_at is not None
            return False, CircuitOpenError(name, opened_at=record.opened_at, retry_at=retry_at)

    def _settle(self, name: str, config: CircuitBreaker, trial: bool, verdict: bool | None) -> None:
        """Move the breaker by an attempt's verdict: True ok, False failed, None neither."""
        with self._lock:
            breaker = self._breaker(name)
            if trial:
                breaker.trials -= 1
            record = breaker.record
            if verdict is None or (record.state == BREAKER_OPEN and not trial):
                return  # not counted; or admitted before it opened: only trials decide now
            now = self._clock.now()
            if verdict:
                if record.state == BREAKER_CLOSED and record.failures == 0:
                    return  # the common case: nothing changes, nothing is written
                changed = dataclasses.replace(
                    record, state=BREAKER_CLOSED, failures=0, half_open_at=None
                )
            elif trial or record.failures + 1 >= config.failure_threshold:
                changed = dataclasses.replace(
                    record,
                    state=BREAKER_OPEN,
                    failures=record.failures + 1,
                    opened_at=now,
                    half_open_at=now + config.reset_seconds,
                )
            else:
                changed = dataclasses.replace(record, failures=record.failures + 1)
            changed.updated_at = now
            breaker.record = changed
            try:
                self._journal.save_breaker(changed)
            except Exception as exc:  # best effort: the attempt's own outcome must not be lost
                _LOG.warning(
                    "circuit breaker of %r: could not record its state (%s); it is in effect in "
                    "this engine, and a restart starts from the last recorded state",
                    name,
                    exc,
                    extra={"activity": name},
                )


def _retry_at(breaker: _Breaker, config: CircuitBreaker, now: float) -> float:
    """When an open breaker may let a trial attempt through.

    That is its reset timeout after it opened; or a whole reset timeout from ``now`` while the
    half-open trials it allows are all running.
    """
    assert breaker.record.opened_at is not None
    half_open_at = breaker.record.opened_at + config.reset_seconds
    if half_open_at <= now and breaker.trials >= config.half_open_max_calls:
        return now + config.reset_seconds
    return half_open_at


def _verdict(request: AttemptRequest, outcome: AttemptOutcome | None) -> bool | None:
    """What an attempt says about the service: True ok, False failed, None nothing."""
    if outcome is None:
        return None  # raised out of the executor: the engine's trouble, not the activity's
    if outcome.ok:
        return True
    error = outcome.error
    if not isinstance(error, Exception) or isinstance(error, CircuitOpenError):
        return None  # EngineStopped, CompleteAsync (parked), KeyboardInterrupt; or a rejection
    if needs_environment(error) is not None:
        return None  # this process lacks what checkpoints need: nothing about the service
    if request.ctx.cancelled.is_set() and not isinstance(error, ActivityTimeoutError):
        return None  # cancelled (run cancelled, engine closing): not a failure of the service
    return False
