"""Exceptions raised by weft_nb.

Every error derives from :class:`WeftError`. Messages name the run, step and activity involved and
say what to do next. Errors carry their fields as attributes so code can branch on them, and they
pickle (``__reduce__``) so they survive a trip through a process pool or the journal.
"""

from __future__ import annotations

from typing import Any


class WeftError(Exception):
    """Base class of every weft_nb error."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.message, self.fields))


def _rebuild_error(cls: type[WeftError], message: str, fields: dict[str, Any]) -> WeftError:
    error = cls.__new__(cls)
    WeftError.__init__(error, message, **fields)
    return error


def _where(run_id: str | None, position: int | None, activity: str | None) -> str:
    parts = []
    if activity is not None:
        parts.append(f"activity {activity!r}")
    if position is not None:
        parts.append(f"step {position}")
    if run_id is not None:
        parts.append(f"run {run_id!r}")
    return ", ".join(parts)


class ActivityFailedError(WeftError):
    """An activity failed for good: retries exhausted, or the error was non-retryable.

    Attributes:
        cause_type: Class name of the last attempt's exception.
        cause_message: ``str()`` of that exception.
        traceback_text: The formatted traceback of the last attempt.
        attempts: How many attempts ran.
        run_id, position, activity: Where it happened.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        cause_type: str,
        cause_message: str,
        traceback_text: str = "",
        attempts: int,
        run_id: str | None = None,
        position: int | None = None,
        activity: str | None = None,
    ) -> None:
        if message is None:
            message = (
                f"{_where(run_id, position, activity)} failed after {attempts} attempt(s): "
                f"{cause_type}: {cause_message}. Fix the cause; if the run fails, start a new one "
                "(a failed run is final: `%weft run ... --new`)."
            )
        super().__init__(
            message,
            cause_type=cause_type,
            cause_message=cause_message,
            traceback_text=traceback_text,
            attempts=attempts,
            run_id=run_id,
            position=position,
            activity=activity,
        )


class ActivityTimeoutError(ActivityFailedError):
    """Base of the activity timeout errors (failure category ``timeout``)."""


class ActivityPerAttemptTimeoutError(ActivityTimeoutError):
    """An attempt ran longer than its per-attempt ``timeout``; a retry gets a fresh cap."""


class ActivityHeartbeatTimeoutError(ActivityTimeoutError):
    """An attempt sent no heartbeat for longer than its ``heartbeat_timeout``."""


class ActivityScheduleToCloseTimeoutError(ActivityTimeoutError):
    """The ``schedule_to_close_timeout`` budget left no room for another retry."""


class ActivityVerificationError(WeftError):
    """An activity's ``verify`` function rejected its result (the attempt fails and may retry)."""


class ActivityNotRegisteredError(WeftError):
    """A workflow called an activity name that no registered definition has."""


class WorkflowNotRegisteredError(WeftError):
    """A run was started or resumed for a workflow name that is not registered."""


class RunNotFoundError(WeftError):
    """No run with that id exists in the journal."""


class WorkflowFailedError(WeftError):
    """A recorded run failed with an error that is not a weft_nb error.

    Returned for runs replayed from the journal, where the original exception object is gone.
    Attributes: ``cause_type``, ``cause_message``, ``traceback_text``, ``run_id``.
    """


class WorkflowCancelledError(WeftError):
    """The run was cancelled; a cancelled run is never resumed."""


class AsyncTokenNotFoundError(WeftError):
    """No parked activity has that task token: it is unknown, or it was already used."""


class DurableActivityScopeError(WeftError):
    """``durable_activity()`` was called outside a ``ctx.memo`` callback, or not sequentially."""


class RunFinishedError(WeftError):
    """The run already finished: it takes no more signals (or completions)."""


class SignalTimeoutError(WeftError):
    """``ctx.wait_for_signal`` reached its timeout before the signal arrived."""


class NonDeterminismError(WeftError):
    """Replay reached a step whose signature differs from the journal (``on_change="error"``)."""


class WorkflowVersionMismatchError(NonDeterminismError):
    """A run recorded under one workflow version was resumed with another version registered."""


class ActivityReconciliationIndeterminateError(WeftError):
    """A keyed activity was dispatched before a crash and its outcome cannot be proven.

    The engine fails closed rather than running a possibly completed side effect again.
    """


class JournalError(WeftError):
    """Base of the journal errors."""


class JournalLockedError(JournalError):
    """Another process holds the journal for writing."""


class JournalCorruptError(JournalError):
    """The journal file cannot be read as a weft_nb journal; it is never overwritten."""


class JournalClosedError(JournalError):
    """The engine (or its journal) was closed; nothing more can be written."""


