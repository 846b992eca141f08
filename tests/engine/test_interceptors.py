"""Interceptors wrap runs, steps, attempts (inline and on workers) and durable_activity calls."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError
from weft_nb.testing import MemoryJournal, TestEngine

flaky_failures: list[int] = []

pytestmark = pytest.mark.usefixtures("workflow_kind")


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": "1s"})
def flaky(x: int) -> int:
    if flaky_failures and flaky_failures[0] > 0:
        flaky_failures[0] -= 1
        raise ConnectionError("service down")
    return x + 1


@weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": "1s"})
def double(x: int) -> int:
    return x * 2


@weft_nb.workflow
def two_steps(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(double, ctx.run(flaky, x))


@weft_nb.workflow
def with_memo(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.memo("helper", lambda: weft_nb.durable_activity(double, x))  # type: ignore[no-any-return]


class Recorder(weft_nb.Interceptor):
    """Records every hook call, with what call_next returned or raised."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def _wrap(self, kind: str, ids: tuple[Any, ...], call_next: Callable[[], Any]) -> Any:
        with self.lock:
            self.seen.append((kind, "start", *ids))
        try:
            value = call_next()
        except Exception as exc:
            with self.lock:
                self.seen.append((kind, "raised", *ids, type(exc).__name__))
            raise
        with self.lock:
            self.seen.append((kind, "returned", *ids, value))
        return value

    def intercept_run(self, info: weft_nb.InterceptedRun, call_next: Callable[[], Any]) -> Any:
        return self._wrap("run", (info.workflow,), call_next)

    def intercept_step(self, info: weft_nb.InterceptedStep, call_next: Callable[[], Any]) -> Any:
        return self._wrap("step", (info.activity, info.position), call_next)

    def intercept_attempt(
        self, info: weft_nb.InterceptedAttempt, call_next: Callable[[], Any]
    ) -> Any:
        return self._wrap("attempt", (info.activity, info.position, info.attempt), call_next)

    def intercept_durable_activity(
        self, info: weft_nb.InterceptedStep, call_next: Callable[[], Any]
    ) -> Any:
        return self._wrap("durable", (info.activity, info.durable_activity), call_next)


@pytest.fixture(autouse=True)
def reset() -> None:
    flaky_failures[:] = [1]


def test_hooks_wrap_runs_steps_and_attempts_in_order() -> None:
    recorder = Recorder()
    with TestEngine(MemoryJournal(), interceptors=[recorder]) as engine:
        assert engine.run(two_steps, 1) == 4
    assert recorder.seen == [
        ("run", "start", "two_steps"),
        ("step", "start", "flaky", 0),
        ("attempt", "start", "flaky", 0, 1),
        ("attempt", "raised", "flaky", 0, 1, "ConnectionError"),
        ("attempt", "start", "flaky", 0, 2),
        ("attempt", "returned", "flaky", 0, 2, 2),
        ("step", "returned", "flaky", 0, 2),
        ("step", "start", "double", 1),
        ("attempt", "start", "double", 1, 1),
        ("attempt", "returned", "double", 1, 1, 4),
        ("step", "returned", "double", 1, 4),
        ("run", "returned", "two_steps", 4),
    ]


def test_replayed_steps_are_not_intercepted_but_the_resume_is() -> None:
    recorder = Recorder()
    flaky_failures[:] = [0]
    with TestEngine(MemoryJournal(), interceptors=[recorder]) as engine:
        handle = engine.start(two_steps, 1)
        assert handle.result() == 4
        recorder.seen.clear()
        assert engine.resume(handle.run_id).result() == 4  # finished: nothing runs again
    assert recorder.seen == []


def test_durable_activity_calls_are_intercepted() -> None:
    recorder = Recorder()
    with TestEngine(MemoryJournal(), interceptors=[recorder]) as engine:
        assert engine.run(with_memo, 5) == 10
    kinds = [entry[:3] for entry in recorder.seen]
    assert ("durable", "start", "double") in kinds
    assert recorder.seen.index(("durable", "start", "double", True)) < recorder.seen.index(
        ("attempt", "start", "double", 1_000_001, 1)
    )


class Replacing(weft_nb.Interceptor):
    def intercept_attempt(
        self, info: weft_nb.InterceptedAttempt, call_next: Callable[[], Any]
    ) -> Any:
        return call_next() * 100


def test_a_wrapping_interceptor_replaces_the_result_journaled() -> None:
    flaky_failures[:] = [0]
    journal = MemoryJournal()
    with TestEngine(journal, interceptors=[Replacing()]) as engine:
        handle = engine.start(two_steps, 1)
        assert handle.result() == (1 + 1) * 100 * 2 * 100
        restarted = engine.simulate_restart()
    with restarted:  # the replaced results are the journaled ones: a resume replays them
        assert restarted.resume(handle.run_id).result() == 40_000


