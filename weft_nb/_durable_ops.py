"""Durable time and memoisation: ``ctx.sleep``, ``ctx.now`` and ``ctx.memo``.

Each takes a position like a step and is journaled, so a replay sees the same values: a sleep
spanning a restart fires at its original deadline (not a full duration later), ``now()`` returns
the recorded time, and a memoised function runs once per key per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._journal import STEP_COMPLETED, STEP_STARTED, StepRecord
from ._payloads import decode, digest, encode
from ._retry import Duration, parse_duration

if TYPE_CHECKING:
    from ._workflow_context import WorkflowContext

SLEEP, NOW, MEMO = "<sleep>", "<now>", "<memo>"


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
    """Run ``fn`` once per ``key`` in this run; later calls and resumes get the recorded value."""
    if kind == MEMO and key in ctx._memo:
        return ctx._memo[key]
    position = ctx._take_position()
    signature = digest(f"{kind}\0{key}".encode())
    recorded = ctx._recorded(position, kind, "", signature)
    if recorded is not None and recorded.status == STEP_COMPLETED:
        assert recorded.result_codec is not None
        assert recorded.result is not None
        value = decode(recorded.result_codec, recorded.result, what=f"memo {key!r}")
        ctx._state.replayed += 1
    else:
        value = fn()
        codec, data = encode(value, what=f"the value of ctx.memo({key!r})",
                             max_bytes=ctx._engine.max_payload_bytes)  # fmt: skip
        ctx._check_alive()
        at = ctx._engine.clock.now()
        ctx._engine.journal.record_step(
            StepRecord(ctx.run_id, position, kind, STEP_COMPLETED, signature, "", 1, at, at,
                       codec, data)
        )  # fmt: skip
    if kind == MEMO:
        ctx._memo[key] = value
    return value
