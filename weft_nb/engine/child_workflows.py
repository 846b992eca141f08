"""Child workflows: ``ctx.run_workflow`` and ``ctx.start_workflow``.

A child workflow is a run of its own (its own journal rows, listed by ``%weft runs``, the panel
and the CLI) whose ``parent_run_id`` names the parent, and a step of the parent at the next
position. In the parent's journal:

1. A ``<child>`` marker holding the child's run id is journaled *before* the child starts. The
   default id, ``"<parent run id>.<position>"``, is deterministic, so a resumed parent finds the
   same id, journaled or not, and never starts a second child: the engine's start of an existing
   run id re-attaches to it (live), resumes it (interrupted) or reports its outcome (finished).
2. When the child finishes, its outcome is journaled once at that position (the result, or a
   [`ChildWorkflowFailedError`][weft_nb.errors.ChildWorkflowFailedError] whose ``child_error``
   keeps the child's error), by the live parent execution only. A replay answers from there.

Who resumes a child whose parent was interrupted too (a crash)? Either may come first: the
engine's ``recover_all`` resumes both, and the parent re-attaches to the child's live run; a parent
resumed alone resumes its child when it reaches the step. Starting a run is serialised per run id
(`weft_nb.engine.launcher`), so the child runs once either way.

Cancelling the parent cancels its unfinished children (`weft_nb.engine.inputs`); a child the
parent creates after its cancel is cancelled by the parent here. Interrupting the parent
interrupts its live children (`weft_nb.engine.run_thread.interrupt`). A child whose execution
stops on its own (an interrupt, a crash-loop verdict) interrupts a parent waiting for it: both stay
resumable.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from weft_nb.base.definitions import WorkflowDefinition, definition_of, make_workflow
from weft_nb.base.payloads import decode, digest, encode, error_from_json, error_to_json
from weft_nb.engine.parallel import StepFuture
from weft_nb.engine.replay import control_record
from weft_nb.errors import (
    ChildWorkflowDepthError,
    ChildWorkflowFailedError,
    JournalClosedError,
    WeftError,
    WorkflowCancelledError,
    WorkflowNotRegisteredError,
)
from weft_nb.journal.paths import check_run_id
from weft_nb.journal.protocol import (
    CANCELLED,
    COMPLETED,
    STEP_COMPLETED,
    STEP_FAILED,
    TERMINAL_STATUSES,
    RunRecord,
    StepRecord,
)

if TYPE_CHECKING:
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runs import RunHandle
    from weft_nb.engine.runtime import Runtime

CHILD = "<child>"
START_OPTIONS = frozenset({"on_change"})
MAX_CHILD_DEPTH = 10
"""How many levels of child workflows may nest below a root run (Weft's ``maxNestingDepth``):
a workflow that starts itself as a child without a base case stops here with
`ChildWorkflowDepthError` instead of starting runs (and threads) until the process gives out."""


class ChildFuture(StepFuture[Any]):
    """A child workflow's run (``ctx.start_workflow``), usable wherever a `StepFuture` is.

    Settles with the child's result, or a `ChildWorkflowFailedError` whose ``__cause__`` is the
    child's error.

    Attributes:
        workflow: The child's workflow name.
        child_run_id: The child's run id.
    """

    def __init__(
        self, rt: Runtime, cursor: StepCursor, record: StepRecord, workflow: str, child_run_id: str
    ) -> None:
        super().__init__(rt, cursor, record.position, CHILD)
        self.workflow = workflow
        self.child_run_id = child_run_id
        self._rt = rt
        self._record = record

    def poll(self) -> float:
        """Settled by the child's run (`child_settled()`): never due by itself."""
        return 0.0 if self.done() else math.inf

    def child_settled(self, handle: RunHandle[Any]) -> None:
        """The child's run has an outcome, or its execution stopped (on the child's thread)."""
        cursor = self._cursor
        if handle.status not in TERMINAL_STATUSES:
            # Stopped, not finished: a parent still waiting stops too (resumable); a stopping
            # parent is stopping anyway. Nothing is journaled.
            if cursor.is_alive() and not self.done():
                self._rt.children.interrupt(cursor.run_id)
            return
        try:
            record = self._rt.journal.get_run(self.child_run_id)
            assert record is not None
            step, value, error = self._outcome(record)
            journal = self._rt.journal
            if cursor.is_alive() and journal.step_outcome(cursor.run_id, self.position) is None:
                journal.record_step(step)  # once, by the live parent execution
        except JournalClosedError:  # the engine closed under a stopping parent
            return
        except Exception as exc:  # the parent's step fails with what went wrong
            step, value, error = self._record, None, exc
        if error is None and step.result_codec is not None and step.result is not None:
            cursor.remember(value, step.result_codec, step.result)
        self.settle(value, error)

    def _outcome(self, child: RunRecord) -> tuple[StepRecord, Any, BaseException | None]:
        """The parent's journal record of a finished child, and the value or error it stands for."""
        at = self._rt.clock.now()
        if child.status == COMPLETED:
            assert child.result_codec is not None
            assert child.result is not None
            value = decode(
                child.result_codec, child.result, what=f"the result of child run {child.run_id!r}"
            )
            step = _replace(self._record, status=STEP_COMPLETED, finished_at=at)
            step.result_codec, step.result = child.result_codec, child.result
            return step, value, None
        if child.status == CANCELLED:
            child_error = error_to_json(WorkflowCancelledError(child.run_id))
        else:
            child_error = child.error or error_to_json(
                WeftError(f"run {child.run_id!r} failed", run_id=child.run_id)
            )
        error = failure(self._record, self.workflow, child.run_id, child_error)
        step = _replace(self._record, status=STEP_FAILED, finished_at=at)
        step.result_codec = step.result = None
        step.error = error_to_json(error)
        return step, None, error


def failure(
    record: StepRecord, workflow: str, child_run_id: str, child_error: str
) -> ChildWorkflowFailedError:
    """The parent's error for a failed or cancelled child, its ``__cause__`` rebuilt from JSON."""
    cause = error_from_json(child_error, run_id=child_run_id)
    data = json.loads(child_error)
    if isinstance(cause, WorkflowCancelledError):
        reason = "it was cancelled"
    elif isinstance(cause, ChildWorkflowFailedError):  # a grandchild's: its one line, not nested
        reason = str(cause.fields["reason"])
    else:
        reason = f"{data.get('class')}: {data.get('message')}"
    error = ChildWorkflowFailedError(
        workflow,
        child_run_id,
        run_id=record.run_id,
        position=record.position,
        reason=reason,
        child_error=child_error,
    )
    error.__cause__ = cause
    return error


def start(
    rt: Runtime, cursor: StepCursor, workflow: Any, input: Any, options: dict[str, Any]
) -> ChildFuture:
    """Take the next position for a child run of ``workflow``: start it, or replay its outcome.

    ``options``: ``run_id`` (None: the default id) and the `START_OPTIONS`.
    """
    run_id = options.pop("run_id", None)
    unknown = set(options) - START_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown ctx.run_workflow option(s) {sorted(unknown)}; use {sorted(START_OPTIONS)}"
        )
    name = _workflow_name(rt, workflow)
    position = cursor.take_position()
    child_id = check_run_id(run_id if run_id is not None else f"{cursor.run_id}.{position}")
    taken = cursor.state.child_ids.setdefault(child_id, position)
    if taken != position:  # a second child under one id would get the first one's outcome
        raise WeftError(
            f"child run id {child_id!r} is already the child of step {taken} of run "
            f"{cursor.run_id!r}; give each ctx.run_workflow/start_workflow its own run_id",
            run_id=cursor.run_id,
            position=position,
        )
    _, data = encode(
        input, what=f"input of child workflow {name!r}", max_bytes=rt.max_payload_bytes
    )
    signature = digest(json.dumps([name, child_id]).encode() + b"\0" + data)
    recorded = cursor.match(position, CHILD, "", signature)
    started_at = rt.clock.now() if recorded is None else recorded.started_at
    marker = control_record(
        cursor.run_id,
        position,
        CHILD,
        signature,
        started_at,
        result=json.dumps(child_id).encode(),
        idempotency_key=child_id,  # kept by the outcome too: the panel links the child run
    )
    future = ChildFuture(rt, cursor, marker, name, child_id)
    if recorded is not None and recorded.status in (STEP_COMPLETED, STEP_FAILED):
        cursor.count_replayed()
        if recorded.status == STEP_FAILED:
            assert recorded.error is not None
            future.settle(error=_replayed_error(recorded, name, child_id))
        else:
            assert recorded.result_codec is not None
            assert recorded.result is not None
            value = decode(recorded.result_codec, recorded.result, what=f"child run {child_id!r}")
            cursor.remember(value, recorded.result_codec, recorded.result)
            future.settle(value)
        return future
    if recorded is None:
        depth = _depth(rt, cursor.run_id) + 1
        if depth > MAX_CHILD_DEPTH:
            raise ChildWorkflowDepthError(cursor.run_id, position, depth, MAX_CHILD_DEPTH)
        rt.journal.record_marker(marker)  # the child's id, journaled before the child starts
    policy = options.get("on_change") or cursor.state.on_change
    handle = rt.children.start(workflow, child_id, input, policy, parent_run_id=cursor.run_id)
    if cursor.state.cancel_requested.is_set() and not cursor.state.stopped:
        rt.children.cancel(child_id)  # the parent's cancel may have listed its children before
    handle.add_done_callback(future.child_settled)
    return future


