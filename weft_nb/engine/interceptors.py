"""Interceptors: user hooks around runs, steps, activity attempts and `durable_activity` calls.

An [`Interceptor`][weft_nb.Interceptor] overrides any of four hooks. Each hook receives a small
frozen record (names, ids, attempt numbers) and ``call_next``, the rest of the chain: it may act
before and after, look at the result or the exception, or replace them. The engine's interceptors
form one chain, outermost first (``Engine(interceptors=[outer, inner])``).

What an exception in a hook does (the rule that keeps runs honest):

- ``intercept_attempt``: an exception from the hook, before or after ``call_next``, fails the
  attempt exactly as if the activity had raised it: it is journaled as a failed attempt and the
  retry policy decides. Nothing is lost, but an activity that had succeeded may run again (as
  after a crash: activities are at least once).
- ``intercept_step``, ``intercept_durable_activity`` and ``intercept_run``: an exception from the
  hook is the step's (or the workflow's) exception, journaled as the run's failure with its type
  and message: never a silent failure. A journaled step is never undone by a hook.
- Observe-only work that must never fail a run (logs, traces, metrics) belongs in
  ``try``/``except`` inside the hook: the built-in logging and OpenTelemetry interceptors do so.
- ``call_next`` raises ``BaseException`` subclasses the engine uses to stop a run (the engine
  closed, a parked step): re-raise what you did not expect, as every ``except Exception`` does.

The hot path: with no interceptors and no listeners the engine makes one tuple check per step and
per attempt, and allocates nothing for interception.
"""

from __future__ import annotations

import dataclasses
import functools
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from weft_nb.activity.context import ActivityContext, EngineStopped
from weft_nb.errors import InterceptorCallError
from weft_nb.executors.attempts import AttemptOutcome, AttemptRequest

if TYPE_CHECKING:
    import threading

    from weft_nb.engine.events import EventBus
    from weft_nb.engine.replay import PreparedStep
    from weft_nb.executors.base import Executor
    from weft_nb.journal.protocol import Journal

InfoT = TypeVar("InfoT")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class InterceptedRun:
    """One execution of a run (its start, or a resume), as ``intercept_run`` sees it.

    Attributes:
        run_id: The run's id.
        workflow: The workflow's registered name.
        input: The workflow's input value.
        trace_context: The run's durable slot for a tracing context (a W3C ``traceparent``):
            ``trace_context(None)`` reads it, ``trace_context(value)`` journals ``value`` when the
            run has none yet and returns the one kept, so a resume continues the first trace.
    """

    run_id: str
    workflow: str
    input: Any
    trace_context: Callable[[str | None], str | None]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class InterceptedStep:
    """A step executed live (not replayed), or a `durable_activity` call.

    Attributes:
        run_id: The run's id.
        activity: The activity's registered name.
        position: The step's position in the run (a `durable_activity` call's is above 1,000,000).
        idempotency_key: The step's idempotency key, if it has one.
        durable_activity: True for a `durable_activity` call inside ``ctx.memo``.
    """

    run_id: str
    activity: str
    position: int
    idempotency_key: str | None
    durable_activity: bool


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class InterceptedAttempt:
    """One attempt of a step, as the kernel dispatches it (inline, to a worker, or to Dask).

    Attributes:
        run_id: The run's id.
        activity: The activity's registered name.
        position: The step's position in the run.
        attempt: The attempt's number, from 1.
        max_attempts: The retry policy's limit for this step.
        queue: The step's queue, if any.
        context: The attempt's `ActivityContext` in the kernel (heartbeats, start time).
    """

    run_id: str
    activity: str
    position: int
    attempt: int
    max_attempts: int | None
    queue: str | None
    context: ActivityContext


