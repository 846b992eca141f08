"""Durable time and memoisation: ``ctx.sleep``, ``ctx.now`` and ``ctx.memo``.

Each takes a position like a step and is journaled, so a replay sees the same values: a sleep
spanning a restart fires at its original deadline (not a full duration later), ``now()`` returns
the recorded time, and a memoised function runs once per key per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _memo_failures as memo_failures
from ._durable_activity import memo_scope
from ._journal import STEP_COMPLETED, STEP_FAILED, STEP_STARTED, StepRecord
from ._payloads import decode, digest, encode, error_from_json, error_to_json
from ._retry import Duration, parse_duration
from .errors import SignalTimeoutError

if TYPE_CHECKING:
    from ._workflow_context import WorkflowContext

SLEEP, NOW, MEMO, SIGNAL = "<sleep>", "<now>", "<memo>", "<signal>"


def sleep(ctx: WorkflowContext, duration: Duration) -> None:
    """Sleep durably: the deadline is journaled before waiting."""
    seconds = parse_duration(duration, what="ctx.sleep duration")
    assert seconds is not None
    engine, state = ctx._engine, ctx._state
    position = ctx._take_position()
    signature = digest(json.dumps(seconds).encode())
    recorded = ctx._recorded(position, SLEEP, "", signature)
    if recorded is not None and recorded.status == STEP_COMPLETED:
        state.replayed += 1
        return
    if recorded is not None and recorded.result is not None:
        deadline = float(recorded.result)  # the original deadline, from before the restart
    else:
        deadline = engine.clock.now() + seconds
        engine.journal.record_marker(
            StepRecord(ctx.run_id, position, SLEEP, STEP_STARTED, signature, "", 1,
                       engine.clock.now(), None, "json", json.dumps(deadline).encode(),
                       idempotency_key=SLEEP)
        )  # fmt: skip
    remaining = deadline - engine.clock.now()
    if remaining > 0 and engine.clock.wait(state.cancel_requested, remaining):
        ctx._check_alive()
    ctx._check_alive()
    now = engine.clock.now()
    engine.journal.record_step(
        StepRecord(ctx.run_id, position, SLEEP, STEP_COMPLETED, signature, "", 1, now, now,
                   "json", json.dumps(deadline).encode(), idempotency_key=SLEEP)
    )  # fmt: skip


def now(ctx: WorkflowContext) -> float:
    """The time, recorded the first time: replays see the same value."""
    return float(memo(ctx, NOW, ctx._engine.clock.now, kind=NOW))


def memo(ctx: WorkflowContext, key: str, fn: Callable[[], Any], *, kind: str = MEMO) -> Any:
    """Run ``fn`` once per ``key`` in this run; later calls and resumes get the recorded value.

    A failure of ``fn`` is an answer too: it is journaled, and later calls and resumes raise it
    again (:mod:`weft_nb._memo_failures`).
    """
    if kind == MEMO and key in ctx._memo:
        remembered = ctx._memo[key]
        if isinstance(remembered, memo_failures.MemoFailure):
            raise remembered.error
        return remembered
    position = ctx._take_position()
    signature = digest(f"{kind}\0{key}".encode())
    recorded = ctx._recorded(position, kind, "", signature)
    if recorded is not None and recorded.status == STEP_FAILED:
        ctx._state.replayed += 1
        error = memo_failures.replay(ctx, recorded)
        if kind == MEMO:
            ctx._memo[key] = memo_failures.MemoFailure(error)
        raise error
    if recorded is not None and recorded.status == STEP_COMPLETED:
        assert recorded.result_codec is not None
        assert recorded.result is not None
        value = decode(recorded.result_codec, recorded.result, what=f"memo {key!r}")
        ctx._digests.remember(value, recorded.result_codec, recorded.result)
        ctx._state.replayed += 1
    else:
        try:
            with memo_scope(ctx, position, key):  # durable_activity() works inside
                value = fn()
        except Exception as error:
            ctx._check_alive()  # stopped or cancelled meanwhile: that, not the error, is the news
            if memo_failures.is_answer(error):
                memo_failures.record(ctx, position, kind, signature, error)
                if kind == MEMO:
                    ctx._memo[key] = memo_failures.MemoFailure(error)
            raise
        codec, data = encode(value, what=f"the value of ctx.memo({key!r})",
                             max_bytes=ctx._engine.max_payload_bytes)  # fmt: skip
        ctx._check_alive()
        at = ctx._engine.clock.now()
        ctx._engine.journal.record_step(
            StepRecord(ctx.run_id, position, kind, STEP_COMPLETED, signature, "", 1, at, at,
                       codec, data)
        )  # fmt: skip
        ctx._digests.remember(value, codec, data)
    if kind == MEMO:
        ctx._memo[key] = value
    return value


def wait_for_signal(ctx: WorkflowContext, name: str, timeout: Duration | None = None) -> Any:
    """Wait for signal ``name`` and return its payload; see ``WorkflowContext.wait_for_signal``."""
    seconds = parse_duration(timeout, what="wait_for_signal timeout")
    engine, state = ctx._engine, ctx._state
    position = ctx._take_position()
    signature = digest(f"{SIGNAL}\0{name}".encode())
    recorded = ctx._recorded(position, SIGNAL, "", signature)
    where = f"signal {name!r} (step {position}, run {ctx.run_id!r})"
    if recorded is not None and recorded.status in (STEP_COMPLETED, STEP_FAILED):
        state.replayed += 1
        if recorded.status == STEP_FAILED:
            assert recorded.error is not None
            raise error_from_json(recorded.error, run_id=ctx.run_id)
        assert recorded.result_codec is not None
        assert recorded.result is not None
        payload = decode(recorded.result_codec, recorded.result, what=f"the payload of {where}")
        ctx._digests.remember(payload, recorded.result_codec, recorded.result)
        return payload
    started = engine.clock.now()
    deadline = None
    if recorded is not None and recorded.result is not None:
        deadline = json.loads(recorded.result)  # the original deadline, from before a restart
    elif seconds is not None:
        deadline = started + seconds
        engine.journal.record_marker(
            StepRecord(ctx.run_id, position, SIGNAL, STEP_STARTED, signature, "", 1, started,
                       None, "json", json.dumps(deadline).encode(), idempotency_key=SIGNAL)
        )  # fmt: skip
    arrived = state.signal_arrived
    assert arrived is not None
    # The journaled deadline is wall time (it must survive a restart); in this process the wait
    # counts down on the monotonic clock, so stepping the system clock back cannot disable it.
    local_deadline = (
        None if deadline is None else engine.clock.monotonic() + deadline - engine.clock.now()
    )
    while True:
        ctx._check_alive()
        arrived.clear()  # before looking: a signal sent from now on sets it again
        step = StepRecord(ctx.run_id, position, SIGNAL, STEP_COMPLETED, signature, "", 1,
                          started, engine.clock.now(), idempotency_key=SIGNAL)  # fmt: skip
        received = engine.journal.consume_signal(ctx.run_id, name, step)
        if received is not None:
            assert received.result_codec is not None
            assert received.result is not None
            payload = decode(received.result_codec, received.result, what=f"the payload of {where}")
            ctx._digests.remember(payload, received.result_codec, received.result)
            return payload
        remaining = None if local_deadline is None else local_deadline - engine.clock.monotonic()
        if remaining is not None and remaining <= 0:
            error = SignalTimeoutError(
                f"{where} did not arrive within its timeout of {seconds or 0:g}s",
                run_id=ctx.run_id,
                position=position,
            )
            engine.journal.record_step(
                StepRecord(ctx.run_id, position, SIGNAL, STEP_FAILED, signature, "", 1, started,
                           engine.clock.now(), error=error_to_json(error), idempotency_key=SIGNAL)
            )  # fmt: skip
            raise error
        engine.clock.wait(arrived, remaining)