def _depth(rt: Runtime, run_id: str) -> int:
    """How many parents the run has, counted up to one past the limit (a loop ends there too)."""
    depth = 0
    while depth <= MAX_CHILD_DEPTH:
        record = rt.journal.get_run(run_id)
        if record is None or record.parent_run_id is None:
            return depth
        run_id, depth = record.parent_run_id, depth + 1
    return depth


def _replayed_error(recorded: StepRecord, workflow: str, child_id: str) -> BaseException:
    assert recorded.error is not None
    error = error_from_json(recorded.error, run_id=recorded.run_id)
    child_error = getattr(error, "fields", {}).get("child_error")
    if isinstance(error, ChildWorkflowFailedError) and child_error:
        return failure(recorded, workflow, child_id, child_error)
    return error


def _workflow_name(rt: Runtime, workflow: Any) -> str:
    if isinstance(workflow, str):
        if rt.registry.workflow(workflow) is None:
            raise WorkflowNotRegisteredError(workflow, registered=rt.registry.workflows)
        return workflow
    definition = definition_of(workflow) or (
        make_workflow(workflow) if callable(workflow) else None
    )
    if definition is None:
        raise TypeError(f"{workflow!r} is not a workflow")
    if not isinstance(definition, WorkflowDefinition):  # an activity: ctx.run is its call
        raise TypeError(
            f"{definition.name!r} is an activity, not a workflow: call it with ctx.run(...), or "
            "pass a @weft_nb.workflow to ctx.run_workflow/start_workflow"
        )
    return definition.name


def _replace(record: StepRecord, **changes: Any) -> StepRecord:
    return dataclasses.replace(record, **changes)
