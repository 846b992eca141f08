"""``durable_activity()``: durable activity calls from plain helper functions inside ``ctx.memo``.

Shared workflow logic often lives in ordinary helper functions. Inside a ``ctx.memo(key, fn)``
callback, such a helper can call ``weft_nb.durable_activity(name, input, **call_options)`` and
get the activity's normal retries, timeouts, heartbeats and verifier, without being passed ``ctx``.

As in Weft:

- it works only while a ``ctx.memo`` callback runs (else ``DurableActivityScopeError``), and only
  from that callback's own thread, one call at a time;
- each call's identity is derived from the memo step, the memo key and the call's ordinal;
- a call with an idempotency key (on the call, or the activity's ``idempotency_key``) journals
  its result at once: if the process dies after the activity returned but before the memo's
  result was recorded, recovery replays that result instead of dispatching again; if it dies
  between the dispatch and that record, the surviving dispatch marker is reconciled exactly as
  ``ctx.run``'s is (the verifier's Tier-0 verdict, or ``ActivityReconciliationIndeterminateError``
  without a verifier), never silently dispatched again;
- a call without a key journals no result: a crash before the memo records its result runs it
  again (at least once); only its failure for good (retries spent, or a non-retryable error) is
  journaled, so a callback run again gets that failure, not one more attempt;
- ``complete_async()`` is not supported there (use ``ctx.run``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, overload

from weft_nb.base.payloads import decode, error_from_json
from weft_nb.base.typed_api import InputT, ModelT, ResultT
from weft_nb.engine import steps
from weft_nb.engine.interceptors import InterceptedStep, around_durable_activity
from weft_nb.errors import DurableActivityScopeError
from weft_nb.journal.protocol import STEP_COMPLETED, STEP_FAILED

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from weft_nb.activity.context import ActivityFn, AsyncActivityFn
    from weft_nb.base.typed_api import CallOptions, ModelInput
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runtime import Runtime

# Sub-operations live at positions far above any workflow's own: memo step p, call k -> this.
_SUB_BASE = 1_000_000


@dataclasses.dataclass
class _MemoScope:
    rt: Runtime
    cursor: StepCursor
    position: int
    key: str
    thread: int
    ordinal: int = 0
    busy: bool = False
    closed: bool = False


_scope: contextvars.ContextVar[_MemoScope | None] = contextvars.ContextVar(
    "weft_memo_scope", default=None
)


@contextlib.contextmanager
def memo_scope(rt: Runtime, cursor: StepCursor, position: int, key: str) -> Iterator[None]:
    """Open the scope in which ``durable_activity`` works, for one memo callback."""
    scope = _MemoScope(rt, cursor, position, key, threading.get_ident())
    token = _scope.set(scope)
    try:
        yield
    finally:
        scope.closed = True  # a late call from a thread the callback left behind is refused
        _scope.reset(token)


def current_memo() -> tuple[int, str] | None:
    """``(position, key)`` of the ``ctx.memo`` callback running in this context, if any."""
    scope = _scope.get()
    if scope is None or scope.closed:
        return None
    return scope.position, scope.key


def in_memo() -> bool:
    """Whether a ``ctx.memo`` callback runs in this context (`current_memo()` is not None)."""
    scope = _scope.get()
    return scope is not None and not scope.closed


# The overloads follow WorkflowContext.run's: an activity function's types give the result's.
@overload
def durable_activity(
    activity: AsyncActivityFn[ModelT, ResultT],
    input: ModelInput[ModelT],
    **call_options: Unpack[CallOptions],
) -> ResultT: ...
@overload
def durable_activity(
    activity: AsyncActivityFn[InputT, ResultT], input: InputT, **call_options: Unpack[CallOptions]
) -> ResultT: ...
@overload
def durable_activity(
    activity: ActivityFn[ModelT, ResultT],
    input: ModelInput[ModelT],
    **call_options: Unpack[CallOptions],
) -> ResultT: ...
@overload
def durable_activity(
    activity: ActivityFn[InputT, ResultT], input: InputT, **call_options: Unpack[CallOptions]
) -> ResultT: ...
@overload
def durable_activity(
    activity: Callable[[], Awaitable[ResultT]],
    input: None = None,
    **call_options: Unpack[CallOptions],
) -> ResultT: ...
@overload
def durable_activity(
    activity: Callable[[], ResultT], input: None = None, **call_options: Unpack[CallOptions]
) -> ResultT: ...
@overload
def durable_activity(
    activity: str, input: Any = None, **call_options: Unpack[CallOptions]
) -> Any: ...
def durable_activity(
    activity: str | Callable[..., Any], input: Any = None, **call_options: Any
) -> Any:
    """Run an activity durably from a helper inside a ``ctx.memo`` callback; see the module."""
    scope = _scope.get()
    if scope is None or scope.closed:
        raise DurableActivityScopeError(
            "durable_activity() works only while a ctx.memo() callback runs; call the activity "
            "with ctx.run(), or wrap the helper that calls it in ctx.memo(key, fn)"
        )
    if scope.thread != threading.get_ident() or scope.busy:
        raise DurableActivityScopeError(
            "durable_activity() calls must be sequential, from the ctx.memo() callback's own "
            "thread; do not start them from other threads or callbacks"
        )
    rt, cursor = scope.rt, scope.cursor
    scope.ordinal += 1
    position = _SUB_BASE * (scope.position + 1) + scope.ordinal
    step, recorded = steps.prepare_step(
        rt,
        cursor,
        steps.StepCall(position=position, activity=activity, input=input, options=call_options),
    )
    definition, key = step.definition, step.key
    step.record, step.sub_operation = key is not None, True
    if recorded is not None and recorded.status == STEP_FAILED:  # failed for good, keyed or not
        assert recorded.error is not None
        cursor.count_replayed()
        raise error_from_json(recorded.error, run_id=cursor.run_id)
    if key is not None:
        if recorded is not None and recorded.status == STEP_COMPLETED:
            assert recorded.result_codec is not None
            assert recorded.result is not None
            cursor.count_replayed()
            result = decode(
                recorded.result_codec,
                recorded.result,
                hint=definition.result_hint,
                what=f"the recorded result of {definition.name!r}",
            )
            cursor.remember(result, recorded.result_codec, recorded.result)
            return result
        if recorded is not None:  # a dispatch marker without an outcome: as ctx.run does
            adopted, result = steps.adopt_reconciled(rt, cursor, step, recorded)
            if adopted:
                cursor.count_replayed()
                return result
    scope.busy = True
    try:
        info = InterceptedStep(
            run_id=cursor.run_id,
            activity=definition.name,
            position=position,
            idempotency_key=key,
            durable_activity=True,
        )
        return around_durable_activity(rt, info, lambda: steps.execute(rt, cursor, step))
    finally:
        scope.busy = False
