"""The pipeline crash child (``tests/crash_children/child.py``) and readers of what it leaves.

Shared by the crash tests (``tests/crash/``) and the step-log damage tests (``tests/journal/``).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from crash_children.evidence_files import checkpoint_files as files_under
from crash_process import WorkflowChild, read_jsonl

from weft_nb.base.payloads import decode
from weft_nb.journal.duckdb_journal import DuckDBJournal

CHILD = Path(__file__).resolve().parent / "crash_children" / "child.py"
RUN_ID = "crash-run"

PIPELINE_INPUT = {"n": 200, "seed": 7, "epochs": 5, "weight": 1}
PIPELINE_STEPS = ["prepare", "normalise", "train", "evaluate", "summarise"]
TRAIN_POSITION = PIPELINE_STEPS.index("train")
MANY_INPUT = {"steps": 8, "heartbeat": True}
RANDOM_INPUT = {"steps": 300, "heartbeat": False}


class Child(WorkflowChild):
    """One child process running (or resuming) a workflow of ``child.py``."""

    def __init__(self, work: Path, name: str, *, workflow: str, input: Any, **config: Any) -> None:
        config = {"heartbeat_interval": 0.05, "checkpoint_keep": 2, **config}
        super().__init__(work, name, CHILD, run_id=RUN_ID, workflow=workflow, input=input, **config)


def executions(evidence: Path, pid: int | None = None) -> collections.Counter[int]:
    """How many times each position started executing (optionally in one process)."""
    return collections.Counter(
        row["pos"]
        for row in read_jsonl(evidence, "counts.jsonl")
        if row["event"] == "start" and (pid is None or row["pid"] == pid)
    )


def returned(evidence: Path, pid: int) -> set[int]:
    """Positions whose activity returned in one process (pipeline activities only)."""
    return {
        row["pos"]
        for row in read_jsonl(evidence, "counts.jsonl")
        if row["event"] == "end" and row["pid"] == pid
    }


def inspect_journal(path: Path, run_id: str = RUN_ID) -> dict[str, Any]:
    """Open the journal read-only, as a fresh process would after the crash, and read it."""
    journal = DuckDBJournal(path, read_only=True)
    try:
        runs = {run.run_id: run.status for run in journal.list_runs()}
        completed = {
            row[0]
            for row in journal.query(
                "SELECT position FROM steps WHERE run_id = ? AND status = 'completed' "
                "AND NOT superseded",
                [run_id],
            )
        }
        checkpoints = journal.query(
            "SELECT position, seq, path FROM checkpoints WHERE run_id = ? AND NOT superseded "
            "ORDER BY position, seq",
            [run_id],
        )
        heartbeat = journal.latest_heartbeat(run_id, TRAIN_POSITION)
        all_paths = journal.all_checkpoint_paths()
    finally:
        journal.close()
    return {
        "runs": runs,
        "completed": completed,
        "checkpoints": [(row[0], row[1], row[2]) for row in checkpoints],
        "heartbeat": None if heartbeat is None else decode(heartbeat.codec, heartbeat.details),
        "checkpoint_paths": all_paths,
    }


def checkpoint_files(journal: Path) -> list[str]:
    """The checkpoint files on disk beside ``journal``, relative to its checkpoint folder."""
    return files_under(str(journal) + ".checkpoints")  # named from the whole file name (12.3)


def precreate_journal(path: Path) -> None:
    """Create the journal's schema here, so the child's first journal transaction is its run's."""
    DuckDBJournal(path).close()
