"""Fixtures of the browser test: JupyterLab on loopback, headless system Chromium, a page.

The browser test is opt-in: this folder's tests are collected only when the run selects them
with ``-m e2e`` (what ``make e2e`` does). A plain ``pytest tests`` (so ``make test``) leaves them
alone, needs neither Playwright nor Chromium, and does not run the browser a second time in a
venv that has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_server import CHROMIUM_ARGS, REPO, Lab, chromium_path, running_lab


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip collecting this folder's modules unless the run asked for ``-m e2e``."""
    expression = str(config.getoption("markexpr") or "")
    selected = "e2e" in expression and "not e2e" not in expression
    return True if collection_path.suffix == ".py" and not selected else None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab serving an empty temporary folder; tests copy their notebooks into it."""
    with running_lab(
        tmp_path_factory.mktemp("jupyter-home"), tmp_path_factory.mktemp("lab-root")
    ) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright; each launch has a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A 1400x1000 page; on failure, demo-output/e2e-failed-<test>.png shows what it showed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    try:
        yield opened
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            shot = REPO / "demo-output" / f"e2e-failed-{request.node.name}.png"
            shot.parent.mkdir(exist_ok=True)
            opened.screenshot(path=str(shot))
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the call phase's report on the item, for the page fixture's failure screenshot."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
