"""The engine's logging: an interceptor for runs, steps and attempts, and the events without a hook.

Loggers (all under ``weft_nb``, which carries a ``NullHandler``: nothing is printed until the
application configures logging):

- ``weft_nb.engine``: runs started, stopped and finished; steps failed for good; retries with
  their backoff; crash loops; reconciliation verdicts;
- ``weft_nb.activity``: attempts started (DEBUG), failed or timed out (WARNING), with the error;
- ``weft_nb.journal``: journal damage and storage trouble (beside the ``JournalDamageWarning``);
- ``weft_nb.dispatch``: attempts a dead process left running; ``weft_nb.server``: the endpoint.

Every record about a run carries ``run_id`` (and, where they apply, ``workflow``, ``activity``,
``position``, ``attempt``) as ``extra`` fields, so a formatter or a JSON handler can show them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from weft_nb.activity.context import CompleteAsync
from weft_nb.base.operational import QuietLogger
from weft_nb.base.payloads import exception_text
from weft_nb.engine.interceptors import (
    InterceptedAttempt,
    InterceptedRun,
    InterceptedStep,
    Interceptor,
)
from weft_nb.errors import ActivityTimeoutError

logging.getLogger("weft_nb").addHandler(logging.NullHandler())

# Quiet: a handler or filter that raises drops its record, never fails the run it describes.
ENGINE_LOG = QuietLogger("weft_nb.engine")
ACTIVITY_LOG = QuietLogger("weft_nb.activity")


def logging_on() -> bool:
    """Whether ``weft_nb.engine`` WARNING records would reach a handler (not our NullHandler).

    Checked per step and attempt (a few attribute reads, no allocation): the logging interceptor
    joins the chain only then, so an application that configured no logging pays nothing.
    """
    if not ENGINE_LOG.isEnabledFor(logging.WARNING):
        return False
    logger: logging.Logger | None = ENGINE_LOG.logger
    while logger is not None:
        for handler in logger.handlers:
            if not isinstance(handler, logging.NullHandler):
                return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def _error(exc: BaseException) -> str:
    return exception_text(exc, with_type=True)  # never raises, even for a broken __str__


def _step_fields(info: InterceptedStep | InterceptedAttempt) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "run_id": info.run_id,
        "activity": info.activity,
        "position": info.position,
    }
    if isinstance(info, InterceptedAttempt):
        fields["attempt"] = info.attempt
    return fields


class LoggingInterceptor(Interceptor):
    """Logs runs, steps and attempts; the engine puts it first in every chain.

    It only observes: it re-raises what ``call_next`` raised and returns what it returned, and
    its loggers are `QuietLogger`s: a handler or filter that raises drops the record, never the
    step.
    """

    def intercept_run(self, info: InterceptedRun, call_next: Callable[[], Any]) -> Any:
        """Log the run's execution starting, and the workflow function's exception."""
        fields = {"run_id": info.run_id, "workflow": info.workflow}
        ENGINE_LOG.info("run %s: workflow %r executing", info.run_id, info.workflow, extra=fields)
        try:
            return call_next()
        except Exception as exc:
            ENGINE_LOG.warning(
                "run %s: workflow %r raised %s",
                info.run_id,
                info.workflow,
                _error(exc),
                extra=fields,
            )
            raise

    def intercept_step(self, info: InterceptedStep, call_next: Callable[[], Any]) -> Any:
        """Log a live step starting and ending (DEBUG), and its failure for good (ERROR)."""
        debug = ENGINE_LOG.isEnabledFor(logging.DEBUG)
        if debug:
            ENGINE_LOG.debug(
                "run %s: step %d (%r) started",
                info.run_id,
                info.position,
                info.activity,
                extra=_step_fields(info),
            )
        try:
            value = call_next()
        except Exception as exc:
            ENGINE_LOG.error(
                "run %s: step %d (%r) failed: %s",
                info.run_id,
                info.position,
                info.activity,
                _error(exc),
                extra=_step_fields(info),
            )
            raise
        if debug:
            ENGINE_LOG.debug(
                "run %s: step %d (%r) completed",
                info.run_id,
                info.position,
                info.activity,
                extra=_step_fields(info),
            )
        return value

    def intercept_attempt(self, info: InterceptedAttempt, call_next: Callable[[], Any]) -> Any:
        """Log an attempt starting (DEBUG), and failing or timing out (WARNING) with its error."""
        if ACTIVITY_LOG.isEnabledFor(logging.DEBUG):
            ACTIVITY_LOG.debug(
                "run %s: step %d (%r) attempt %d of %d started",
                info.run_id,
                info.position,
                info.activity,
                info.attempt,
                info.max_attempts,
                extra=_step_fields(info),
            )
        try:
            return call_next()
        except CompleteAsync:
            raise  # parked on its task token: not a failure
        except Exception as exc:
            what = "timed out" if isinstance(exc, ActivityTimeoutError) else "failed"
            ACTIVITY_LOG.warning(
                "run %s: step %d (%r) attempt %d of %d %s: %s",
                info.run_id,
                info.position,
                info.activity,
                info.attempt,
                info.max_attempts,
                what,
                _error(exc),
                extra=_step_fields(info) | {"error_type": type(exc).__name__},
            )
            raise


# Engine events without an interceptor hook, and how they are logged.
_EVENT_LEVELS = {
    "retry_scheduled": logging.INFO,
    "crash_loop": logging.ERROR,
    "run_finished": logging.INFO,
    "run_interrupted": logging.INFO,
    "run_cancelled": logging.INFO,
}


def log_event(kind: str, run_id: str | None, position: int | None, data: dict[str, Any]) -> None:
    """Log an engine event that no interceptor hook sees (called for every ``rt.emit``)."""
    level = _EVENT_LEVELS.get(kind)
    if level is None or not ENGINE_LOG.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"run_id": run_id, "position": position}
    if kind == "retry_scheduled":
        fields["attempt"] = data.get("attempt")
        ENGINE_LOG.log(
            level,
            "run %s: step %d retrying after attempt %s, in %.3gs",
            run_id,
            position,
            data.get("attempt"),
            data.get("delay", 0.0),
            extra=fields | {"backoff": data.get("delay")},
        )
    elif kind == "crash_loop":
        ENGINE_LOG.log(
            level,
            "run %s: step %d crash loop: %s attempt(s) started, %s died with their process",
            run_id,
            position,
            data.get("attempts"),
            data.get("crashed"),
            extra=fields,
        )
    else:
        status = data.get("status", kind.removeprefix("run_"))
        ENGINE_LOG.log(level, "run %s: %s", run_id, status, extra=fields | {"status": status})
