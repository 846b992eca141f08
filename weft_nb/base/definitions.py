"""Activity and workflow definitions, the decorators that make them, and the registry.

A definition is a frozen record of what to run and how (name, function, retry policy, timeouts,
source hash). The ``@activity`` decorator and the ``%%weft_activity`` magic both build one through
`make_activity()`, so the two surfaces cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from weft_nb.base.circuit_breaker import CircuitBreaker, circuit_breaker_from
from weft_nb.base.retry import (
    DEFAULT_RETRY_POLICY,
    Duration,
    ErrorMatcher,
    RetryPolicy,
    parse_duration,
)

F = TypeVar("F", bound=Callable[..., Any])

ON_CHANGE_POLICIES = ("rerun", "error")


def source_hash(fn: Callable[..., Any], source: str | None = None) -> str:
    """A short, stable hash of a function's source (or of its code object when no source exists).

    Notebook cells have source through IPython's line cache; the magic passes the cell text.
    """
    if source is None:
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            code = getattr(fn, "__code__", None)
            source = repr((code.co_code, code.co_consts, code.co_names)) if code else repr(fn)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def defined_at(fn: Callable[..., Any], name: str) -> str:
    """Where ``fn`` was written, ``file:line`` for messages; ``name`` when Python cannot tell."""
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else name


def _positional_arity(fn: Callable[..., Any]) -> int:
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)


def call_arguments(
    fn: Callable[..., Any], *, arity: int, value: Any, context: Any, context_first: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The ``(args, kwargs)`` an activity or workflow function is called with (built only here).

    An activity takes ``(input, context)`` and a workflow ``(context, input)``, each cut to the
    function's ``arity``. No input (``None``) for an input parameter that has a default leaves the
    input out, so the default applies, as a plain call would: the type checker lets
    ``ctx.run(fn)`` and ``engine.start(wf)`` through for such a function and types the result
    from it. A parameter after the input (an activity's context) then goes by keyword (or, if
    positional-only, after the default itself). What is journaled is still the ``None`` given.
    """
    slots = ((context, value) if context_first else (value, context))[:arity]
    index = 1 if context_first else 0
    if value is None and arity > index:
        params = _positional_parameters(fn)
        if len(params) > index and params[index].default is not inspect.Parameter.empty:
            if index == len(slots) - 1:
                return slots[:index], {}
            after = params[index + 1] if len(params) > index + 1 else None
            if after is not None and after.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                return slots[:index], {after.name: slots[index + 1]}
            return (*slots[:index], params[index].default, *slots[index + 1 :]), {}
    return slots, {}


def _positional_parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): nothing to leave out
        return []
    return [p for p in params if p.kind in kinds]


def _hints(fn: Callable[..., Any], input_index: int = 0) -> tuple[Any, Any]:
    """The (input, return) type hints of a function, or ``None`` where absent or unresolvable."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None, None
    params = list(inspect.signature(fn).parameters)
    input_hint = hints.get(params[input_index]) if len(params) > input_index else None
    return input_hint, hints.get("return")


@dataclasses.dataclass(frozen=True)
class ActivityDefinition:
    """A registered activity: the function and its policy."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    idempotency_key: Callable[[Any], str] | None = None
    verify: Callable[..., Any] | None = None
    queue: str | None = None
    circuit_breaker: CircuitBreaker | None = None
    source_hash: str = ""
    arity: int = 1
    is_async: bool = False
    input_hint: Any = None
    result_hint: Any = None
    compensate: str | Callable[..., Any] | None = None  # the activity that undoes this one

    def summary(self) -> str:
        """One line: name, policy and source hash."""
        parts = [f"activity {self.name!r}", f"retry {self.retry.max_attempts}x"]
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout:g}s")
        if self.heartbeat_timeout is not None:
            parts.append(f"heartbeat timeout {self.heartbeat_timeout:g}s")
        if self.queue:
            parts.append(f"queue {self.queue!r}")
        if self.circuit_breaker is not None:
            parts.append(f"circuit breaker {self.circuit_breaker.describe()}")
        if self.compensate is not None:
            parts.append(f"compensate {compensation_name(self.compensate)!r}")
        parts.append(f"source {self.source_hash[:8]}")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class WorkflowDefinition:
    """A registered workflow: a function ``(ctx, input)``, plain or ``async def``."""

    name: str
    fn: Callable[..., Any]
    version: str = "1"
    source_hash: str = ""
    arity: int = 2
    input_hint: Any = None
    compensate_on_failure: bool = False  # run ctx.compensate() when the workflow fails
    is_async: bool = False  # ``async def``: it gets an AsyncWorkflowContext and is awaited


