"""Crash tests with real processes: SIGKILL a child mid-run, resume the run in a new child.

Each test starts ``tests/crash_children/child.py`` on a journal in ``tmp_path``, kills it with a
real SIGKILL (sent by this process once the child signals it reached a point, by weft_nb's own
fault points through ``WEFT_NB_KILL_AT``, or by a seeded timer thread in the child), checks the
journal still opens, then resumes the same run id in a fresh child and lets it finish.

The evidence lives outside the child processes and outside the journal: every activity appends
(and fsyncs) a line per execution to ``counts.jsonl``, ``train`` records what it saw at start, and
the finishing child writes ``result.json``. The assertions:

- a step whose result was committed never runs again; only the step in flight at the kill may run
  twice (weft_nb is at-least-once for an activity that returned but was not yet recorded);
- the restarted step sees the pre-kill ``last_checkpoint`` and ``last_heartbeat_details``;
- the final result equals an uninterrupted run's, computed by another child on another journal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from crash_pipeline import (
    MANY_INPUT,
    PIPELINE_INPUT,
    PIPELINE_STEPS,
    RANDOM_INPUT,
    RUN_ID,
    TRAIN_POSITION,
    Child,
    checkpoint_files,
    executions,
    inspect_journal,
    precreate_journal,
    returned,
)
from crash_process import read_jsonl

pytestmark = pytest.mark.crash


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The outcome of an uninterrupted run of a workflow, each computed once in its own child."""
    cache: dict[str, dict[str, Any]] = {}

    def get(workflow: str, input: Any) -> dict[str, Any]:
        key = json.dumps([workflow, input], sort_keys=True)
        if key not in cache:
            work = tmp_path_factory.mktemp(f"reference-{workflow}")
            child = Child(work, "uninterrupted", workflow=workflow, input=input)
            outcome = child.finish()
            counts = executions(child.evidence)
            assert set(counts.values()) == {1}, counts
            assert outcome["executed_steps"] == len(counts)
            cache[key] = outcome
        return cache[key]

    return get


def assert_pipeline_counts(evidence: Path, in_flight: int | None) -> None:
    """Each pipeline step ran exactly once, except the in-flight one: twice."""
    counts = executions(evidence)
    expected = {pos: 2 if pos == in_flight else 1 for pos in range(len(PIPELINE_STEPS))}
    assert dict(counts) == expected


def train_rows(evidence: Path, event: str, pid: int | None = None) -> list[dict[str, Any]]:
    """The ``train.jsonl`` rows of one event (optionally of one process)."""
    return [
        row
        for row in read_jsonl(evidence, "train.jsonl")
        if row["event"] == event and (pid is None or row["pid"] == pid)
    ]


def train_starts(evidence: Path, pid: int) -> list[dict[str, Any]]:
    return train_rows(evidence, "start", pid)


def train_checkpoints(evidence: Path, pid: int) -> list[dict[str, Any]]:
    return [row["state"] for row in train_rows(evidence, "checkpointed", pid)]


def flushed_heartbeats(evidence: Path, pid: int | None = None) -> list[dict[str, Any]]:
    return [row["details"] for row in train_rows(evidence, "heartbeat_flushed", pid)]


def kill_when_blocked(work: Path, name: str, activity: str, epoch: int | None = None) -> Child:
    """A pipeline child, SIGKILLed once blocked in ``activity``.

    It blocks at the activity's start, or (``train`` only) once ``epoch`` is checkpointed and
    its heartbeat flushed.
    """
    child = Child(
        work,
        name,
        workflow="pipeline",
        input=PIPELINE_INPUT,
        block={"activity": activity, "epoch": epoch},
    )
    assert child.wait_marker("blocked") == {"activity": activity, "epoch": epoch}
    child.kill()
    return child


# -- a) killed between steps ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocked_in", "api"),
    [("train", "start"), ("summarise", "resume")],
    ids=["after-step-1", "after-step-3"],
)
def test_kill_after_a_step_completed(
    tmp_path: Path, reference: Any, blocked_in: str, api: str
) -> None:
    position = PIPELINE_STEPS.index(blocked_in)
    first = kill_when_blocked(tmp_path, "first", blocked_in)

    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: "running"}
    assert state["completed"] == set(range(position))
    assert returned(first.evidence, first.proc.pid) == set(range(position))

    second = Child(tmp_path, "second", workflow="pipeline", input=PIPELINE_INPUT, api=api)
    outcome = second.finish()
    starts = train_starts(second.evidence, second.proc.pid)
    if position <= TRAIN_POSITION:  # train restarts from scratch: it never checkpointed
        assert [(s["last_checkpoint"], s["last_heartbeat_details"]) for s in starts] == [
            (None, None)
        ]
    else:  # train's result was committed: replayed, not run
        assert starts == []
    assert outcome["status"] == "completed"
    assert outcome["replayed_steps"] == position
    assert outcome["executed_steps"] == len(PIPELINE_STEPS) - position
    assert sorted(executions(second.evidence, second.proc.pid)) == list(
        range(position, len(PIPELINE_STEPS))
    )
    assert_pipeline_counts(second.evidence, in_flight=position)
    assert outcome["value"] == reference("pipeline", PIPELINE_INPUT)["value"]
    assert inspect_journal(second.journal)["runs"] == {RUN_ID: "completed"}


