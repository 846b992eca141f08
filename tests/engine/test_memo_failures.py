"""A ``ctx.memo`` callback that raised: the failure is an answer, remembered across crashes.

Before the fix a failed callback was not journaled: a crash later in the run re-ran it on resume,
its unkeyed ``durable_activity`` calls went on at attempt ``max_attempts + 1``, and a failure the
workflow had caught could turn into a value (found by tests/test_model_based.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError, WorkflowFailedError
from weft_nb.testing import TestEngine

calls: Counter[str] = Counter()
gate = threading.Event()

pytestmark = pytest.mark.usefixtures("workflow_kind")


class QuotaError(Exception):
    """A plain exception of the workflow's own, raised inside a memo callback."""


class Unpicklable(Exception):
    """Its constructor takes two arguments but passes one on: plain pickle cannot rebuild it."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


@weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 1})
def flaky(x: int, actx: weft_nb.ActivityContext) -> int:
    """Fails its first two attempts; a third (past its retry policy) would succeed."""
    calls["flaky"] += 1
    if actx.attempt <= 2:
        raise RuntimeError(f"attempt {actx.attempt} failed")
    return x * 10


@weft_nb.activity
def blocker(x: int) -> int:
    """The step at which the process dies: it waits until the test lets it go."""
    calls["blocker"] += 1
    assert gate.wait(30)
    return x


def _fails_with(kind: str) -> Any:
    calls["callback"] += 1
    if kind == "activity":
        return weft_nb.durable_activity("flaky", 4)  # ActivityFailedError after 2 attempts
    if kind == "plain":
        raise QuotaError("quota exceeded for tenant 7")
    if kind == "unpicklable":
        raise Unpicklable("lookup", "no such id")

    class Local(Exception):
        """Defined inside a function: pickle cannot find its class again."""

    raise Local("defined in a helper")


@weft_nb.workflow
def caught(ctx: weft_nb.WorkflowContext, kind: str) -> list[Any]:
    answers: list[Any] = []
    for _ in range(2):  # the second call with the same key gets the remembered answer
        try:
            answers.append(["value", ctx.memo("m", lambda: _fails_with(kind))])
        except ActivityFailedError as error:
            answers.append(["ActivityFailedError", error.cause_type, error.attempts])
        except QuotaError as error:
            answers.append(["QuotaError", str(error)])
        except WorkflowFailedError as error:
            answers.append(["WorkflowFailedError", error.cause_type, error.cause_message])
        except Unpicklable as error:
            answers.append(["Unpicklable", str(error)])
        except Exception as error:
            answers.append([type(error).__name__, str(error)])
    answers.append(ctx.run("blocker", 1))
    return answers


@pytest.fixture(autouse=True)
def reset() -> None:
    calls.clear()
    gate.clear()


def _crash_at_blocker(engine: TestEngine, kind: str) -> tuple[TestEngine, Any]:
    """Run ``caught`` until the step after the memos, crash there, resume, return the result."""
    engine.register(flaky)
    engine.register(blocker)
    engine.start(caught, kind, run_id="r")
    wait_until(lambda: calls["blocker"] == 1)
    restarted = engine.simulate_restart()
    gate.set()  # lets the dead engine's attempt go; it cannot write any more
    return restarted, restarted.resume("r").result(10)


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("activity", ["ActivityFailedError", "RuntimeError", 2]),
        ("plain", ["QuotaError", "quota exceeded for tenant 7"]),
        ("unpicklable", ["Unpicklable", "lookup: no such id"]),
    ],
)
def test_a_caught_memo_failure_is_replayed_after_a_crash_not_run_again(
    engine: TestEngine, kind: str, answer: list[Any]
) -> None:
    restarted, result = _crash_at_blocker(engine, kind)
    # Before the fix: the resume ran the callback again, `flaky` as attempt 3, and the memo's
    # answer became ["value", 40]; a plain exception's callback also ran again.
    assert result == [answer, answer, 1]
    assert calls["callback"] == 1  # the repeated key did not run the callback again either
    assert calls["flaky"] == (2 if kind == "activity" else 0)
    calls.clear()
    assert restarted.run(caught, kind, run_id="free") == [answer, answer, 1]  # no crash: same
    assert calls["callback"] == 1
    restarted.close()


def test_an_exception_pickle_cannot_store_replays_as_workflow_failed_error(
    engine: TestEngine,
) -> None:
    gate.set()
    engine.register(flaky)
    engine.register(blocker)
    raised = ["Local", "defined in a helper"]
    assert engine.run(caught, "local", run_id="free") == [raised, raised, 1]
    gate.clear()
    calls.clear()
    restarted, result = _crash_at_blocker(engine, "local")
    replayed = ["WorkflowFailedError", "Local", "defined in a helper"]
    assert result == [replayed, replayed, 1]  # documented in docs/engine.md (memo)
    assert calls["callback"] == 1
    restarted.close()


def _falls_back() -> list[Any]:
    calls["callback"] += 1
    try:
        first: Any = weft_nb.durable_activity("flaky", 4)
    except ActivityFailedError as error:
        first = ["fell back", error.cause_type, error.attempts]
    return [first, weft_nb.durable_activity("blocker", 1)]  # the process dies in here


@weft_nb.workflow
def falls_back(ctx: weft_nb.WorkflowContext, _: None) -> Any:
    return ctx.memo("m", _falls_back)


def test_an_unkeyed_call_that_failed_for_good_is_not_run_again_when_its_memo_is(
    engine: TestEngine,
) -> None:
    """A crash inside the callback runs it again; a call whose retries were spent stays failed."""
    engine.register(flaky)
    engine.register(blocker)
    engine.start(falls_back, None, run_id="r")
    wait_until(lambda: calls["blocker"] == 1)
    restarted = engine.simulate_restart()
    gate.set()
    # Before the fix: `flaky` ran again as attempt 3 of 2, succeeded, and the memo's value
    # became [40, 1] instead of the crash-free run's.
    assert restarted.resume("r").result(10) == [["fell back", "RuntimeError", 2], 1]
    assert calls["callback"] == 2  # the callback itself runs again: it had not finished
    assert calls["flaky"] == 2
    restarted.close()
