"""The engine process (the kernel) is SIGKILLed while a ProcessExecutor worker runs an activity.

The orphaned worker exits when its pipe closes, so its result can never be recorded; a new
engine process resumes the run, which completes with every completed step run once and one
completed row per step in the journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from executor_workflows import lines
from helpers import process_alive, wait_until

from weft_nb.journal.duckdb_journal import DuckDBJournal

pytestmark = pytest.mark.crash

CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "executor_child.py"


def test_kernel_killed_while_a_worker_is_busy_resumes_without_double_records(
    tmp_path: Path,
) -> None:
    journal, evidence, result = tmp_path / "j.duckdb", tmp_path / "evidence", tmp_path / "r.json"
    evidence.mkdir()
    args = [sys.executable, str(CHILD), str(journal), str(evidence), str(result)]
    first = subprocess.Popen(args, env={**os.environ, "WEFT_TEST_BLOCK": "1"})
    try:
        wait_until(lambda: lines(evidence, "blocker"), timeout=120)
        worker = int(lines(evidence, "blocker")[0].split()[0])
        assert worker != first.pid
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    wait_until(lambda: not process_alive(worker), timeout=60)  # the orphaned worker left by itself

    second = subprocess.run(
        args, env={**os.environ, "WEFT_TEST_BLOCK": "0"}, timeout=180, check=False
    )
    assert second.returncode == 0
    assert json.loads(result.read_text(encoding="utf-8")) == [25, "unblocked", 36]
    assert len(lines(evidence, "square-5")) == 1  # completed before the kill: not run again
    assert len(lines(evidence, "square-6")) == 1
    assert len(lines(evidence, "blocker")) == 2  # the step in flight ran once per kernel
    reopened = DuckDBJournal(journal)
    try:
        rows = reopened.query(
            "SELECT position, count(*) FROM steps WHERE run_id = 'k' AND status = 'completed' "
            "AND NOT superseded GROUP BY position ORDER BY position"
        )
    finally:
        reopened.close()
    assert rows == [(0, 1), (1, 1), (2, 1)]