def compensation_name(compensate: str | Callable[..., Any]) -> str:
    """The name of a compensation given by name or as a function, for messages."""
    if isinstance(compensate, str):
        return compensate
    definition = definition_of(compensate)
    return definition.name if definition is not None else getattr(compensate, "__name__", "?")


# PLR0913: one keyword-only option per activity setting is the public design (@activity,
# %%weft_activity). RUF100 only while pyproject.toml still ignores PLR0913.
def make_activity(  # noqa: PLR0913
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    timeout: Duration | None = None,
    schedule_to_close_timeout: Duration | None = None,
    heartbeat_timeout: Duration | None = None,
    non_retryable_errors: tuple[ErrorMatcher, ...] | list[ErrorMatcher] = (),
    idempotency_key: Callable[[Any], str] | None = None,
    verify: Callable[..., Any] | None = None,
    queue: str | None = None,
    circuit_breaker: CircuitBreaker | str | Mapping[str, Any] | None = None,
    source: str | None = None,
    compensate: str | Callable[..., Any] | None = None,
) -> ActivityDefinition:
    """Build an `ActivityDefinition`, validating every option."""
    if not callable(fn):
        raise TypeError(f"an activity must be a function; got {fn!r}")
    if compensate is not None and not (isinstance(compensate, str) or callable(compensate)):
        raise TypeError(f"compensate= takes an activity (name or function); got {compensate!r}")
    policy = DEFAULT_RETRY_POLICY.merged(retry)
    if non_retryable_errors:
        policy = dataclasses.replace(
            policy,
            non_retryable_errors=tuple(policy.non_retryable_errors) + tuple(non_retryable_errors),
        )
    arity = _positional_arity(fn)
    if arity > 2:
        raise TypeError(
            f"activity {fn.__name__!r} takes {arity} positional parameters; an activity takes "
            "(input) or (input, ctx): pass several values as a dict or a pydantic model"
        )
    second = _positional_parameters(fn)[1:2]
    if second and second[0].default not in (inspect.Parameter.empty, None):
        raise TypeError(
            f"activity {fn.__name__!r}: its second parameter {second[0].name!r} has a default, but "
            "a second parameter always receives the ActivityContext; make it keyword-only "
            f"(`*, {second[0].name}=...`) or pass it in the input"
        )
    input_hint, result_hint = _hints(fn)
    return ActivityDefinition(
        name=name or fn.__name__,
        fn=fn,
        retry=policy,
        timeout=parse_duration(timeout, what="timeout"),
        schedule_to_close_timeout=parse_duration(
            schedule_to_close_timeout, what="schedule_to_close_timeout"
        ),
        heartbeat_timeout=parse_duration(heartbeat_timeout, what="heartbeat_timeout"),
        idempotency_key=idempotency_key,
        verify=verify,
        queue=queue,
        circuit_breaker=circuit_breaker_from(circuit_breaker),
        source_hash=source_hash(fn, source),
        arity=arity,
        is_async=inspect.iscoroutinefunction(fn),
        input_hint=input_hint,
        result_hint=result_hint,
        compensate=compensate,
    )


