"""Child for tests/test_executors_kernel_crash.py: one workflow on a ProcessExecutor engine.

Usage: ``python executor_child.py JOURNAL EVIDENCE_DIR RESULT_PATH``. It starts (or resumes) run
``k`` of ``around_blocker``; with ``WEFT_TEST_BLOCK=1`` in the environment (inherited by the
worker processes) the blocker activity waits to be killed, so the parent can SIGKILL this engine
process while a worker is busy. The finished run's result is written to RESULT_PATH.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor_workflows import REGISTERED, around_blocker

import weft_nb

if __name__ == "__main__":
    journal, evidence, result_path = sys.argv[1:4]
    executor = weft_nb.ProcessExecutor(max_workers=1)
    with weft_nb.Engine(journal, executor=executor, heartbeat_interval=0.05) as engine:
        engine.register(*REGISTERED)
        result = engine.run(around_blocker, {"dir": evidence}, run_id="k", timeout=120)
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
