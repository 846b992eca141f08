"""weft_nb.errors: every error writes its own message, keeps its fields, and survives a pickle.

Errors cross process boundaries (a worker process's attempt, a Dask worker) and are journaled as
JSON (a finished run's error is raised again from the journal), so each class in
``errors.__all__`` must come back from both with its type, message and attributes.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import weft_nb
from weft_nb import errors
from weft_nb.base.payloads import error_from_json, error_to_json
from weft_nb.testing import TestEngine

_WHERE: dict[str, Any] = {"run_id": "r1", "position": 3, "activity": "train"}
_FAILURE: dict[str, Any] = {"cause_type": "ValueError", "cause_message": "bad", "attempts": 2}

# One example of each error, built the way the engine builds it.
EXAMPLES: dict[str, Callable[[], errors.WeftError]] = {
    "WeftError": lambda: errors.WeftError("something failed", run_id="r1"),
    "ActivityFailedError": lambda: errors.ActivityFailedError(
        **_FAILURE, traceback_text="Traceback...", **_WHERE
    ),
    "ActivityCrashLoopError": lambda: errors.ActivityCrashLoopError(
        "train crashed twice", cause_type="ActivityCrashed", cause_message="died", attempts=2
    ),
    "ActivityTimeoutError": lambda: errors.ActivityTimeoutError(**_FAILURE, **_WHERE),
    "ActivityPerAttemptTimeoutError": lambda: errors.ActivityPerAttemptTimeoutError(
        seconds=1.5, attempts=2, **_WHERE
    ),
    "ActivityHeartbeatTimeoutError": lambda: errors.ActivityHeartbeatTimeoutError(
        seconds=10, attempts=1, **_WHERE
    ),
    "ActivityScheduleToCloseTimeoutError": lambda: errors.ActivityScheduleToCloseTimeoutError(
        "gave up", **_FAILURE, **_WHERE
    ),
    "ActivityVerificationError": lambda: errors.ActivityVerificationError("train", 3, "r1", 2),
    "CircuitOpenError": lambda: errors.CircuitOpenError("charge", 1_700_000_000.0, 1_700_000_030.0),
    "ActivityNotRegisteredError": lambda: errors.ActivityNotRegisteredError(
        "train", workflow="pipeline", run_id="r1", registered={"known": None}
    ),
    "WorkflowNotRegisteredError": lambda: errors.WorkflowNotRegisteredError("orphan", run_id="r1"),
    "RunNotFoundError": lambda: errors.RunNotFoundError("missing", "/tmp/j.duckdb"),
    "WorkflowFailedError": lambda: errors.WorkflowFailedError(
        "r1", "KeyError", "'x'", "Traceback..."
    ),
    "WorkflowCancelledError": lambda: errors.WorkflowCancelledError(
        "r1", activity="train", position=3, reason="per-attempt timeout of 2s passed"
    ),
    "AsyncTokenNotFoundError": lambda: errors.AsyncTokenNotFoundError("tok-1"),
    "DurableActivityScopeError": lambda: errors.DurableActivityScopeError("outside a memo"),
    "InterceptorCallError": lambda: errors.InterceptorCallError("Retrying", "intercept_attempt"),
    "RunFinishedError": lambda: errors.RunFinishedError("r1", "completed", signal="approve"),
    "RunInterruptedError": lambda: errors.RunInterruptedError("r1", "interrupted by the user"),
    "ChildWorkflowDepthError": lambda: errors.ChildWorkflowDepthError("r1.0.0", 0, 11, 10),
    "ChildWorkflowFailedError": lambda: errors.ChildWorkflowFailedError(
        "trial", "sweep.3", run_id="sweep", position=3, reason="ValueError: lr too high"
    ),
    "SignalTimeoutError": lambda: errors.SignalTimeoutError("approve", 30, run_id="r1", position=4),
    "AsyncStyleError": lambda: errors.AsyncStyleError(
        "sync workflow 'wf' returned a coroutine", "make it `async def wf`", where="nb.py:3"
    ),
    "StepNotAwaitedError": lambda: errors.StepNotAwaitedError(
        "ctx.run('train')", where="nb.py:4", run_id="r1"
    ),
    "StepScopeError": lambda: errors.StepScopeError("ctx.run in a memo", run_id="r1", call="run"),
    "NonDeterminismError": lambda: errors.NonDeterminismError("r1", 1, "its input changed"),
    "WorkflowVersionMismatchError": lambda: errors.WorkflowVersionMismatchError(
        "r1", "pipeline", recorded_version="1", registered_version="2"
    ),
    "BranchTopologyChangedError": lambda: errors.BranchTopologyChangedError(
        "r1", 2, recorded=["a", "b"], current=["b", "a"]
    ),
    "ActivityReconciliationIndeterminateError": lambda: (
        errors.ActivityReconciliationIndeterminateError("unknown outcome", **_WHERE)
    ),
    "JournalError": lambda: errors.JournalError("read-only", path="/tmp/j.duckdb"),
    "JournalLockedError": lambda: errors.JournalLockedError(
        "/tmp/j.duckdb", "PID 42 on host (notebook)", holder_pid=42, advice="Close it."
    ),
    "NotebookJournalLockedError": lambda: errors.NotebookJournalLockedError(
        errors.JournalLockedError("/nb/.weft/journal.duckdb", "PID 42 on host", holder_pid=42),
        chosen="nothing told it which notebook this kernel runs",
    ),
    "UndecidedNotebookError": lambda: errors.UndecidedNotebookError(
        ["/nb/train.ipynb", "/nb/train-copy.ipynb"]
    ),
    "JournalReadOnlyError": lambda: errors.JournalReadOnlyError("/tmp/j.duckdb"),
    "JournalCorruptError": lambda: errors.JournalCorruptError("/tmp/j.duckdb", "is truncated"),
    "JournalClosedError": lambda: errors.JournalClosedError("/tmp/j.duckdb"),
    "JournalIOError": lambda: errors.JournalIOError(
        "disk full", path="/tmp/j.duckdb", cause="disk full", errno=28
    ),
    "JournalVersionError": lambda: errors.JournalVersionError(
        "newer",
        path="/tmp/j.duckdb",
        writer_version="v2.1.0",
        storage_version=70,
        reader_version="v2.0.1",
    ),
    "PayloadError": lambda: errors.PayloadError("too large", activity="train"),
    "CheckpointEnvironmentError": lambda: errors.CheckpointEnvironmentError(
        "/j.duckdb.checkpoints/r1/3/00000002-a1.pkl",
        run_id="r1",
        position=3,
        missing="device",
        cause="RuntimeError: Attempting to deserialize object on a CUDA device",
    ),
    "CheckpointStorageError": lambda: errors.CheckpointStorageError(
        "s3://b/p/r1/3/a1-0123.pkl", operation="write", cause="EndpointConnectionError: down"
    ),
    "ActivityNotShippableError": lambda: errors.ActivityNotShippableError(
        "cannot pickle", activity="train", name="handle"
    ),
    "CompensationError": lambda: errors.CompensationError(
        "r1",
        [{"position": 2, "activity": "charge", "compensation": "refund", "error": "timeout"}],
    ),
    "UnsupportedPlatformError": lambda: errors.UnsupportedPlatformError("win32"),
    "WorkerLostError": lambda: errors.WorkerLostError(
        "worker process (pid 123)",
        "was killed by signal SIGKILL",
        attempt=1,
        pid=123,
        exitcode=-9,
        **_WHERE,
    ),
    "ExecutorUnavailableError": lambda: errors.ExecutorUnavailableError("closed"),
    "SchedulerUnreachableError": lambda: errors.SchedulerUnreachableError(
        "no answer", address="tcp://h:8786"
    ),
    "MissingExtraError": lambda: errors.MissingExtraError(
        "weft_nb.DaskExecutor", module="distributed", extra="dask", reason="No module named x"
    ),
    "InvalidRunIdError": lambda: errors.InvalidRunIdError("empty", run_id=""),
    "CellDefinitionError": lambda: errors.CellDefinitionError("the magic needs a name"),
    "CellExecutionError": lambda: errors.CellExecutionError(
        "1/0", {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": ["a"]}
    ),
    "CliError": lambda: errors.CliError("the endpoint answered something else"),
    "JournalNotFoundError": lambda: errors.JournalNotFoundError("/tmp/none.duckdb"),
}
WARNINGS = {name for name in errors.__all__ if name.endswith("Warning")}


def test_every_error_class_has_an_example() -> None:
    assert sorted(EXAMPLES) == sorted(set(errors.__all__) - WARNINGS)
    for name in errors.__all__:
        cls = getattr(errors, name)
        base = errors.WeftWarning if name in WARNINGS else errors.WeftError
        assert issubclass(cls, base), name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_error_round_trips_through_pickle_with_its_fields(name: str) -> None:
    error = EXAMPLES[name]()
    assert type(error).__name__ == name
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.message == error.message
    assert copy.fields == error.fields
    for key, value in error.fields.items():
        assert getattr(copy, key) == value == getattr(error, key), key


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_error_comes_back_from_the_journal_as_itself(name: str) -> None:
    error = EXAMPLES[name]()
    rebuilt = error_from_json(error_to_json(error), run_id="r1")
    assert type(rebuilt) is type(error)
    assert isinstance(rebuilt, errors.WeftError)
    assert str(rebuilt) == str(error)
    assert rebuilt.fields == error.fields


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_every_warning_is_a_user_warning_that_pickles(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.WeftWarning) and issubclass(cls, UserWarning)
    copy = pickle.loads(pickle.dumps(cls("step 1 changed")))
    assert type(copy) is cls and str(copy) == "step 1 changed"


def test_messages_are_written_from_the_ids() -> None:
    """The substrings other tests (and users' notebooks) look for, in one place each."""
    found = errors.RunNotFoundError("missing", "/j.duckdb")
    assert str(found).startswith("no run 'missing' in journal /j.duckdb")
    assert (found.run_id, found.journal_path) == ("missing", "/j.duckdb")
    timeout = errors.ActivityPerAttemptTimeoutError(seconds=1.5, attempts=2, **_WHERE)
    assert "activity 'train' (step 3, run 'r1') attempt 2 ran longer than its timeout of 1.5s" in (
        str(timeout)
    )
    assert (timeout.cause_type, timeout.cause_message, timeout.seconds) == (
        "ActivityPerAttemptTimeoutError",
        "timeout of 1.5s passed",
        1.5,
    )
    heartbeat = errors.ActivityHeartbeatTimeoutError(seconds=10, attempts=1, **_WHERE)
    assert "sent no heartbeat for its heartbeat_timeout of 10s" in str(heartbeat)
    assert "was cancelled; a cancelled run is not resumed" in str(
        errors.WorkflowCancelledError("r1")
    )
    assert "was asked to stop: per-attempt timeout of 2s passed" in str(
        EXAMPLES["WorkflowCancelledError"]()
    )
    assert "step 1 of run 'r1' no longer matches the journal: its input changed" in str(
        EXAMPLES["NonDeterminismError"]()
    )
    assert "['a', 'b'] and now has ['b', 'a']" in str(EXAMPLES["BranchTopologyChangedError"]())
    assert (
        str(EXAMPLES["RunFinishedError"]())
        == "run 'r1' is completed; signal 'approve' cannot be delivered to a finished run"
    )
    token = errors.RunFinishedError("r1", "cancelled", token="t", position=2)
    assert "token 't' belongs to step 2 of run 'r1', which is cancelled" in str(token)
    assert "Registered: ['known']" in str(EXAMPLES["ActivityNotRegisteredError"]())
    assert "registered: none" in str(errors.WorkflowNotRegisteredError("orphan"))
    assert str(EXAMPLES["JournalLockedError"]()) == (
        "journal /tmp/j.duckdb is in use by PID 42 on host (notebook). Close it."
    )
    assert (
        str(errors.JournalLockedError("/j", "PID 1", holder_pid=1, detail=", an older weft_nb"))
        == "journal /j is in use by PID 1, an older weft_nb."
    )
    assert "was opened read-only" in str(EXAMPLES["JournalReadOnlyError"]())
    lost = EXAMPLES["WorkerLostError"]()
    assert str(lost).startswith(
        "the worker process (pid 123) running activity 'train' (step 3, run 'r1', attempt 1) "
        "was killed by signal SIGKILL. The attempt failed"
    )
    assert (lost.pid, lost.exitcode, lost.attempt) == (123, -9, 1)
    assert str(EXAMPLES["JournalCorruptError"]()) == (
        "journal /tmp/j.duckdb is truncated. It is left untouched: move it aside (or restore a "
        "backup) to start a new journal."
    )
    cell = EXAMPLES["CellExecutionError"]()
    assert isinstance(cell, errors.CellExecutionError)
    assert (cell.ename, cell.evalue, cell.traceback) == (
        "ZeroDivisionError",
        "division by zero",
        "a",
    )


def test_errors_that_are_also_builtin_errors() -> None:
    assert isinstance(EXAMPLES["CellDefinitionError"](), ValueError)
    assert isinstance(EXAMPLES["InvalidRunIdError"](), ValueError)
    assert isinstance(EXAMPLES["CellExecutionError"](), RuntimeError)
    assert isinstance(EXAMPLES["MissingExtraError"](), ImportError)
    assert isinstance(EXAMPLES["JournalNotFoundError"](), errors.CliError)


def test_the_old_import_paths_still_work() -> None:
    from weft_nb.engine import parallel, run_definitions, workflow_context

    assert parallel.BranchTopologyChangedError is errors.BranchTopologyChangedError
    assert workflow_context.StepChangedWarning is errors.StepChangedWarning
    assert run_definitions.ActivityRedefinedWarning is errors.ActivityRedefinedWarning
    assert weft_nb.StepChangedWarning is errors.StepChangedWarning
    assert weft_nb.ActivityRedefinedWarning is errors.ActivityRedefinedWarning
    assert weft_nb.DevelopmentWarning is errors.DevelopmentWarning


def test_every_run_not_found_reads_the_same() -> None:
    """resume, cancel, signal and snapshot raise one message, written by the error."""
    with TestEngine() as engine:
        expected = str(errors.RunNotFoundError("nope", engine.journal.path))
        calls: list[Callable[[], object]] = [
            lambda: engine.resume("nope"),
            lambda: engine.cancel("nope"),
            lambda: engine.signal("nope", "go"),
            lambda: engine.snapshot("nope"),
        ]
        for call in calls:
            with pytest.raises(errors.RunNotFoundError) as caught:
                call()
            assert str(caught.value) == expected
            assert caught.value.run_id == "nope"


def test_a_weft_warning_filter_catches_every_weft_warning() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", errors.WeftWarning)
        for name in sorted(WARNINGS):
            warnings.warn("x", getattr(errors, name), stacklevel=1)
    assert sorted(w.category.__name__ for w in seen) == sorted(WARNINGS)
