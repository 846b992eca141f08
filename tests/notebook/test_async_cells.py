"""Cells that ``await`` (issue 15): async activity and workflow cells, run by ``%weft run``."""

from __future__ import annotations

import asyncio
import threading

import pytest
from helpers import weft_magics
from IPython.core.interactiveshell import InteractiveShell

from weft_nb.errors import WorkflowCancelledError

FETCH = """
await asyncio.sleep(0)
calls.append(url)
url.upper()
"""

CRAWL = """
pages = await asyncio.gather(*[ctx.run(fetch, u) for u in urls])
await ctx.sleep("1s")
[len(p) for p in pages]
"""


def test_an_awaiting_activity_cell_and_workflow_cell_run_with_weft_run(
    ip: InteractiveShell,
) -> None:
    ip.user_ns.update(asyncio=asyncio, calls=[])
    ip.run_cell_magic("weft_activity", "fetch(url)", FETCH)
    ip.run_cell_magic("weft_workflow", "crawl(urls)", CRAWL)
    fetch, crawl = ip.user_ns["fetch"], ip.user_ns["crawl"]
    assert asyncio.iscoroutinefunction(fetch)
    assert asyncio.iscoroutinefunction(crawl)
    assert asyncio.run(fetch("q")) == "Q"  # called inline, outside a workflow: awaitable
    ip.user_ns["calls"].clear()
    result = ip.run_line_magic("weft", "run crawl urls=['a','bb'] --id c1")
    assert result == [1, 2]
    assert sorted(ip.user_ns["calls"]) == ["a", "bb"]
    # run again: answered from the journal, the activity does not run twice
    assert ip.run_line_magic("weft", "run crawl urls=['a','bb'] --id c1") == [1, 2]
    assert sorted(ip.user_ns["calls"]) == ["a", "bb"]


def test_an_async_activity_cell_is_cancelled_at_its_await(ip: InteractiveShell) -> None:
    started, outcome = threading.Event(), []
    ip.user_ns.update(asyncio=asyncio, started=started, outcome=outcome)
    body = (
        "started.set()\n"
        "try:\n"
        "    await asyncio.sleep(3600)\n"
        "except asyncio.CancelledError:\n"
        "    outcome.append('cancelled at await')\n"
        "    raise\n"
    )
    ip.run_cell_magic("weft_activity", "wait_long(x)", body)
    ip.run_cell_magic("weft_workflow", "waits(x)", "await ctx.run(wait_long, x)")
    engine = weft_magics(ip).session.engine
    handle = engine.start("waits", 1, run_id="w1")
    assert started.wait(30)
    engine.cancel("w1")
    with pytest.raises(WorkflowCancelledError):
        handle.result(30)
    assert outcome == ["cancelled at await"]  # the activity's task was cancelled at its await
