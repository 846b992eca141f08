"""An activity error whose ``__str__`` raises is retried and recorded by its type (issue 13.7).

The run-level test (tests/test_storage_real.py) raises such an error in the workflow body only.
Raised by an activity, the retry policy's matcher called ``str(error)``: the ``RuntimeError`` of
the broken ``__str__`` replaced the activity's error, no attempt was recorded, the policy's
retries were skipped and the run was marked failed with the wrong error.
"""

from __future__ import annotations

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError, ActivityScheduleToCloseTimeoutError
from weft_nb.testing import TestEngine

HANG_GUARD = 60.0  # seconds; only stops a hang from blocking the suite


class Unprintable(ValueError):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_unprintable_activity_error_is_retried(engine: TestEngine) -> None:
    calls: list[int] = []

    @weft_nb.activity(retry={"max_attempts": 2})
    def flaky_unprintable(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise Unprintable()
        return x * 2

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(flaky_unprintable, x)

    assert engine.start(wf, 4, run_id="r").result(timeout=HANG_GUARD) == 8
    assert calls == [4, 4]
    rows = engine.journal.query("SELECT error_type, error_message FROM attempts WHERE run_id = 'r'")
    assert rows == [("Unprintable", "<unprintable Unprintable>")]


@pytest.mark.parametrize("budget", [None, 0.001])
def test_an_unprintable_activity_error_ends_the_step_by_its_type(
    engine: TestEngine, budget: float | None
) -> None:
    @weft_nb.activity(retry={"max_attempts": 2}, schedule_to_close_timeout=budget)
    def always_unprintable(x: int) -> int:
        raise Unprintable()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(always_unprintable, x)

    expected = ActivityScheduleToCloseTimeoutError if budget else ActivityFailedError
    with pytest.raises(expected) as caught:
        engine.start(wf, 1, run_id="u").result(timeout=HANG_GUARD)
    assert caught.value.cause_type == "Unprintable"
    assert caught.value.cause_message == "<unprintable Unprintable>"
    record = engine.journal.get_run("u")
    assert record is not None and record.status == "failed"
