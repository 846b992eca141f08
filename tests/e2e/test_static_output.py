"""The page ``jupyter nbconvert --execute --to html`` writes, opened offline in headless Chromium.

The notebook of tests/static_notebook.py (a 50-step run with heartbeats, and a run whose step and
error carry ``<script>`` text) is executed by nbclient and converted by nbconvert; Chromium opens
the HTML file with every network request refused, as on a machine without access to the CDN that
serves the widget renderer. The run's table must be there, drawn: before the static output, the
panel was an empty space. The screenshot is ``demo-output/static-panel.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lab_server import REPO
from static_notebook import STEPS, execute_and_convert

pytestmark = pytest.mark.e2e

SHOTS = REPO / "demo-output"
LOAD_MS = 60_000

# The filled fraction of each step's bar, in percent, as the browser laid the SVG out.
BAR_PERCENTS = """(panel) => [...panel.querySelectorAll('tr.weft-step svg.weft-progress')].map(
  (svg) => 100 * svg.querySelector('rect.progress-bar').getBoundingClientRect().width
    / svg.getBoundingClientRect().width)"""


def test_the_converted_page_shows_the_runs_table_offline(page: Any, tmp_path: Path) -> None:
    _executed, converted = execute_and_convert(tmp_path)
    refused: list[str] = []

    def refuse(route: Any) -> None:  # no network: the CDN's scripts never arrive
        refused.append(route.request.url)
        route.abort()

    page.route("http://**/*", refuse)
    page.route("https://**/*", refuse)
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    page.goto(converted.as_uri(), timeout=LOAD_MS)

    panels = page.locator(".weft-run-panel.weft-static")
    assert panels.count() == 2
    fifty, trap = panels.nth(0), panels.nth(1)
    fifty.wait_for(state="visible", timeout=LOAD_MS)
    assert "completed" in fifty.locator(".weft-run-header").inner_text()
    rows = fifty.locator("tr.weft-step")
    assert rows.count() == STEPS
    assert rows.filter(has_text="completed").count() == STEPS
    percents = fifty.evaluate(BAR_PERCENTS)
    assert len(percents) == STEPS and all(abs(p - 100) < 1 for p in percents), percents
    box = fifty.bounding_box()
    assert box is not None and box["height"] > 15 * STEPS  # laid out, not an empty space

    # The hostile run's texts are on the page as text, and nothing of theirs ran.
    assert "<script>alert('weft')</script>" in trap.inner_text()
    assert alerts == []
    assert any("unpkg.com" in url or "cdnjs" in url for url in refused), refused

    SHOTS.mkdir(exist_ok=True)
    fifty.screenshot(path=str(SHOTS / "static-panel.png"))  # the last step's loss curve at its end
    trap.screenshot(path=str(SHOTS / "static-panel-escaped.png"))
