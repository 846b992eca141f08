"""Durable operations where they cannot be journaled raise StepScopeError (issue 13.3)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError, StepScopeError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


@weft_nb.activity
def double(x: int) -> int:
    return 2 * x


OPERATIONS: dict[str, Callable[[weft_nb.WorkflowContext], Any]] = {
    "ctx.run('double')": lambda ctx: ctx.run(double, 1),
    "ctx.submit('double')": lambda ctx: ctx.submit(double, 1),
    "ctx.all": lambda ctx: ctx.all([]),
    "ctx.race": lambda ctx: ctx.race([]),
    "ctx.run_all": lambda ctx: ctx.run_all({"a": (double, 1)}),
    "ctx.sleep": lambda ctx: ctx.sleep(1),
    "ctx.now": lambda ctx: ctx.now(),
    "ctx.wait_for_signal('go')": lambda ctx: ctx.wait_for_signal("go", timeout=1),
    "ctx.memo('inner')": lambda ctx: ctx.memo("inner", lambda: 1),
}


@pytest.mark.parametrize("call", list(OPERATIONS))
def test_every_durable_operation_is_refused_inside_a_memo_callback(
    engine: TestEngine, call: str
) -> None:
    operation = OPERATIONS[call]

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> Any:
        ctx.run(double, 0)
        return ctx.memo("outer", lambda: operation(ctx))

    with pytest.raises(StepScopeError) as caught:
        engine.run(wf)
    message = str(caught.value)
    assert call in message
    assert "ctx.memo('outer')" in message and "step 1" in message
    assert "durable_activity" in message
    assert __file__ in message  # where the call was made


def test_a_memo_with_ctx_run_cannot_make_a_completed_step_run_twice(engine: TestEngine) -> None:
    """The reported scenario: on old code the resumed run re-ran step 'after'."""
    calls: list[str] = []

    @weft_nb.activity
    def record(name: str) -> str:
        calls.append(name)
        return name

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        ctx.memo("helper", lambda: ctx.run(record, "inside"))
        return str(ctx.run(record, "after"))

    with pytest.raises(StepScopeError):
        engine.run(wf)
    assert calls == []


def test_ctx_run_from_another_thread_is_refused(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        errors: list[BaseException] = []

        def helper() -> None:
            try:
                ctx.run(double, 1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=helper, name="my-helper")
        thread.start()
        thread.join()
        assert len(errors) == 1
        raise errors[0]

    with pytest.raises(StepScopeError, match="from thread 'my-helper'.*workflow thread 'weft-run-"):
        engine.run(wf)


def test_an_activity_that_captured_ctx_cannot_take_steps_from_a_parallel_branch(
    engine: TestEngine,
) -> None:
    captured: list[weft_nb.WorkflowContext] = []

    @weft_nb.activity(retry={"max_attempts": 1})
    def sneaky(x: int) -> int:
        return int(captured[0].run(double, x))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[Any]:
        captured.append(ctx)
        return ctx.all([ctx.submit(double, 1), ctx.submit(sneaky, 2)])

    with pytest.raises(ActivityFailedError) as caught:
        engine.run(wf)
    assert caught.value.cause_type == "StepScopeError"
    assert "weft-step" in caught.value.cause_message


def test_parallel_branches_and_durable_activity_in_a_memo_still_work(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> Any:
        both = ctx.all([ctx.submit(double, 1), ctx.submit(double, 2)])
        named = ctx.run_all({"a": (double, 3)})
        helper = ctx.memo("helper", lambda: weft_nb.durable_activity(double, 4))
        return both, named, helper

    assert engine.run(wf) == ([2, 4], {"a": 6}, 8)
