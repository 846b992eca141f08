"""An open circuit breaker shows in a run's snapshot (panel, `%weft show`) and `weft-nb show`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import weft_nb
from weft_nb.errors import ActivityFailedError
from weft_nb.notebook.static_panel import static_html
from weft_nb.testing import TestEngine

REPO = Path(__file__).resolve().parents[2]


def test_an_open_breaker_shows_in_the_snapshot_and_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"

    @weft_nb.activity(name="charge", retry={"max_attempts": 1}, circuit_breaker="1/30s")
    def charge(x: int) -> int:
        raise ConnectionError("service down")

    @weft_nb.workflow
    def pay(ctx: weft_nb.WorkflowContext, x: int) -> int:
        return ctx.run(charge, x)

    with TestEngine(path) as engine:
        handle = engine.start(pay, 1, run_id="pay-1")
        with pytest.raises(ActivityFailedError):
            handle.result(timeout=30)
        snapshot = engine.snapshot("pay-1")
        note = "circuit breaker of 'charge' open for 0s; a trial attempt may run in 30s"
        assert note in snapshot.text()
        assert note.replace("'", "&#x27;") in static_html(snapshot)
        [shown] = snapshot.to_json()["open_breakers"]
        assert (shown["activity"], shown["half_open_at"]) == ("charge", engine.clock.now() + 30)
        engine.clock.advance(31)
        assert "half-open: the next attempt is a trial" in engine.snapshot("pay-1").text()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "weft_nb", "--journal", str(path), "show", "pay-1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "circuit breaker of 'charge' open since" in done.stdout
    assert "a trial attempt may run from" in done.stdout
