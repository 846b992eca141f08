"""An ``async def`` workflow killed with SIGKILL mid-run resumes in a new process (issue 15).

The child (``tests/crash_children/async_child.py``) gathers three async activities, notes
``sleeping`` from a memo once its sleep's deadline is journaled, sleeps, then runs ``finish``.
It is killed inside ``finish`` (its own SIGKILL) or by this test during the sleep; a second
child resumes the run on the same journal. Completed steps never run again, and the sleep keeps
its journaled deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import wait_until

pytestmark = pytest.mark.crash

CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "async_child.py"


def start_child(tmp_path: Path, kill: str) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.json"
    journal, evidence = tmp_path / "journal.duckdb", tmp_path / "evidence.jsonl"
    config.write_text(
        json.dumps({"journal": str(journal), "evidence": str(evidence), "kill": kill})
    )
    evidence.touch()
    env = {k: v for k, v in os.environ.items() if k != "WEFT_NB_KILL_AT"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def evidence(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "evidence.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def ran(tmp_path: Path) -> list[str]:
    return [e["ran"] for e in evidence(tmp_path) if "ran" in e]


def sleep_rows(tmp_path: Path) -> list[tuple[str, bytes]]:
    with duckdb.connect(str(tmp_path / "journal.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT status, result FROM steps WHERE activity = '<sleep>' AND NOT superseded"
        ).fetchall()
    return [(str(status), bytes(result)) for status, result in rows]


@pytest.mark.parametrize("kill", ["in_step", "in_sleep"])
def test_an_async_workflow_killed_mid_run_resumes_without_running_steps_twice(
    tmp_path: Path, kill: str
) -> None:
    child = start_child(tmp_path, kill)
    if kill == "in_sleep":
        wait_until(lambda: "sleeping" in ran(tmp_path), timeout=120, what="the durable sleep")
        child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err.decode()[-3000:]
    before = ran(tmp_path)
    deadline_before = sleep_rows(tmp_path)
    assert sorted(before[:3]) == ["fetch 0", "fetch 1", "fetch 2"]
    assert "outcome" not in json.dumps(evidence(tmp_path))

    resumed = start_child(tmp_path, kill)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-3000:]
    after = ran(tmp_path)
    assert [e["outcome"] for e in evidence(tmp_path) if "outcome" in e] == ["total 30"]
    for name in ("fetch 0", "fetch 1", "fetch 2"):
        assert after.count(name) == 1, (name, after)  # journaled: never again
    # (a memo's callback may run again when the kill came before its value was journaled)
    assert after.count("finish") == (2 if kill == "in_step" else 1)
    if kill == "in_sleep":  # the resumed sleep kept its journaled deadline
        assert deadline_before[0][0] == "started"
        assert sleep_rows(tmp_path) == [("completed", deadline_before[0][1])]
