"""The ``ctx`` a workflow function receives: the user's face of a run's durable operations.

Each method checks where it is called from (`weft_nb.engine.step_scope`) and hands the work
to the module that does it; the replay state (positions, recorded steps, on_change, liveness)
belongs to the run's `StepCursor`, ``ctx.cursor``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from weft_nb.activity.context import EngineStopped
from weft_nb.base import evidence
from weft_nb.base.payloads import decode, error_from_json
from weft_nb.base.retry import Duration
from weft_nb.base.typed_api import CALL_OPTION_NAMES, InputT, ModelT, ResultT
from weft_nb.engine import child_workflows as _child_workflows
from weft_nb.engine import compensation as _compensation
from weft_nb.engine import parallel as _parallel
from weft_nb.engine import recorded_calls as _durable_ops
from weft_nb.engine import step_scope as _step_scope
from weft_nb.engine import steps as _step_execution
from weft_nb.engine import timers as _timers
from weft_nb.engine.parallel import StepFuture
from weft_nb.engine.plain_replay import replay_plain
from weft_nb.engine.replay import NOT_SET, PreparedStep, StepCursor
from weft_nb.errors import StepChangedWarning
from weft_nb.journal.protocol import STEP_COMPLETED, STEP_FAILED

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import Unpack

    from weft_nb.activity.context import ActivityFn, AsyncActivityFn
    from weft_nb.base.typed_api import CallOptions, ModelInput
    from weft_nb.engine.runs import RunState
    from weft_nb.engine.runtime import Runtime


class WorkflowContext:
    """The ``ctx`` a workflow function receives."""

    def __init__(self, runtime: Runtime, state: RunState) -> None:
        self.runtime = runtime  # the engine's services (journal, clock, executor...)
        # The run's replay state (positions, recorded steps, on_change, liveness): the engine's
        # side, which the step modules use; workflows need not.
        self.cursor = StepCursor(
            state, journal=runtime.journal, clock=runtime.clock, registry=runtime.registry
        )
        self.run_id = state.run_id
        self.workflow_name = state.workflow.name
        # The completed steps that name a compensation, for ctx.compensate() (Saga).
        self.compensations = _compensation.Compensations(self.cursor, self.run)
        runtime.dev_checks.watch_workflow_thread(self.cursor)  # built on the workflow's thread

    # -- public API ------------------------------------------------------------------------

    @overload
    def run(
        self,
        activity: AsyncActivityFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self,
        activity: AsyncActivityFn[InputT, ResultT],
        input: InputT,
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self,
        activity: ActivityFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self,
        activity: ActivityFn[InputT, ResultT],
        input: InputT,
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self,
        activity: Callable[[], Awaitable[ResultT]],
        input: None = None,
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(
        self,
        activity: Callable[[], ResultT],
        input: None = None,
        **call_options: Unpack[CallOptions],
    ) -> ResultT: ...
    @overload
    def run(self, activity: str, input: Any = None, **call_options: Unpack[CallOptions]) -> Any: ...
    def run(
        self, activity: str | Callable[..., Any], input: Any = None, **call_options: Any
    ) -> Any:
        """Run an activity (by registered name or function) and return its result.

        Call options: ``timeout``, ``schedule_to_close_timeout``, ``retry`` (a partial override:
        a dict or a ``RetryPolicy``), ``queue``, ``idempotency_key``, ``heartbeat_timeout``.
        A completed step is answered from the journal and never runs twice.

        Typed: with an activity function, a type checker gives the result its return type and
        checks ``input`` against its first parameter (docs/engine.md, "Type checking").
        """
        result = replay_plain(self.cursor, self.runtime, activity, input, call_options)
        if result is not NOT_SET:
            return result
        _step_scope.check_scope(self.cursor, lambda: f"ctx.run({_name_of(activity)!r})")
        step = self._prepare(activity, input, call_options)
        if step.replayed:
            if step.error is not None:
                raise step.error
            result = step.result
        else:
            result = _step_execution.execute(self.runtime, self.cursor, step)
        self.compensations.completed(step, result)
        return result

    def _prepare(
        self, activity: str | Callable[..., Any], input: Any, call_options: dict[str, Any]
    ) -> PreparedStep:
        """Take the next position; answer it from the journal when it can be.

        Runs on the workflow's thread, so positions follow program order.
        """
        cursor = self.cursor
        cursor.check_alive()
        unknown = set(call_options) - CALL_OPTION_NAMES if call_options else None
        if unknown:
            raise TypeError(
                f"unknown ctx.run option(s) {sorted(unknown)}; use {sorted(CALL_OPTION_NAMES)}"
            )
        step, recorded = _step_execution.prepare_step(
            self.runtime,
            cursor,
            _step_execution.StepCall(
                position=cursor.take_position(),
                activity=activity,
                input=input,
                options=call_options,
            ),
        )
        position, definition = step.position, step.definition
        if recorded is None:
            return step
        if recorded.status == STEP_COMPLETED:
            assert recorded.result_codec is not None
            assert recorded.result is not None
            step.replayed, step.result = (
                True,
                decode(
                    recorded.result_codec,
                    recorded.result,
                    hint=definition.result_hint,
                    what=lambda: (
                        f"the recorded result of step {position} ({definition.name!r}, "
                        f"run {self.run_id!r})"
                    ),
                ),
            )
            cursor.remember(step.result, recorded.result_codec, recorded.result)
        elif recorded.status == STEP_FAILED:
            assert recorded.error is not None
            step.replayed, step.error = True, error_from_json(recorded.error, run_id=self.run_id)
        else:
            step.replayed, step.result = _step_execution.adopt_reconciled(
                self.runtime, cursor, step, recorded
            )
            if not step.replayed:
                return step
        cursor.count_replayed()
        if evidence.ENABLED:
            evidence.record("step_replayed", run_id=self.run_id, position=position)
        return step

    @overload
    def submit(
        self,
        activity: AsyncActivityFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self,
        activity: AsyncActivityFn[InputT, ResultT],
        input: InputT,
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self,
        activity: ActivityFn[ModelT, ResultT],
        input: ModelInput[ModelT],
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self,
        activity: ActivityFn[InputT, ResultT],
        input: InputT,
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self,
        activity: Callable[[], Awaitable[ResultT]],
        input: None = None,
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self,
        activity: Callable[[], ResultT],
        input: None = None,
        **call_options: Unpack[CallOptions],
    ) -> StepFuture[ResultT]: ...
    @overload
    def submit(
        self, activity: str, input: Any = None, **call_options: Unpack[CallOptions]
    ) -> StepFuture[Any]: ...
    def submit(
        self, activity: str | Callable[..., Any], input: Any = None, **call_options: Any
    ) -> StepFuture[Any]:
        """Schedule an activity without waiting; returns a `StepFuture`.

        The step takes its position now (program order), runs on a worker thread, and is
        journaled the moment it settles. Combine futures with [`all()`][weft_nb.WorkflowContext.all]
        or [`race()`][weft_nb.WorkflowContext.race].
        """
        _step_scope.check_scope(self.cursor, lambda: f"ctx.submit({_name_of(activity)!r})")
        step = self._prepare(activity, input, call_options)
        future = _parallel.submit(self.runtime, self.cursor, step)
        self.compensations.submitted(step, future)
        return future

    def all(self, futures: Sequence[StepFuture[ResultT]]) -> list[ResultT]:
        """Results in order. If one fails, wait for its siblings to settle, then raise.

        Every sibling that completed is already journaled, so a resume never runs it again.
        """
        _step_scope.check_scope(self.cursor, "ctx.all")
        return _parallel.wait_all(futures)

    def race(self, futures: Sequence[StepFuture[ResultT]]) -> tuple[int, ResultT]:
        """``(index, result)`` of the first future to settle.

        The winner is journaled, so a resume returns the same winner. Losers keep running to
        completion and their ``cancelled`` is not set: a race selects a result, it does not stop
        work (Weft's documented behaviour).
        """
        _step_scope.check_scope(self.cursor, "ctx.race")
        return _parallel.race(self.runtime, self.cursor, futures)

    def run_all(self, branches: Mapping[str, Any]) -> dict[str, Any]:
        """``{"name": (activity, input), ...}`` run in parallel; returns ``{"name": result}``.

        Renaming or reordering the branches of a journaled group raises
        ``BranchTopologyChangedError`` instead of matching results to the wrong branches.
        """
        _step_scope.check_scope(self.cursor, "ctx.run_all")
        return _parallel.run_all(self.runtime, self.cursor, branches, self.submit)

    def compensate(self) -> None:
        """Undo the run's completed steps that name a compensation, latest first (Saga).

        Each ``@activity(compensate=undo)`` step completed so far (replayed ones included) and
        not undone yet runs ``undo({"input": ..., "result": ...})`` as a durable, retried step
        at the run's next position, so a resume never runs a journaled compensation again.
        Submitted steps are undone in reverse submission order, once settled. All are tried;
        failures after retries raise ``CompensationError`` (docs/guides/compensation.md).
        """
        _step_scope.check_scope(self.cursor, "ctx.compensate")
        self.compensations.compensate()

    def sleep(self, duration: Duration) -> None:
        """Sleep durably: after a restart it ends at the original deadline."""
        _step_scope.check_scope(self.cursor, "ctx.sleep")
        _durable_ops.sleep(self.runtime, self.cursor, duration)

    def timer(self, duration: Duration) -> _timers.TimerFuture:
        """A durable timer: a future that settles (with None) ``duration`` from now.

        Its deadline is journaled now, so after a restart it fires at the original deadline; its
        firing is journaled too. Pass it to ``ctx.race`` (``ctx.race([ctx.submit(job),
        ctx.timer("5s")])`` returns index 1 when the timer fires first; the job keeps running)
        or ``ctx.all``, or call ``.result()`` (docs/guides/signals-sleep-approval.md).
        """
        _step_scope.check_scope(self.cursor, "ctx.timer")
        return _timers.timer(self.runtime, self.cursor, duration)

    @overload
    def run_workflow(
        self,
        workflow: Callable[..., ResultT],
        input: Any = None,
        *,
        run_id: str | None = None,
        **options: Any,
    ) -> ResultT: ...
    @overload
    def run_workflow(
        self, workflow: str, input: Any = None, *, run_id: str | None = None, **options: Any
    ) -> Any: ...
    def run_workflow(
        self, workflow: Any, input: Any = None, *, run_id: str | None = None, **options: Any
    ) -> Any:
        """Run another workflow as a durable step of this one: a child run; return its result.

        The child is a run of its own (``parent_run_id`` names this run), with the id ``run_id``
        or ``"<this run id>.<position>"``, journaled before it starts: a resumed parent
        re-attaches to (or resumes) the same child and never starts a second one. Its result is
        journaled here once. Options: ``on_change`` (default: this run's). Cancelling this run
        cancels the child.

        Raises:
            ChildWorkflowFailedError: The child failed or was cancelled; ``__cause__`` is its
                error (docs/guides/child-workflows.md).
        """
        _step_scope.check_scope(self.cursor, "ctx.run_workflow")
        future = _child_workflows.start(
            self.runtime, self.cursor, workflow, input, {**options, "run_id": run_id}
        )
        return future.result()

    @overload
    def start_workflow(
        self,
        workflow: Callable[..., ResultT],
        input: Any = None,
        *,
        run_id: str | None = None,
        **options: Any,
    ) -> StepFuture[ResultT]: ...
    @overload
    def start_workflow(
        self, workflow: str, input: Any = None, *, run_id: str | None = None, **options: Any
    ) -> StepFuture[Any]: ...
    def start_workflow(
        self, workflow: Any, input: Any = None, *, run_id: str | None = None, **options: Any
    ) -> StepFuture[Any]:
        """Start a child workflow (as `run_workflow()` does) without waiting: a future.

        Pass it to ``ctx.all`` or ``ctx.race``, or call ``.result()``; it raises
        ``ChildWorkflowFailedError`` when the child fails. Children run in parallel, each on its
        own run thread (not bounded by ``max_parallel``; their activities are).
        """
        _step_scope.check_scope(self.cursor, "ctx.start_workflow")
        return _child_workflows.start(
            self.runtime, self.cursor, workflow, input, {**options, "run_id": run_id}
        )

    def now(self) -> float:
        """The current time, recorded: a replay returns the same value."""
        _step_scope.check_scope(self.cursor, "ctx.now")
        return _durable_ops.now(self.runtime, self.cursor)

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Any:
        """Wait for signal ``name`` (``engine.signal``) and return its payload.

        A signal sent before the workflow waits is buffered. Consuming it is committed together
        with this step, so a crash in between leaves it deliverable. With ``timeout``, the
        deadline is journaled (a restart keeps it) and ``SignalTimeoutError`` is raised when it
        passes, and raised again on every replay.
        """
        _step_scope.check_scope(self.cursor, f"ctx.wait_for_signal({name!r})")
        return _durable_ops.wait_for_signal(self.runtime, self.cursor, name, timeout)

    def memo(self, key: str, fn: Callable[[], ResultT]) -> ResultT:
        """Run ``fn()`` once per ``key`` in this run; later calls and resumes get its value."""
        _step_scope.check_scope(self.cursor, f"ctx.memo({key!r})")
        value: ResultT = _durable_ops.memo(self.runtime, self.cursor, key, fn)
        return value


if TYPE_CHECKING:  # for type checkers only, as the aliases of weft_nb.base.typed_api
    WorkflowFn: TypeAlias = Callable[[WorkflowContext, InputT], ResultT]
    """A workflow ``(ctx, input)`` returning ``ResultT``."""

    BareWorkflowFn: TypeAlias = Callable[[WorkflowContext], ResultT]
    """A workflow taking no input, ``(ctx)`` or ``(ctx, input=default)``, returning ``ResultT``."""


def _name_of(activity: str | Callable[..., Any]) -> str:
    """An activity's name for a message: the string, or the function's name."""
    return activity if isinstance(activity, str) else getattr(activity, "__name__", repr(activity))


__all__ = ["EngineStopped", "StepChangedWarning", "WorkflowContext"]
