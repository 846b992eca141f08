"""Running the crash-loop child (``crash_children/crashloop_child.py``) and reading its evidence.

Shared by the crash-loop tests (``tests/engine/``) and the dispatch-log damage tests
(``tests/journal/``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).resolve().parent / "crash_children" / "crashloop_child.py"


def run_child(tmp_path: Path, **settings: Any) -> int:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "journal": str(tmp_path / "journal.duckdb"),
                "run_id": "loop",
                "evidence": str(tmp_path / "evidence.jsonl"),
                **settings,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, str(CHILD), str(config)], capture_output=True, timeout=120, check=False
    )
    if done.returncode not in (0, 1, -signal.SIGKILL):
        pytest.fail(f"child exited with {done.returncode}: {done.stderr.decode()[-3000:]}")
    return done.returncode


def evidence(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "evidence.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
