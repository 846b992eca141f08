"""Branches of ctx.all / ctx.race / ctx.run_all retry like ctx.run (issue 13.14).

A deliberate difference from the seed (Weft), where an activity inside ``ctx.all``/``ctx.race``
does not retry and ``schedule_to_close_timeout`` applies to top-level ``ctx.run`` only; see
docs/engine.md, "Branches retry (a deliberate difference from Weft)".
"""

from __future__ import annotations

import pytest

import weft_nb
from weft_nb.errors import ActivityScheduleToCloseTimeoutError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def test_a_flaky_branch_retries_with_backoff_and_its_siblings_are_kept(
    engine: TestEngine,
) -> None:
    attempts: dict[int, list[float]] = {1: [], 2: []}

    @weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 5})
    def fetch(i: int) -> int:
        attempts[i].append(engine.clock.now())
        if i == 2 and len(attempts[2]) < 3:
            raise ConnectionError("flaky")
        return i * 10

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[int]:
        return ctx.all([ctx.submit(fetch, 1), ctx.submit(fetch, 2)])

    assert engine.run(wf) == [10, 20]
    assert len(attempts[1]) == 1
    starts = attempts[2]
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [5.0, 10.0]
    rows = engine.journal.query("SELECT position, attempts FROM steps ORDER BY position")
    assert rows == [(0, 1), (1, 3)]


def test_a_race_branch_retries_before_it_can_win(engine: TestEngine) -> None:
    calls: list[str] = []

    @weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 1})
    def quick_but_flaky(_: None) -> str:
        calls.append("quick")
        if calls.count("quick") == 1:
            raise ConnectionError("flaky")
        return "quick"

    @weft_nb.activity
    def slow(_: None, activity: weft_nb.ActivityContext) -> str:
        activity.sleep(60)
        return "slow"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> tuple[int, str]:
        index, value = ctx.race([ctx.submit(quick_but_flaky), ctx.submit(slow)])
        return index, str(value)

    assert engine.run(wf) == (0, "quick")
    assert calls == ["quick", "quick"]


def test_schedule_to_close_bounds_a_branch_retry_sequence(engine: TestEngine) -> None:
    @weft_nb.activity(
        retry={"max_attempts": 10, "initial_backoff": 4, "backoff_multiplier": 1},
        schedule_to_close_timeout=10,
    )
    def always_down(_: None) -> None:
        raise ConnectionError("down")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        try:
            ctx.run_all({"a": (always_down,), "b": (always_down,)})
        except ActivityScheduleToCloseTimeoutError as exc:
            return f"gave up after {exc.attempts} attempts"
        return "unexpected"

    assert engine.run(wf) == "gave up after 3 attempts"
