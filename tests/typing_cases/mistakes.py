"""Wrong uses of the typed API: mypy must report each line marked `# E` (tests/test_typing.py).

A marked line may name the error code mypy must give (`# E: assignment`); no other line may have
an error. Not imported anywhere: it only exists for the type checker.
"""

# ruff: noqa: F841 - an annotated assignment of the wrong type is the mistake under test

from __future__ import annotations

from activities import TrainConfig, fetch, from_config, no_input, pipeline, prepare, train, version

import weft_nb
from weft_nb.testing import TestEngine


@weft_nb.activity
def two_values(value: float, factor: float) -> float:  # the 2nd parameter gets the ActivityContext
    return value * factor


@weft_nb.workflow
def wrong(ctx: weft_nb.WorkflowContext, source: str) -> str:
    ctx.run(prepare, 42)  # E
    ctx.run(train, "fast")  # E
    ctx.run(train, TrainConfig(learning_rate=1.0), 3)  # E
    ctx.run(fetch, b"not a str")  # E
    ctx.run(version, "an input it does not take")  # E
    ctx.submit(prepare, 1.5)  # E
    weft_nb.durable_activity(prepare, None)  # E
    loss: str = ctx.run(train, TrainConfig(learning_rate=1.0))  # E: assignment
    body: str = ctx.run(fetch, "https://example.org")  # E: assignment
    names: list[str] = ctx.all([ctx.submit(prepare, "a")])  # E: arg-type
    first: int = ctx.race([ctx.submit(version)])[1]  # E: assignment
    counted: str = ctx.memo("count", lambda: 3)  # E: assignment
    ctx.run(two_values, 1.0)  # E
    ctx.run(prepare, "x", retries=2)  # E: call-overload
    ctx.submit(prepare, "x", timeout=[1])  # E: call-overload
    weft_nb.durable_activity(prepare, "x", retries=2)  # E: call-overload
    ctx.run("prepare", "x", retries=2)  # E: call-overload
    return ctx.run(prepare, source)  # E: return-value


def start_them(engine: TestEngine) -> None:
    engine.start(pipeline, 3)  # E
    engine.start(pipeline)  # E
    engine.run(no_input, "an input it does not take")  # E
    engine.start(pipeline, "x", run_id=7)  # E
    handle: weft_nb.RunHandle[str] = engine.start(pipeline, "x")  # E: arg-type
    total: int = engine.run(pipeline, "x")  # E: assignment
    rows: str = engine.start(no_input).result()  # E: assignment
    engine.run(from_config, 0.3)  # E
    engine.start(from_config, {"learning_rate": 0.3}, retries=2)  # E: call-overload