def make_workflow(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    version: str = "1",
    source: str | None = None,
    compensate_on_failure: bool = False,
) -> WorkflowDefinition:
    """Build a `WorkflowDefinition`."""
    if not callable(fn):
        raise TypeError(f"a workflow must be a function; got {fn!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"workflow {fn.__name__!r} must be a function (ctx, input), plain or `async def`, "
            "not a generator: return the result instead of yielding it"
        )
    arity = _positional_arity(fn)
    if arity not in (1, 2):
        raise TypeError(f"workflow {fn.__name__!r} must take (ctx) or (ctx, input)")
    return WorkflowDefinition(
        name=name or fn.__name__,
        fn=fn,
        version=str(version),
        source_hash=source_hash(fn, source),
        arity=arity,
        input_hint=_hints(fn, input_index=1)[0] if arity == 2 else None,
        compensate_on_failure=bool(compensate_on_failure),
        is_async=inspect.iscoroutinefunction(fn),
    )


DEFINITION_ATTR = "__weft_definition__"


def definition_of(obj: Any) -> ActivityDefinition | WorkflowDefinition | None:
    """The definition a decorated function carries, if any."""
    if isinstance(obj, ActivityDefinition | WorkflowDefinition):
        return obj
    found = getattr(obj, DEFINITION_ATTR, None)
    return found if isinstance(found, ActivityDefinition | WorkflowDefinition) else None


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(
    *,
    name: str | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    timeout: Duration | None = None,
    schedule_to_close_timeout: Duration | None = None,
    heartbeat_timeout: Duration | None = None,
    non_retryable_errors: tuple[ErrorMatcher, ...] | list[ErrorMatcher] = (),
    idempotency_key: Callable[[Any], str] | None = None,
    verify: Callable[..., Any] | None = None,
    queue: str | None = None,
    circuit_breaker: CircuitBreaker | str | Mapping[str, Any] | None = None,
    compensate: str | Callable[..., Any] | None = None,
) -> Callable[[F], F]: ...
def activity(fn: Any = None, /, **options: Any) -> Any:
    """Mark a function ``(input)`` or ``(input, ctx)`` as an activity; bare or with options.

    The function is returned unchanged (calling it directly still runs it plainly); it carries its
    `ActivityDefinition` for ``Engine.register`` and ``ctx.run``. ``compensate=undo`` names the
    activity ``ctx.compensate()`` runs to undo a completed step, on
    ``{"input": ..., "result": ...}`` (docs/guides/compensation.md).
    """

    def decorate(func: F) -> F:
        setattr(func, DEFINITION_ATTR, make_activity(func, **options))
        return func

    return decorate(fn) if fn is not None else decorate


@overload
def workflow(fn: F, /) -> F: ...
@overload
def workflow(
    *, name: str | None = None, version: str = "1", compensate_on_failure: bool = False
) -> Callable[[F], F]: ...
def workflow(fn: Any = None, /, **options: Any) -> Any:
    """Mark a function ``(ctx, input)``, plain or async, as a workflow; bare or with options.

    Options: ``name``, ``version``, and ``compensate_on_failure`` (when the workflow fails, run
    ``ctx.compensate()`` before the error ends the run: docs/guides/compensation.md).
    """

    def decorate(func: F) -> F:
        setattr(func, DEFINITION_ATTR, make_workflow(func, **options))
        return func

    return decorate(fn) if fn is not None else decorate


class Registry:
    """Name to definition, for activities and workflows. Registering a name again replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.activities: dict[str, ActivityDefinition] = {}
        self.workflows: dict[str, WorkflowDefinition] = {}

    def add(self, definition: ActivityDefinition | WorkflowDefinition) -> bool:
        """Register ``definition``; True when it replaced one with different source."""
        table: dict[str, Any] = (
            self.activities if isinstance(definition, ActivityDefinition) else self.workflows
        )
        with self._lock:
            previous = table.get(definition.name)
            table[definition.name] = definition
        return previous is not None and previous.source_hash != definition.source_hash

    def activity(self, name: str) -> ActivityDefinition | None:
        """The activity registered under ``name``."""
        return self.activities.get(name)

    def workflow(self, name: str) -> WorkflowDefinition | None:
        """The workflow registered under ``name``."""
        return self.workflows.get(name)
