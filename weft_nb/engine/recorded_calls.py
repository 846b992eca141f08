"""Durable time and memoisation: ``ctx.sleep``, ``ctx.now`` and ``ctx.memo``.

Each takes a position like a step and is journaled, so a replay sees the same values: a sleep
spanning a restart fires at its original deadline (not a full duration later), ``now()`` returns
the recorded time, and a memoised function runs once per key per run.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weft_nb.base.payloads import decode, digest, encode, error_from_json, error_to_json
from weft_nb.base.retry import Duration, parse_duration, required_duration
from weft_nb.engine import memo_failures, step_scope
from weft_nb.engine.durable_activity import memo_scope
from weft_nb.engine.replay import NOT_SET, control_record
from weft_nb.errors import AsyncStyleError, SignalTimeoutError
from weft_nb.journal.protocol import STEP_COMPLETED, STEP_FAILED

if TYPE_CHECKING:
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runtime import Runtime

SLEEP, NOW, MEMO, SIGNAL = "<sleep>", "<now>", "<memo>", "<signal>"


def sleep(rt: Runtime, cursor: StepCursor, duration: Duration) -> None:
    """Sleep durably: the deadline is journaled before waiting."""
    wait = begin_sleep(rt, cursor, duration)
    if wait is not None:
        wait()


def begin_sleep(rt: Runtime, cursor: StepCursor, duration: Duration) -> Callable[[], None] | None:
    """Take a sleep's position and journal its deadline (on the workflow's thread).

    Returns None when the journal has the sleep done, else the wait itself: it may run on any
    thread (an async workflow's sleep waits off its loop), and journals the sleep's end.
    """
    seconds = required_duration(duration, what="ctx.sleep duration")
    position = cursor.take_position()
    signature = digest(json.dumps(seconds).encode())
    recorded = cursor.match(position, SLEEP, "", signature)
    if recorded is not None and recorded.status == STEP_COMPLETED:
        cursor.count_replayed()
        return None
    if recorded is not None and recorded.result is not None:
        deadline = float(recorded.result)  # the original deadline, from before the restart
    else:
        deadline = rt.clock.now() + seconds
    until = json.dumps(deadline).encode()
    if recorded is None or recorded.result is None:
        rt.journal.record_marker(
            control_record(
                cursor.run_id,
                position,
                SLEEP,
                signature,
                rt.clock.now(),
                result=until,
                idempotency_key=SLEEP,
            )
        )

    def wait() -> None:
        remaining = deadline - rt.clock.now()
        if remaining > 0:
            cursor.pause(remaining)
        cursor.check_alive()
        now = rt.clock.now()
        rt.journal.record_step(
            control_record(
                cursor.run_id,
                position,
                SLEEP,
                signature,
                now,
                completed=True,
                result=until,
                idempotency_key=SLEEP,
            )
        )

    return wait


def now(rt: Runtime, cursor: StepCursor) -> float:
    """The time, recorded the first time: replays see the same value."""
    return float(memo(rt, cursor, NOW, rt.clock.now, kind=NOW))


def memo(
    rt: Runtime, cursor: StepCursor, key: str, fn: Callable[[], Any], *, kind: str = MEMO
) -> Any:
    """Run ``fn`` once per ``key`` in this run; later calls and resumes get the recorded value.

    A failure of ``fn`` is an answer too: it is journaled, and later calls and resumes raise it
    again (`weft_nb.engine.memo_failures`).
    """
    remembered = cursor.memo_value(key) if kind == MEMO else NOT_SET
    if remembered is not NOT_SET:
        if isinstance(remembered, memo_failures.MemoFailure):
            raise remembered.error
        return remembered
    position = cursor.take_position()
    signature = digest(f"{kind}\0{key}".encode())
    recorded = cursor.match(position, kind, "", signature)
    if recorded is not None and recorded.status == STEP_FAILED:
        cursor.count_replayed()
        error = memo_failures.replay(cursor.run_id, recorded)
        if kind == MEMO:
            cursor.remember_memo(key, memo_failures.MemoFailure(error))
        raise error
    if recorded is not None and recorded.status == STEP_COMPLETED:
        assert recorded.result_codec is not None
        assert recorded.result is not None
        value = decode(recorded.result_codec, recorded.result, what=f"memo {key!r}")
        cursor.remember(value, recorded.result_codec, recorded.result)
        cursor.count_replayed()
    else:
        try:
            with memo_scope(rt, cursor, position, key):  # durable_activity() works inside
                value = fn()
        except Exception as error:
            cursor.check_alive()  # stopped or cancelled meanwhile: that, not the error, is the news
            if memo_failures.is_answer(error):
                at = rt.clock.now()
                failed = dataclasses.replace(
                    control_record(cursor.run_id, position, kind, signature, at),
                    status=STEP_FAILED,
                    finished_at=at,
                )
                failure = memo_failures.with_failure(failed, error, max_bytes=rt.max_payload_bytes)
                rt.journal.record_step(failure)
                if kind == MEMO:
                    cursor.remember_memo(key, memo_failures.MemoFailure(error))
            raise
        if inspect.iscoroutine(value):  # `lambda: some_async()`: a coroutine is no value to keep
            value.close()
            raise AsyncStyleError(
                f"the ctx.memo({key!r}) callback returned a coroutine",
                "a memo's callback is a plain function that returns a value; make the async "
                "work an activity and run it with ctx.run(...)",
                where=step_scope.call_site(),
            )
        codec, data = encode(
            value, what=f"the value of ctx.memo({key!r})", max_bytes=rt.max_payload_bytes
        )
        cursor.check_alive()
        at = rt.clock.now()
        rt.journal.record_step(
            control_record(
                cursor.run_id,
                position,
                kind,
                signature,
                at,
                completed=True,
                result=data,
                codec=codec,
            )
        )
        cursor.remember(value, codec, data)
    if kind == MEMO:
        cursor.remember_memo(key, value)
    return value


def wait_for_signal(
    rt: Runtime, cursor: StepCursor, name: str, timeout: Duration | None = None
) -> Any:
    """Wait for signal ``name`` and return its payload; see ``WorkflowContext.wait_for_signal``."""
    replayed, wait = begin_signal_wait(rt, cursor, name, timeout)
    return replayed() if replayed is not None else wait(None)


def begin_signal_wait(
    rt: Runtime, cursor: StepCursor, name: str, timeout: Duration | None = None
) -> tuple[Callable[[], Any] | None, Callable[[threading.Event | None], Any]]:
    """Take a signal wait's position, journal its deadline: ``(replayed, wait)``.

    ``replayed`` answers from the journal (the payload, or the timeout raised again) when it
    can; otherwise ``wait(arrived)`` waits, on any thread, for the signal, waking on
    ``arrived`` (an event `weft_nb.engine.live_runs` sets with the run's own; None: the run's).
    """
    seconds = parse_duration(timeout, what="wait_for_signal timeout")
    run_id = cursor.run_id
    position = cursor.take_position()
    signature = digest(f"{SIGNAL}\0{name}".encode())
    recorded = cursor.match(position, SIGNAL, "", signature)
    where = f"signal {name!r} (step {position}, run {run_id!r})"
    if recorded is not None and recorded.status in (STEP_COMPLETED, STEP_FAILED):
        cursor.count_replayed()
        done = recorded

        def replayed() -> Any:
            if done.status == STEP_FAILED:
                assert done.error is not None
                raise error_from_json(done.error, run_id=run_id)
            assert done.result_codec is not None
            assert done.result is not None
            payload = decode(done.result_codec, done.result, what=f"the payload of {where}")
            cursor.remember(payload, done.result_codec, done.result)
            return payload

        return replayed, _never
    started = rt.clock.now()
    deadline = None
    if recorded is not None and recorded.result is not None:
        deadline = json.loads(recorded.result)  # the original deadline, from before a restart
    elif seconds is not None:
        deadline = started + seconds
        rt.journal.record_marker(
            dataclasses.replace(
                control_record(run_id, position, SIGNAL, signature, started),
                result_codec="json",
                result=json.dumps(deadline).encode(),
                idempotency_key=SIGNAL,
            )
        )
    # The journaled deadline is wall time (it must survive a restart); in this process the wait
    # counts down on the monotonic clock, so stepping the system clock back cannot disable it.
    local_deadline = None if deadline is None else rt.clock.monotonic() + deadline - rt.clock.now()

    def wait(arrived: threading.Event | None) -> Any:
        while True:
            cursor.check_alive()
            cursor.clear_signal(arrived)  # before looking: a signal sent from now on sets it
            step = dataclasses.replace(
                control_record(run_id, position, SIGNAL, signature, started),
                status=STEP_COMPLETED,
                finished_at=rt.clock.now(),
                idempotency_key=SIGNAL,
            )
            received = rt.journal.consume_signal(run_id, name, step)
            if received is not None:
                assert received.result_codec is not None
                assert received.result is not None
                payload = decode(
                    received.result_codec, received.result, what=f"the payload of {where}"
                )
                cursor.remember(payload, received.result_codec, received.result)
                return payload
            remaining = None if local_deadline is None else local_deadline - rt.clock.monotonic()
            if remaining is not None and remaining <= 0:
                error = SignalTimeoutError(name, seconds or 0, run_id=run_id, position=position)
                rt.journal.record_step(
                    dataclasses.replace(
                        control_record(run_id, position, SIGNAL, signature, started),
                        status=STEP_FAILED,
                        finished_at=rt.clock.now(),
                        error=error_to_json(error),
                        idempotency_key=SIGNAL,
                    )
                )
                raise error
            cursor.wait_signal(remaining, arrived)

    return None, wait


def _never(arrived: threading.Event | None) -> Any:
    raise AssertionError("a replayed signal wait does not wait")
