"""Typed activities and workflows shared by the typing cases (see tests/test_typing.py)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import weft_nb


class TrainConfig(BaseModel):
    learning_rate: float
    epochs: int = 2


@weft_nb.activity
def prepare(source: str) -> list[float]:
    return [float(len(source)), 2.0]


@weft_nb.activity(retry={"max_attempts": 2})
def train(config: TrainConfig, activity: weft_nb.ActivityContext) -> float:
    activity.heartbeat({"epoch": config.epochs})
    return config.learning_rate * config.epochs


@weft_nb.activity
async def fetch(url: str) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


@weft_nb.activity
def version() -> str:
    return "1"


@weft_nb.workflow
def pipeline(ctx: weft_nb.WorkflowContext, source: str) -> dict[str, float]:
    rows = ctx.run(prepare, source)
    loss = ctx.run(train, TrainConfig(learning_rate=0.5))
    return {"loss": loss, "rows": float(len(rows))}


@weft_nb.workflow
def no_input(ctx: weft_nb.WorkflowContext) -> int:
    return len(ctx.run(prepare, "abc"))


@weft_nb.activity
def scaled(value: float, *, factor: float = 2.0) -> float:
    return value * factor


@weft_nb.activity
def sample(count: int = 5) -> int:
    return count


@weft_nb.workflow
def from_config(ctx: weft_nb.WorkflowContext, config: TrainConfig) -> float:
    return config.learning_rate
