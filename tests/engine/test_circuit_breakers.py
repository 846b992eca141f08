"""Circuit breakers on the virtual clock: every transition, shared by runs, kept over a restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError, CircuitOpenError, JournalIOError
from weft_nb.journal.protocol import BreakerRecord
from weft_nb.testing import MemoryJournal, TestEngine, VirtualClock

RESET = 30.0

pytestmark = pytest.mark.usefixtures("workflow_kind")


class Service:
    """A remote service the activity calls: up or down, and when each call reached it."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.up = False
        self.calls: list[float] = []

    def call(self, x: int) -> int:
        self.calls.append(self.clock.now())
        if not self.up:
            raise ConnectionError("service down")
        return x + 1


def _setup(engine: TestEngine, service: Service, **retry: Any) -> Any:
    """Register ``charge`` (breaker 2/30s) and a workflow calling it; return the workflow."""
    policy = {"max_attempts": 1, "initial_backoff": 1, **retry}

    @weft_nb.activity(
        name="charge",
        retry=policy,
        circuit_breaker=weft_nb.CircuitBreaker(failure_threshold=2, reset_timeout="30s"),
    )
    def charge(x: int) -> int:
        return service.call(x)

    @weft_nb.workflow
    def pay(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    engine.register(charge)
    return pay


def _breaker(engine: TestEngine) -> BreakerRecord:
    [record] = engine.journal.breakers()
    return record


def _fails(engine: TestEngine, workflow: Any) -> ActivityFailedError:
    handle = engine.start(workflow, 1)
    with pytest.raises(ActivityFailedError) as info:
        handle.result(timeout=30)
    assert info.value.run_id == handle.run_id
    return info.value


def _trip(engine: TestEngine, service: Service) -> Any:
    """Open the breaker: two runs, one failed attempt each (shared across runs)."""
    pay = _setup(engine, service)
    _fails(engine, pay)
    assert _breaker(engine).state == "closed" and _breaker(engine).failures == 1
    _fails(engine, pay)
    assert len(service.calls) == 2
    return pay


def test_consecutive_failures_of_two_runs_open_the_breaker(engine: TestEngine) -> None:
    service = Service(engine.clock)
    _trip(engine, service)
    record = _breaker(engine)
    assert (record.state, record.failures, record.opened_at) == ("open", 2, engine.clock.now())


def test_a_success_resets_the_count_of_a_closed_breaker(engine: TestEngine) -> None:
    service = Service(engine.clock)
    pay = _setup(engine, service)
    _fails(engine, pay)
    service.up = True
    assert engine.run(pay, 1) == 2
    service.up = False
    _fails(engine, pay)
    assert (_breaker(engine).state, _breaker(engine).failures) == ("closed", 1)


def test_an_open_breaker_fails_attempts_at_once_without_calling(engine: TestEngine) -> None:
    service = Service(engine.clock)
    pay = _trip(engine, service)
    opened_at = engine.clock.now()
    error = _fails(engine, pay)
    assert error.cause_type == "CircuitOpenError"
    assert len(service.calls) == 2  # the activity was not called
    assert engine.clock.now() == opened_at  # failed at once
    attempts = engine.journal.attempts_of_run(error.run_id)
    assert [a.error_type for a in attempts] == ["CircuitOpenError"]
    assert "may half-open" in attempts[0].error_message
    assert _breaker(engine).opened_at == opened_at  # a rejection neither counts nor re-opens


def test_the_retry_policy_decides_after_a_rejection(engine: TestEngine) -> None:
    service = Service(engine.clock)
    _trip(engine, service)

    @weft_nb.activity(
        name="charge",
        retry={"max_attempts": 5, "non_retryable_errors": [CircuitOpenError]},
        circuit_breaker="2/30s",
    )
    def charge(x: int) -> int:
        return service.call(x)

    @weft_nb.workflow
    def pay_once(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    engine.register(charge)
    start = engine.clock.now()
    assert _fails(engine, pay_once).attempts == 1
    assert engine.clock.now() == start and len(service.calls) == 2


def test_after_the_reset_timeout_a_trial_success_closes_it(engine: TestEngine) -> None:
    service = Service(engine.clock)
    pay = _trip(engine, service)
    engine.clock.advance(RESET)
    service.up = True
    assert engine.run(pay, 1) == 2
    assert len(service.calls) == 3  # the half-open trial reached the service
    record = _breaker(engine)
    assert (record.state, record.failures) == ("closed", 0)


def test_a_trial_failure_opens_it_again(engine: TestEngine) -> None:
    service = Service(engine.clock)
    pay = _trip(engine, service)
    engine.clock.advance(RESET)
    _fails(engine, pay)
    assert len(service.calls) == 3
    record = _breaker(engine)
    assert (record.state, record.opened_at) == ("open", engine.clock.now())
    assert _fails(engine, pay).cause_type == "CircuitOpenError"  # open for a new reset timeout
    assert len(service.calls) == 3


def test_retries_wait_until_the_breaker_may_half_open(engine: TestEngine) -> None:
    service = Service(engine.clock)
    _trip(engine, service)
    opened_at = engine.clock.now()
    pay = _setup(engine, service, max_attempts=10)  # backoff 1s, 2s, 4s...: shorter than 30s
    service.up = True
    engine.clock.advance(5)
    assert engine.run(pay, 1) == 2
    assert service.calls[2:] == [opened_at + RESET]  # one rejection, then the trial at 30s
    assert _breaker(engine).state == "closed"


def test_the_failure_that_opens_it_makes_its_own_retry_wait(engine: TestEngine) -> None:
    service = Service(engine.clock)
    pay = _setup(engine, service, max_attempts=4)
    start = engine.clock.now()
    _fails(engine, pay)
    # 2 failures open it (the 2nd after a 1s backoff); each later attempt is a trial 30s on.
    assert [t - start for t in service.calls] == [0.0, 1.0, 31.0, 61.0]


def test_a_half_open_breaker_lets_one_trial_through_at_a_time() -> None:
    clock = VirtualClock(auto_advance=False)
    with TestEngine(MemoryJournal(), clock=clock) as engine:
        service = Service(clock)
        pay = _trip(engine, service)
        clock.advance(RESET)
        release, entered = threading.Event(), threading.Event()

        def slow_call(x: int) -> int:
            service.calls.append(clock.now())
            entered.set()
            release.wait(10)
            return x + 1

        service.call = slow_call  # type: ignore[method-assign]
        trial = engine.start(pay, 1)
        assert entered.wait(10)
        second = _fails(engine, pay)  # the trial is running: a second attempt is rejected
        assert second.cause_type == "CircuitOpenError"
        release.set()
        assert trial.result(timeout=10) == 2
        assert len(service.calls) == 3 and _breaker(engine).state == "closed"


def test_an_open_breaker_survives_closing_and_reopening_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    clock = VirtualClock()
    service = Service(clock)
    with TestEngine(path, clock=clock) as engine:
        _trip(engine, service)
        opened_at = clock.now()
    clock.advance(10)  # the kernel restarts 10 s later: the service failed a moment ago
    with TestEngine(path, clock=clock) as reopened:
        pay = _setup(reopened, service)
        assert _fails(reopened, pay).cause_type == "CircuitOpenError"
        assert len(service.calls) == 2
        assert _breaker(reopened).opened_at == opened_at
        clock.advance(RESET)
        service.up = True
        assert reopened.run(pay, 1) == 2  # half-open after the reset timeout, across the restart


def test_an_activity_without_a_breaker_writes_nothing(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 2})
    def broken(_: object) -> None:
        raise ValueError("no")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, _: object) -> None:
        ctx.run(broken)

    with pytest.raises(ActivityFailedError):
        engine.run(wf)
    assert engine.journal.breakers() == []