class FailingAfter(weft_nb.Interceptor):
    """Raises after the activity returned, on the first attempt only."""

    def __init__(self) -> None:
        self.raised = 0

    def intercept_attempt(
        self, info: weft_nb.InterceptedAttempt, call_next: Callable[[], Any]
    ) -> Any:
        value = call_next()
        if info.attempt == 1:
            self.raised += 1
            raise RuntimeError("interceptor broke")
        return value


def test_an_interceptor_that_raises_fails_the_attempt_and_the_retry_policy_decides() -> None:
    flaky_failures[:] = [0]
    failing = FailingAfter()
    with TestEngine(MemoryJournal(), interceptors=[failing]) as engine:
        handle = engine.start(two_steps, 1)
        assert handle.result() == 4
        attempts = engine.journal.attempts_of_run(handle.run_id)
    assert failing.raised == 2  # both steps' first attempts
    assert {(a.position, a.attempt, a.error_type) for a in attempts} == {
        (0, 1, "RuntimeError"),
        (1, 1, "RuntimeError"),
    }


class AlwaysFailing(weft_nb.Interceptor):
    def intercept_attempt(
        self, info: weft_nb.InterceptedAttempt, call_next: Callable[[], Any]
    ) -> Any:
        raise RuntimeError("refused by interceptor")


def test_an_interceptor_failing_every_attempt_fails_the_run_visibly() -> None:
    with TestEngine(MemoryJournal(), interceptors=[AlwaysFailing()]) as engine:
        handle = engine.start(two_steps, 1)
        with pytest.raises(ActivityFailedError, match="refused by interceptor"):
            handle.result()
        assert engine.journal.get_run(handle.run_id).status == "failed"  # type: ignore[union-attr]


def test_attempts_on_worker_processes_are_intercepted_in_the_kernel() -> None:
    recorder = Recorder()
    flaky_failures[:] = [0]
    executor = weft_nb.ProcessExecutor(max_workers=1)
    with TestEngine(MemoryJournal(), interceptors=[recorder], executor=executor) as engine:
        assert engine.run(two_steps, 1) == 4
    assert ("attempt", "returned", "double", 1, 1, 4) in recorder.seen


def test_listeners_receive_step_and_attempt_events() -> None:
    events: list[tuple[str, int | None]] = []
    with TestEngine(MemoryJournal()) as engine:
        engine.add_listener(lambda e: events.append((e.kind, e.position)))
        engine.run(two_steps, 1)
    kinds = [kind for kind, _ in events]
    assert kinds.count("step_started") == 2
    assert kinds.count("step_completed") == 2
    assert ("attempt_failed", 0) in events
    assert kinds.count("attempt_started") == 3
    assert kinds.count("attempt_completed") == 2


def test_development_mode_still_sees_the_workflow_s_own_code_through_interceptors() -> None:
    @weft_nb.workflow
    def reads_the_clock(ctx: weft_nb.WorkflowContext, x: int) -> float:
        ctx.run(double, x)
        return time.time()

    recorder = Recorder()
    events: list[str] = []
    with TestEngine(MemoryJournal(), interceptors=[recorder], development=True) as engine:
        engine.add_listener(
            lambda e: events.append(e.kind) if e.kind == "development_warning" else None
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", weft_nb.DevelopmentWarning)
            engine.run(reads_the_clock, 1)
    assert events == ["development_warning"]
    assert recorder.seen[0] == ("run", "start", "reads_the_clock")


class CallingTwice(weft_nb.Interceptor):
    """Calls ``call_next`` twice in one hook (``kind``): the work must not run twice."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _twice(self, kind: str, call_next: Callable[[], Any]) -> Any:
        if kind != self.kind:
            return call_next()
        call_next()
        return call_next()

    def intercept_step(self, info: weft_nb.InterceptedStep, call_next: Callable[[], Any]) -> Any:
        return self._twice("step", call_next)

    def intercept_attempt(
        self, info: weft_nb.InterceptedAttempt, call_next: Callable[[], Any]
    ) -> Any:
        return self._twice("attempt", call_next)


ran: list[int] = []


@weft_nb.activity(retry={"max_attempts": 1})
def counted(x: int) -> int:
    ran.append(x)
    return x + 1


@weft_nb.workflow
def one_counted(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(counted, x)


@pytest.mark.parametrize("kind", ["step", "attempt"])
def test_call_next_runs_the_work_once_and_a_second_call_is_refused(kind: str) -> None:
    ran.clear()
    journal = MemoryJournal()
    with TestEngine(journal, interceptors=[CallingTwice(kind)]) as engine:
        handle = engine.start(one_counted, 1)
        with pytest.raises(weft_nb.errors.WeftError, match="call_next\\(\\) twice"):
            handle.result()
    assert ran == [1]  # the activity ran once; no result was journaled over another
