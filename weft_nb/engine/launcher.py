"""Starting and resuming runs: from a journaled run (or a new one) to a live run's thread.

A resume checks the run can continue (registered workflow, same version, no earlier execution
still stopping), loads what its journal recorded, and hands the run to
`launch()`. The engine's ``start``, ``resume`` and ``recover_all``
delegate here.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from weft_nb.base.definitions import (
    ON_CHANGE_POLICIES,
    Registry,
    WorkflowDefinition,
    definition_of,
    make_workflow,
)
from weft_nb.base.payloads import decode, encode, validate
from weft_nb.engine import run_thread
from weft_nb.engine.live_runs import LiveRuns
from weft_nb.engine.runs import RecoveryReport, RunCompletion, RunHandle, RunState
from weft_nb.engine.runtime import Runtime
from weft_nb.errors import (
    RunNotFoundError,
    WeftError,
    WorkflowNotRegisteredError,
    WorkflowVersionMismatchError,
)
from weft_nb.journal.paths import check_run_id
from weft_nb.journal.protocol import RUNNING, TERMINAL_STATUSES, RunRecord
from weft_nb.journal.recorded_steps import RecordedSteps


def workflow_definition(registry: Registry, workflow: Any) -> WorkflowDefinition:
    """The definition ``workflow`` names or is (a name, a decorated or a plain function).

    A function not registered yet is registered.
    """
    if isinstance(workflow, str):
        found = registry.workflow(workflow)
        if found is None:
            raise WorkflowNotRegisteredError(workflow, registered=registry.workflows)
        return found
    definition = definition_of(workflow) or (
        make_workflow(workflow) if callable(workflow) else None
    )
    if not isinstance(definition, WorkflowDefinition):
        raise TypeError(f"{workflow!r} is not a workflow")
    registry.add(definition)
    return definition


@dataclasses.dataclass
class JournalHistory:
    """What a run's journal recorded, for its replay (all empty for a new run).

    Attributes:
        steps: The journaled steps by position, as the replay takes them.
        failed_attempts: The highest failed attempt per position.
        first_started: When each position's first attempt started.
        pending_tokens: The task tokens parked steps wait on, by position.
    """

    steps: RecordedSteps = dataclasses.field(default_factory=RecordedSteps.empty)
    failed_attempts: dict[int, int] = dataclasses.field(default_factory=dict)
    first_started: dict[int, float] = dataclasses.field(default_factory=dict)
    pending_tokens: dict[int, str] = dataclasses.field(default_factory=dict)


class RunLauncher:
    """Creates and resumes the runs of one engine.

    Args:
        rt: The engine's services.
        live: The engine's live runs.
        cancel: Cancels a run by id (given to every handle).
    """

    def __init__(self, rt: Runtime, live: LiveRuns, cancel: Callable[[str], bool]) -> None:
        self._rt = rt
        self._live = live
        self._cancel = cancel
        # Checking, loading and launching a run are one step under this lock: a second resume of
        # the same run sees it either live or finished in the journal (a run commits its outcome
        # before it leaves the live set), never a stale copy of its steps.
        self._launching = threading.RLock()

    def start_child(
        self, workflow: Any, run_id: str, input: Any, policy: str, *, parent_run_id: str
    ) -> RunHandle[Any]:
        """`start()` for a child workflow: its run records ``parent_run_id``."""
        return self.start(workflow, run_id, input, policy, parent_run_id=parent_run_id)

    def start(  # noqa: PLR0913 - keyword-only: a child's parent, and run()'s unsynced start
        self,
        workflow: Any,
        run_id: str | None,
        input: Any,
        policy: str,
        *,
        parent_run_id: str | None = None,
        sync_start: bool = True,
    ) -> RunHandle[Any]:
        """Start a new run, or resume the run ``run_id`` names when it exists.

        ``sync_start=False`` leaves a new run's start record to the journal's next sync
        (`Journal.create_run`): for ``engine.run``, whose caller gets no handle before the outcome.

        Raises:
            InvalidRunIdError: ``run_id`` cannot name a run (empty, too long, control characters).
        """
        if run_id is not None:
            check_run_id(run_id)  # before anything is written (issue 12.7)
        definition = workflow_definition(self._rt.registry, workflow)
        if policy not in ON_CHANGE_POLICIES:
            raise ValueError(f"on_change must be one of {ON_CHANGE_POLICIES}; got {policy!r}")
        if input is not None:  # a pydantic-model input given as its fields becomes the model
            input = validate(input, definition.input_hint, what=f"input of {definition.name!r}")
        codec, data = encode(
            input,
            what=f"input of workflow {definition.name!r}",
            max_bytes=self._rt.max_payload_bytes,
        )
        with self._launching:
            existing = None if run_id is None else self._rt.journal.get_run(run_id)
            if existing is not None:
                if existing.workflow != definition.name:
                    raise WeftError(
                        f"run {run_id!r} belongs to workflow {existing.workflow!r}, not "
                        f"{definition.name!r}; choose another run id",
                        run_id=run_id,
                    )
                if parent_run_id is not None and existing.parent_run_id != parent_run_id:
                    raise WeftError(  # adopting it would answer with another run's outcome
                        f"child run id {run_id!r} names an existing run that is not a child of "
                        f"run {parent_run_id!r}; choose another run_id (or leave it out)",
                        run_id=parent_run_id,
                    )
                return self._resume(existing.run_id)
            now = self._rt.clock.now()
            record = RunRecord(
                run_id=run_id or uuid.uuid4().hex[:16],
                workflow=definition.name,
                version=definition.version,
                status=RUNNING,
                on_change=policy,
                input_codec=codec,
                input=data,
                created_at=now,
                updated_at=now,
                parent_run_id=parent_run_id,
            )
            return self._create(definition, record, input, sync_start)

    def recover_all(self) -> RecoveryReport:
        """Resume every unfinished run whose workflow is registered; report the others by name."""
        report = RecoveryReport()
        for record in self._rt.journal.list_runs():
            if record.status in TERMINAL_STATUSES or self._live.get(record.run_id) is not None:
                continue
            if self._rt.registry.workflow(record.workflow) is None:
                report.unregistered.setdefault(record.workflow, []).append(record.run_id)
                continue
            report.resumed.append(self.resume(record.run_id))
        if report.unregistered:
            # stacklevel 3: the line that called the engine's recover_all
            warnings.warn(report.describe_unregistered(), RuntimeWarning, stacklevel=3)
        return report

    def resume(self, run_id: str) -> RunHandle[Any]:
        """Resume an unfinished run; a finished run's handle reports its recorded outcome."""
        with self._launching:
            return self._resume(run_id)

    def acknowledge(self, run_id: str) -> None:
        """Make a run's start durable before anything names it to anyone (a handle, an error).

        An `engine.run()` start may still wait for its first step's sync (``sync_start=False``);
        a read of the run commits the step log's batch to DuckDB, and with it that record.
        """
        self._rt.journal.get_run(run_id)

    def _create(
        self, definition: WorkflowDefinition, record: RunRecord, input: Any, sync: bool
    ) -> RunHandle[Any]:
        # Steps of this id without its run: damage destroyed its start record. Replay them.
        lost = self._rt.journal.orphaned_steps(record.run_id)
        self._rt.journal.create_run(record, sync=sync)
        self._rt.emit("run_started", record.run_id, None, workflow=definition.name)
        history = self._history(record.run_id) if lost else JournalHistory()
        return self._launch(definition, record, input, history)

    def _resume(self, run_id: str) -> RunHandle[Any]:
        active = self._live.get(run_id)
        if active is not None and not active.stopped:
            self.acknowledge(run_id)
            return active.handle
        # An interrupted execution must be gone before a new one replays the journal.
        if active is not None and active.thread is not None and not active.exited.wait(10):
            raise WeftError(
                f"run {run_id!r} is still stopping: an activity of it ignores `cancelled` "
                "and has not returned yet. Wait for it, then resume again.",
                run_id=run_id,
            )
        record = self._rt.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id, self._rt.journal.path)
        if record.status in TERMINAL_STATUSES:
            return self._finished_handle(record)
        definition = self._rt.registry.workflow(record.workflow)
        if definition is None:
            raise WorkflowNotRegisteredError(record.workflow, run_id=run_id)
        if definition.version != record.version:
            raise WorkflowVersionMismatchError(
                run_id,
                record.workflow,
                recorded_version=record.version,
                registered_version=definition.version,
            )
        history = self._history(run_id)
        self._rt.emit(
            "run_resumed", run_id, None, workflow=record.workflow, recorded_steps=len(history.steps)
        )
        value = decode(
            record.input_codec, record.input, what=f"the recorded input of run {run_id!r}"
        )
        return self._launch(definition, record, value, history)

    def _history(self, run_id: str) -> JournalHistory:
        """What the journal holds of a run's steps, for its replay."""
        failed: dict[int, int] = {}
        first: dict[int, float] = {}
        for attempt in self._rt.journal.attempts_of_run(run_id):
            position = attempt.position
            failed[position] = max(failed.get(position, 0), attempt.attempt)
            first[position] = min(first.get(position, attempt.started_at), attempt.started_at)
        return JournalHistory(
            steps=RecordedSteps(run_id, self._rt.journal.step_columns(run_id)),
            failed_attempts=failed,
            first_started=first,
            pending_tokens=self._rt.journal.pending_async_tokens(run_id),
        )

    def _launch(
        self,
        definition: WorkflowDefinition,
        record: RunRecord,
        value: Any,
        history: JournalHistory,
    ) -> RunHandle[Any]:
        completion = RunCompletion()
        handle = self._handle(record.run_id, definition.name, completion)
        state = RunState(
            run_id=record.run_id,
            workflow=definition,
            input_value=value,
            on_change=record.on_change,
            cancel_requested=self._rt.clock.new_event(),
            handle=handle,
            completion=completion,
            steps=history.steps,
            failed_attempts=history.failed_attempts,
            first_started=history.first_started,
        )
        completion.progress = state
        state.signal_arrived = self._rt.clock.new_event()
        state.pending_tokens = dict(history.pending_tokens)
        return run_thread.launch(self._rt, self._live, state).handle

    def _handle(self, run_id: str, workflow: str, completion: RunCompletion) -> RunHandle[Any]:
        return RunHandle(
            run_id, workflow, journal=self._rt.journal, cancel=self._cancel, completion=completion
        )

    def _finished_handle(self, record: RunRecord) -> RunHandle[Any]:
        completion = RunCompletion()
        status, value, error = run_thread.recorded_outcome(record)
        completion.settle(status, value=value, error=error, replayed=True)
        return self._handle(record.run_id, record.workflow, completion)
