"""Sync and ``async def`` workflows side by side: the cost per step of each (issue 15).

``python benchmarks/bench_async.py [STEPS]``: runs a sequential workflow and a fan-out of STEPS
trivial steps (default 300) in both kinds on an in-memory journal, best of three, and prints the
time per step. An async workflow's ``await ctx.run`` runs its step on a worker thread and wakes
the run's loop when it settles, where a sync ``ctx.run`` runs the step on the workflow thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import weft_nb
from weft_nb.testing import MemoryJournal


@weft_nb.activity
def inc(x: int) -> int:
    return x + 1


@weft_nb.workflow
def sync_sequential(ctx: weft_nb.WorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = ctx.run(inc, x)
    return x


@weft_nb.workflow
async def async_sequential(ctx: weft_nb.AsyncWorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await ctx.run(inc, x)
    return x


@weft_nb.workflow
def sync_fan_out(ctx: weft_nb.WorkflowContext, n: int) -> int:
    return sum(ctx.all([ctx.submit(inc, i) for i in range(n)]))


@weft_nb.workflow
async def async_fan_out(ctx: weft_nb.AsyncWorkflowContext, n: int) -> int:
    return sum(await asyncio.gather(*[ctx.run(inc, i) for i in range(n)]))


def main(steps: int) -> None:
    workflows: list[Any] = [sync_sequential, async_sequential, sync_fan_out, async_fan_out]
    for workflow in workflows:
        times = []
        for _ in range(3):
            with weft_nb.Engine(MemoryJournal()) as engine:
                began = time.perf_counter()
                engine.run(workflow, steps)
                times.append(time.perf_counter() - began)
        best = min(times)
        per_step = best / steps * 1e6
        print(
            f"{workflow.__name__:17s} {steps} steps: {best * 1e3:6.0f} ms, {per_step:4.0f} us/step"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
