"""The engine logs under ``weft_nb``: runs, attempts, retries, timeouts, verdicts and damage."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from weft_nb.engine.interceptors import Interceptor
from weft_nb.engine.logs import LoggingInterceptor
from weft_nb.errors import ActivityFailedError, JournalDamageWarning
from weft_nb.journal.dispatch_log import DispatchLog
from weft_nb.testing import MemoryJournal, TestEngine

failures_left: list[int] = []

pytestmark = pytest.mark.usefixtures("workflow_kind")


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": "2s"})
def fetch(x: int) -> int:
    if failures_left[0] > 0:
        failures_left[0] -= 1
        raise ConnectionError("service down")
    return x


@weft_nb.activity(timeout="1s", retry={"max_attempts": 1})
def slow(x: int, activity: weft_nb.ActivityContext) -> int:
    activity.cancelled.wait(100)  # virtual seconds: the timeout cancels it after one
    return x


@weft_nb.workflow
def fetching(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(fetch, x)


@weft_nb.workflow
def slowly(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(slow, x)


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


def test_a_failed_attempt_and_its_retry_are_logged_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures_left[:] = [1]
    caplog.set_level(logging.DEBUG, logger="weft_nb")
    with TestEngine(MemoryJournal()) as engine:
        handle = engine.start(fetching, 7)
        assert handle.result() == 7
    failed = [r for r in records(caplog, "weft_nb.activity") if r.levelno == logging.WARNING]
    assert len(failed) == 1
    record: Any = failed[0]
    assert "attempt 1 of 3 failed: ConnectionError: service down" in record.getMessage()
    assert (record.run_id, record.activity, record.position, record.attempt) == (
        handle.run_id,
        "fetch",
        0,
        1,
    )
    retry: Any = next(r for r in records(caplog, "weft_nb.engine") if "retrying" in r.msg)
    assert retry.backoff == 2.0 and retry.attempt == 1 and retry.run_id == handle.run_id
    assert "in 2s" in retry.getMessage()
    started = [r.getMessage() for r in records(caplog, "weft_nb.activity") if r.levelno == 10]
    assert len(started) == 2 and "attempt 2 of 3 started" in started[1]
    engine_messages = [r.getMessage() for r in records(caplog, "weft_nb.engine")]
    assert f"run {handle.run_id}: workflow 'fetching' executing" in engine_messages
    assert f"run {handle.run_id}: completed" in engine_messages


def test_a_step_that_fails_for_good_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures_left[:] = [5]
    caplog.set_level(logging.INFO, logger="weft_nb")
    with TestEngine(MemoryJournal()) as engine:
        handle = engine.start(fetching, 7)
        with pytest.raises(ActivityFailedError):
            handle.result()
    errors = [r for r in records(caplog, "weft_nb.engine") if r.levelno == logging.ERROR]
    assert (
        len(errors) == 1
        and "step 0 ('fetch') failed: ActivityFailedError" in errors[0].msg % errors[0].args
    )
    assert f"run {handle.run_id}: failed" in [r.getMessage() for r in caplog.records]


def test_a_timeout_is_logged_as_one(caplog: pytest.LogCaptureFixture) -> None:
    with TestEngine(MemoryJournal()) as engine:
        handle = engine.start(slowly, 1)
        with pytest.raises(weft_nb.errors.ActivityTimeoutError):
            handle.result()
    timed_out = [r.getMessage() for r in records(caplog, "weft_nb.activity")]
    assert any("attempt 1 of 1 timed out: ActivityPerAttemptTimeoutError" in m for m in timed_out)


def test_with_weft_nb_loggers_off_no_logging_interceptor_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("weft_nb")
    before = logger.level
    with TestEngine(MemoryJournal(), interceptors=[Interceptor()]) as engine:
        assert len(engine.runtime.interceptor_chain()) >= 2  # caplog's handler: logging is on
        logger.setLevel(logging.CRITICAL)
        try:
            assert engine.runtime.interceptor_chain()[:1] == engine.runtime.quiet_interceptors[:1]
            assert not any(
                isinstance(each, LoggingInterceptor) for each in engine.runtime.interceptor_chain()
            )
        finally:
            logger.setLevel(before)


def test_an_application_without_logging_handlers_runs_no_interceptor() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None  # as without the otel extra\n"
        "import weft_nb\n"
        "from weft_nb.testing import MemoryJournal, TestEngine\n"
        "with TestEngine(MemoryJournal()) as engine:\n"
        "    assert engine.runtime.interceptor_chain() == (), engine.runtime.interceptor_chain()\n"
        "    import logging; logging.basicConfig()\n"
        "    assert len(engine.runtime.interceptor_chain()) == 1  # a handler now: logging runs\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_reconciliation_verdicts_are_logged(
    engine: TestEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="weft_nb")
    inside, gate = threading.Event(), threading.Event()
    calls: list[int] = []

    def verify(result: object, context: weft_nb.VerificationContext) -> object:
        return "not-completed" if context.phase == "pre-dispatch-reconciliation" else True

    @weft_nb.activity(idempotency_key=lambda order: f"order-{order}", verify=verify)
    def charge(order: int) -> int:
        calls.append(order)
        if len(calls) == 1:
            inside.set()
            gate.wait()
        return order

    @weft_nb.workflow
    def checkout(ctx: weft_nb.WorkflowContext, order: int) -> int:
        return ctx.run(charge, order)

    engine.start(checkout, 3, run_id="k1")
    assert inside.wait(10)
    restarted = engine.simulate_restart()
    gate.set()
    with restarted:
        assert restarted.resume("k1").result(10) == 3
    verdicts: Any = [r for r in caplog.records if "reconciled" in r.msg]
    assert len(verdicts) == 1
    assert "not completed; dispatching again" in verdicts[0].getMessage()
    assert verdicts[0].run_id == "k1" and verdicts[0].activity == "charge"


def test_journal_damage_is_logged_beside_its_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "j.duckdb"
    weft_nb.Engine(journal).close()
    log = DispatchLog(str(journal) + ".dispatch")
    log.start("gone", 0, 1, "train", 1.0)
    log.close(clean=False)
    dispatch = Path(str(journal) + ".dispatch")
    dispatch.write_bytes(dispatch.read_bytes() + b"\x07" * 9)
    with pytest.warns(JournalDamageWarning, match="is damaged"):
        weft_nb.Engine(journal).close()
    damage: Any = [r for r in records(caplog, "weft_nb.journal") if "is damaged" in r.msg]
    assert len(damage) == 1 and damage[0].levelno == logging.WARNING
    assert damage[0].warning == "JournalDamageWarning"


class _RaisingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        raise OSError(5, "log shipper I/O error")


class _RaisingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("filter bug")


@pytest.mark.parametrize("breaks", ["handler", "filter"])
def test_a_handler_or_filter_that_raises_never_fails_the_run(breaks: str) -> None:
    """``logging`` does not catch a custom handler's or filter's error: the engine must."""
    failures_left[:] = [1]  # a failed attempt and a retry: every hook and event logs something
    logger = logging.getLogger("weft_nb")
    handler = logging.StreamHandler() if breaks == "filter" else _RaisingHandler()
    if breaks == "filter":
        handler.addFilter(_RaisingFilter())
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        with TestEngine(MemoryJournal()) as engine:
            handle = engine.start(fetching, 7)
            assert handle.result() == 7
            assert engine.snapshot(handle.run_id).status == "completed"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
