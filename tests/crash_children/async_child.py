"""Child process for tests/crash/test_async_crash.py: an ``async def`` workflow killed mid-run.

Usage: ``python async_child.py CONFIG.json``. Config keys: ``journal``, ``evidence`` (a
JSON-lines file), ``kill`` (``"in_step"``: activity ``finish`` SIGKILLs its own process on its first
execution; ``"in_sleep"``: the workflow notes ``sleeping`` once its durable sleep's deadline is
journaled, and the parent SIGKILLs the child during the sleep). Every activity execution appends
``{"ran": name}`` (fsynced) before it returns; a finished run appends ``{"outcome": value}`` and
exits 0. The first start runs the workflow; a second child resumes it.
"""

from __future__ import annotations

import asyncio
import os
import signal

from evidence_files import append_json_line, read_config

import weft_nb

CONFIG = read_config()
RUN_ID = "async-run"


def ran(name: str) -> None:
    append_json_line(CONFIG["evidence"], {"ran": name})


def first_execution(name: str) -> bool:
    with open(CONFIG["evidence"], encoding="utf-8") as handle:
        return sum(f'"ran": "{name}"' in line for line in handle) == 1


@weft_nb.activity
async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    ran(f"fetch {x}")
    return x * 10


@weft_nb.activity
def finish(total: int) -> str:
    ran("finish")
    if CONFIG["kill"] == "in_step" and first_execution("finish"):
        os.kill(os.getpid(), signal.SIGKILL)
    return f"total {total}"


@weft_nb.workflow
async def crawl(ctx: weft_nb.AsyncWorkflowContext, n: int) -> str:
    pages = await asyncio.gather(*[ctx.run(fetch, i) for i in range(n)])
    # The sleep's deadline is journaled when ctx.sleep is called, before the memo notes it.
    sleep = ctx.sleep("8s" if CONFIG["kill"] == "in_sleep" else "0s")
    await ctx.memo("note", lambda: ran("sleeping"))
    await sleep
    result: str = await ctx.run(finish, sum(pages))
    return result


if __name__ == "__main__":
    with weft_nb.Engine(CONFIG["journal"]) as engine:
        engine.register(fetch, finish, crawl)
        if engine.journal.get_run(RUN_ID) is not None:
            outcome = engine.resume(RUN_ID).result()
        else:
            outcome = engine.run(crawl, 3, run_id=RUN_ID)
        append_json_line(CONFIG["evidence"], {"outcome": outcome})
