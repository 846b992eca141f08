"""An ``async def`` workflow in a real kernel survives a SIGKILL of the kernel (issue 15).

The notebook defines an awaiting activity cell and an awaiting workflow cell, then starts the run
in the background and awaits its handle at top level. The kernel is SIGKILLed inside the last
step; a fresh kernel runs every cell again (Restart & Run All): the gathered steps are answered
from the journal, the killed one runs again, and the awaited result is the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jupyter_kernels import (
    Kernel,
    evidence_folder,
    kill_then_run_all_again,
    opening_cells,
    read,
)

pytestmark = pytest.mark.crash


def notebook_cells(journal: Path, evidence: Path) -> list[str]:
    return [
        *opening_cells(journal, evidence),
        "import asyncio",
        "%%weft_activity fetch(x)\n"
        "await asyncio.sleep(0)\nnote('fetch', pid=os.getpid(), x=x)\nx * 10",
        "%%weft_activity finish(total)\n"
        "note('finish', pid=os.getpid())\n"
        "if not os.path.exists(os.path.join(EVIDENCE, 'killed-once')):\n"
        "    note('ready_to_die', pid=os.getpid())\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "total",
        "%%weft_workflow crawl(n)\n"
        "pages = await asyncio.gather(*[ctx.run(fetch, i) for i in range(n)])\n"
        "await ctx.run(finish, sum(pages))",
        "handle = %weft run crawl n=3 --id crawl-1 --background\n"
        "result = await handle\n"
        "note('result', pid=os.getpid(), value=result)",
    ]


def test_an_async_workflow_survives_a_kernel_sigkill_and_restart_and_run_all(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    evidence = evidence_folder(tmp_path)
    cells = notebook_cells(tmp_path / "nb.duckdb", evidence)

    first, second = kill_then_run_all_again(tmp_path, kernels, cells, evidence)

    fetched = sorted((f["pid"], f["x"]) for f in read(evidence, "fetch"))
    assert fetched == [(first.pid, 0), (first.pid, 1), (first.pid, 2)]  # never again
    assert [f["pid"] for f in read(evidence, "finish")] == [first.pid, second.pid]
    (result,) = read(evidence, "result")
    assert result == {"pid": second.pid, "value": 30}
