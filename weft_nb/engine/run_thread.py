"""The life of a run's thread: launch it, run the workflow function, then record its outcome.

The outcome written to the journal decides what the run's handle reports. The journal only moves
a run out of an unfinished status, so when it refuses an outcome (a cancellation, or another
execution, finished the run first) the handle reports what the journal recorded instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import traceback
from typing import Any

from weft_nb.activity.checkpoints import needs_environment
from weft_nb.base.definitions import WorkflowDefinition, call_arguments, defined_at
from weft_nb.base.payloads import decode, encode, error_from_json, error_to_json, exception_text
from weft_nb.engine import compensation, crash_loops, interceptors
from weft_nb.engine.async_context import AsyncWorkflowContext
from weft_nb.engine.async_loop import RunLoop
from weft_nb.engine.live_runs import LiveRuns
from weft_nb.engine.run_threads import Slot, recall
from weft_nb.engine.runs import RunState
from weft_nb.engine.runtime import Runtime
from weft_nb.engine.workflow_context import EngineStopped, WorkflowContext
from weft_nb.errors import (
    AsyncStyleError,
    JournalClosedError,
    JournalError,
    RunInterruptedError,
    WeftError,
    WorkflowCancelledError,
)
from weft_nb.journal.io_errors import is_storage_failure
from weft_nb.journal.protocol import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    TERMINAL_STATUSES,
    RunOutcome,
    RunRecord,
)

Outcome = tuple[str, Any, BaseException | None]


def launch(rt: Runtime, live: LiveRuns, state: RunState) -> RunState:
    """Make ``state`` live and start its thread; the run already live under its id wins.

    Returns the live state: ``state``, or the one a concurrent start or resume of the same run
    made live first.

    Raises:
        JournalClosedError: The engine is closed.
    """
    winner = live.add(state)
    if winner is not state:
        return winner
    acquired = reserved = False
    # The thread runs the run in a copy of the caller's context: a notebook cell's output
    # routing (ipykernel keeps it in a ContextVar) follows the run, so whatever the
    # workflow and its activities print lands in the cell that started the run.
    context = contextvars.copy_context()
    slot: Slot = [functools.partial(context.run, run_workflow_and_settle, rt, live, state)]
    try:
        rt.journal.acquire()
        acquired = True
        rt.clock.reserve_participant()
        reserved = True
        name = f"weft-run-{state.run_id}"
        worker = rt.run_threads.take(name)
        state.thread = worker.thread
        worker.give(name, slot)
    except BaseException:  # e.g. Interrupt Kernel right here: leave no half-launched run
        if not recall(slot):
            # Interrupted once the run's thread had taken the run: the run is live and its
            # thread cleans up after itself; stop it as an interrupt does.
            interrupt(rt, live, state.run_id)
            raise
        live.pop(state.run_id, state)
        if reserved:
            rt.clock.release_participant()
        if acquired:
            rt.journal.release()
        raise
    return state


def interrupt(rt: Runtime, live: LiveRuns, run_id: str) -> bool:
    """Record a live run as ``interrupted`` and stop it (it stays resumable).

    Returns False when the run is not live.
    """
    state = live.get(run_id)
    if state is None or state.stopped:
        return False
    rt.journal.set_run_status(run_id, INTERRUPTED, rt.clock.now())
    live.stop(state, "the run was interrupted")
    rt.emit("run_interrupted", run_id, None)
    for child in rt.journal.children_of(run_id):  # its child workflows live here stop with it
        interrupt(rt, live, child.run_id)
    return True


def run_workflow_and_settle(rt: Runtime, live: LiveRuns, state: RunState) -> None:
    """The run thread: run the workflow, record its outcome, and always settle its handle."""
    rt.clock.bind_participant()
    outcome: Outcome = (RUNNING, None, None)
    try:
        outcome = _outcome(rt, state)
    except BaseException as exc:  # recording the outcome failed: the run stays resumable
        outcome = RUNNING, None, unrecorded_error(state.run_id, exc)
    finally:  # the thread serves later runs: the watch would go on watching this one
        rt.dev_checks.unwatch_workflow_thread()
    status, value, error = outcome
    try:
        state.completion.settle(status, value=value, error=error)
    finally:
        try:
            _release(rt, live, state)
        finally:
            state.exited.set()  # its thread may serve another run now: never join it


def _release(rt: Runtime, live: LiveRuns, state: RunState) -> None:
    live.pop(state.run_id, state)
    with contextlib.suppress(JournalClosedError):
        rt.journal.release()
    rt.clock.release_participant()


def _outcome(rt: Runtime, state: RunState) -> Outcome:
    """Run the workflow function and record its outcome: (status, value, error)."""
    try:
        ctx = WorkflowContext(rt, state)
        workflow = state.workflow
        run_loop = RunLoop(rt.clock) if workflow.is_async else None
        face = ctx if run_loop is None else AsyncWorkflowContext(ctx, run_loop)
        args, kwargs = call_arguments(
            workflow.fn,
            arity=workflow.arity,
            value=state.input_value,
            context=face,
            context_first=True,
        )

        def call_workflow() -> Any:  # compensation inside the run's hooks: its steps are traced
            try:
                if isinstance(face, AsyncWorkflowContext):
                    assert run_loop is not None
                    return run_loop.drive(face.finish(workflow.fn(*args, **kwargs)))
                return refuse_coroutine(workflow, workflow.fn(*args, **kwargs))
            except Exception as exc:
                compensation.compensate_after_failure(workflow, ctx.compensations, exc)
                raise

        value = interceptors.around_run(
            rt, state.run_id, workflow.name, state.input_value, call_workflow
        )
        codec, data = encode(
            value,
            what=f"result of workflow {state.workflow.name!r}",
            max_bytes=rt.max_payload_bytes,
        )
    except EngineStopped:
        return _stopped(state)
    except BaseException as exc:
        if state.stopped:
            return _stopped(state)
        if state.cancel_requested.is_set():
            return _cancelled(state)
        io_error = is_storage_failure(exc)
        if io_error is not None:  # our disk failed, not the workflow: leave the run resumable
            return RUNNING, None, io_error
        # Not a failure: a crash-loop verdict (resumable once more attempts are allowed), or a
        # checkpoint that needs a module, class or device this process lacks.
        if crash_loops.is_verdict(exc) or needs_environment(exc) is not None:
            if rt.journal.set_run_status(state.run_id, INTERRUPTED, rt.clock.now()):
                return INTERRUPTED, None, exc
            return _outcome_on_record(rt, state)
        if _finish(rt, state, FAILED, error=error_to_json(exc, traceback.format_exc())):
            return FAILED, None, exc
        return _outcome_on_record(rt, state)
    if state.stopped:
        return _stopped(state)
    if state.cancel_requested.is_set():
        return _cancelled(state)
    if not _finish(rt, state, COMPLETED, result=(codec, data)):
        return _outcome_on_record(rt, state)
    return COMPLETED, value, None


def _stopped(state: RunState) -> Outcome:
    """The outcome of a run stopped (interrupted, or its engine closed): it stays resumable."""
    return RUNNING, None, RunInterruptedError(state.run_id, state.stop_reason)


def _cancelled(state: RunState) -> Outcome:
    return CANCELLED, None, cancelled_error(state.run_id)


def _outcome_on_record(rt: Runtime, state: RunState) -> Outcome:
    """The journal refused our outcome: a cancel, or another execution, finished it first."""
    record = None if state.stopped else rt.journal.get_run(state.run_id)
    if record is None or record.status not in TERMINAL_STATUSES:
        return _stopped(state)
    return recorded_outcome(record)


def _finish(
    rt: Runtime,
    state: RunState,
    status: str,
    *,
    result: tuple[str, bytes] | None = None,
    error: str | None = None,
) -> bool:
    """Record the final outcome unless the run was cancelled (or the engine stopped).

    ``result`` is a completed run's encoded value (codec, data); ``error`` a failed run's JSON.
    """
    codec, data = result if result is not None else (None, None)
    try:
        outcome = RunOutcome(
            status=status, at=rt.clock.now(), result_codec=codec, result=data, error=error
        )
        recorded = rt.journal.finish_run(state.run_id, outcome)
    except JournalClosedError:
        return False
    if recorded:
        rt.emit(
            "run_finished",
            state.run_id,
            None,
            status=status,
            replayed=state.replayed,
            executed=state.executed,
        )
    return recorded


def refuse_coroutine(workflow: WorkflowDefinition, value: Any) -> Any:
    """A sync workflow's value; an awaitable (it awaited nothing: it is ``def``) is refused."""
    if not inspect.isawaitable(value):
        return value
    if inspect.iscoroutine(value):
        value.close()  # no "never awaited" warning on top of the error
    raise AsyncStyleError(
        f"workflow {workflow.name!r} is a plain `def` but returned {type(value).__name__!r}",
        f"make it `async def {workflow.name}(ctx, ...)` and `await` its ctx calls there "
        "(docs/guides/async.md)",
        where=defined_at(workflow.fn, workflow.name),
    )


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
    """The error a cancelled run's handle raises."""
    return WorkflowCancelledError(run_id)


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
