"""The workflow side of a run: ``ctx.run`` with replay, signatures, retries and reconciliation.

Replay model: on resume the workflow function runs again from the top. Each ``ctx.run`` takes the
next position; a position whose step completed (with the same signature: activity name, input hash,
activity source hash) is answered from the journal without running the activity. On the first
mismatch the run's ``on_change`` policy decides: ``"rerun"`` supersedes the journaled steps from
there on (kept for audit) and runs live; ``"error"`` raises :class:`NonDeterminismError`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _durable_ops, _parallel, _run_definitions, _step_execution, _step_scope
from . import _evidence as evidence
from ._activity_context import EngineStopped
from ._definitions import ActivityDefinition, definition_of, make_activity
from ._input_digest import InputDigest, ResultDigests, input_digest
from ._journal import (
    STEP_COMPLETED,
    STEP_FAILED,
    EventRecord,
    StepRecord,
)
from ._parallel import StepFuture
from ._payloads import decode, encode, error_from_json, validate
from ._reconciliation import adopt_reconciled
from ._retry import Duration
from .errors import (
    ActivityNotRegisteredError,
    NonDeterminismError,
    WorkflowCancelledError,
)

if TYPE_CHECKING:
    from ._engine import Engine
    from ._run_handle import RunState

_CALL_OPTIONS = frozenset(
    {
        "timeout",
        "schedule_to_close_timeout",
        "retry",
        "queue",
        "idempotency_key",
        "heartbeat_timeout",
    }
)


class StepChangedWarning(UserWarning):
    """A journaled step no longer matches the workflow's code or input; it is run again."""


@dataclasses.dataclass
class PreparedStep:
    """A step whose position is taken: answered from the journal, or to be executed."""

    position: int
    definition: ActivityDefinition
    value: Any
    input_hash: str
    key: str | None
    options: dict[str, Any]
    replayed: bool = False
    result: Any = None
    error: BaseException | None = None
    record: bool = True  # False: an unkeyed durable_activity call (at-least-once, not journaled)
    sub_operation: bool = False  # a durable_activity call inside a ctx.memo callback


