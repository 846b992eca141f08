"""Timers and child workflows across a real SIGKILL (``tests/crash_children/timers_child.py``).

A timer's deadline is journaled when it is created: the process restarted after the deadline
replays the same deadline and the timer fires at once (not a full duration later), winning the
race over the still-running activity. A child workflow whose parent process is killed while the
child runs is resumed once, not started again: one child run in the journal, its completed
step not run twice, and its result journaled in the parent once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from crash_process import DEADLINE, ChildProcess, read_jsonl

SCRIPT = Path(__file__).resolve().parents[1] / "crash_children" / "timers_child.py"


def start(tmp_path: Path, scenario: str, phase: int) -> ChildProcess:
    settings = {
        "journal": str(tmp_path / "journal.duckdb"),
        "evidence": str(tmp_path / "evidence"),
        "scenario": scenario,
        "phase": phase,
    }
    return ChildProcess(tmp_path, f"{scenario}-{phase}", SCRIPT, settings, tmp_path / "evidence")


def ran(tmp_path: Path, phase: int | None = None) -> list[str]:
    lines = read_jsonl(tmp_path / "evidence", "ran.jsonl")
    return [line["ran"] for line in lines if phase is None or line["phase"] == phase]


def test_a_timer_fires_at_its_original_deadline_after_a_sigkill(tmp_path: Path) -> None:
    first = start(tmp_path, "timer", 1)
    deadline = first.wait_marker("timer-set")
    first.wait_for(lambda: "hang" in ran(tmp_path), "the racing activity started")
    first.kill()
    # Restart only once the journaled deadline has passed: a timer that restarted its duration
    # would not fire yet, nor replay this deadline.
    give_up = time.monotonic() + DEADLINE
    while time.time() <= deadline and time.monotonic() < give_up:
        time.sleep(0.05)
    second = start(tmp_path, "timer", 2)
    assert second.wait_marker("timer-set") == deadline  # the original deadline, replayed
    outcome: dict[str, Any] = second.finish()
    assert outcome["value"] == {"winner": 1, "deadline": deadline}
    assert outcome["resumed"] == ["timer"]
    timers = [s for s in outcome["steps"] if s[2] == "<timer>"]
    assert [(s[3], s[4] >= deadline) for s in timers] == [("completed", True)]
    assert [s[3] for s in outcome["steps"] if s[2] == "<race>"] == ["completed"]
    assert ran(tmp_path) == ["hang", "hang"]  # the loser is started again by the resume


def test_a_child_workflow_survives_its_parents_sigkill_and_runs_once(tmp_path: Path) -> None:
    first = start(tmp_path, "children", 1)
    first.wait_marker("child-blocked")
    first.kill()
    second = start(tmp_path, "children", 2)
    outcome: dict[str, Any] = second.finish()
    assert outcome["value"] == 31 + 1000
    assert outcome["resumed"] == ["children", "children.0"]
    assert outcome["runs"] == [
        ["children", "sweep", "completed", None],
        ["children.0", "trial", "completed", "children"],
    ]  # one child run, linked to its parent: never a second child
    assert [s[:4] for s in outcome["steps"]] == [["children", 0, "<child>", "completed"]]
    assert ran(tmp_path, 1) == ["work", "block"]
    assert ran(tmp_path, 2) == ["block"]  # work was journaled: not run again