class Intercepting(Protocol):
    """What the dispatch functions below need of the engine's services (a `Runtime`)."""

    @property
    def events(self) -> EventBus:
        """The engine's listeners."""

    @property
    def executor(self) -> Executor:
        """Where attempts run."""

    @property
    def journal(self) -> Journal:
        """Where the run's trace context is kept."""

    def interceptor_chain(self) -> tuple[Interceptor, ...]:
        """The interceptors that wrap run code now."""

    def emit(self, kind: str, run_id: str | None, position: int | None, **data: Any) -> None:
        """Send an engine event."""


class RunScoped(Protocol):
    """A run's replay state (`StepCursor`), as far as the step hooks need it."""

    @property
    def run_id(self) -> str:
        """The run's id."""


class Interceptor:
    """Base class of interceptors: override the hooks you need; each default calls ``call_next``.

    Every hook returns what ``call_next()`` returned (or a replacement), and raises what it raised
    (or a replacement). See the module for what an exception from a hook does.
    """

    def active(self) -> bool:
        """Whether to wrap calls now (asked per step and attempt); True unless overridden.

        An interceptor that would only pass calls through at the moment (tracing with no
        provider configured) answers False, so the engine runs without it and pays nothing.
        """
        return True

    def intercept_run(self, info: InterceptedRun, call_next: Callable[[], Any]) -> Any:
        """Wrap one execution of the workflow function (a start, or a resume after a restart)."""
        return call_next()

    def intercept_step(self, info: InterceptedStep, call_next: Callable[[], Any]) -> Any:
        """Wrap a step executed live: all its attempts, retries and backoff, and its record."""
        return call_next()

    def intercept_attempt(self, info: InterceptedAttempt, call_next: Callable[[], Any]) -> Any:
        """Wrap one attempt: ``call_next()`` returns the activity's result or raises its error."""
        return call_next()

    def intercept_durable_activity(
        self, info: InterceptedStep, call_next: Callable[[], Any]
    ) -> Any:
        """Wrap a `durable_activity` call executed live inside a ``ctx.memo`` callback."""
        return call_next()


def _run_hook(interceptor: Interceptor, info: InterceptedRun, call_next: Callable[[], Any]) -> Any:
    return interceptor.intercept_run(info, call_next)


def _step_hook(
    interceptor: Interceptor, info: InterceptedStep, call_next: Callable[[], Any]
) -> Any:
    return interceptor.intercept_step(info, call_next)


def _call_hook(
    interceptor: Interceptor, info: InterceptedStep, call_next: Callable[[], Any]
) -> Any:
    return interceptor.intercept_durable_activity(info, call_next)


def _attempt_hook(
    interceptor: Interceptor, info: InterceptedAttempt, call_next: Callable[[], Any]
) -> Any:
    return interceptor.intercept_attempt(info, call_next)


_HOOK_NAMES = {
    "_run_hook": "intercept_run",
    "_step_hook": "intercept_step",
    "_call_hook": "intercept_durable_activity",
    "_attempt_hook": "intercept_attempt",
}


def _through(
    chain: Sequence[Interceptor],
    hook: Callable[[Interceptor, InfoT, Callable[[], Any]], Any],
    info: InfoT,
    call: Callable[[], Any],
    index: int = 0,
) -> Any:
    """Call ``hook`` of ``chain[index]``, whose ``call_next`` (callable once) is the rest."""
    if index == len(chain):
        return call()
    interceptor = chain[index]
    called = False

    def call_next() -> Any:
        nonlocal called
        if called:  # a second run of the work would be journaled over the first
            raise InterceptorCallError(type(interceptor).__name__, _HOOK_NAMES[hook.__name__])
        called = True
        return _through(chain, hook, info, call, index + 1)

    return hook(interceptor, info, call_next)


def around_run(
    rt: Intercepting, run_id: str, workflow: str, value: Any, call: Callable[[], Any]
) -> Any:
    """Run the workflow function ``call`` through the run hooks."""
    chain = rt.interceptor_chain()
    if not chain:
        return call()
    info = InterceptedRun(
        run_id=run_id,
        workflow=workflow,
        input=value,
        trace_context=functools.partial(rt.journal.trace_context, run_id),
    )
    return _through(chain, _run_hook, info, call)