class WorkflowContext:
    """The ``ctx`` a workflow function receives."""

    def __init__(self, engine: Engine, state: RunState) -> None:
        self._engine = engine
        self._state = state
        self._position = 0
        self._memo: dict[str, Any] = {}
        # What this execution received from the engine, by recorded digest (see _input_digest).
        self._digests = ResultDigests(state.input_value, lambda: _recorded_input(engine, state))
        # The run keeps the activity definitions it started with: redefining one in a cell while
        # the run is live affects runs started later, never the rest of this one (issue 13.12c).
        self._definitions: dict[str, ActivityDefinition] = dict(engine.registry.activities)
        self._used_definitions: dict[str, ActivityDefinition] = {}  # see _run_definitions
        self._definitions_warned: set[str] = set()
        self.run_id = state.run_id
        self.workflow_name = state.workflow.name
        engine.dev_checks.watch_workflow_thread(self)  # built on the workflow's thread

    # -- public API ------------------------------------------------------------------------

    def run(
        self, activity: str | Callable[..., Any], input: Any = None, **call_options: Any
    ) -> Any:
        """Run an activity (by registered name or function) and return its result.

        Call options: ``timeout``, ``schedule_to_close_timeout``, ``retry`` (a partial override:
        a dict or a ``RetryPolicy``), ``queue``, ``idempotency_key``, ``heartbeat_timeout``.
        A completed step is answered from the journal and never runs twice.
        """
        _step_scope.check_scope(self, f"ctx.run({_name_of(activity)!r})")
        step = self._prepare(activity, input, call_options)
        if step.replayed:
            if step.error is not None:
                raise step.error
            return step.result
        return self._execute(step)

    def _prepare(
        self, activity: str | Callable[..., Any], input: Any, call_options: dict[str, Any]
    ) -> PreparedStep:
        """Take the next position; answer it from the journal when it can be.

        Runs on the workflow's thread, so positions follow program order.
        """
        self._check_alive()
        unknown = set(call_options) - _CALL_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown ctx.run option(s) {sorted(unknown)}; use {sorted(_CALL_OPTIONS)}"
            )
        position = self._take_position()
        definition = self._resolve(activity)
        value = validate(
            input, definition.input_hint, what=f"input of activity {definition.name!r}"
        )
        codec, data = encode(
            value,
            what=f"input of activity {definition.name!r} (step {position})",
            max_bytes=self._engine.max_payload_bytes,
        )
        signature = input_digest(value, codec, data, self._digests)
        self._engine.dev_checks.check_input(self, position, definition.name, signature)
        key = call_options.get("idempotency_key")
        if key is None and definition.idempotency_key is not None:
            key = str(definition.idempotency_key(value))
        step = PreparedStep(position, definition, value, signature.value, key, call_options)
        recorded = self._recorded(position, definition.name, definition.source_hash, signature)
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
                    what=f"the recorded result of step {position} ({definition.name!r}, run "
                    f"{self.run_id!r})",
                ),
            )
            self._digests.remember(step.result, recorded.result_codec, recorded.result)
        elif recorded.status == STEP_FAILED:
            assert recorded.error is not None
            step.replayed, step.error = True, error_from_json(recorded.error, run_id=self.run_id)
        else:
            step.replayed, step.result = adopt_reconciled(self, step, recorded)
            if not step.replayed:
                return step
        self._state.replayed += 1
        if evidence.ENABLED:
            evidence.record("step_replayed", run_id=self.run_id, position=position)
        return step

    def _take_position(self) -> int:
        position = self._position
        self._position += 1
        return position

    def _recorded(
        self, position: int, name: str, source_hash: str, input_hash: str | InputDigest
    ) -> StepRecord | None:
        """The journaled record at ``position`` if its signature matches; else apply on_change.

        An activity input's digest matches under either hash scheme (old journals). A mismatch
        of an inexact digest (part of the input was hashed by re-pickling an object) is not
        trusted: the journaled step is kept, with a :class:`StepChangedWarning`.
        """
        recorded = self._state.steps.pop(position, None)  # each position is visited once
        if recorded is None:
            return None
        if isinstance(input_hash, InputDigest):
            same_input = input_hash.matches(recorded.input_hash)
            new_hash = input_hash.value
        else:
            same_input, new_hash = recorded.input_hash == input_hash, input_hash
        if (recorded.activity, recorded.source_hash) == (name, source_hash):
            if same_input:
                return recorded
            if isinstance(input_hash, InputDigest) and not input_hash.exact:
                _warn_untrusted_change(self._state.run_id, position, name, input_hash)
                return recorded
        shown = recorded.input_hash if same_input else new_hash  # matched under the old scheme
        self._on_changed(position, recorded, name, source_hash, shown or "")
        return None

    def submit(
        self, activity: str | Callable[..., Any], input: Any = None, **call_options: Any
    ) -> StepFuture:
        """Schedule an activity without waiting; returns a :class:`StepFuture`.

        The step takes its position now (program order), runs on a worker thread, and is
        journaled the moment it settles. Combine futures with :meth:`all` or :meth:`race`.
        """
        _step_scope.check_scope(self, f"ctx.submit({_name_of(activity)!r})")
        return _parallel.submit(self, self._prepare(activity, input, call_options))

    def all(self, futures: Sequence[StepFuture]) -> list[Any]:
        """Results in order. If one fails, wait for its siblings to settle, then raise.

        Every sibling that completed is already journaled, so a resume never runs it again.
        """
        _step_scope.check_scope(self, "ctx.all")
        return _parallel.wait_all(futures)

    def race(self, futures: Sequence[StepFuture]) -> tuple[int, Any]:
        """``(index, result)`` of the first future to settle.

        The winner is journaled, so a resume returns the same winner. Losers keep running to
        completion and their ``cancelled`` is not set: a race selects a result, it does not stop
        work (Weft's documented behaviour).
        """
        _step_scope.check_scope(self, "ctx.race")
        return _parallel.race(self, futures)

    def run_all(self, branches: Mapping[str, Any]) -> dict[str, Any]:
        """``{"name": (activity, input), ...}`` run in parallel; returns ``{"name": result}``.

        Renaming or reordering the branches of a journaled group raises
        ``BranchTopologyChangedError`` instead of matching results to the wrong branches.
        """
        _step_scope.check_scope(self, "ctx.run_all")
        return _parallel.run_all(self, branches, self.submit)

    def sleep(self, duration: Duration) -> None:
        """Sleep durably: after a restart it ends at the original deadline."""
        _step_scope.check_scope(self, "ctx.sleep")
        _durable_ops.sleep(self, duration)

    def now(self) -> float:
        """The current time, recorded: a replay returns the same value."""
        _step_scope.check_scope(self, "ctx.now")
        return _durable_ops.now(self)

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Any:
        """Wait for signal ``name`` (``engine.signal``) and return its payload.

        A signal sent before the workflow waits is buffered. Consuming it is committed together
        with this step, so a crash in between leaves it deliverable. With ``timeout``, the
        deadline is journaled (a restart keeps it) and ``SignalTimeoutError`` is raised when it
        passes, and raised again on every replay.
        """
        _step_scope.check_scope(self, f"ctx.wait_for_signal({name!r})")
        return _durable_ops.wait_for_signal(self, name, timeout)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` once per ``key`` in this run; later calls and resumes get its value."""
        _step_scope.check_scope(self, f"ctx.memo({key!r})")
        return _durable_ops.memo(self, key, fn)

    # -- resolution and replay -------------------------------------------------------------

    def _check_alive(self) -> None:
        state = self._state
        if state.stopped:
            raise EngineStopped
        if state.cancel_requested.is_set():
            raise WorkflowCancelledError(f"run {state.run_id!r} was cancelled", run_id=state.run_id)

    def _resolve(self, activity: str | Callable[..., Any]) -> ActivityDefinition:
        registry = self._engine.registry
        if isinstance(activity, str):
            found = self._definitions.get(activity) or registry.activity(activity)
            if found is None:
                raise ActivityNotRegisteredError(
                    f"workflow {self.workflow_name!r} (run {self.run_id!r}) called activity "
                    f"{activity!r}, which is not registered. Registered: "
                    f"{sorted(registry.activities) or 'none'}. Run the cell that defines it, or "
                    "engine.register() it, then re-run.",
                    activity=activity,
                    run_id=self.run_id,
                )
            self._definitions.setdefault(found.name, found)
            return self._used_definitions.setdefault(found.name, found)
        definition = definition_of(activity)
        if definition is None:
            if not callable(activity):
                raise TypeError(f"ctx.run takes an activity name or function; got {activity!r}")
            definition = make_activity(activity)
        if not isinstance(definition, ActivityDefinition):
            raise TypeError(f"{definition.name!r} is a workflow, not an activity")
        current = registry.activity(definition.name)
        if current is None or current.fn is not definition.fn:
            registry.add(definition)
        return _run_definitions.pin(self, definition)

    def _on_changed(
        self, position: int, recorded: StepRecord, name: str, source_hash: str, input_hash: str
    ) -> None:
        what = []
        if recorded.activity != name:
            what.append(f"activity was {recorded.activity!r}, now {name!r}")
        else:
            if recorded.input_hash != input_hash:
                what.append("its input changed")
            if recorded.source_hash != source_hash:
                what.append(
                    f"the activity's source changed ({recorded.source_hash[:8]} -> "
                    f"{source_hash[:8]})"
                )
        reason = "; ".join(what)
        state = self._state
        if state.on_change == "error":
            raise NonDeterminismError(
                f"step {position} of run {state.run_id!r} no longer matches the journal: {reason}. "
                "Restore the original code, start a new run, or use on_change='rerun'.",
                run_id=state.run_id,
                position=position,
            )
        message = (
            f"step {position} of run {state.run_id!r} changed ({reason}); journaled steps from "
            f"{position} on are superseded and run again"
        )
        warnings.warn(message, StepChangedWarning, stacklevel=3)
        self._engine.journal.supersede_from(
            state.run_id,
            position,
            EventRecord(state.run_id, position, "step_changed", message, self._engine.clock.now()),
        )
        for stale in [p for p in state.steps if p >= position]:
            del state.steps[stale]
        state.failed_attempts = {p: n for p, n in state.failed_attempts.items() if p < position}
        state.first_started = {p: t for p, t in state.first_started.items() if p < position}

    # -- live execution --------------------------------------------------------------------

    def _execute(self, step: PreparedStep) -> Any:
        """Run a prepared step live, with retries, and journal its outcome (any thread)."""
        return _step_execution.execute(self, step)

    def _record_success(self, *args: Any) -> Any:
        return _step_execution.record_success(self, *args)


def _recorded_input(engine: Engine, state: RunState) -> tuple[str, bytes] | None:
    """The run's input as journaled: ``(codec, data)``."""
    record = engine.journal.get_run(state.run_id)
    return None if record is None else (record.input_codec, record.input)


def _warn_untrusted_change(run_id: str, position: int, name: str, signature: InputDigest) -> None:
    kinds = sorted({f"{type(v).__module__}.{type(v).__qualname__}" for v in signature.opaque})
    warnings.warn(
        f"step {position} ({name!r}) of run {run_id!r}: its input hashes differently from the "
        f"journal, but the hash is not reliable: it pickles {', '.join(kinds)} objects, whose "
        "bytes can differ between processes. The journaled step is kept, not run again. If the "
        "input really changed, start a new run; to make the hash exact, pass plain data, "
        "dataclasses, pydantic models, numpy arrays, or values returned by earlier steps.",
        StepChangedWarning,
        stacklevel=4,
    )


def _name_of(activity: str | Callable[..., Any]) -> str:
    """An activity's name for a message: the string, or the function's name."""
    return activity if isinstance(activity, str) else getattr(activity, "__name__", repr(activity))


__all__ = ["EngineStopped", "StepChangedWarning", "WorkflowContext"]