# -- b) killed inside a step, after a heartbeat and a checkpoint ----------------------------


def test_kill_inside_a_step_resumes_from_its_checkpoint_and_heartbeat(
    tmp_path: Path, reference: Any
) -> None:
    first = kill_when_blocked(tmp_path, "first", "train", epoch=3)

    before = train_checkpoints(first.evidence, first.proc.pid)
    assert [s["epoch"] for s in before] == [1, 2, 3]
    flushed = flushed_heartbeats(first.evidence)
    assert [d["epoch"] for d in flushed] == [3]
    state = inspect_journal(first.journal)
    assert state["runs"] == {RUN_ID: "running"}
    assert state["completed"] == {0, 1}
    assert [(pos, seq) for pos, seq, _ in state["checkpoints"]] == [
        (TRAIN_POSITION, 2),
        (TRAIN_POSITION, 3),
    ]
    assert state["heartbeat"] == flushed[0]

    second = Child(tmp_path, "second", workflow="pipeline", input=PIPELINE_INPUT)
    outcome = second.finish()
    (start,) = train_starts(second.evidence, second.proc.pid)
    assert start["last_checkpoint"] == before[-1]
    assert start["last_heartbeat_details"] == flushed[0]
    assert [s["epoch"] for s in train_checkpoints(second.evidence, second.proc.pid)] == [4, 5]
    assert outcome["replayed_steps"] == TRAIN_POSITION
    assert_pipeline_counts(second.evidence, in_flight=TRAIN_POSITION)
    assert outcome["value"] == reference("pipeline", PIPELINE_INPUT)["value"]


def test_second_kill_inside_the_resumed_step_resumes_from_the_newest_state(
    tmp_path: Path, reference: Any
) -> None:
    """Killed at epoch 3, resumed, killed again at epoch 4: the third process starts at 4."""
    first = kill_when_blocked(tmp_path, "first", "train", epoch=3)
    assert inspect_journal(first.journal)["runs"] == {RUN_ID: "running"}
    second = kill_when_blocked(tmp_path, "second", "train", epoch=4)

    (start2,) = train_starts(second.evidence, second.proc.pid)
    assert start2["last_checkpoint"]["epoch"] == 3
    assert start2["last_heartbeat_details"] == flushed_heartbeats(first.evidence, first.proc.pid)[0]
    (state4,) = train_checkpoints(second.evidence, second.proc.pid)
    (beat4,) = flushed_heartbeats(second.evidence, second.proc.pid)
    assert beat4["epoch"] == 4
    state = inspect_journal(second.journal)
    assert state["completed"] == {0, 1}
    assert state["heartbeat"] == beat4, "latest_heartbeat is not the newest committed one"

    third = Child(tmp_path, "third", workflow="pipeline", input=PIPELINE_INPUT)
    outcome = third.finish()
    (start3,) = train_starts(third.evidence, third.proc.pid)
    assert start3["last_checkpoint"] == state4
    assert start3["last_heartbeat_details"] == beat4
    assert [s["epoch"] for s in train_checkpoints(third.evidence, third.proc.pid)] == [5]
    counts = executions(third.evidence)
    assert dict(counts) == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}
    assert outcome["value"] == reference("pipeline", PIPELINE_INPUT)["value"]


# -- c) killed while writing a checkpoint ---------------------------------------------------


@pytest.mark.parametrize("point", ["checkpoint.tmp_written", "checkpoint.renamed"])
def test_kill_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, reference: Any, point: str
) -> None:
    first = Child(
        tmp_path, "first", workflow="pipeline", input=PIPELINE_INPUT, kill_at=f"{point}:3"
    )
    first.expect_killed()

    before = train_checkpoints(first.evidence, first.proc.pid)
    assert [s["epoch"] for s in before] == [1, 2]  # the third checkpoint() never returned
    state = inspect_journal(first.journal)
    assert state["completed"] == {0, 1}
    assert [(pos, seq) for pos, seq, _ in state["checkpoints"]] == [
        (TRAIN_POSITION, 1),
        (TRAIN_POSITION, 2),
    ]
    on_disk = checkpoint_files(first.journal)
    leftovers = [f for f in on_disk if f not in state["checkpoint_paths"]]
    folder = os.path.join(RUN_ID, str(TRAIN_POSITION))
    if point == "checkpoint.tmp_written":
        assert len(leftovers) == 1
        assert os.path.basename(leftovers[0]).startswith(".tmp-")
    else:  # renamed into place, but the journal row was never committed
        assert leftovers == [os.path.join(folder, "00000003-a1.pkl")]

    second = Child(tmp_path, "second", workflow="pipeline", input=PIPELINE_INPUT)
    outcome = second.finish()
    opened = json.loads((second.evidence / f"opened-{second.proc.pid}.json").read_text())
    assert sorted(opened) == sorted(state["checkpoint_paths"])  # orphans gone once it opened
    (start,) = train_starts(second.evidence, second.proc.pid)
    assert start["last_checkpoint"] == before[-1]
    hb = start["last_heartbeat_details"]
    assert hb is None or hb["epoch"] <= 3
    assert [s["epoch"] for s in train_checkpoints(second.evidence, second.proc.pid)] == [3, 4, 5]
    assert_pipeline_counts(second.evidence, in_flight=TRAIN_POSITION)
    assert outcome["value"] == reference("pipeline", PIPELINE_INPUT)["value"]

    after = inspect_journal(second.journal)
    assert [(pos, seq) for pos, seq, _ in after["checkpoints"]] == [
        (TRAIN_POSITION, 4),
        (TRAIN_POSITION, 5),
    ]
    assert checkpoint_files(second.journal) == sorted(after["checkpoint_paths"])


