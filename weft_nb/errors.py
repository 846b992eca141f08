"""Exceptions raised by weft_nb.

Every error derives from [`WeftError`][weft_nb.errors.WeftError]. Messages name the run, step and
activity involved and say what to do next. Errors carry their fields as attributes so code can
branch on them, and they pickle (``__reduce__``) so they survive a trip through a process pool or
the journal.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
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

    # PLR0913: a public error takes its structured fields as keywords (they are its attributes
    # and what it pickles with). RUF100 only while pyproject.toml still ignores PLR0913.
    def __init__(  # noqa: PLR0913
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


class _AttemptTimeoutError(ActivityTimeoutError):
    """An attempt passed one of its limits; the error is built from the attempt's coordinates.

    Attributes: ``seconds`` (the limit), ``attempts`` (the attempt that passed it), ``run_id``,
    ``position``, ``activity``; ``cause_type`` is the class name.
    """

    limit_option = ""  # the activity option that set the limit
    passed = ""  # what the attempt did
    remedy = ""  # what to do about it

    def __init__(
        self, *, seconds: float, attempts: int, run_id: str, position: int, activity: str
    ) -> None:
        super().__init__(
            f"activity {activity!r} (step {position}, run {run_id!r}) attempt {attempts} "
            f"{self.passed} its {self.limit_option} of {seconds:g}s, so its `cancelled` event "
            f"was set; {self.remedy}.",
            cause_type=type(self).__name__,
            cause_message=f"{self.limit_option} of {seconds:g}s passed",
            attempts=attempts,
            run_id=run_id,
            position=position,
            activity=activity,
        )
        self.fields["seconds"] = self.seconds = seconds


class ActivityPerAttemptTimeoutError(_AttemptTimeoutError):
    """An attempt ran longer than its per-attempt ``timeout``; a retry gets a fresh cap."""

    limit_option = "timeout"
    passed = "ran longer than"
    remedy = "raise the timeout or make the activity faster"


class ActivityHeartbeatTimeoutError(_AttemptTimeoutError):
    """An attempt sent no heartbeat for longer than its ``heartbeat_timeout``."""

    limit_option = "heartbeat_timeout"
    passed = "sent no heartbeat for"
    remedy = "heartbeat more often or raise the limit"


class ActivityScheduleToCloseTimeoutError(ActivityTimeoutError):
    """The ``schedule_to_close_timeout`` budget left no room for another retry."""


class ActivityVerificationError(WeftError):
    """An activity's ``verify`` function rejected its result (the attempt fails and may retry).

    Attributes: ``activity``, ``position``, ``run_id``, ``attempt``.
    """

    def __init__(self, activity: str, position: int, run_id: str, attempt: int) -> None:
        super().__init__(
            f"verify rejected the result of activity {activity!r} (step {position}, run "
            f"{run_id!r}, attempt {attempt}); the attempt fails and may retry",
            activity=activity,
            position=position,
            run_id=run_id,
            attempt=attempt,
        )


class CircuitOpenError(WeftError):
    """An activity's circuit breaker is open: the attempt failed at once, the activity not called.

    The retry policy decides what follows (list ``CircuitOpenError`` in ``non_retryable_errors``
    to fail at once); a retry waits at least until ``retry_at``, when the breaker may half-open.
    Attributes: ``activity``, ``opened_at`` and ``retry_at`` (seconds since the epoch, on the
    engine's clock).
    """

    def __init__(self, activity: str, opened_at: float, retry_at: float) -> None:
        super().__init__(
            f"the circuit breaker of activity {activity!r} is open (it opened at "
            f"{_utc(opened_at)} after repeated failed attempts), so the activity was not "
            f"called; it may half-open and let a trial attempt through at {_utc(retry_at)}",
            activity=activity,
            opened_at=opened_at,
            retry_at=retry_at,
        )


def _utc(seconds: float) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g}s"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ActivityNotRegisteredError(WeftError):
    """A workflow called an activity name that no registered definition has.

    Attributes: ``activity`` (the name called), ``workflow``, ``run_id``. The message also lists
    the ``registered`` activity names.
    """

    def __init__(
        self, activity: str, *, workflow: str, run_id: str, registered: Iterable[str]
    ) -> None:
        super().__init__(
            f"workflow {workflow!r} (run {run_id!r}) called activity {activity!r}, which is not "
            f"registered. Registered: {sorted(registered) or 'none'}. Run the cell that defines "
            "it, or engine.register() it, then re-run.",
            activity=activity,
            workflow=workflow,
            run_id=run_id,
        )


class WorkflowNotRegisteredError(WeftError):
    """A run was started or resumed for a workflow name that is not registered.

    Attributes: ``workflow``, and ``run_id`` when a recorded run needs it (a resume). Starting a
    run names the ``registered`` workflows in the message instead.
    """

    def __init__(
        self, workflow: str, *, run_id: str | None = None, registered: Iterable[str] = ()
    ) -> None:
        if run_id is None:
            message = (
                f"workflow {workflow!r} is not registered; registered: "
                f"{sorted(registered) or 'none'}. Run its cell or engine.register() it first."
            )
        else:
            message = (
                f"run {run_id!r} needs workflow {workflow!r}, which is not registered; run the "
                "cells that define it (and its activities), then resume"
            )
        super().__init__(message, workflow=workflow, run_id=run_id)


class RunNotFoundError(WeftError):
    """No run with that id exists in the journal. Attributes: ``run_id``, ``journal_path``."""

    def __init__(self, run_id: str, journal_path: str) -> None:
        super().__init__(
            f"no run {run_id!r} in journal {journal_path}: check the run id, and that this is the "
            "journal it was started in",
            run_id=run_id,
            journal_path=journal_path,
        )


class WorkflowFailedError(WeftError):
    """A recorded run failed with an error that is not a weft_nb error.

    Returned for runs replayed from the journal, where the original exception object is gone.
    Attributes: ``cause_type``, ``cause_message``, ``traceback_text``, ``run_id``.
    """

    def __init__(
        self, run_id: str | None, cause_type: str, cause_message: str, traceback_text: str = ""
    ) -> None:
        super().__init__(
            f"run {run_id!r} failed: {cause_type}: {cause_message}",
            run_id=run_id,
            cause_type=cause_type,
            cause_message=cause_message,
            traceback_text=traceback_text,
        )


class WorkflowCancelledError(WeftError):
    """The run was cancelled; a cancelled run is never resumed.

    Raised to the workflow and by ``handle.result()`` (built from ``run_id``), and inside an
    activity asked to stop (``activity.raise_if_cancelled()``: built with ``activity``,
    ``position`` and the ``reason`` it was asked to stop, which may be a timeout).
    """

    def __init__(
        self,
        run_id: str,
        *,
        activity: str | None = None,
        position: int | None = None,
        reason: str | None = None,
    ) -> None:
        if activity is None:
            message = (
                f"run {run_id!r} was cancelled; a cancelled run is not resumed (start a new run)"
            )
        else:
            message = (
                f"activity {activity!r} (step {position}, run {run_id!r}) was asked to stop: "
                f"{reason or 'cancelled'}"
            )
        super().__init__(message, run_id=run_id, activity=activity, position=position)


class AsyncTokenNotFoundError(WeftError):
    """No parked activity has that task token: it is unknown, or it was already used.

    Attribute: ``token``.
    """

    def __init__(self, token: str) -> None:
        super().__init__(
            f"no parked activity has token {token!r}: it is unknown, already used (tokens are "
            "single-use), or spent because its attempt failed, timed out or died with its "
            "process (a token belongs to one attempt)",
            token=token,
        )


class DurableActivityScopeError(WeftError):
    """``durable_activity()`` was called outside a ``ctx.memo`` callback, or not sequentially."""


class InterceptorCallError(WeftError):
    """An interceptor called ``call_next`` a second time: the wrapped work runs once per hook call.

    A second call would run the activity (or the step, or the workflow) again and journal it over
    the first. Attributes: ``interceptor`` (its class name), ``hook``.
    """

    def __init__(self, interceptor: str, hook: str) -> None:
        super().__init__(
            f"interceptor {interceptor} called call_next() twice in {hook}: the wrapped call "
            "runs once per hook call (a second would run the work again). Keep the value of the "
            "first call, or raise to fail it.",
            interceptor=interceptor,
            hook=hook,
        )


class RunFinishedError(WeftError):
    """The run already finished: it takes no more signals (or completions).

    Attributes: ``run_id``, ``status`` (how it finished), and what was refused: a ``signal``
    name, or a task ``token`` with the ``position`` of the step it belonged to.
    """

    def __init__(
        self,
        run_id: str,
        status: str,
        *,
        signal: str | None = None,
        token: str | None = None,
        position: int | None = None,
    ) -> None:
        if token is not None:
            message = (
                f"token {token!r} belongs to step {position} of run {run_id!r}, which is "
                f"{status}; nothing can be completed in a finished run"
            )
        else:
            message = (
                f"run {run_id!r} is {status}; signal {signal!r} cannot be delivered to a "
                "finished run"
            )
        super().__init__(
            message, run_id=run_id, status=status, signal=signal, token=token, position=position
        )


class SignalTimeoutError(WeftError):
    """``ctx.wait_for_signal`` reached its timeout before the signal arrived.

    Attributes: ``signal``, ``seconds`` (the timeout), ``run_id``, ``position``.
    """

    def __init__(self, signal: str, seconds: float, *, run_id: str, position: int) -> None:
        super().__init__(
            f"signal {signal!r} (step {position}, run {run_id!r}) did not arrive within its "
            f"timeout of {seconds:g}s",
            signal=signal,
            seconds=seconds,
            run_id=run_id,
            position=position,
        )


class ChildWorkflowFailedError(WeftError):
    """A child workflow (``ctx.run_workflow``/``ctx.start_workflow``) failed or was cancelled.

    Attributes: ``workflow``, ``child_run_id``, ``run_id`` (the parent), ``position``, ``reason``
    and ``child_error`` (the child's journaled error, JSON). ``__cause__`` is the child's error,
    rebuilt from its run's journal, live and on replay alike.
    """

    def __init__(  # noqa: PLR0913
        self,
        workflow: str,
        child_run_id: str,
        *,
        run_id: str,
        position: int,
        reason: str,
        child_error: str | None = None,
    ) -> None:
        super().__init__(
            f"child workflow {workflow!r} (run {child_run_id!r}, step {position} of run "
            f"{run_id!r}) did not complete: {reason}. Its error is this error's __cause__; "
            f"inspect it with `%weft show {child_run_id}`, or catch this error in the parent",
            workflow=workflow,
            child_run_id=child_run_id,
            run_id=run_id,
            position=position,
            reason=reason,
            child_error=child_error,
        )


class ChildWorkflowDepthError(WeftError):
    """A child workflow would nest more than ``limit`` (10) levels below its root run.

    Attributes: ``run_id`` (the parent), ``position``, ``depth`` (the child's) and ``limit``.
    """

    def __init__(self, run_id: str, position: int, depth: int, limit: int) -> None:
        super().__init__(
            f"step {position} of run {run_id!r} would start a child workflow {depth} levels "
            f"below its root run; at most {limit} are allowed. A workflow that starts itself "
            "as a child needs a base case that stops the recursion",
            run_id=run_id,
            position=position,
            depth=depth,
            limit=limit,
        )


class CompensationError(WeftError):
    """Compensations failed after their retries; the others still ran (``ctx.compensate()``).

    Attributes: ``run_id``, ``failures`` (``{"position", "activity", "compensation", "error"}``
    per failed one). ``__cause__`` is the workflow's error (``compensate_on_failure``).
    """

    def __init__(self, run_id: str, failures: Sequence[dict[str, Any]]) -> None:
        listed = "; ".join(
            f"step {f['position']} ({f['activity']!r}) by {f['compensation']!r}: {f['error']}"
            for f in failures
        )
        super().__init__(
            f"run {run_id!r}: {len(failures)} compensation(s) failed after their retries and "
            f"were not run again ({listed}); undo those by hand",
            run_id=run_id,
            failures=list(failures),
        )


class NonDeterminismError(WeftError):
    """Replay reached a step whose signature differs from the journal (``on_change="error"``).

    Attributes: ``run_id``, ``position``, ``reason`` (what changed).
    """

    def __init__(self, run_id: str, position: int, reason: str) -> None:
        super().__init__(
            f"step {position} of run {run_id!r} no longer matches the journal: {reason}. "
            "Restore the original code, start a new run, or use on_change='rerun'.",
            run_id=run_id,
            position=position,
            reason=reason,
        )


class WorkflowVersionMismatchError(NonDeterminismError):
    """A run recorded under one workflow version was resumed with another version registered.

    Attributes: ``run_id``, ``workflow``, ``recorded_version``, ``registered_version``.
    """

    def __init__(
        self, run_id: str, workflow: str, *, recorded_version: str, registered_version: str
    ) -> None:
        WeftError.__init__(
            self,
            f"run {run_id!r} was recorded by version {recorded_version!r} of workflow "
            f"{workflow!r}, but version {registered_version!r} is registered. Register the old "
            "version to finish it, or start a new run.",
            run_id=run_id,
            workflow=workflow,
            recorded_version=recorded_version,
            registered_version=registered_version,
        )


class BranchTopologyChangedError(NonDeterminismError):
    """``ctx.run_all`` was replayed with other branch names, or another order, than recorded.

    Attributes: ``run_id``, ``position`` (the ``run_all`` step), ``recorded`` and ``current``
    (the branch names, in order).
    """

    def __init__(
        self, run_id: str, position: int, *, recorded: list[str], current: list[str]
    ) -> None:
        WeftError.__init__(
            self,
            f"ctx.run_all at step {position} of run {run_id!r} was recorded with branches "
            f"{recorded} and now has {current}; results would be matched to the wrong branches. "
            "Restore the branches, or start a new run.",
            run_id=run_id,
            position=position,
            recorded=recorded,
            current=current,
        )


class ActivityReconciliationIndeterminateError(WeftError):
    """A keyed activity was dispatched before a crash and its outcome cannot be proven.

    The engine fails closed rather than running a possibly completed side effect again.
    """


class JournalError(WeftError):
    """Base of the journal errors."""


class JournalLockedError(JournalError):
    """Another process holds the journal for writing.

    Built from the journal's ``path``, the ``holder`` in words (``"PID 123 on host (program)"``),
    ``holder_pid``, a ``detail`` appended to the holder (``" (the same file, opened there as
    ...)"``) and the ``advice``; all but the advice are kept as attributes.
    """

    def __init__(
        self,
        path: str,
        holder: str,
        *,
        holder_pid: int | None,
        detail: str = "",
        advice: str = "",
    ) -> None:
        message = f"journal {path} is in use by {holder}{detail}."
        super().__init__(
            f"{message} {advice}" if advice else message,
            path=path,
            holder=holder,
            holder_pid=holder_pid,
            detail=detail,
        )


class NotebookJournalLockedError(JournalLockedError):
    """A journal weft_nb chose for a notebook (none was named) is held by another kernel.

    The folder's shared one, as nothing said which notebook the kernel runs, or the one of the
    notebook found by its cells. Built from the ``locked`` error (its attributes are kept) and
    ``chosen``: why this journal, in words (an attribute too). The advice says how to name one.
    """

    def __init__(self, locked: JournalLockedError, *, chosen: str) -> None:
        found = locked.fields
        super().__init__(
            found["path"],
            found["holder"],
            holder_pid=found["holder_pid"],
            detail=found["detail"],
            advice=(
                f"weft_nb chose this journal because {chosen}. Give this notebook a journal of "
                "its own: `%weft journal .weft/NAME.duckdb` in a cell before its first activity "
                "(with papermill, make NAME a parameter, or run with --inject-paths), or shut "
                "the other kernel down."
            ),
        )
        self.fields["chosen"] = self.chosen = chosen


class UndecidedNotebookError(WeftError):
    """weft_nb cannot tell which notebook this kernel runs, so it will not choose a journal.

    The cells run so far fit several notebooks (``candidates``, an attribute), and nothing else
    (front end, papermill's parameters, the runner's command line) says which. A guess would put
    a run in another notebook's journal, or change with the folder's contents and run completed
    work again. The advice says how to name the journal.
    """

    def __init__(self, candidates: Sequence[str]) -> None:
        names = ", ".join(candidates)
        super().__init__(
            f"weft_nb cannot tell which notebook this kernel runs: the cells run so far are in "
            f"{len(candidates)} notebooks ({names}), so it will not guess their journal. Name "
            "this notebook's journal in a cell before its first run: "
            "`%weft journal .weft/NAME.duckdb` (with papermill, make NAME a parameter, or run "
            "with --inject-paths); or give the notebook a cell of its own before the run.",
            candidates=list(candidates),
        )


class JournalReadOnlyError(JournalError):
    """A write reached a journal opened read-only. Attribute: ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"journal {path} was opened read-only; write through an engine (or a journal opened "
            "without read_only=True) instead",
            path=path,
        )


_MOVE_ASIDE = "It is left untouched: move it aside (or restore a backup) to start a new journal."


class JournalCorruptError(JournalError):
    """The journal file cannot be read as a weft_nb journal; it is never overwritten.

    Built from the file's ``path`` (kept as an attribute), the ``problem`` (``"is truncated:
    ..."``) and the ``advice``, by default to move the file aside.
    """

    def __init__(self, path: str, problem: str, *, advice: str = _MOVE_ASIDE) -> None:
        message = f"journal {path} {problem}."
        super().__init__(f"{message} {advice}" if advice else message, path=path)


class JournalClosedError(JournalError):
    """The engine (or its journal) was closed; nothing more can be written. Attribute: ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"journal {path} is closed (as is its engine); create a new Engine to go on",
            path=path,
        )


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


class WeftWarning(UserWarning):
    """Base class of every weft_nb warning (each is also a ``UserWarning``)."""


class StepChangedWarning(WeftWarning):
    """A journaled step no longer matches the workflow's code or input; it is run again."""


class ActivityRedefinedWarning(WeftWarning):
    """An activity was redefined while a run used it; that run keeps its original definition."""


class ShadowedBuiltinWarning(WeftWarning):
    """A name a magic set in the notebook hides the Python builtin of the same name.

    ``%%weft_activity eval(model)`` or ``%weft run ... --as max`` is allowed (Python allows
    ``eval = ...`` too), but from then on ``eval(...)`` in the notebook calls the new value.
    Attributes: ``name`` (the builtin hidden), ``set_by`` (``"activity"``, ``"workflow"`` or
    ``"--as"``); both are None for a warning built from a finished message, as
    ``warnings.warn(text, ShadowedBuiltinWarning)`` builds one.
    """

    def __init__(self, name: str, set_by: str | None = None) -> None:
        message = name if set_by is None else _shadowed_builtin(name, set_by)
        super().__init__(message)
        self.args = (name,) if set_by is None else (name, set_by)  # what a pickled copy gets
        self.message = message
        self.name = None if set_by is None else name
        self.set_by = set_by

    def __str__(self) -> str:
        return self.message


def _shadowed_builtin(name: str, set_by: str) -> str:
    if set_by == "--as":
        what = f"--as {name} stores the result in `{name}`, which"
        effect = f"`{name}` in this notebook is now the result"
        instead = f"choose another name (--as {name}_result)"
        kept = ""
    else:
        what = f"{set_by} {name!r}"
        effect = f"{name}(...) in this notebook now runs the {set_by}"
        instead = f"rename the {set_by} (%%weft_{set_by} {name}_step(...))"
        kept = f" (the {set_by} stays registered as {name!r})"
    return (
        f"{what} hides Python's builtin `{name}`: {effect}, not the builtin. To keep the "
        f"builtin, {instead}; `del {name}` brings it back{kept}"
    )


class JournalDamageWarning(WeftWarning):
    """Damaged journal data was found, reported and skipped; the intact data was still applied.

    The message names the file, what was skipped (count and byte offsets) and where the damaged
    copy was kept.
    """


class RunInterruptedError(WeftError):
    """The run was interrupted (``engine.interrupt()``, Ctrl-C, a closed engine) before it ended.

    Nothing was marked failed: the run stays resumable from its journal. Attributes: ``run_id``,
    ``reason`` (what stopped it).
    """

    def __init__(self, run_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"run {run_id!r} stopped before it finished ({reason or 'the engine stopped'}); "
            "starting it again resumes it",
            run_id=run_id,
            reason=reason,
        )


class StepScopeError(WeftError):
    """A durable operation was called where it cannot be journaled.

    Durable operations (``ctx.run``, ``ctx.submit``, ``ctx.sleep``, ``ctx.wait_for_signal``,
    ``ctx.memo``...) must be called from the workflow's own thread and outside ``ctx.memo``
    callbacks; inside a memo, ``weft_nb.durable_activity`` is the one way to call an activity.
    """


class AsyncStyleError(WeftError):
    """Sync and async styles were mixed: a coroutine where a value belongs (docs/guides/async.md).

    A sync workflow or a sync activity returned a coroutine (make it ``async def``), or an async
    workflow's durable call was used without ``await``. Attributes: ``what`` (what happened),
    ``instead`` (what to write), ``where`` (``file:line``).
    """

    def __init__(self, what: str, instead: str, *, where: str) -> None:
        super().__init__(f"{what} (at {where}); {instead}", what=what, instead=instead, where=where)


class StepNotAwaitedError(AsyncStyleError):
    """An ``async def`` workflow called ``ctx.run``/``ctx.sleep``/... and never awaited it.

    Attributes: ``call`` (such as ``ctx.run('train')``), ``where`` (its ``file:line``), ``run_id``.
    """

    def __init__(self, call: str, *, where: str, run_id: str) -> None:
        WeftError.__init__(
            self,
            f"{call} in async workflow run {run_id!r} was never awaited (at {where}); write "
            f"`await {call}` (its step runs either way, but its result and error are lost), or "
            "hand it to asyncio.gather(...) or asyncio.ensure_future(...) before the workflow "
            "awaits anything else",
            call=call,
            where=where,
            run_id=run_id,
        )


class ActivityCrashLoopError(ActivityFailedError):
    """A step's attempts kept killing their process: started ``max_attempts`` times, never ended.

    The resume stops instead of crashing again. The verdict is not the step's outcome: the run
    stays resumable, so raising the activity's ``retry=RetryPolicy(max_attempts=...)`` and
    resuming the same run continues the step from the journal.
    """


class DevelopmentWarning(WeftWarning):
    """A likely mistake the engine can see while running with ``development=True``.

    Emitted (never raised) only in development mode: ``Engine(development=True)``, or
    ``WEFT_NB_DEV=1`` in the environment.
    """


class PayloadError(WeftError):
    """A value could not be stored: unserialisable, invalid for its type hints, or too large."""


_CHECKPOINT_NEEDS = {  # what is missing: (what the checkpoint needs, what to do)
    "module": ("a module not installed here", "install its package (or run the cell defining it)"),
    "class": ("code not loaded here", "run the cell or import that defines it"),
    "device": ("a device this machine lacks", "resume where it exists, or checkpoint CPU tensors"),
    "version": (
        "the class or package version that wrote it",
        "restore that version (or make the new code accept the old state)",
    ),
}


class CheckpointEnvironmentError(PayloadError):
    """An intact checkpoint does not unpickle here: it needs a module, class, device or version.

    Built from the file's ``path``, the step's ``run_id`` and ``position``, what is ``missing``
    (``"module"``, ``"class"``, ``"device"``, ``"version"``: a changed class or package) and the
    unpickling error as ``cause`` (attributes).
    The run stops resumable, not failed; a *damaged* checkpoint is skipped with a warning instead.
    """

    def __init__(self, path: str, *, run_id: str, position: int, missing: str, cause: str) -> None:
        needs, advice = _CHECKPOINT_NEEDS.get(missing, (missing, "provide it"))
        super().__init__(
            f"checkpoint {path} of step {position} (run {run_id!r}) needs {needs}: {cause}. "
            "The checkpoint is intact and kept, and the run stops without failing. To go on "
            f"from it, {advice}; then run the cell again (or resume the run), and the step "
            "starts from this checkpoint.",
            path=path,
            run_id=run_id,
            position=position,
            missing=missing,
            cause=cause,
        )


class CheckpointStorageError(WeftError):
    """Checkpoint storage (S3, GCS, a shared path) failed: unreachable, denied, object missing.

    Built from the object's ``url``, the
    ``operation`` and the storage's ``cause`` (attributes). The attempt fails and is retried per
    its retry policy; nothing is journaled and no older checkpoint is used in its place.
    """

    def __init__(self, url: str, *, operation: str, cause: str) -> None:
        super().__init__(
            f"checkpoint storage failed to {operation} {url}: {cause}. The attempt fails and is "
            "retried per its retry policy; check the storage (endpoint, credentials, "
            "storage_options) if it keeps failing.",
            url=url,
            operation=operation,
            cause=cause,
        )


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
    worker. Built from ``which`` worker (``"worker process (pid 12)"``), ``what_happened`` to it,
    and the attempt's ``run_id``, ``position``, ``activity`` and ``attempt`` (attributes, as are
    the executor's ``details``: ``pid`` and ``exitcode``, or the Dask ``worker``).
    """

    # PLR0913: the attempt's coordinates are keyword-only attributes of a public error.
    # RUF100 only while pyproject.toml still ignores PLR0913.
    def __init__(  # noqa: PLR0913
        self,
        which: str,
        what_happened: str,
        *,
        run_id: str,
        position: int,
        activity: str,
        attempt: int,
        **details: Any,
    ) -> None:
        super().__init__(
            f"the {which} running activity {activity!r} (step {position}, run {run_id!r}, "
            f"attempt {attempt}) {what_happened}. The attempt failed; it is retried on a fresh "
            "worker per the activity's retry policy.",
            run_id=run_id,
            position=position,
            activity=activity,
            attempt=attempt,
            **details,
        )


class ExecutorUnavailableError(WeftError):
    """The executor cannot run activities (closed, or its cluster cannot be reached)."""


class SchedulerUnreachableError(ExecutorUnavailableError):
    """The Dask scheduler did not answer; the message names its address. Nothing was written."""


class MissingExtraError(WeftError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Raised the moment a feature that needs an extra is used (``DaskExecutor``, ``python -m
    weft_nb.chaos``, ``%weft timeline``), never at ``import weft_nb``. It is also an
    ``ImportError``. Attributes: ``feature`` (what needs it), ``module`` (the missing package),
    ``extra`` (``pip install 'weft-nb[<extra>]'`` installs it), ``reason`` (the import's error).
    """

    def __init__(self, feature: str, *, module: str, extra: str, reason: str = "") -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{feature} needs the `{module}` package, which is not installed{why}; install the "
            f"extra with `pip install 'weft-nb[{extra}]'`",
            feature=feature,
            module=module,
            extra=extra,
            reason=reason,
        )


class UnsupportedPlatformError(WeftError, ImportError):
    """``import weft_nb`` on a system without POSIX file locking: weft_nb runs on Linux and macOS.

    A journal is safe because of two POSIX calls that Windows lacks: ``fcntl.flock``, the lock
    that lets one engine write a journal and that the operating system drops when the process
    dies (even by SIGKILL), and ``fsync`` of a folder, which makes a checkpoint's rename durable.
    Rather than fail deep inside the journal, or run without them, the import fails at once. It
    is also an ``ImportError``. Attribute: ``platform`` (``sys.platform``).
    """

    def __init__(self, platform: str) -> None:
        super().__init__(
            f"weft_nb runs on Linux and macOS (POSIX), not on {platform!r}: its journal relies on "
            "fcntl.flock, which lets exactly one engine write a journal and which the operating "
            "system releases when that process dies, and on fsync of a folder, which makes a "
            "checkpoint durable once it is renamed into place. On Windows, run weft_nb inside "
            "WSL 2 (Windows Subsystem for Linux: VS Code and JupyterLab both connect to it), in "
            "a Linux container, or on a Linux or macOS machine.",
            platform=platform,
        )


class InvalidRunIdError(WeftError, ValueError):
    """A run id that cannot name a run: empty, too long, or holding control characters (NUL...).

    Raised by ``Engine.start``/``Engine.run`` before anything is written. It is also a
    ``ValueError`` (a bad argument value). Attribute: ``run_id`` (the rejected id).
    """


class CellDefinitionError(WeftError, ValueError):
    """A ``%%weft_activity``/``%%weft_workflow`` cell or its magic line is malformed.

    The message shows the offending part. It is also a ``ValueError`` (a bad argument value).
    """


class CellExecutionError(WeftError, RuntimeError):
    """A notebook cell executed in a Jupyter kernel raised (the chaos harness, ``make demo``).

    Attributes: ``ename``, ``evalue`` and ``traceback`` (the kernel's error reply), ``source``
    (the cell).
    """

    ename: str
    evalue: str
    traceback: str
    source: str

    def __init__(self, source: str, content: dict[str, Any]) -> None:
        ename, evalue = content.get("ename", ""), content.get("evalue", "")
        super().__init__(
            f"cell failed with {ename}: {evalue}\n--- cell ---\n{source}",
            ename=ename,
            evalue=evalue,
            traceback="\n".join(content.get("traceback", [])),
            source=source,
        )


class CliError(WeftError):
    """The ``weft-nb`` command cannot do what was asked; reported as one line, exit status 1."""


class JournalNotFoundError(CliError):
    """The ``weft-nb`` command found no journal file at its ``--journal`` path (``path``).

    Attributes: ``path``; ``found``, the journals it found nearby (``.weft/<notebook>.duckdb``
    beside a notebook), which the message lists with how to pick one; ``command``, the
    ``weft-nb`` command that was run, for the example in the message.
    """

    def __init__(self, path: str, *, found: Sequence[str] = (), command: str = "") -> None:
        if not found:
            message = f"no journal at {path} (pass --journal PATH)"
        else:
            example = " ".join(w for w in ("weft-nb --journal", found[0], command) if w)
            message = (
                f"no journal at {path}; found {len(found)} journal(s): {', '.join(found)}. "
                f"Pick one with --journal PATH, e.g. {example}"
            )
        super().__init__(message, path=path, found=list(found), command=command)


__all__ = [
    "ActivityCrashLoopError",
    "ActivityFailedError",
    "ActivityHeartbeatTimeoutError",
    "ActivityNotRegisteredError",
    "ActivityNotShippableError",
    "ActivityPerAttemptTimeoutError",
    "ActivityReconciliationIndeterminateError",
    "ActivityRedefinedWarning",
    "ActivityScheduleToCloseTimeoutError",
    "ActivityTimeoutError",
    "ActivityVerificationError",
    "AsyncStyleError",
    "AsyncTokenNotFoundError",
    "BranchTopologyChangedError",
    "CellDefinitionError",
    "CellExecutionError",
    "CheckpointEnvironmentError",
    "CheckpointStorageError",
    "ChildWorkflowDepthError",
    "ChildWorkflowFailedError",
    "CircuitOpenError",
    "CliError",
    "CompensationError",
    "DevelopmentWarning",
    "DurableActivityScopeError",
    "ExecutorUnavailableError",
    "InterceptorCallError",
    "InvalidRunIdError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalDamageWarning",
    "JournalError",
    "JournalIOError",
    "JournalLockedError",
    "JournalNotFoundError",
    "JournalReadOnlyError",
    "JournalVersionError",
    "MissingExtraError",
    "NonDeterminismError",
    "NotebookJournalLockedError",
    "PayloadError",
    "RunFinishedError",
    "RunInterruptedError",
    "RunNotFoundError",
    "SchedulerUnreachableError",
    "ShadowedBuiltinWarning",
    "SignalTimeoutError",
    "StepChangedWarning",
    "StepNotAwaitedError",
    "StepScopeError",
    "UndecidedNotebookError",
    "UnsupportedPlatformError",
    "WeftError",
    "WeftWarning",
    "WorkerLostError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowNotRegisteredError",
    "WorkflowVersionMismatchError",
]
