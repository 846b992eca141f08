"""Executing one step live: attempts, retries, timeouts, verification and their journal records.

It also parks a step on an out-of-band completion token.

Runs on the workflow's thread (``ctx.run``) or a worker thread (``ctx.submit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _crash_loops as crash_loops
from . import _evidence as evidence
from . import _task_tokens as task_tokens
from . import errors as _errors
from ._activity_context import ActivityContext, CompleteAsync, EngineStopped
from ._definitions import ActivityDefinition
from ._faults import fault_point
from ._io_errors import is_storage_failure
from ._journal import STEP_COMPLETED, STEP_FAILED, STEP_STARTED, AttemptRecord, StepRecord
from ._payloads import decode, encode, error_from_json, error_to_json, exception_text, validate
from ._reconciliation import check_result
from ._retry import RetryPolicy, parse_duration
from .errors import (
    ActivityFailedError,
    ActivityScheduleToCloseTimeoutError,
    ActivityTimeoutError,
    WeftError,
)

if TYPE_CHECKING:
    from ._crash_loops import DispatchTracker
    from ._workflow_context import PreparedStep, WorkflowContext


def execute(ctx: WorkflowContext, step: PreparedStep) -> Any:
    """Run a prepared step live, with retries, and journal its outcome (any thread).

    Each attempt is in the dispatch log from before it runs until its outcome is journaled, so
    an attempt that dies with the process is counted (:mod:`weft_nb._crash_loops`).
    """
    dispatches = crash_loops.DispatchTracker(ctx, step)
    try:
        return _execute(ctx, step, dispatches)
    finally:
        dispatches.end()


def _execute(ctx: WorkflowContext, step: PreparedStep, dispatches: DispatchTracker) -> Any:
    definition, position, value = step.definition, step.position, step.value
    input_hash, key, options = step.input_hash, step.key, step.options
    engine, state, clock = ctx._engine, ctx._state, ctx._engine.clock
    policy: RetryPolicy = definition.retry.merged(options.get("retry"))
    timeout = _option_seconds(options, "timeout", definition.timeout)
    hb_timeout = _option_seconds(options, "heartbeat_timeout", definition.heartbeat_timeout)
    s2c = _option_seconds(
        options, "schedule_to_close_timeout", definition.schedule_to_close_timeout
    )
    if position in state.pending_tokens:  # parked before a restart: wait, never re-run
        del state.pending_tokens[position]
        return await_completion(ctx, position, definition)
    attempt = state.failed_attempts.get(position, 0) + 1
    first_start = state.first_started.get(position, clock.now())
    if attempt > 1:  # earlier attempts died with their process: maybe a crash loop
        crash_loops.check_before_dispatch(ctx, step, policy, attempt, first_start, s2c)
    if key is not None:
        engine.journal.record_marker(
            StepRecord(
                state.run_id,
                position,
                definition.name,
                STEP_STARTED,
                input_hash,
                definition.source_hash,
                attempt,
                first_start,
                idempotency_key=key,
            )
        )
    state.executed += 1
    while True:
        attempt_ctx = engine.new_activity_context(state, definition.name, position, attempt)
        attempt_ctx.max_attempts = policy.max_attempts
        attempt_ctx._register_token = token_registrar(ctx, definition, position, input_hash, key,
                                                    attempt, first_start)  # fmt: skip
        if evidence.ENABLED:
            latest = engine.journal.checkpoints_of(state.run_id, position)
            evidence.record(
                "attempt_start", run_id=state.run_id, position=position,
                activity=definition.name, attempt=attempt,
                durable_checkpoint=latest[0].seq if latest else None,
            )  # fmt: skip
        engine.dev_checks.watch_attempt(definition, attempt_ctx)
        wake = clock.new_event()
        started = clock.now()
        state.live.add((attempt_ctx, wake))
        if state.cancel_requested.is_set():  # cancel() ran before this attempt was visible
            attempt_ctx._cancel("the run was cancelled")
        engine.flusher.track(attempt_ctx)
        queue = options.get("queue", definition.queue)
        try:
            outcome = None
            if engine.queue_limits.acquire(queue, wake, attempt_ctx.cancelled):
                try:
                    if queue is not None:  # the attempt starts now, not when it began to wait
                        attempt_ctx.restart_watch()
                    dispatches.start(attempt, started)
                    outcome = engine.attempts.run(
                        definition,
                        value,
                        attempt_ctx,
                        timeout=timeout,
                        heartbeat_timeout=hb_timeout,
                        wake=wake,
                        queue=queue,
                    )
                finally:
                    engine.queue_limits.release(queue)
        finally:
            state.live.discard((attempt_ctx, wake))
        heartbeat = engine.flusher.finish(attempt_ctx)
        ctx._check_alive()  # cancelled or stopped while the attempt ran
        assert outcome is not None
        error = outcome.error
        engine.dev_checks.after_attempt(definition, attempt_ctx, hb_timeout, outcome.ok, error)
        if isinstance(error, CompleteAsync):
            if step.sub_operation:
                raise _errors.DurableActivityScopeError(
                    f"activity {definition.name!r} called complete_async() from "
                    "durable_activity(); use ctx.run for activities completed out of band"
                )
            dispatches.end()  # parked: its token, not this process, settles it now
            return park(ctx, definition, position, attempt_ctx)
        if outcome.ok:
            error = check_result(
                definition, state.run_id, position, value, key, attempt, outcome.value
            )
        if outcome.ok and error is None and not step.record:
            return outcome.value  # unkeyed durable_activity: at-least-once, nothing journaled
        if outcome.ok and error is None:
            return record_success(
                ctx,
                definition,
                position,
                input_hash,
                key,
                outcome.value,
                attempt,
                first_start,
                heartbeat,
                # A handed-out token: the result must consume it, or an outside completion won.
                attempt_ctx.task_token if attempt_ctx._token_registered else None,
            )
        assert error is not None
        if isinstance(error, EngineStopped):
            raise error
        if attempt_ctx._token_registered and not task_tokens.spend(ctx, attempt_ctx.task_token):
            return await_completion(ctx, position, definition)  # settled from outside first
        failed_attempt = AttemptRecord(
            state.run_id,
            position,
            attempt,
            definition.name,
            started,
            clock.now(),
            type(error).__name__,
            exception_text(error),
            outcome.traceback_text,
        )
        final = final_error(
            ctx, definition, policy, position, attempt, error, outcome.traceback_text
        )
        delay = policy.backoff(attempt)
        if final is None and s2c is not None and clock.now() + delay >= first_start + s2c:
            final = ActivityScheduleToCloseTimeoutError(
                f"activity {definition.name!r} (step {position}, run {state.run_id!r}) "
                f"would retry after its schedule_to_close_timeout of {s2c:g}s; gave up "
                f"after {attempt} attempt(s). Last error: {exception_text(error, with_type=True)}",
                cause_type=type(error).__name__,
                cause_message=exception_text(error),
                traceback_text=outcome.traceback_text,
                attempts=attempt,
                run_id=state.run_id,
                position=position,
                activity=definition.name,
            )
        io_error = is_storage_failure(error) if final is not None else None
        if final is None or io_error is not None:
            engine.journal.record_attempt_failure(failed_attempt, heartbeat)
            if io_error is not None:  # our disk failed, not the step: the run stays resumable
                raise io_error from error
        else:
            # The attempt and the step's failure commit together: a crash between them
            # would make a resume run a non-retryable (or last) attempt again.
            failed_step = StepRecord(
                state.run_id,
                position,
                definition.name,
                STEP_FAILED,
                input_hash,
                definition.source_hash,
                attempt,
                first_start,
                clock.now(),
                error=error_to_json(final, outcome.traceback_text),
                idempotency_key=key,
            )
            # Also an unkeyed durable_activity call's: its retries are spent, and a memo callback
            # run again after a crash must get this failure, not an attempt past the policy.
            engine.journal.record_attempt_failure(failed_attempt, heartbeat, failed_step)
            raise final from error
        engine.emit("retry_scheduled", state.run_id, position, attempt=attempt, delay=delay)
        state.backoff = (position, clock.now() + delay)
        if evidence.ENABLED:
            evidence.record("backoff", run_id=state.run_id, position=position, delay=delay)
        try:
            if clock.wait(state.cancel_requested, delay):
                ctx._check_alive()
        finally:
            state.backoff = None
        attempt += 1


def token_registrar(
    ctx: WorkflowContext,
    definition: ActivityDefinition,
    position: int,
    input_hash: str,
    key: str | None,
    attempt: int,
    first_start: float,
) -> Callable[[str], None]:
    """Journal a parked step under its token (called when the token is first read)."""
    step = StepRecord(
        ctx.run_id, position, definition.name, STEP_STARTED, input_hash,
        definition.source_hash, attempt, first_start, idempotency_key=key,
    )  # fmt: skip
    return lambda token: ctx._engine.journal.add_async_token(token, step)


def park(
    ctx: WorkflowContext,
    definition: ActivityDefinition,
    position: int,
    attempt_ctx: ActivityContext,
) -> Any:
    """Journal the attempt's task token (reading it does), then wait for the outcome."""
    token = attempt_ctx.task_token
    ctx._engine.emit("async_pending", ctx.run_id, position, token=token)
    return await_completion(ctx, position, definition)


