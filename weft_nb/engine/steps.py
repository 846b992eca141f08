"""Executing one step live: attempts, retries, timeouts, verification and their journal records.

It also parks a step on an out-of-band completion token, and adopts the verifier's verdict on a
dispatch marker a crash left behind (`adopt_reconciled()`). It takes the engine's services
(``rt``, `Runtime`) and the run's replay state (``cursor``, `StepCursor`), never ``ctx``.

Runs on the workflow's thread (``ctx.run``) or a worker thread (``ctx.submit``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weft_nb import errors as _errors
from weft_nb.activity.checkpoints import needs_environment
from weft_nb.activity.context import ActivityContext, CompleteAsync, EngineStopped
from weft_nb.base import evidence
from weft_nb.base.faults import fault_point
from weft_nb.base.input_digest import input_digest
from weft_nb.base.payloads import (
    decode,
    encode,
    error_from_json,
    error_to_json,
    exception_text,
    validate,
)
from weft_nb.base.retry import RetryPolicy, parse_duration
from weft_nb.engine import crash_loops, interceptors, task_tokens
from weft_nb.engine.reconciliation import check_result, reconcile
from weft_nb.engine.replay import PreparedStep
from weft_nb.errors import (
    ActivityFailedError,
    ActivityScheduleToCloseTimeoutError,
    ActivityTimeoutError,
    WeftError,
)
from weft_nb.executors.attempts import AttemptRequest
from weft_nb.journal.group_commit import after_durable
from weft_nb.journal.io_errors import is_storage_failure
from weft_nb.journal.protocol import (
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    AttemptRecord,
    StepRecord,
)

if TYPE_CHECKING:
    from weft_nb.engine.crash_loops import DispatchTracker
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class Settlement:
    """How a step's result is journaled: as the end of which attempt, with what.

    Attributes:
        started: The step's ``STEP_STARTED`` record for the attempt that produced the result
            (its attempt count and first start are the completed record's).
        heartbeat: The attempt's last buffered heartbeat, written with the result.
        token: The task token the attempt handed out: the result must consume it, or an
            outside completion came first.
    """

    started: StepRecord
    heartbeat: Any = None
    token: str | None = None


@dataclasses.dataclass(frozen=True)
class StepCall:
    """One durable activity call as the workflow made it: which activity, on what, where."""

    position: int
    activity: str | Callable[..., Any]
    input: Any
    options: dict[str, Any]


def prepare_step(
    rt: Runtime, cursor: StepCursor, call: StepCall
) -> tuple[PreparedStep, StepRecord | None]:
    """Check and sign a call's input: its step, and the journal's record there if it matches."""
    position, definition = call.position, cursor.resolve(call.activity)
    name, limit, value = definition.name, rt.max_payload_bytes, call.input
    if definition.input_hint is not None:
        value = validate(value, definition.input_hint, what=f"input of activity {name!r}")
    codec, data = encode(
        value, what=lambda: f"input of activity {name!r} (step {position})", max_bytes=limit
    )
    signature = input_digest(value, codec, data, cursor.digests)
    if rt.dev_checks.active:
        rt.dev_checks.check_input(cursor.run_id, position, name, signature)
    key = call.options.get("idempotency_key") if call.options else None
    if key is None and definition.idempotency_key is not None:
        key = str(definition.idempotency_key(value))
    step = PreparedStep(
        position=position,
        definition=definition,
        value=value,
        input_hash=signature.value,
        key=key,
        options=call.options,
    )
    return step, cursor.match(position, name, definition.source_hash, signature)


def started_record(run_id: str, step: PreparedStep, attempt: int, first_start: float) -> StepRecord:
    """The ``STEP_STARTED`` record of ``step``: a dispatch marker or a parked step's record."""
    return StepRecord(
        run_id=run_id,
        position=step.position,
        activity=step.definition.name,
        status=STEP_STARTED,
        input_hash=step.input_hash,
        source_hash=step.definition.source_hash,
        attempts=attempt,
        started_at=first_start,
        idempotency_key=step.key,
    )


def execute(rt: Runtime, cursor: StepCursor, step: PreparedStep) -> Any:
    """Run a prepared step live, with retries, and journal its outcome (any thread).

    Each attempt is in the dispatch log from before it runs until its outcome is journaled, so
    an attempt that dies with the process is counted (`weft_nb.engine.crash_loops`).
    """
    dispatches = crash_loops.DispatchTracker(rt.dispatches, cursor.run_id, step)
    try:
        return interceptors.around_step(rt, cursor, step, _execute, dispatches)
    finally:
        dispatches.end()


def _execute(
    rt: Runtime, cursor: StepCursor, step: PreparedStep, dispatches: DispatchTracker
) -> Any:
    definition, position, value = step.definition, step.position, step.value
    key, options = step.key, step.options
    clock = rt.clock
    state = cursor.state
    policy: RetryPolicy = definition.retry.merged(options.get("retry"))
    timeout = _option_seconds(options, "timeout", definition.timeout)
    hb_timeout = _option_seconds(options, "heartbeat_timeout", definition.heartbeat_timeout)
    s2c = _option_seconds(
        options, "schedule_to_close_timeout", definition.schedule_to_close_timeout
    )
    if cursor.take_parked(position):  # parked before a restart: wait, never re-run
        return await_completion(rt, cursor, step)
    attempt, first_start = cursor.next_attempt(position, clock.now())
    if attempt > 1:  # earlier attempts died with their process: maybe a crash loop
        budget = crash_loops.RetryBudget(
            policy=policy, first_start=first_start, schedule_to_close=s2c
        )
        crash_loops.check_before_dispatch(rt, state.run_id, step, budget, attempt)
    if key is not None:
        rt.journal.record_marker(started_record(state.run_id, step, attempt, first_start))
    cursor.count_executed()
    while True:
        attempt_ctx = rt.new_activity_context(state.run_id, definition.name, position, attempt)
        attempt_ctx.max_attempts = policy.max_attempts
        started_step = started_record(state.run_id, step, attempt, first_start)
        attempt_ctx.set_token_registrar(token_registrar(rt, started_step))
        if evidence.ENABLED:
            latest = rt.journal.checkpoints_of(state.run_id, position)
            evidence.record(
                "attempt_start",
                run_id=state.run_id,
                position=position,
                activity=definition.name,
                attempt=attempt,
                durable_checkpoint=latest[0].seq if latest else None,
            )
        rt.dev_checks.watch_attempt(definition, attempt_ctx)
        wake = clock.new_event()
        started = clock.now()
        cursor.attempt_started(attempt_ctx, wake)
        rt.flusher.track(attempt_ctx)
        queue = options.get("queue", definition.queue)
        try:
            outcome = None
            if rt.queue_limits.acquire(queue, wake, attempt_ctx.cancelled):
                try:
                    if queue is not None:  # the attempt starts now, not when it began to wait
                        attempt_ctx.restart_watch()
                    dispatches.start(attempt, started)
                    request = AttemptRequest(
                        definition=definition,
                        value=value,
                        ctx=attempt_ctx,
                        timeout=timeout,
                        heartbeat_timeout=hb_timeout,
                        queue=queue,
                    )
                    outcome = rt.breakers.guard(request, wake, rt.run_attempt)
                finally:
                    rt.queue_limits.release(queue)
        finally:
            cursor.attempt_ended(attempt_ctx, wake)
        heartbeat = rt.flusher.finish(attempt_ctx)
        cursor.check_alive()  # cancelled or stopped while the attempt ran
        assert outcome is not None
        error = outcome.error
        rt.dev_checks.after_attempt(definition, attempt_ctx, hb_timeout, outcome.ok, error)
        if isinstance(error, CompleteAsync):
            if step.sub_operation:
                raise _errors.DurableActivityScopeError(
                    f"activity {definition.name!r} called complete_async() from "
                    "durable_activity(); use ctx.run for activities completed out of band"
                )
            dispatches.end()  # parked: its token, not this process, settles it now
            return park(rt, cursor, step, attempt_ctx)
        if outcome.ok:
            error = check_result(state.run_id, step, attempt, outcome.value)
        if outcome.ok and error is None and not step.record:
            return outcome.value  # unkeyed durable_activity: at-least-once, nothing journaled
        if outcome.ok and error is None:
            settlement = Settlement(
                started=started_step,
                heartbeat=heartbeat,
                # A handed-out token: the result must consume it, or an outside completion won.
                token=attempt_ctx.task_token if attempt_ctx.token_handed_out else None,
            )
            return record_success(rt, cursor, step, outcome.value, settlement)
        assert error is not None
        if isinstance(error, EngineStopped):
            raise error
        lacking = needs_environment(error)
        if lacking is not None and not attempt_ctx.token_handed_out:
            raise lacking from error  # no failed attempt: the run stops, resumable (errors.py)
        if attempt_ctx.token_handed_out and not task_tokens.spend(rt, attempt_ctx.task_token):
            return await_completion(rt, cursor, step)  # settled from outside first
        failed_attempt = AttemptRecord(
            run_id=state.run_id,
            position=position,
            attempt=attempt,
            activity=definition.name,
            started_at=started,
            finished_at=clock.now(),
            error_type=type(error).__name__,
            error_message=exception_text(error),
            traceback=outcome.traceback_text,
        )
        final = None
        if not will_retry(policy, attempt, error):
            final = final_error(state.run_id, step, attempt, error, outcome.traceback_text)
        delay = rt.breakers.backoff(definition, policy.backoff(attempt))
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
            rt.journal.record_attempt_failure(failed_attempt, heartbeat)
            if io_error is not None:  # our disk failed, not the step: the run stays resumable
                raise io_error from error
        else:
            # The attempt and the step's failure commit together: a crash between them
            # would make a resume run a non-retryable (or last) attempt again.
            failed_step = dataclasses.replace(
                started_step,
                status=STEP_FAILED,
                finished_at=clock.now(),
                error=error_to_json(final, outcome.traceback_text),
            )
            # Also an unkeyed durable_activity call's: its retries are spent, and a memo callback
            # run again after a crash must get this failure, not an attempt past the policy.
            rt.journal.record_attempt_failure(failed_attempt, heartbeat, failed_step)
            raise final from error
        rt.emit("retry_scheduled", state.run_id, position, attempt=attempt, delay=delay)
        cursor.back_off(position, delay)
        attempt += 1


def token_registrar(rt: Runtime, started: StepRecord) -> Callable[[str], None]:
    """Journal a parked step under its token (called when the token is first read)."""
    return lambda token: rt.journal.add_async_token(token, started)


def park(rt: Runtime, cursor: StepCursor, step: PreparedStep, attempt_ctx: ActivityContext) -> Any:
    """Journal the attempt's task token (reading it does), then wait for the outcome."""
    token = attempt_ctx.task_token
    rt.emit("async_pending", cursor.run_id, step.position, token=token)
    return await_completion(rt, cursor, step)


def await_completion(rt: Runtime, cursor: StepCursor, step: PreparedStep) -> Any:
    """Wait until a completion or failure for ``step`` is journaled, and adopt it."""
    definition, position, run_id = step.definition, step.position, cursor.run_id
    while True:
        cursor.check_alive()
        cursor.clear_signal()  # before looking: a completion from now on sets it again
        outcome = rt.journal.step_outcome(run_id, position)
        if outcome is not None:
            if outcome.status == STEP_FAILED:
                assert outcome.error is not None
                raise error_from_json(outcome.error, run_id=run_id)
            codec, data = outcome.result_codec, outcome.result
            assert codec is not None
            assert data is not None
            what = f"the completion of step {position} ({definition.name!r})"
            value = decode(codec, data, hint=definition.result_hint, what=what)
            cursor.remember(value, codec, data)  # later inputs hash it by its record
            return value
        cursor.wait_signal(None)


def will_retry(policy: RetryPolicy, attempt: int, error: BaseException) -> bool:
    """Whether the policy retries after ``attempt`` failed with ``error``."""
    mistake = isinstance(error, _errors.PayloadError | _errors.AsyncStyleError)  # fails again
    return policy.is_retryable(error) and not mistake and attempt < policy.max_attempts


def final_error(
    run_id: str, step: PreparedStep, attempt: int, error: BaseException, traceback_text: str
) -> WeftError:
    """The error to surface when this failure ends the step (`will_retry()` said no)."""
    if isinstance(error, ActivityTimeoutError | _errors.PayloadError):
        error.fields["attempts"] = attempt
        setattr(error, "attempts", attempt)  # noqa: B010 - not every such error declares it
        return error
    return ActivityFailedError(
        cause_type=type(error).__name__,
        cause_message=exception_text(error),
        traceback_text=traceback_text,
        attempts=attempt,
        run_id=run_id,
        position=step.position,
        activity=step.definition.name,
    )


def record_success(
    rt: Runtime, cursor: StepCursor, step: PreparedStep, value: Any, settlement: Settlement
) -> Any:
    """Journal a step's result (consuming its task token, if it handed one out)."""
    definition, position, run_id = step.definition, step.position, cursor.run_id
    value = validate(value, definition.result_hint, what=f"result of activity {definition.name!r}")
    codec, data = encode(
        value,
        what=f"result of activity {definition.name!r} (step {position}, run {run_id!r})",
        max_bytes=rt.max_payload_bytes,
        hint=definition.result_hint,
    )
    completed = dataclasses.replace(
        settlement.started,
        status=STEP_COMPLETED,
        finished_at=rt.clock.now(),
        result_codec=codec,
        result=data,
    )
    fault_point("step.before_record")
    if settlement.token is None:
        rt.journal.record_step(completed, settlement.heartbeat)
    elif not rt.journal.complete_async_token(settlement.token, completed):
        return await_completion(rt, cursor, step)  # an outside completion came first
    if evidence.ENABLED:  # once durable: a parallel step's sync may be deferred (group_commit)
        note = {"run_id": run_id, "position": position, "activity": definition.name}
        after_durable(evidence.record, "step_completed", **note)
    cursor.remember(value, codec, data)  # later inputs hash it by its record
    return value


def adopt_reconciled(
    rt: Runtime, cursor: StepCursor, step: PreparedStep, marker: StepRecord
) -> tuple[bool, Any]:
    """Reconcile a keyed step's dispatch marker that survived a crash.

    ``ctx.run`` and ``durable_activity`` both take this one path. Returns ``(True, result)``
    with the verifier's result journaled as the step's, or ``(False, None)`` when the step may
    be dispatched again.

    Raises:
        ActivityReconciliationIndeterminateError: No verifier, or it cannot prove the outcome.
    """
    if cursor.is_parked(step.position):
        return False, None  # parked on its task token, not lost: execution waits for it
    adopt, result = reconcile(step.definition, marker, step.value, step.key)
    if not adopt:
        return False, None
    started = started_record(cursor.run_id, step, marker.attempts, marker.started_at)
    return True, record_success(rt, cursor, step, result, Settlement(started=started))


def _option_seconds(options: dict[str, Any], name: str, default: float | None) -> float | None:
    return parse_duration(options[name], what=name) if name in options else default
