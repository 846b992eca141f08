"""A notebook with a 50-step run, executed and converted the way ``jupyter nbconvert --execute
--to html`` does it: nbclient drives a real kernel, nbconvert's HTML exporter writes the page.

Shared by tests/notebook/test_static_output.py (sizes and HTML) and the browser test
(tests/e2e/test_static_output.py, which opens the page in headless Chromium).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

STEPS = 50
HOSTILE = "<script>alert('weft')</script>"

CELLS = [
    "%load_ext weft_nb\n%weft journal .weft/static.duckdb",
    # Each step heartbeats a falling loss a few times, as a training epoch would; the last one
    # slowly enough for the panel (4 refreshes a second) to draw its loss curve.
    "import time",
    "%%weft_activity epoch(i)\nfor k in range(6):\n"
    "    activity.heartbeat({'loss': 1 / (k + 1) / (i + 1), 'progress': (k + 1) / 6})\n"
    f"    time.sleep(0.3 if i == {STEPS - 1} else 0)\ni",
    "%%weft_workflow fifty(n)\nsum(ctx.run(epoch, i) for i in range(n))",
    f"total = %weft run fifty n={STEPS}",
    "total",
    # Text a run carries into the page: it must stay text. The run fails; the cell is tagged.
    f"%%weft_activity hostile(x) --retry 1\nactivity.heartbeat({{'note': {HOSTILE!r}}})\n"
    f"raise ValueError({HOSTILE!r})",
    "%%weft_workflow trap(x)\nctx.run(hostile, x)",
    "%weft run trap x=1",
]
RUN_CELL, HOSTILE_CELL = 4, 8


def build(folder: Path) -> Path:
    """Write the notebook (unexecuted) into ``folder``; returns its path."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.cells[HOSTILE_CELL].metadata["tags"] = ["raises-exception"]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    path = folder / "static_panel.ipynb"
    nbformat.write(notebook, path)
    return path


def execute_and_convert(folder: Path) -> tuple[Path, Path]:
    """Build, execute (nbclient, a real kernel, cwd ``folder``) and save the notebook, then
    convert it to HTML; returns the executed ``.ipynb`` and the ``.html``."""
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = nbformat.read(build(folder), as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    executed = folder / "static_panel.executed.ipynb"
    nbformat.write(notebook, executed)
    page, _resources = HTMLExporter().from_notebook_node(notebook)
    converted = folder / "static_panel.html"
    converted.write_text(page, encoding="utf-8")
    return executed, converted
