"""In a real kernel, what a background run prints lands in the cell that started it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from jupyter_kernels import DEADLINE, Kernel, start_kernel

from weft_nb.base.payloads import decode
from weft_nb.journal.duckdb_journal import DuckDBJournal

pytestmark = pytest.mark.crash


def test_background_output_lands_in_the_cell_that_started_the_run(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    flag = tmp_path / "go"
    kernel = start_kernel(tmp_path, kernels)
    for code in [
        "%load_ext weft_nb",
        f"%weft journal {tmp_path / 'nb.duckdb'}",
        "import os, time",
        f"%%weft_activity chatty(n)\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.02)\n"
        "print('hello from the activity', n)\nn",
        "%%weft_workflow wf(n)\nprint('hello from the workflow')\nctx.run(chatty, n)",
    ]:
        kernel.run(code)
    started = kernel.run("handle = %weft run wf n=7 --background")
    starting_cell = started["parent_header"]["msg_id"]
    # execute_interactive hands its hook only messages whose parent is that cell
    assert "hello from the workflow\n" in kernel.outputs
    later_cell = kernel.run("x = 1 + 1")["parent_header"]["msg_id"]
    flag.touch()  # the activity prints now, after a later cell ran
    # (read iopub directly: executing another cell would consume the message)
    parent = None
    end = time.monotonic() + DEADLINE
    while parent is None and time.monotonic() < end:
        message: dict[str, Any] = kernel.client.get_iopub_msg(timeout=DEADLINE)
        text = message["content"].get("text", "") if message["msg_type"] == "stream" else ""
        if "hello from the activity 7" in text:
            parent = message["parent_header"].get("msg_id")
    assert parent == starting_cell, (parent, starting_cell, later_cell)


def start_a_parked_run(kernel: Kernel, journal: Path, run_id: str, n: int) -> None:
    """A background run whose activity heartbeats ``{"epoch": n}`` once, then waits to be stopped.

    The heartbeat interval is an hour, so only a flush at shutdown can journal that heartbeat.
    """
    ready = journal.parent / f"{run_id}.ready"
    for code in [
        "%load_ext weft_nb",
        "%config WeftMagics.heartbeat_interval = 3600",
        f"%weft journal {journal}",
        f"%%weft_activity train(n)\nactivity.heartbeat({{'epoch': n}})\n"
        f"open({str(ready)!r}, 'w').close()\nactivity.cancelled.wait(600)\nn",
        "%%weft_workflow wf(n)\nctx.run(train, n)",
        f"handle = %weft run wf n={n} --id {run_id} --background",
    ]:
        kernel.run(code)
    wait_until(ready.exists, timeout=DEADLINE)


def journaled_heartbeat(journal: Path, run_id: str) -> Any:
    """The run's latest journaled heartbeat details, read as a new process would."""
    reader = DuckDBJournal(journal, read_only=True)  # opens at once: nothing holds it
    try:
        beat = reader.latest_heartbeat(run_id, 0)
        assert beat is not None
        assert reader.get_run(run_id).status == "running"  # type: ignore[union-attr]
        return decode(beat.codec, beat.details)
    finally:
        reader.close()


def test_clean_kernel_shutdown_flushes_heartbeats_and_releases_the_journal(
    tmp_path: Path, kernels: list[Kernel]
) -> None:
    journal = tmp_path / "nb.duckdb"
    kernel = start_kernel(tmp_path, kernels)
    start_a_parked_run(kernel, journal, "clean", 41)
    started = time.monotonic()
    kernel.manager.shutdown_kernel(now=False)  # Restart Kernel / Shut Down from the UI
    assert time.monotonic() - started < 30
    assert journaled_heartbeat(journal, "clean") == {"epoch": 41}


def test_sigterm_is_a_clean_shutdown(tmp_path: Path, kernels: list[Kernel]) -> None:
    journal = tmp_path / "nb.duckdb"
    kernel = start_kernel(tmp_path, kernels)
    start_a_parked_run(kernel, journal, "term", 5)
    started = time.monotonic()
    os.kill(kernel.pid, signal.SIGTERM)
    wait_until(lambda: not kernel.manager.is_alive(), timeout=30)
    assert time.monotonic() - started < 10  # "within a few seconds"
    assert journaled_heartbeat(journal, "term") == {"epoch": 5}


def test_a_saved_notebook_keeps_the_panels_final_state(tmp_path: Path) -> None:
    import shutil

    from weft_nb.chaos.kernel import run_notebook

    notebook = tmp_path / "quickstart.ipynb"
    shutil.copy(Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb", notebook)
    outputs = run_notebook(notebook, output=tmp_path / "executed.ipynb")
    texts = [o.get("data", {}).get("text/plain", "") for cell in outputs for o in cell]
    panels = [t for t in texts if t.startswith("pipeline run ")]
    assert panels, texts
    assert all(": completed" in t for t in panels), panels  # not the "running" it started as