def await_completion(ctx: WorkflowContext, position: int, definition: ActivityDefinition) -> Any:
    """Wait until a completion or failure for ``position`` is journaled, and adopt it."""
    engine, arrived = ctx._engine, ctx._state.signal_arrived
    assert arrived is not None
    while True:
        ctx._check_alive()
        arrived.clear()  # before looking: a completion from now on sets it again
        rows = engine.journal.query(
            "SELECT status, result_codec, result, error FROM steps WHERE run_id = ? AND "
            "position = ? AND NOT superseded AND status IN ('completed', 'failed')",
            [ctx.run_id, position],
        )
        if rows:
            status, codec, data, error = rows[0]
            if status == STEP_FAILED:
                raise error_from_json(error, run_id=ctx.run_id)
            what = f"the completion of step {position} ({definition.name!r})"
            value = decode(codec, data, hint=definition.result_hint, what=what)
            ctx._digests.remember(value, codec, data)  # later inputs hash it by its record
            return value
        engine.clock.wait(arrived, None)


def final_error(
    ctx: WorkflowContext,
    definition: ActivityDefinition,
    policy: RetryPolicy,
    position: int,
    attempt: int,
    error: BaseException,
    traceback_text: str,
) -> WeftError | None:
    """The error to surface if this failure ends the step, else None (retry)."""
    retryable = policy.is_retryable(error) and not isinstance(error, _errors.PayloadError)
    if retryable and attempt < policy.max_attempts:
        return None
    if isinstance(error, ActivityTimeoutError | _errors.PayloadError):
        error.fields["attempts"] = attempt
        setattr(error, "attempts", attempt)  # noqa: B010 - not every such error declares it
        return error
    return ActivityFailedError(
        cause_type=type(error).__name__,
        cause_message=exception_text(error),
        traceback_text=traceback_text,
        attempts=attempt,
        run_id=ctx._state.run_id,
        position=position,
        activity=definition.name,
    )