def test_a_trial_failure_reopens_even_below_a_raised_threshold(engine: TestEngine) -> None:
    service = Service(engine.clock)
    _trip(engine, service)

    @weft_nb.activity(name="charge", retry={"max_attempts": 1}, circuit_breaker="9/30s")
    def charge(x: int) -> int:
        return service.call(x)

    @weft_nb.workflow
    def pay(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    engine.register(charge)  # redefined with a higher threshold while open
    engine.clock.advance(RESET)
    _fails(engine, pay)
    record = _breaker(engine)
    assert (record.state, record.opened_at) == ("open", engine.clock.now())


def test_cancelled_attempts_and_an_activitys_own_circuit_open_error_do_not_count(
    engine: TestEngine,
) -> None:
    entered = threading.Event()

    @weft_nb.activity(name="charge", retry={"max_attempts": 1}, circuit_breaker="1/30s")
    def charge(x: int, activity: weft_nb.ActivityContext) -> int:
        if x == 1:  # a breaker of a service this activity calls, not this one's
            raise CircuitOpenError("inner", opened_at=0.0, retry_at=30.0)
        entered.set()
        for _ in range(6000):  # real time: a virtual-clock wait would time out at once
            if activity.cancelled.is_set():
                raise RuntimeError("stopped because the run was cancelled")
            time.sleep(0.005)
        raise AssertionError("never cancelled")

    @weft_nb.workflow
    def pay(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    _fails(engine, pay)  # x=1
    handle = engine.start(pay, 2)
    assert entered.wait(10)
    engine.cancel(handle.run_id)
    with pytest.raises(weft_nb.errors.WeftError):
        handle.result(timeout=30)
    assert engine.journal.breakers() == []  # threshold 1, and nothing counted


def test_a_timed_out_attempt_counts_as_a_failure(engine: TestEngine) -> None:
    @weft_nb.activity(
        name="charge", retry={"max_attempts": 1}, timeout="1s", circuit_breaker="1/30s"
    )
    def charge(x: int, activity: weft_nb.ActivityContext) -> int:
        activity.cancelled.wait(100)  # the virtual clock reaches the 1 s timeout first
        return x

    @weft_nb.workflow
    def pay(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    assert _fails(engine, pay).cause_type == "ActivityPerAttemptTimeoutError"
    assert _breaker(engine).state == "open"


class FullDiskForBreakers(MemoryJournal):
    """A journal whose breaker table is on a disk that is full; everything else is written."""

    def save_breaker(self, record: BreakerRecord) -> None:
        raise JournalIOError("disk full", path="breakers", cause="disk full", errno=28)


def test_a_breaker_state_the_journal_refuses_never_costs_the_attempt_its_outcome() -> None:
    clock = VirtualClock(auto_advance=False)
    with TestEngine(FullDiskForBreakers(), clock=clock) as engine:
        service = Service(clock)
        pay = _setup(engine, service)
        failed = _fails(engine, pay)  # the failure is the activity's, not the journal's
        assert "service down" in str(failed)
        _fails(engine, pay)  # the breaker opens in this engine, though it was not recorded
        rejected = engine.start(pay, 1)
        with pytest.raises(ActivityFailedError, match="circuit breaker"):
            rejected.result(timeout=30)
        assert len(service.calls) == 2  # the open breaker kept the third call away
        clock.advance(RESET)
        service.up = True
        assert engine.run(pay, 5) == 6  # the trial succeeds; its result is journaled
