"""Crash tests for durable time, signals, async completion and parallel steps, with real processes.

Each test runs a workflow of ``tests/crash_children/seed_child.py`` in a child process on a DuckDB
journal in ``tmp_path``, kills it with a real SIGKILL (sent by this process once the child
reached a point, or by an activity of the child itself), inspects the journal read-only as a
fresh process would, and then resumes the same run id in a new child.

The evidence lives outside the killed process: every activity execution is appended and fsynced
to ``counts.jsonl``; weft_nb's own evidence log (``WEFT_NB_EVIDENCE_LOG``) records attempts,
completions and replays per process; markers tell this process when to kill; the finishing child
writes ``result.json``; and the journal itself is read back after each kill.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest
from crash_process import WorkflowChild, read_jsonl

from weft_nb.journal.duckdb_journal import DuckDBJournal

pytestmark = pytest.mark.crash

CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "seed_child.py"
RUN_ID = "seed-run"


class Child(WorkflowChild):
    """One child process running (or resuming) a workflow of ``seed_child.py``."""

    def __init__(self, work: Path, name: str, workflow: str, input: Any, **config: Any) -> None:
        super().__init__(
            work,
            name,
            CHILD,
            run_id=RUN_ID,
            workflow=workflow,
            input=input,
            env={"WEFT_NB_EVIDENCE_LOG": str(work / "evidence" / "engine.jsonl")},
            **config,
        )

    def expect_killed(self) -> None:
        """As the base class, and the run must not have settled before the kill."""
        super().expect_killed()
        assert not (self.evidence / "result.json").exists(), "the run settled before the kill"

    def finish(self) -> dict[str, Any]:
        """As the base class, and the run must have completed."""
        outcome = super().finish()
        assert outcome["status"] == "completed", outcome
        return outcome


def executions(evidence: Path, pid: int | None = None) -> collections.Counter[str]:
    """How many times each activity started executing (optionally in one process)."""
    return collections.Counter(
        row["activity"]
        for row in read_jsonl(evidence, "counts.jsonl")
        if pid is None or row["pid"] == pid
    )


def engine_events(evidence: Path, pid: int, event: str) -> list[int]:
    """Positions of one kind of weft_nb evidence event in one process, in order."""
    return [
        row["position"]
        for row in read_jsonl(evidence, "engine.jsonl")
        if row["pid"] == pid and row["event"] == event and row["run_id"] == RUN_ID
    ]


def query(journal: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the journal read-only, as a fresh process would after the crash."""
    reader = DuckDBJournal(journal, read_only=True)
    try:
        return reader.query(sql, [*params])
    finally:
        reader.close()


def run_status(journal: Path) -> str:
    ((status,),) = query(journal, "SELECT status FROM runs WHERE run_id = ?", RUN_ID)
    return str(status)


def steps(journal: Path) -> dict[int, tuple[str, str, Any]]:
    """Position -> (activity, status, decoded JSON result) of the run's current steps."""
    rows = query(
        journal,
        "SELECT position, activity, status, result_codec, result FROM steps "
        "WHERE run_id = ? AND NOT superseded ORDER BY position",
        RUN_ID,
    )
    found = {}
    for position, activity, status, codec, result in rows:
        assert position not in found, f"two current rows for step {position}: {rows}"
        value = json.loads(result) if codec == "json" and result is not None else result
        found[position] = (activity, status, value)
    return found


def signals(journal: Path) -> dict[str, tuple[Any, int | None]]:
    """signal_id -> (payload, consumed_position) of the run's signals."""
    rows = query(
        journal,
        "SELECT signal_id, payload, consumed_at, consumed_position FROM signals "
        "WHERE run_id = ? ORDER BY id",
        RUN_ID,
    )
    found = {}
    for signal_id, payload, consumed_at, position in rows:
        assert (consumed_at is None) == (position is None), rows
        found[signal_id] = (json.loads(payload), position)
    return found


def signal_spec(signal_id: str, n: int) -> dict[str, Any]:
    return {"name": "go", "payload": {"n": n}, "signal_id": signal_id}


# -- 1. ctx.sleep spanning a restart ----------------------------------------------------------

SLEEP = 8.0
DEAD = 4.0  # how long the run stays without a process