def around_step(
    rt: Intercepting,
    cursor: RunScoped,
    step: PreparedStep,
    execute: Callable[[Any, Any, PreparedStep, Any], Any],
    dispatches: object,
) -> Any:
    """Execute a step live through the step hooks: ``execute(rt, cursor, step, dispatches)``."""
    chain = rt.interceptor_chain()
    if not chain and not rt.events.listening:
        return execute(rt, cursor, step, dispatches)
    info = InterceptedStep(
        run_id=cursor.run_id,
        activity=step.definition.name,
        position=step.position,
        idempotency_key=step.key,
        durable_activity=step.sub_operation,
    )
    rt.emit("step_started", info.run_id, info.position, activity=info.activity)
    try:
        value = _through(
            chain, _step_hook, info, functools.partial(execute, rt, cursor, step, dispatches)
        )
    except Exception as exc:
        rt.emit("step_failed", info.run_id, info.position, activity=info.activity, error=exc)
        raise
    rt.emit("step_completed", info.run_id, info.position, activity=info.activity)
    return value


def around_durable_activity(
    rt: Intercepting, info: InterceptedStep, call: Callable[[], Any]
) -> Any:
    """Execute a `durable_activity` call live through its hooks."""
    chain = rt.interceptor_chain()
    if not chain:
        return call()
    return _through(chain, _call_hook, info, call)


class _AttemptStopped(EngineStopped):
    """The executor gave no outcome: the run was cancelled or stopped while the attempt ran."""


def around_attempt(
    rt: Intercepting, request: AttemptRequest, wake: threading.Event
) -> AttemptOutcome | None:
    """Run one attempt on the executor through the attempt hooks (``steps``' one line).

    The hooks see the activity's result as a return value and its error as an exception; what
    they return or raise becomes the attempt's outcome. An attempt stopped with its run (no
    outcome, the executor's None) raises an ``EngineStopped`` through the hooks.
    """
    chain = rt.interceptor_chain()
    if not chain and not rt.events.listening:
        return rt.executor.run(request, wake)
    ctx = request.ctx
    info = InterceptedAttempt(
        run_id=ctx.run_id,
        activity=ctx.activity_name,
        position=ctx.position,
        attempt=ctx.attempt,
        max_attempts=ctx.max_attempts,
        queue=request.queue,
        context=ctx,
    )
    rt.emit("attempt_started", info.run_id, info.position, attempt=info.attempt)
    outcome = _attempt_outcome(rt, chain, info, request, wake)
    if outcome is None:
        return None
    if outcome.ok:
        rt.emit("attempt_completed", info.run_id, info.position, attempt=info.attempt)
    elif isinstance(outcome.error, Exception):
        rt.emit(
            "attempt_failed", info.run_id, info.position, attempt=info.attempt, error=outcome.error
        )
    return outcome


def _attempt_outcome(
    rt: Intercepting,
    chain: Sequence[Interceptor],
    info: InterceptedAttempt,
    request: AttemptRequest,
    wake: threading.Event,
) -> AttemptOutcome | None:
    produced: list[AttemptOutcome] = []

    def run_on_executor() -> Any:
        outcome = rt.executor.run(request, wake)
        if outcome is None:
            raise _AttemptStopped
        produced.append(outcome)
        if outcome.ok:
            return outcome.value
        assert outcome.error is not None
        raise outcome.error

    try:
        value = _through(chain, _attempt_hook, info, run_on_executor)
    except _AttemptStopped:
        return None
    except BaseException as exc:
        if produced and exc is produced[-1].error:
            return produced[-1]  # the activity's own failure, with its worker-side traceback
        return AttemptOutcome(ok=False, error=exc, traceback_text=traceback.format_exc())
    if produced and produced[-1].ok and value is produced[-1].value:
        return produced[-1]
    return AttemptOutcome(ok=True, value=value)