def record_success(
    ctx: WorkflowContext,
    definition: ActivityDefinition,
    position: int,
    input_hash: str,
    key: str | None,
    value: Any,
    attempts: int,
    first_start: float,
    heartbeat: Any,
    token: str | None = None,
) -> Any:
    """Journal a step's result (consuming its task token, if it handed one out)."""
    engine, state = ctx._engine, ctx._state
    value = validate(value, definition.result_hint, what=f"result of activity {definition.name!r}")
    codec, data = encode(
        value,
        what=f"result of activity {definition.name!r} (step {position}, run {state.run_id!r})",
        max_bytes=engine.max_payload_bytes,
        hint=definition.result_hint,
    )
    step = StepRecord(
        state.run_id,
        position,
        definition.name,
        STEP_COMPLETED,
        input_hash,
        definition.source_hash,
        attempts,
        first_start,
        engine.clock.now(),
        codec,
        data,
        None,
        key,
    )
    fault_point("step.before_record")
    if token is None:
        engine.journal.record_step(step, heartbeat)
    elif not engine.journal.complete_async_token(token, step):
        return await_completion(ctx, position, definition)  # an outside completion came first
    if evidence.ENABLED:
        evidence.record("step_completed", run_id=state.run_id, position=position,
                        activity=definition.name)  # fmt: skip
    ctx._digests.remember(value, codec, data)  # later inputs hash it by its record
    return value


def _option_seconds(options: dict[str, Any], name: str, default: float | None) -> float | None:
    return parse_duration(options[name], what=name) if name in options else default
