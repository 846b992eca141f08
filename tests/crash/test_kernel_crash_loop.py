"""Crash loops in a real Jupyter kernel (jupyter_client), as a notebook user meets them.

A kernel that dies inside a ``--retry 1`` activity makes the next Restart & Run All stop with
``ActivityCrashLoopError`` (the kernel stays alive, the activity is not started); allowing more
attempts in the activity's cell and re-running the ``%weft run`` cell continues the same run from
the journal (review F6). A kernel restart that lets the kernel exit is not a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jupyter_kernels import (
    DEADLINE,
    PREPARE_CELL,
    Kernel,
    evidence_folder,
    opening_cells,
    read,
    start_kernel,
    start_notebook,
    wait_for,
)

pytestmark = pytest.mark.crash


def train_cell(retries: int) -> str:
    """The activity cell; without the ``fixed`` file it waits (to be killed or restarted)."""
    return (
        f"%%weft_activity train(data) --retry {retries}\n"
        "note('train_start', pid=os.getpid(), attempt=activity.attempt)\n"
        "while not os.path.exists(os.path.join(EVIDENCE, 'fixed')):\n"
        "    activity.heartbeat(1)\n"
        "    time.sleep(0.05)\n"
        "sum(data)"
    )


def notebook_cells(journal: Path, evidence: Path) -> list[str]:
    return [
        *opening_cells(journal, evidence),
        PREPARE_CELL,
        train_cell(1),
        "%%weft_workflow pipeline(n)\ndata = ctx.run(prepare, n)\nctx.run(train, data)",
        "result = %weft run pipeline n=4\nnote('result', pid=os.getpid(), value=result)",
    ]


def start_training(
    tmp_path: Path, kernels: list[Kernel]
) -> tuple[Path, list[str], Kernel, dict[str, Any]]:
    """Run the notebook in a fresh kernel until ``train`` starts (it then waits for ``fixed``).

    Returns the evidence folder, the notebook's cells, the kernel and its ``train_start`` note.
    """
    evidence = evidence_folder(tmp_path)
    cells = notebook_cells(tmp_path / "nb.duckdb", evidence)
    kernel = start_notebook(tmp_path, kernels, cells)
    return evidence, cells, kernel, wait_for(evidence, "train_start")


def test_restart_and_run_all_after_a_crash_loop_stops_then_allowing_more_resumes(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    evidence, cells, first, started = start_training(tmp_path, kernels)
    assert started == {"pid": first.pid, "attempt": 1}
    first.kill()  # the kernel dies in the only attempt allowed

    second = start_kernel(tmp_path, kernels)  # Restart & Run All: the verdict, before any dispatch
    for code in cells[:-1]:
        second.run(code)
    reply = second.client.execute_interactive(cells[-1], timeout=DEADLINE, output_hook=second._hook)
    assert reply["content"]["ename"] == "ActivityCrashLoopError"
    assert second.manager.is_alive()
    assert len(read(evidence, "train_start")) == 1  # not started again
    message = "".join(second.outputs)
    assert "resume run" in message and "continues from the journal" in message, message
    assert "interrupted: replayed from journal: 1 steps, 0 executed" in message, message

    (evidence / "fixed").touch()  # the user fixes the cause and allows more attempts
    second.run(train_cell(2))
    second.run(cells[-1])
    assert [s["attempt"] for s in read(evidence, "train_start")] == [1, 2]
    assert [p["pid"] for p in read(evidence, "prepare")] == [first.pid]  # replayed, not re-run
    assert read(evidence, "result") == [{"pid": second.pid, "value": 6}]


def test_a_kernel_restart_that_lets_the_kernel_exit_is_not_a_crash(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    """Jupyter's Restart: the engine closes the dispatch log at exit; the attempt is not counted."""
    evidence, cells, first, _ = start_training(tmp_path, kernels)
    first.manager.shutdown_wait_time = DEADLINE  # a hang guard; it exits on the request
    first.manager.restart_kernel()
    assert first.manager._shutdown_status.name == "ShutdownRequest"  # no SIGTERM, no SIGKILL
    assert (tmp_path / "nb.duckdb.dispatch").stat().st_size == 0  # closed cleanly
    first.close()

    (evidence / "fixed").touch()
    second = start_kernel(tmp_path, kernels)
    for code in cells:
        second.run(code)  # --retry 1 and no verdict: the restart was not a crash
    assert [s["attempt"] for s in read(evidence, "train_start")] == [1, 1]
    assert read(evidence, "result")[-1] == {"pid": second.pid, "value": 6}
