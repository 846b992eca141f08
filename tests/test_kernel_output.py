"""In a real kernel, what a background run prints lands in the cell that started it."""

from __future__ import annotations

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
