"""In a real kernel, what a background run prints lands in the cell that started it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from test_kernel_crash import DEADLINE, Kernel

pytestmark = pytest.mark.crash


def test_background_output_lands_in_the_cell_that_started_the_run(tmp_path: Path) -> None:
    flag = tmp_path / "go"
    kernel = Kernel(tmp_path)
    try:
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
    finally:
        kernel.close()


def test_clean_kernel_shutdown_flushes_heartbeats_and_releases_the_journal(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "nb.duckdb"
    ready = tmp_path / "ready"
    kernel = Kernel(tmp_path)
    try:
        for code in [
            "%load_ext weft_nb",
            "%config WeftMagics.heartbeat_interval = 3600",  # only a flush at exit can write it
            f"%weft journal {journal}",
            "import os, time",
            f"%%weft_activity train(n)\nactivity.heartbeat({{'epoch': n}})\n"
            f"open({str(ready)!r}, 'w').close()\nactivity.cancelled.wait(600)\nn",
            "%%weft_workflow wf(n)\nctx.run(train, n)",
            "handle = %weft run wf n=41 --id clean --background",
        ]:
            kernel.run(code)
        end = time.monotonic() + DEADLINE
        while not ready.exists() and time.monotonic() < end:
            time.sleep(0.02)
        assert ready.exists()
        started = time.monotonic()
        kernel.manager.shutdown_kernel(now=False)  # Restart Kernel / Shut Down from the UI
        assert time.monotonic() - started < 30
    finally:
        kernel.close()
    from weft_nb._duckdb_journal import DuckDBJournal
    from weft_nb._payloads import decode

    reader = DuckDBJournal(journal, read_only=True)  # opens at once: nothing holds it
    try:
        beat = reader.latest_heartbeat("clean", 0)
        assert beat is not None
        assert decode(beat.codec, beat.details) == {"epoch": 41}
        assert reader.get_run("clean").status == "running"  # type: ignore[union-attr]
    finally:
        reader.close()


def test_sigterm_is_a_clean_shutdown(tmp_path: Path) -> None:
    journal = tmp_path / "nb.duckdb"
    ready = tmp_path / "ready"
    kernel = Kernel(tmp_path)
    try:
        for code in [
            "%load_ext weft_nb",
            "%config WeftMagics.heartbeat_interval = 3600",  # only the shutdown flush writes it
            f"%weft journal {journal}",
            f"%%weft_activity train(n)\nactivity.heartbeat({{'epoch': n}})\n"
            f"open({str(ready)!r}, 'w').close()\nactivity.cancelled.wait(600)\nn",
            "%%weft_workflow wf(n)\nctx.run(train, n)",
            "handle = %weft run wf n=5 --id term --background",
        ]:
            kernel.run(code)
        end = time.monotonic() + DEADLINE
        while not ready.exists() and time.monotonic() < end:
            time.sleep(0.02)
        pid = kernel.pid
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while kernel.manager.is_alive() and time.monotonic() - started < 30:
            time.sleep(0.02)
        assert not kernel.manager.is_alive()
        assert time.monotonic() - started < 10  # "within a few seconds"
    finally:
        kernel.close()
    from weft_nb._duckdb_journal import DuckDBJournal
    from weft_nb._payloads import decode

    reader = DuckDBJournal(journal, read_only=True)
    try:
        beat = reader.latest_heartbeat("term", 0)
        assert beat is not None
        assert decode(beat.codec, beat.details) == {"epoch": 5}
    finally:
        reader.close()


def test_a_saved_notebook_keeps_the_panels_final_state(tmp_path: Path) -> None:
    import shutil

    from weft_nb._notebook_runner import run_notebook

    notebook = tmp_path / "quickstart.ipynb"
    shutil.copy(Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb", notebook)
    outputs = run_notebook(notebook, output=tmp_path / "executed.ipynb")
    texts = [o.get("data", {}).get("text/plain", "") for cell in outputs for o in cell]
    panels = [t for t in texts if t.startswith("pipeline run ")]
    assert panels, texts
    assert all(": completed" in t for t in panels), panels  # not the "running" it started as
