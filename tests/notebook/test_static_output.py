"""What ``nbconvert --execute`` keeps of a run: a small notebook and a table that needs no kernel.

A real kernel runs a 50-step workflow with heartbeats through ``%weft run`` under nbclient (what
``jupyter nbconvert --execute`` and papermill use), and nbconvert writes the HTML page. Before the
static output, this notebook held 1,407 widget models (1.5 MB) and the page showed an empty panel
without network access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from panel_html import read_rows
from static_notebook import HOSTILE, HOSTILE_CELL, RUN_CELL, STEPS, execute_and_convert

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return execute_and_convert(tmp_path_factory.mktemp("static-output"))


def outputs(notebook: Any, index: int) -> list[Any]:
    return list(notebook.cells[index].outputs)


def test_the_saved_notebook_is_small_and_holds_a_handful_of_widget_models(
    executed: tuple[Path, Path],
) -> None:
    path, _page = executed
    size = path.stat().st_size
    assert size < 150_000, size  # "well under 300 kB"; 1.5 MB before
    notebook = nbformat.read(path, as_version=4)
    models = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    assert len(models) <= 2 * 10, len(models)  # two panels of a few models, whatever the steps
    assert not any(  # and no output points at them: the panel's output is static HTML
        WIDGET_VIEW in output.get("data", {}) for cell in notebook.cells for output in cell.outputs
    )
    stored = json.dumps(models)
    assert "weft-step" not in stored  # the table left the widgets' saved state when they closed


def test_the_run_leaves_a_static_table_of_its_steps(executed: tuple[Path, Path]) -> None:
    notebook = nbformat.read(executed[0], as_version=4)
    (panel,) = [o for o in outputs(notebook, RUN_CELL) if o.output_type == "display_data"]
    assert set(panel.data) == {"text/plain", "text/html", "text/markdown"}
    page = panel.data["text/html"]
    assert 'class="weft-run-panel weft-static"' in page and "completed" in page
    rows = read_rows(page)
    assert [(r["position"], r["activity"], r["status"], r.bar) for r in rows] == [
        (str(i), "epoch", "completed", 1.0) for i in range(STEPS)
    ]
    assert page.count("<svg") >= STEPS  # a bar per step, inline
    assert panel.data["text/plain"].startswith("fifty run ")
    (total,) = outputs(notebook, RUN_CELL + 1)
    assert total.data["text/plain"] == str(sum(range(STEPS)))


def test_hostile_step_and_error_text_is_escaped_in_the_cell_output(
    executed: tuple[Path, Path],
) -> None:
    notebook = nbformat.read(executed[0], as_version=4)
    cell_outputs = outputs(notebook, HOSTILE_CELL)
    assert any(o.output_type == "error" for o in cell_outputs)  # the run failed, as meant
    (panel,) = [o for o in cell_outputs if o.output_type == "display_data"]
    page = panel.data["text/html"]
    (row,) = read_rows(page)  # fails on any <script> element
    assert row["status"] == "failed" and HOSTILE in row.note
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_nbconvert_html_shows_the_table_without_a_widget_renderer(
    executed: tuple[Path, Path],
) -> None:
    page = executed[1].read_text(encoding="utf-8")
    assert page.count('class="weft-run-panel weft-static"') == 2
    rows = read_rows(page[page.index("weft-static") : page.rindex("weft-static")])
    assert len(rows) == STEPS and {r["status"] for r in rows} == {"completed"}
    assert f'<script type="{WIDGET_VIEW}">' not in page  # nothing waits for the CDN's renderer
    assert HOSTILE not in page  # every copy of it (code, panel, traceback) is escaped
