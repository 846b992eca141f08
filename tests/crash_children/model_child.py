"""Child process for tests/test_model_based.py: run (or resume) one model program, then exit.

Usage: ``python model_child.py CONFIG.json``. The program (``Program.to_json()``) runs on a
``TestEngine`` (virtual clock) through ``model_driver.Driver``, which plays signals, completions
and cancels. At the config's crash point this process SIGKILLs itself (or weft_nb does, at the
``WEFT_NB_KILL_AT`` fault point the parent put in the environment); the parent then resumes the
run in a new child on the same journal. Every attempt and memo callback is appended and fsynced
to the evidence file first, so the record survives the kill.

Config keys: ``journal``, ``evidence`` (folder), ``run_id``, ``program``, ``crashes``
(``[[kind, n], ...]``), ``resume`` (bool). Writes ``<evidence>/result-<pid>.json``: the run's
outcome and the violations the driver saw.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evidence_files import PID, EvidenceFiles
from model_driver import Driver
from model_engine import RECORDER
from model_programs import CrashPoint, Program


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    files = EvidenceFiles(config["evidence"])
    RECORDER.reset(os.path.join(config["evidence"], "executions.jsonl"), kill_self=True)
    program = Program.from_json(config["program"])
    crashes = tuple(CrashPoint(kind, n) for kind, n in config["crashes"])
    driver = Driver(program, config["journal"], config["run_id"], crashes)
    handle = driver.start(resume=config["resume"])
    outcome = driver.drive(handle)
    execution = driver.finish(outcome)
    files.write_json(
        os.path.join(config["evidence"], f"result-{PID}.json"),
        {"outcome": outcome, "violations": execution.violations},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