# -- d) killed around a journal commit ------------------------------------------------------

# With a pre-created journal, ``heartbeat=True`` steps and a flusher that never fires, the
# child's run start is a step-log record (``runlog.started``), its journal transactions are #1..#8
# steps 0..7 (each step's result is committed with its final heartbeat; #1 also moves the run's
# start into DuckDB), and its outcome is a step-log record (``runlog.finished``) that reaches
# DuckDB at close. ``step.before_record:N`` is the N-th activity return.
LAST = MANY_INPUT["steps"] - 1


@pytest.mark.parametrize(
    ("kill_at", "run_status", "committed", "twice"),
    [
        ("runlog.started:1", "running", set(), None),
        ("journal.before_commit:1", "running", set(), 0),
        ("journal.after_commit:1", "running", {0}, None),
        ("journal.before_commit:5", "running", {0, 1, 2, 3}, 4),
        ("journal.after_commit:5", "running", {0, 1, 2, 3, 4}, None),
        ("step.before_record:4", "running", {0, 1, 2}, 3),
        ("journal.after_commit:8", "running", set(range(LAST + 1)), None),
        ("runlog.finished:1", "completed", set(range(LAST + 1)), None),
        ("steplog.before_apply_commit:2", "completed", set(range(LAST + 1)), None),  # at close
    ],
)
def test_kill_around_a_journal_commit(
    tmp_path: Path,
    reference: Any,
    kill_at: str,
    run_status: str | None,
    committed: set[int],
    twice: int | None,
) -> None:
    journal = tmp_path / "journal.duckdb"
    precreate_journal(journal)
    first = Child(
        tmp_path,
        "first",
        workflow="many",
        input=MANY_INPUT,
        kill_at=kill_at,
        heartbeat_interval=3600.0,
    )
    first.expect_killed()

    state = inspect_journal(journal)
    assert state["runs"] == ({} if run_status is None else {RUN_ID: run_status})
    assert state["completed"] == committed
    ran_before = executions(first.evidence, first.proc.pid)
    expected_before = committed | ({twice} if twice is not None else set())
    assert set(ran_before) == expected_before
    assert set(ran_before.values()) <= {1}

    second = Child(tmp_path, "second", workflow="many", input=MANY_INPUT)
    outcome = second.finish()
    counts = executions(second.evidence)
    assert dict(counts) == {pos: 2 if pos == twice else 1 for pos in range(LAST + 1)}
    assert set(executions(second.evidence, second.proc.pid)) == set(range(LAST + 1)) - committed
    assert outcome["value"] == reference("many", MANY_INPUT)["value"]
    assert outcome["replayed_from_journal"] == (run_status == "completed")
    assert inspect_journal(journal)["runs"] == {RUN_ID: "completed"}


@pytest.mark.parametrize("seed", [1, 5, 8])
def test_random_kill_among_many_tiny_steps(tmp_path: Path, reference: Any, seed: int) -> None:
    steps = RANDOM_INPUT["steps"]
    first = Child(
        tmp_path,
        "first",
        workflow="many",
        input=RANDOM_INPUT,
        random_kill={"seed": seed, "first": 20, "last": steps - 150, "max_delay": 0.02},
    )
    first.expect_killed()

    state = inspect_journal(first.journal)
    committed = state["completed"]
    done = len(committed)
    assert committed == set(range(done))  # a prefix: steps commit in order
    assert done < steps, "the kill landed after the run finished; lower max_delay"
    ran_before = executions(first.evidence, first.proc.pid)
    assert set(ran_before.values()) == {1}
    # Every committed step ran before the kill, and at most the next one was in flight.
    assert committed <= set(ran_before) <= committed | {done}

    second = Child(tmp_path, "second", workflow="many", input=RANDOM_INPUT)
    outcome = second.finish()
    ran_after = executions(second.evidence, second.proc.pid)
    assert set(ran_after) == set(range(done, steps))  # committed steps were replayed
    assert set(ran_after.values()) == {1}
    counts = executions(second.evidence)
    twice = {pos for pos, n in counts.items() if n > 1}
    assert twice <= {done}  # only the step in flight at the kill ran again
    assert twice == set(ran_before) - committed
    assert outcome["replayed_steps"] == done
    assert outcome["value"] == reference("many", RANDOM_INPUT)["value"]
