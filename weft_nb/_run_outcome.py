"""The life of a run's thread: run the workflow function, then record its outcome.

The outcome written to the journal decides what the run's handle reports. The journal only moves
a run out of an unfinished status, so when it refuses an outcome (a cancellation, or another
execution, finished the run first) the handle reports what the journal recorded instead.
"""

from __future__ import annotations

import contextlib
import traceback
from typing import TYPE_CHECKING, Any

from . import _crash_loops as crash_loops
from ._io_errors import is_storage_failure
from ._journal import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    TERMINAL_STATUSES,
    RunRecord,
)
from ._payloads import decode, encode, error_from_json, error_to_json, exception_text
from ._workflow_context import EngineStopped, WorkflowContext
from .errors import (
    JournalClosedError,
    JournalError,
    RunInterruptedError,
    WeftError,
    WorkflowCancelledError,
)

if TYPE_CHECKING:
    from ._engine import Engine
    from ._run_handle import RunState

Outcome = tuple[str, Any, BaseException | None]


def drive(engine: Engine, state: RunState) -> None:
    """The run thread: run the workflow, record its outcome, and always settle its handle."""
    engine.clock.bind_participant()
    outcome: Outcome = (RUNNING, None, None)
    try:
        outcome = _outcome(engine, state)
    except BaseException as exc:  # recording the outcome failed: the run stays resumable
        outcome = RUNNING, None, unrecorded_error(state.run_id, exc)
    status, value, error = outcome
    try:
        state.handle._settle(status, value=value, error=error)
    finally:
        _release(engine, state)


def _release(engine: Engine, state: RunState) -> None:
    with engine._lock:
        engine._active.pop(state.run_id, None)
    with contextlib.suppress(JournalClosedError):
        engine.journal.release()
    engine.clock.release_participant()


def _outcome(engine: Engine, state: RunState) -> Outcome:
    """Run the workflow function and record its outcome: (status, value, error)."""
    stopped = (
        RUNNING,
        None,
        RunInterruptedError(
            f"run {state.run_id!r} stopped before it finished "
            f"({state.stop_reason or 'the engine stopped'}); starting it again resumes it",
            run_id=state.run_id,
        ),
    )
    cancelled = (CANCELLED, None, cancelled_error(state.run_id))
    try:
        ctx = WorkflowContext(engine, state)
        fn = state.workflow.fn
        value = fn(ctx, state.input_value) if state.workflow.arity == 2 else fn(ctx)
        codec, data = encode(
            value,
            what=f"result of workflow {state.workflow.name!r}",
            max_bytes=engine.max_payload_bytes,
        )
    except EngineStopped:
        return stopped
    except BaseException as exc:
        if state.stopped:
            return stopped
        if state.cancel_requested.is_set():
            return cancelled
        io_error = is_storage_failure(exc)
        if io_error is not None:  # our disk failed, not the workflow: leave the run resumable
            return RUNNING, None, io_error
        if crash_loops.is_verdict(exc):  # not a failure: resumable once more is allowed
            if engine.journal.set_run_status(state.run_id, INTERRUPTED, engine.clock.now()):
                return INTERRUPTED, None, exc
            return _outcome_on_record(engine, state, stopped)
        if _finish(engine, state, FAILED, error=error_to_json(exc, traceback.format_exc())):
            return FAILED, None, exc
        return _outcome_on_record(engine, state, stopped)
    if state.stopped:
        return stopped
    if state.cancel_requested.is_set():
        return cancelled
    if not _finish(engine, state, COMPLETED, codec, data):
        return _outcome_on_record(engine, state, stopped)
    return COMPLETED, value, None


def _outcome_on_record(engine: Engine, state: RunState, stopped: Outcome) -> Outcome:
    """The journal refused our outcome: a cancel, or another execution, finished it first."""
    record = None if state.stopped else engine.journal.get_run(state.run_id)
    if record is None or record.status not in TERMINAL_STATUSES:
        return stopped
    return recorded_outcome(record)


def _finish(
    engine: Engine,
    state: RunState,
    status: str,
    codec: str | None = None,
    data: bytes | None = None,
    *,
    error: str | None = None,
) -> bool:
    """Record the final outcome unless the run was cancelled (or the engine stopped)."""
    try:
        recorded = engine.journal.finish_run(
            state.run_id, status, engine.clock.now(), codec, data, error
        )
    except JournalClosedError:
        return False
    if recorded:
        engine.emit(
            "run_finished",
            state.run_id,
            None,
            status=status,
            replayed=state.replayed,
            executed=state.executed,
        )
    return recorded


def unrecorded_error(run_id: str, exc: BaseException) -> BaseException:
    """The error a caller gets when a run's outcome could not be recorded (never a hang)."""
    io_error = is_storage_failure(exc)
    if io_error is not None:
        return io_error
    cause = exception_text(exc, with_type=True)
    error = JournalError(
        f"the outcome of run {run_id!r} could not be recorded ({cause}); the run is not "
        "marked finished and stays resumable: fix the cause, then start it again",
        run_id=run_id,
    )
    error.__cause__ = exc
    return error


def cancelled_error(run_id: str) -> WorkflowCancelledError:
    return WorkflowCancelledError(
        f"run {run_id!r} was cancelled; a cancelled run is not resumed (start a new run)",
        run_id=run_id,
    )


def recorded_outcome(record: RunRecord) -> Outcome:
    """The (status, value, error) a finished run's journal row stands for."""
    if record.status == COMPLETED:
        assert record.result_codec is not None
        assert record.result is not None
        what = f"the recorded result of run {record.run_id!r}"
        return COMPLETED, decode(record.result_codec, record.result, what=what), None
    if record.status == CANCELLED:
        return CANCELLED, None, cancelled_error(record.run_id)
    error = (
        error_from_json(record.error, run_id=record.run_id)
        if record.error
        else WeftError(f"run {record.run_id!r} failed", run_id=record.run_id)
    )
    return FAILED, None, error