def test_sleep_spanning_a_restart_ends_at_its_original_deadline(tmp_path: Path) -> None:
    first = Child(tmp_path, "first", "sleeper", {"tag": "t", "seconds": SLEEP}, report_sleep=True)
    # The child reads the deadline back from its own journal, so it is committed when we kill.
    sleeping = first.wait_marker("sleeping")
    first.kill()
    killed_at = time.time()
    deadline = sleeping["deadline"]
    assert sleeping["status"] == "started"
    (before,) = [r["t"] for r in read_jsonl(first.evidence, "counts.jsonl")]
    assert before < deadline - SLEEP + 1.0, "the deadline is not one sleep after the step before"
    assert killed_at < deadline - 1.0, "killed too late to tell a kept deadline from a new one"
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {
        0: ("before_sleep", "completed", "t:before"),
        1: ("<sleep>", "started", deadline),
    }

    time.sleep(DEAD)  # the scenario itself: the run has no process for a while
    second = Child(tmp_path, "second", "sleeper", None, api="resume")
    outcome = second.finish()

    (launch,) = [
        r["t"] for r in read_jsonl(second.evidence, "process.jsonl") if r["pid"] == second.pid
    ]
    woke = outcome["value"]["woke"]
    assert outcome["value"]["before"] == "t:before"
    # The new process started while the sleep still had time left, so a replay that skipped
    # the sleep would wake early, and one that slept again would wake after launch + SLEEP.
    assert launch < deadline - 1.0, "resumed too late to tell a kept deadline from a skipped one"
    # Never before the original deadline (50 ms for float time and timer rounding) ...
    assert woke >= deadline - 0.05, f"woke {deadline - woke:.2f}s before the deadline"
    # ... and well before a full sleep counted from the restart would have ended.
    assert woke < launch + SLEEP - 1.0, (
        f"woke {woke - deadline:.2f}s after the deadline, resumed {launch - deadline:.2f}s "
        "from it: the sleep restarted its full duration"
    )
    assert executions(second.evidence) == {"before_sleep": 1, "after_sleep": 1}
    assert executions(second.evidence, first.pid) == {"before_sleep": 1}
    assert engine_events(second.evidence, second.pid, "step_replayed") == [0]
    final = steps(second.journal)
    assert final[1] == ("<sleep>", "completed", deadline)
    ((finished_at,),) = query(
        second.journal,
        "SELECT finished_at FROM steps WHERE run_id = ? AND position = 1 AND NOT superseded",
        RUN_ID,
    )
    assert deadline - 0.05 <= finished_at <= woke
    assert run_status(second.journal) == "completed"


# -- 2. a signal buffered before a crash ------------------------------------------------------


def test_signal_buffered_before_a_crash_is_delivered_after_it(tmp_path: Path) -> None:
    cfg = {"payload": {"approved": True, "by": "ada"}, "version": 3, "timeout": "30s"}
    first = Child(tmp_path, "first", "buffered", cfg, block_in="prepare_release")
    assert first.wait_marker("blocked") == {"activity": "prepare_release", "pos": 1}
    first.kill()

    sent = [r for r in read_jsonl(first.evidence, "process.jsonl") if r["event"] == "signal"]
    assert [(r["signal_id"], r["added"], r["pid"]) for r in sent] == [("review-1", True, first.pid)]
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {0: ("send_review", "completed", "sent")}
    assert signals(first.journal) == {"review-1": (cfg["payload"], None)}  # buffered, unconsumed

    second = Child(tmp_path, "second", "buffered", None, api="resume")
    outcome = second.finish()
    assert outcome["value"] == {"sent": "sent", "release": "release-3", "review": cfg["payload"]}
    # The sender was replayed, so the signal was sent once, by the killed process.
    assert executions(second.evidence) == {"send_review": 1, "prepare_release": 2}
    assert executions(second.evidence, second.pid) == {"prepare_release": 1}
    assert signals(second.journal) == {"review-1": (cfg["payload"], 2)}
    assert steps(second.journal)[2] == ("<signal>", "completed", cfg["payload"])
    assert run_status(second.journal) == "completed"


# -- 3. a signal consumed right before a crash ------------------------------------------------


def test_signal_consumed_before_a_crash_is_replayed_not_consumed_again(tmp_path: Path) -> None:
    first = Child(
        tmp_path,
        "first",
        "consumed",
        {"timeout": "30s"},
        kill_in="boom",  # boom SIGKILLs its process on this (its first) execution
        signals_after_launch=[signal_spec("go-1", 1), signal_spec("go-2", 2)],
    )
    first.expect_killed()

    assert executions(first.evidence) == {"boom": 1}
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {0: ("<signal>", "completed", {"n": 1})}
    assert signals(first.journal) == {"go-1": ({"n": 1}, 0), "go-2": ({"n": 2}, None)}

    # The new process buffers a third signal before resuming: a resume that consumed step 0's
    # signal again would take go-2 there and go-3 at step 2, and finish anyway.
    second = Child(
        tmp_path,
        "second",
        "consumed",
        None,
        api="resume",
        signals_before_launch=[signal_spec("go-3", 3)],
    )
    outcome = second.finish()
    assert outcome["value"] == {
        "first": {"n": 1},
        "handled": {"handled": {"n": 1}},
        "second": {"n": 2},
    }
    assert signals(second.journal) == {
        "go-1": ({"n": 1}, 0),
        "go-2": ({"n": 2}, 2),
        "go-3": ({"n": 3}, None),
    }
    assert executions(second.evidence) == {"boom": 2}  # in flight at the kill: at-least-once
    final = steps(second.journal)
    assert final[0] == ("<signal>", "completed", {"n": 1})
    assert final[2] == ("<signal>", "completed", {"n": 2})
    assert run_status(second.journal) == "completed"


