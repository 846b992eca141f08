"""A resume's fast path (`weft_nb.engine.plain_replay`) answers as the general path does.

Plain ``ctx.run`` calls (JSON input and result, no options) are answered from the journal's
columns; anything it does not decide, a changed step above all, goes the general way and is
reported exactly as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

import weft_nb
from weft_nb.errors import NonDeterminismError, PayloadError, StepScopeError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")

VALUES: list[Any] = [
    0,
    -3,
    "text",
    'caf\u00e9 "q" {',
    None,
    1.5,
    True,
    [1, [2]],
    {"b": 1, "a": [2]},
]


class Plain:
    """Plain steps on ``VALUES``, then a step that blocks until released (the 'crash' point)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.gate, self.blocked = threading.Event(), threading.Event()
        self.offset: dict[int, Any] = {}  # position -> a changed input on the next execution
        calls, gate, blocked, offset = self.calls, self.gate, self.blocked, self.offset

        @weft_nb.activity
        def echo(x: Any) -> Any:
            calls[repr(x)] += 1
            return {"got": x} if isinstance(x, dict) else [x]

        @weft_nb.activity
        def wait(x: Any) -> Any:
            blocked.set()
            gate.wait(10)
            return x

        @weft_nb.workflow
        def plain(ctx: weft_nb.WorkflowContext, n: int) -> list[Any]:
            results = [ctx.run(echo, offset.get(i, v)) for i, v in enumerate(VALUES)]
            return [*results, ctx.run(wait, n)]

        self.echo, self.wait, self.workflow = echo, wait, plain


def _crash(engine: TestEngine, plain: Plain) -> TestEngine:
    engine.start(plain.workflow, 7, run_id="r")
    assert plain.blocked.wait(10)
    restarted = engine.simulate_restart()
    plain.gate.set()  # the abandoned thread finishes but can no longer write
    return restarted


def test_plain_steps_replay_with_their_recorded_results(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)
    handle = engine.resume("r")
    expected = [{"got": v} if isinstance(v, dict) else [v] for v in VALUES]
    assert handle.result(10) == [*expected, 7]
    assert handle.replayed_steps == len(VALUES)
    assert sum(plain.calls.values()) == len(VALUES)  # none ran twice
    engine.close()


def test_a_changed_input_among_plain_steps_supersedes_from_there(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)
    plain.offset[3] = "changed"
    with pytest.warns(weft_nb.StepChangedWarning, match="step 3 .*its input changed"):
        result = engine.resume("r").result(10)
    assert result[3] == ["changed"]
    assert plain.calls["'changed'"] == 1
    assert plain.calls["0"] == 1  # before the change: from the journal
    assert plain.calls[repr(VALUES[4])] == 2  # after it: run again
    assert [(e.kind, e.position) for e in engine.journal.events_of("r")][-1] == ("step_changed", 3)
    engine.close()


def test_a_changed_input_with_on_change_error_raises(journal_path: object) -> None:
    plain = Plain()
    engine = _crash(TestEngine(journal_path, on_change="error"), plain)  # type: ignore[arg-type]
    plain.offset[2] = "other"
    with pytest.raises(NonDeterminismError, match="step 2 .*input changed"):
        engine.resume("r").result(10)
    assert sum(plain.calls.values()) == len(VALUES)
    engine.close()


def test_a_changed_activity_source_is_reported(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)

    @weft_nb.activity(name="echo")
    def echo_v2(x: Any) -> Any:
        return ["v2", x]

    engine.register(echo_v2)

    @weft_nb.workflow(name="plain")
    def plain_v2(ctx: weft_nb.WorkflowContext, n: int) -> list[Any]:
        return [ctx.run("echo", v) for v in VALUES] + [ctx.run(plain.wait, n)]

    engine.register(plain_v2)
    with pytest.warns(weft_nb.StepChangedWarning, match="step 0 .*source changed"):
        result = engine.resume("r").result(10)
    assert result[0] == ["v2", 0]
    engine.close()


def test_a_damaged_recorded_result_is_reported_as_before(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)
    engine.journal.query("UPDATE steps SET result = 'not json' WHERE run_id = 'r' AND position = 4")
    with pytest.raises(PayloadError, match=r"recorded result of step 4 \('echo'.*decoded"):
        engine.resume("r").result(10)
    assert plain.calls["0"] == 1  # the steps before it were answered from the journal
    engine.close()


def test_a_journaled_step_called_from_another_thread_is_refused(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)

    @weft_nb.workflow(name="plain")
    def plain_v2(ctx: weft_nb.WorkflowContext, n: int) -> Any:
        ctx.run(plain.echo, VALUES[0])
        errors: list[BaseException] = []

        def helper() -> None:  # position 1 is journaled: the fast path would answer it
            try:
                ctx.run(plain.echo, VALUES[1])
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=helper, name="my-helper")
        thread.start()
        thread.join()
        raise errors[0]

    engine.register(plain_v2)
    with pytest.raises(StepScopeError, match="from thread 'my-helper'"):
        engine.resume("r").result(10)
    engine.close()


def test_a_journaled_step_called_inside_a_memo_callback_is_refused(engine: TestEngine) -> None:
    plain = Plain()
    engine = _crash(engine, plain)
    # No record at position 0 (as for a step still running at the crash): the memo that takes
    # it on resume runs its callback, whose ctx.run reaches journaled position 1.
    engine.journal.query("DELETE FROM steps WHERE run_id = 'r' AND position = 0")

    @weft_nb.workflow(name="plain")
    def plain_v2(ctx: weft_nb.WorkflowContext, n: int) -> Any:
        return ctx.memo("m", lambda: ctx.run(plain.echo, VALUES[1]))

    engine.register(plain_v2)
    with pytest.raises(StepScopeError, match=r"inside the ctx.memo\('m'\) callback"):
        engine.resume("r").result(10)
    assert sum(plain.calls.values()) == len(VALUES)
    engine.close()


def test_a_run_with_a_gap_replays_each_position_from_its_own_row(engine: TestEngine) -> None:
    calls: list[int] = []
    gate, blocked = threading.Event(), threading.Event()

    @weft_nb.activity
    def count(x: int) -> int:
        calls.append(x)
        return len(calls)

    @weft_nb.activity
    def hold(x: int) -> int:
        blocked.set()
        gate.wait(10)
        return x

    @weft_nb.workflow
    def same_input(ctx: weft_nb.WorkflowContext) -> list[int]:
        return [ctx.run(count, 1) for _ in range(3)] + [ctx.run(hold, 0)]

    engine.start(same_input, run_id="g")
    assert blocked.wait(10)
    engine = engine.simulate_restart()
    gate.set()
    # Rows now hold positions 1, 2, 3: row i is not position i, and rows 0 and 1 would match
    # positions 0 and 1's signatures.
    engine.journal.query("DELETE FROM steps WHERE run_id = 'g' AND position = 0")
    assert engine.resume("g").result(10) == [4, 2, 3, 0]
    engine.close()
