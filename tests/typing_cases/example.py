"""Typed uses of the public API: `mypy --strict` reports nothing here (tests/test_typing.py).

Each `assert_type` states what a type checker infers: an activity function passed to `ctx.run`
gives its return type (awaited, for an `async def`), a name gives `Any`, and a run handle carries
its workflow's result type. `main()` also runs it all, so the example is real code.
"""

from __future__ import annotations

from typing import Any

from activities import (
    TrainConfig,
    fetch,
    from_config,
    no_input,
    pipeline,
    prepare,
    sample,
    scaled,
    train,
    version,
)
from typing_extensions import assert_type

import weft_nb
from weft_nb.testing import MemoryJournal, TestEngine


def in_a_memo() -> float:
    rows = weft_nb.durable_activity(prepare, "from a helper")
    assert_type(rows, list[float])
    return rows[0]


@weft_nb.workflow
def child_sum(ctx: weft_nb.WorkflowContext, values: list[float]) -> float:
    return sum(values)


@weft_nb.workflow
def everything(ctx: weft_nb.WorkflowContext, source: str) -> list[Any]:
    rows = ctx.run(prepare, source, timeout="1m")
    assert_type(rows, list[float])
    loss = ctx.run(train, TrainConfig(learning_rate=0.1))
    assert_type(loss, float)
    from_fields = ctx.run(train, {"learning_rate": 0.2})  # a pydantic input's fields, validated
    assert_type(from_fields, float)
    body = ctx.run(fetch, "https://example.org")
    assert_type(body, bytes)
    assert_type(ctx.run(version), str)
    by_name = ctx.run("prepare", source)
    assert_type(by_name, Any)

    futures = [ctx.submit(prepare, name) for name in ("a", "bb")]
    assert_type(futures[0], weft_nb.StepFuture[list[float]])
    assert_type(ctx.all(futures), list[list[float]])
    index, first = ctx.race([ctx.submit(fetch, "a"), ctx.submit(fetch, "b")])
    assert_type(first, bytes)
    # Futures of different result types: ctx.all gives list[object]; each future keeps its type.
    mixed = [ctx.submit(version), ctx.submit(train, TrainConfig(learning_rate=1.0))]
    ctx.all(mixed)
    assert_type(futures[1].result(), list[float])

    assert_type(ctx.run_workflow(child_sum, rows), float)  # a child workflow's result type
    assert_type(ctx.start_workflow(child_sum, rows), weft_nb.StepFuture[float])
    assert_type(ctx.run_workflow("child_sum", rows, run_id=f"{ctx.run_id}.c1"), Any)
    tick = ctx.timer("5s")
    assert_type(tick.result(), None)
    winner, _ = ctx.race([ctx.submit(fetch, "c"), tick])
    assert_type(winner, int)

    assert_type(ctx.memo("helper", in_a_memo), float)
    assert_type(ctx.memo("answer", lambda: 42), int)
    doubled = ctx.run(scaled, 2.0, retry={"max_attempts": 2})  # a keyword-only extra is fine
    assert_type(doubled, float)
    defaulted = ctx.run(sample)  # no input: the parameter's default (5) applies
    assert_type(defaulted, int)
    return [rows, loss, from_fields, body, by_name, index, first, doubled, defaulted]


def main() -> tuple[dict[str, float], int, list[Any]]:
    """Run the typed workflows on a test engine; their results, typed."""
    with TestEngine(MemoryJournal()) as engine:
        handle = engine.start(pipeline, "data.csv")
        assert_type(handle, weft_nb.RunHandle[dict[str, float]])
        summary = handle.result()
        assert_type(summary, dict[str, float])
        rows = engine.run(no_input, run_id="no-input")
        assert_type(rows, int)
        assert_type(engine.run(everything, "data.csv"), list[Any])
        fields = engine.run(from_config, {"learning_rate": 0.3})  # validated into the model
        assert_type(fields, float)
        assert fields == 0.3
        by_name = engine.start("everything", "x")  # registered by the run above
        assert_type(by_name, weft_nb.RunHandle[Any])
        return summary, rows, by_name.result()