# -- 4. an async completion delivered in the recovery window ----------------------------------


def test_async_completion_in_the_recovery_window_is_used_on_resume(tmp_path: Path) -> None:
    first = Child(tmp_path, "first", "parked", "report.pdf")
    pending = first.wait_marker("async_pending")
    first.kill()

    token = json.loads((first.evidence / "token.json").read_text())
    assert pending == {"position": 0, "token": token}
    assert token == f"async-act:v1:{RUN_ID}:0:1"
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {}
    assert query(
        first.journal,
        "SELECT position, consumed_at FROM async_tokens WHERE run_id = ? AND token = ?",
        RUN_ID,
        token,
    ) == [(0, None)]

    reply = {"approved": True, "comment": "ship it"}
    second = Child(
        tmp_path,
        "second",
        "parked",
        None,
        api="resume",
        complete_before_launch={"result": reply},
    )
    outcome = second.finish()
    events = [r["event"] for r in read_jsonl(second.evidence, "process.jsonl")]
    assert events == ["launch", "completed_async", "launch"]  # completed before resuming
    assert outcome["value"] == {"published": reply}
    assert executions(second.evidence) == {"request_review": 1, "publish": 1}
    assert executions(second.evidence, first.pid) == {"request_review": 1}
    assert engine_events(second.evidence, second.pid, "attempt_start") == [1]
    assert engine_events(second.evidence, second.pid, "step_replayed") == [0]
    assert steps(second.journal)[0] == ("request_review", "completed", reply)
    ((consumed_at,),) = query(
        second.journal, "SELECT consumed_at FROM async_tokens WHERE token = ?", token
    )
    assert consumed_at is not None
    assert run_status(second.journal) == "completed"


# -- 5. a partially completed ctx.all ---------------------------------------------------------


def test_partially_completed_all_runs_only_the_unfinished_step_again(tmp_path: Path) -> None:
    first = Child(tmp_path, "first", "gathered", {"a": "A", "b": "B"}, block_in="branch_b")
    assert first.wait_marker("blocked") == {"activity": "branch_b", "pos": 1}
    first.wait_for(
        lambda: engine_events(first.evidence, first.pid, "step_completed") == [0],
        "step 0 (branch_a) journaled",
    )
    first.kill()

    assert executions(first.evidence) == {"branch_a": 1, "branch_b": 1}
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {0: ("branch_a", "completed", "A-done")}

    second = Child(tmp_path, "second", "gathered", None, api="resume")
    outcome = second.finish()
    assert outcome["value"] == ["A-done", "B-done"]
    assert executions(second.evidence, second.pid) == {"branch_b": 1}
    assert executions(second.evidence) == {"branch_a": 1, "branch_b": 2}
    assert engine_events(second.evidence, second.pid, "step_replayed") == [0]
    assert engine_events(second.evidence, second.pid, "attempt_start") == [1]
    assert engine_events(second.evidence, second.pid, "step_completed") == [1]
    assert run_status(second.journal) == "completed"


# -- 6. a recorded ctx.race winner ------------------------------------------------------------


def test_recorded_race_winner_is_returned_after_a_crash(tmp_path: Path) -> None:
    # The hare (step 1) wins; the tortoise (step 0) settles only after the race is journaled, so
    # both are durable at the crash and a resume that raced again would pick step 0.
    first = Child(tmp_path, "first", "racing", "x", kill_in="after_race")
    first.expect_killed()

    assert executions(first.evidence) == {"tortoise": 1, "hare": 1, "after_race": 1}
    assert run_status(first.journal) == "running"
    assert steps(first.journal) == {
        0: ("tortoise", "completed", "tortoise:x"),
        1: ("hare", "completed", "hare:x"),
        2: ("<race>", "completed", 1),
    }

    second = Child(tmp_path, "second", "racing", None, api="resume")
    outcome = second.finish()
    assert outcome["value"] == {
        "index": 1,
        "winner": "hare:x",
        "loser": "tortoise:x",
        "after": "after:hare:x",
    }
    assert executions(second.evidence, second.pid) == {"after_race": 1}
    assert executions(second.evidence) == {"tortoise": 1, "hare": 1, "after_race": 2}
    assert sorted(engine_events(second.evidence, second.pid, "step_replayed")) == [0, 1]
    assert engine_events(second.evidence, second.pid, "attempt_start") == [3]
    assert steps(second.journal)[2] == ("<race>", "completed", 1)
    assert run_status(second.journal) == "completed"
