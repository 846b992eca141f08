"""End to end in a real browser: JupyterLab renders the run panel, and its buttons drive runs.

JupyterLab runs on loopback with a copy of the notebooks; headless Chromium opens them and runs
every cell from the Run menu, as a person would. The assertions are on the rendered page (the
panel's DOM), and the outcome of each click is checked again in the journal with ``weft-nb``.
Screenshots go to ``demo-output/e2e-*.png``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from lab_server import REPO, Lab
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

SHOTS = REPO / "demo-output"
# Deadlines, generous for a loaded 2-core machine; every wait ends as soon as its condition holds.
OPEN_MS = 120_000
TRAIN_MS = 180_000
CLICK_MS = 60_000
KERNEL_IDLE = re.compile(r"^(?!No Kernel).+ \| Idle$")

# The progress of the `train` row in percent, from the SVG bar the browser laid out (the filled
# rect's width over the bar's). The panel's steps are rows of one table: # | activity | ...
TRAIN_BAR = """(() => {
  const row = [...document.querySelectorAll('.weft-run-panel tr.weft-step')]
    .find((r) => r.cells[1]?.textContent === 'train');
  const bar = row?.querySelector('svg.weft-progress');
  const filled = bar?.querySelector('rect.progress-bar');
  return filled ? 100 * filled.getBoundingClientRect().width / bar.getBoundingClientRect().width
    : NaN;
})()"""

# Called over and over by wait_for_function: it keeps every distinct value it has seen, and is
# satisfied once the bar has shown two different values strictly between empty and full, the
# later one larger: the bar advanced while training ran.
BAR_ADVANCES = f"""() => {{
  const width = {TRAIN_BAR};
  const seen = (window.__weftBar ??= []);
  if (!Number.isNaN(width) && seen[seen.length - 1] !== width) seen.push(width);
  const partial = seen.filter((w) => w > 0.5 && w < 99.5);
  return partial.length >= 2 && partial[partial.length - 1] > partial[0] ? seen : false;
}}"""

BAR_AT_LEAST = f"""(percent) => {TRAIN_BAR} >= percent"""

CONTROLS = [
    "%load_ext weft_nb\n%weft journal .weft/controls.duckdb",
    # Runs until the run is cancelled: activity.sleep returns True then.
    "%%weft_activity spin(n)\nbeats = 0\nwhile not activity.sleep(0.2):\n"
    '    beats += 1\n    activity.heartbeat({"beats": beats})\nbeats',
    "%%weft_workflow forever(n)\nctx.run(spin, n)",
    "%%weft_activity sign_off(version)\nactivity.complete_async()",
    '%%weft_activity deploy(version)\nf"model v{version} deployed"',
    "%%weft_workflow release(version)\ndecision = ctx.run(sign_off, version)\n"
    'ctx.run(deploy, version) if decision["approved"] else "rejected"',
    # Background runs keep the kernel free: a click is a comm message the kernel must handle.
    "spinning = %weft run forever n=1 --id e2e-cancel --background",
    "release = %weft run release version=3 --id e2e-approve --background",
]


def _shot(target: Any, name: str) -> Path:
    """Screenshot a locator, re-resolving it if the front end re-rendered it meanwhile.

    When a background run ends, the magic re-sends the panel's display, so the element a locator
    found can be replaced between finding it and capturing it ("not attached to the DOM"). The
    assertions before a screenshot already passed; this only retries the capture.
    """
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"e2e-{name}.png"
    for attempt in range(5):
        try:
            target.screenshot(path=str(path), timeout=CLICK_MS)
            return path
        except PlaywrightError as exc:
            if "not attached" not in str(exc) or attempt == 4:
                raise
            target.wait_for(state="visible", timeout=CLICK_MS)
    return path


def _open_and_run_all(page: Any, lab: Lab, notebook: str) -> None:
    """Open the notebook in JupyterLab, wait for its kernel, then Run > Run All Cells.

    Each notebook gets a workspace of its own, so JupyterLab restores no other test's tabs and
    the status bar speaks of this notebook's kernel.
    """
    workspace = Path(notebook).stem
    page.goto(f"{lab.url}lab/workspaces/{workspace}/tree/{notebook}", timeout=OPEN_MS)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=OPEN_MS)
    # The status bar says "<kernel> | Idle" once the kernel is connected; before that it shows
    # "No Kernel | Initializing", and Run All would then run nothing.
    page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE).wait_for(timeout=OPEN_MS)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _panel(page: Any, run_id: str) -> Any:
    return page.locator(".weft-run-panel", has=page.locator(".weft-run-header", has_text=run_id))


def _journal(*args: str) -> str:
    """``weft-nb ARGS``; empty while the kernel's engine still has the journal file open."""
    done = subprocess.run(
        [sys.executable, "-m", "weft_nb", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def test_training_notebook_renders_a_live_panel(page: Any, lab: Lab) -> None:
    """Run All on the training demo: the panel shows, its bar advances, the loss chart draws."""
    shutil.copy(REPO / "notebooks" / "train_resume.ipynb", lab.root)
    _open_and_run_all(page, lab, "train_resume.ipynb")

    panel = page.locator(".weft-run-panel").first
    panel.wait_for(state="visible", timeout=OPEN_MS)
    header = panel.locator(".weft-run-header")
    assert "train_digits" in header.inner_text()

    seen = page.wait_for_function(BAR_ADVANCES, timeout=TRAIN_MS, polling="raf").json_value()
    partial = [w for w in seen if 0.5 < w < 99.5]
    assert partial[-1] > partial[0], seen

    chart = panel.locator(".weft-loss-chart svg.weft-chart")
    chart.wait_for(state="visible", timeout=TRAIN_MS)
    loss = chart.locator("text", has_text=re.compile(r"^loss \d"))
    loss.wait_for(timeout=TRAIN_MS)
    lines = chart.locator("polyline")
    assert lines.count() >= 1
    for line in lines.all():  # one line per numeric heartbeat field: epoch and loss
        points = line.get_attribute("points") or ""
        assert len(points.split()) >= 2, points
        box = line.bounding_box()
        assert box is not None and box["width"] > 0, box  # the browser laid the line out
    # The picture for the README: training well under way (or done, on a fast machine).
    page.wait_for_function(BAR_AT_LEAST, arg=40, timeout=TRAIN_MS, polling="raf")
    panel.scroll_into_view_if_needed()
    _shot(panel, "run-panel-training")

    # The whole notebook ran: the run completed and the cell after it printed the accuracy.
    header.filter(has_text="completed").wait_for(timeout=TRAIN_MS)
    accuracy = page.locator(".jp-OutputArea-output", has_text=re.compile(r"test accuracy: 0\.9\d"))
    accuracy.wait_for(timeout=TRAIN_MS)
    # The settled run left its static table in place of the widgets, chart and full bar included.
    static = page.locator(".weft-run-panel.weft-static").first
    static.wait_for(timeout=TRAIN_MS)
    assert page.locator(".weft-run-panel:not(.weft-static)").count() == 0
    assert abs(page.evaluate(TRAIN_BAR) - 100.0) < 0.5
    assert static.locator(".weft-loss-chart svg.weft-chart polyline").count() >= 1
    _shot(static, "run-panel-completed")
    page.screenshot(path=str(SHOTS / "e2e-training-notebook.png"), full_page=False)


def test_cancel_and_approve_buttons_drive_background_runs(page: Any, lab: Lab) -> None:
    """Cancel stops a run that would never end; Approve completes a parked approval step."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CONTROLS]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "controls.ipynb")
    _open_and_run_all(page, lab, "controls.ipynb")

    spinning = _panel(page, "e2e-cancel")
    spinning.wait_for(state="visible", timeout=OPEN_MS)
    spinning.locator(".weft-step", has_text="spin").filter(has_text="running").wait_for(
        timeout=OPEN_MS
    )
    cancel = spinning.locator("button.weft-cancel")
    assert cancel.is_enabled()
    _shot(spinning, "cancel-before")
    cancel.click()
    spinning.locator(".weft-run-header", has_text="cancelled").wait_for(timeout=CLICK_MS)
    # The panel saw the run end: it is now the static table, with no button left. Locators, not
    # element handles: the panel's element is replaced when the run ends.
    static = page.locator(".weft-run-panel.weft-static", has_text="e2e-cancel")
    static.wait_for(timeout=CLICK_MS)
    expect(cancel).to_have_count(0, timeout=CLICK_MS)
    _shot(static, "cancel-after")

    parked = _panel(page, "e2e-approve")
    parked.wait_for(state="visible", timeout=OPEN_MS)
    approve = parked.locator("button.weft-approve")
    approve.wait_for(state="visible", timeout=OPEN_MS)
    parked.locator(".weft-step", has_text="sign_off").filter(has_text="waiting").wait_for(
        timeout=OPEN_MS
    )
    _shot(parked, "approve-before")
    approve.click()
    parked.locator(".weft-run-header", has_text="completed").wait_for(timeout=CLICK_MS)
    parked.locator(".weft-step", has_text="deploy").filter(has_text="completed").wait_for(
        timeout=CLICK_MS
    )
    expect(approve).to_be_hidden(timeout=CLICK_MS)  # decided: the buttons are gone
    page.locator(".weft-run-panel.weft-static", has_text="e2e-approve").wait_for(timeout=CLICK_MS)
    _shot(parked, "approve-after")

    # The journal agrees. The kernel's engine lets go of the file about a second after its
    # runs stop; until then `weft-nb` says who holds it, so ask again until it answers.
    journal = str(lab.root / ".weft" / "controls.duckdb")
    shown: dict[str, str] = {}

    def answered() -> bool:
        for run_id in ("e2e-cancel", "e2e-approve"):
            shown[run_id] = shown.get(run_id) or _journal("--journal", journal, "show", run_id)
        return all(shown.values())

    deadline = time.monotonic() + CLICK_MS / 1000
    while not answered():
        assert time.monotonic() < deadline, f"weft-nb show did not answer: {shown}"
        page.wait_for_timeout(250)
    assert re.search(r"status\s+cancelled", shown["e2e-cancel"]), shown["e2e-cancel"]
    assert re.search(r"status\s+completed", shown["e2e-approve"]), shown["e2e-approve"]
    assert "model v3 deployed" in shown["e2e-approve"], shown["e2e-approve"]


# A cell that *awaits* a run keeps the kernel's event loop running, so the panel's buttons (comm
# messages) work before the cell ends (issue 15; docs/guides/async.md). Run All runs the cells in
# order: the approval cell first (it ends well), then the cancel cell, which ends in an error.
AWAITING = [
    "%load_ext weft_nb\n%weft journal .weft/awaits.duckdb",
    "%%weft_activity spin(n)\nbeats = 0\nwhile not activity.sleep(0.2):\n"
    '    beats += 1\n    activity.heartbeat({"beats": beats})\nbeats',
    "%%weft_workflow forever(n)\nctx.run(spin, n)",
    "%%weft_activity sign_off(version)\nactivity.complete_async()",
    '%%weft_activity deploy(version)\nf"model v{version} deployed"',
    "%%weft_workflow release(version)\ndecision = ctx.run(sign_off, version)\n"
    'ctx.run(deploy, version) if decision["approved"] else "rejected"',
    "release = %weft run release version=4 --id e2e-await-approve --background\nawait release",
    "spinning = %weft run forever n=1 --id e2e-await-cancel --background\nawait spinning",
]


def _cell_of(page: Any, run_id: str) -> Any:
    """The notebook cell whose output shows the panel of run ``run_id``."""
    return page.locator(
        ".jp-Notebook .jp-Cell", has=page.locator(".weft-run-header", has_text=run_id)
    )


def _journal_status(journal: str, run_id: str) -> str:
    """``weft-nb show RUN``, asked again until the kernel's engine has let go of the file."""
    deadline = time.monotonic() + CLICK_MS / 1000
    while not (shown := _journal("--journal", journal, "show", run_id)):
        assert time.monotonic() < deadline, f"weft-nb show {run_id} did not answer"
        time.sleep(0.25)
    return shown


def test_buttons_work_while_a_cell_awaits_the_run(page: Any, lab: Lab) -> None:
    """Approve and Cancel clicked while the cell is still at ``await handle`` (prompt ``[*]``)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in AWAITING]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "awaits.ipynb")
    _open_and_run_all(page, lab, "awaits.ipynb")
    journal = str(lab.root / ".weft" / "awaits.duckdb")

    # Approve: the run is parked on sign_off and its cell still awaits it.
    parked = _panel(page, "e2e-await-approve")
    parked.wait_for(state="visible", timeout=OPEN_MS)
    parked.locator(".weft-step", has_text="sign_off").filter(has_text="waiting").wait_for(
        timeout=OPEN_MS
    )
    approving = _cell_of(page, "e2e-await-approve")
    expect(approving.locator(".jp-InputPrompt")).to_have_text("[*]:")  # still awaiting
    _shot(approving, "await-approve-before")
    parked.locator("button.weft-approve").click()
    # The awaited run went on and the cell ended with the run's result as its value.
    approving.locator(".jp-OutputArea-output", has_text="'model v4 deployed'").wait_for(
        timeout=CLICK_MS
    )
    expect(approving.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\d+\]:$"))
    approving.locator(".weft-run-header", has_text="completed").wait_for(timeout=CLICK_MS)
    _shot(approving, "await-approve-after")

    # Cancel: the next cell now awaits a run whose activity loops until cancelled.
    spinning = _panel(page, "e2e-await-cancel")
    spinning.wait_for(state="visible", timeout=OPEN_MS)
    spinning.locator(".weft-step", has_text="spin").filter(has_text="running").wait_for(
        timeout=OPEN_MS
    )
    cancelling = _cell_of(page, "e2e-await-cancel")
    expect(cancelling.locator(".jp-InputPrompt")).to_have_text("[*]:")  # still awaiting
    _shot(cancelling, "await-cancel-before")
    spinning.locator("button.weft-cancel").click()
    # The awaited run was cancelled: the cell ends raising WorkflowCancelledError, its panel
    # says cancelled and turns into the static table.
    cancelling.locator(".jp-OutputArea-output", has_text="WorkflowCancelledError").wait_for(
        timeout=CLICK_MS
    )
    expect(cancelling.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\d+\]:$"))
    cancelling.locator(".weft-run-header", has_text="cancelled").wait_for(timeout=CLICK_MS)
    cancelling.locator(".weft-run-panel.weft-static").wait_for(timeout=CLICK_MS)
    expect(cancelling.locator("button.weft-cancel")).to_have_count(0, timeout=CLICK_MS)
    _shot(cancelling, "await-cancel-after")

    # The journal agrees.
    approved = _journal_status(journal, "e2e-await-approve")
    assert re.search(r"status\s+completed", approved), approved
    assert "model v4 deployed" in approved, approved
    cancelled = _journal_status(journal, "e2e-await-cancel")
    assert re.search(r"status\s+cancelled", cancelled), cancelled