class JournalIOError(JournalError):
    """Reading or writing a journal file failed: disk full, read-only location, permission, I/O.

    Raised to the caller; the run is never marked failed by it and stays resumable once the cause
    is fixed. Attributes: ``path`` (the file), ``cause`` (``"disk full"``, ``"read-only"``,
    ``"permission denied"``, ``"I/O error"``...), ``errno`` (the OS error number or ``None``).
    """


class JournalVersionError(JournalError):
    """The journal file was written by a DuckDB version this one cannot read (or vice versa).

    The file is healthy: open it with a matching DuckDB. Attributes: ``path``, ``writer_version``
    (the DuckDB version string recorded in the file, e.g. ``"v2.0.1"``; None in files written
    before DuckDB 1.2), ``storage_version`` (the file's storage version number),
    ``reader_version`` (the installed DuckDB).
    """


class JournalDamageWarning(UserWarning):
    """Damaged journal data was found, reported and skipped; the intact data was still applied.

    The message names the file, what was skipped (count and byte offsets) and where the damaged
    copy was kept.
    """


class RunInterruptedError(WeftError):
    """The run was interrupted (``engine.interrupt()``, Ctrl-C, a closed engine) before it ended.

    Nothing was marked failed: the run stays resumable from its journal.
    """


class StepScopeError(WeftError):
    """A durable operation was called where it cannot be journaled.

    Durable operations (``ctx.run``, ``ctx.submit``, ``ctx.sleep``, ``ctx.wait_for_signal``,
    ``ctx.memo``...) must be called from the workflow's own thread and outside ``ctx.memo``
    callbacks; inside a memo, ``weft_nb.durable_activity`` is the one way to call an activity.
    """


class ActivityCrashLoopError(ActivityFailedError):
    """A step's attempts kept killing their process: started ``max_attempts`` times, never ended.

    The resume stops instead of crashing again. The verdict is not the step's outcome: the run
    stays resumable, so raising the activity's ``retry=RetryPolicy(max_attempts=...)`` and
    resuming the same run continues the step from the journal.
    """


class DevelopmentWarning(UserWarning):
    """A likely mistake the engine can see while running with ``development=True``.

    Emitted (never raised) only in development mode: ``Engine(development=True)``, or
    ``WEFT_NB_DEV=1`` in the environment.
    """


class PayloadError(WeftError):
    """A value could not be stored: unserialisable, invalid for its type hints, or too large."""


class ActivityNotShippableError(PayloadError):
    """An activity (or its input) cannot be pickled to run on a worker process or a cluster.

    Attributes:
        activity: The activity.
        name: The global or closure variable that does not pickle (an open file, a lock, a
            database connection, ...), or ``"the input"``.
    """


class WorkerLostError(WeftError):
    """The worker running an attempt died (killed, out of memory, crashed, or lost by Dask).

    The attempt fails with this error and is retried per the activity's retry policy, on a fresh
    worker.
    """


class ExecutorUnavailableError(WeftError):
    """The executor cannot run activities (closed, or its cluster cannot be reached)."""


class SchedulerUnreachableError(ExecutorUnavailableError):
    """The Dask scheduler did not answer; the message names its address. Nothing was written."""


class MissingExtraError(WeftError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class InvalidRunIdError(WeftError, ValueError):
    """A run id that cannot name a run: empty, too long, or holding control characters (NUL...).

    Raised by ``Engine.start``/``Engine.run`` before anything is written. It is also a
    ``ValueError`` (a bad argument value). Attribute: ``run_id`` (the rejected id).
    """


__all__ = [
    "ActivityCrashLoopError",
    "ActivityFailedError",
    "ActivityHeartbeatTimeoutError",
    "ActivityNotRegisteredError",
    "ActivityNotShippableError",
    "ActivityPerAttemptTimeoutError",
    "ActivityReconciliationIndeterminateError",
    "ActivityScheduleToCloseTimeoutError",
    "ActivityTimeoutError",
    "ActivityVerificationError",
    "AsyncTokenNotFoundError",
    "DevelopmentWarning",
    "DurableActivityScopeError",
    "ExecutorUnavailableError",
    "InvalidRunIdError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalDamageWarning",
    "JournalError",
    "JournalIOError",
    "JournalLockedError",
    "JournalVersionError",
    "MissingExtraError",
    "NonDeterminismError",
    "PayloadError",
    "RunFinishedError",
    "RunInterruptedError",
    "RunNotFoundError",
    "SchedulerUnreachableError",
    "SignalTimeoutError",
    "StepScopeError",
    "WeftError",
    "WorkerLostError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowNotRegisteredError",
    "WorkflowVersionMismatchError",
]
