"""A run's state at one moment, from the journal plus the engine's live attempts.

The notebook's panel (live and static), ``%weft show`` and the REST endpoint all render a
`RunSnapshot`, so they show the same thing, and a panel rebuilt after a kernel restart or a
browser reload (from the journal alone) continues where the live one was. ``to_json()`` is the
stable shape ``GET /api/v1/runs/{id}`` sends (`SCHEMA`); ``text()`` is what a person reads.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from weft_nb.base.payloads import decode, error_from_json
from weft_nb.engine.json_values import UndecodedDetails, details_json, finite
from weft_nb.engine.step_notes import step_note
from weft_nb.errors import PayloadError
from weft_nb.journal.protocol import (
    BREAKER_OPEN,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    BreakerRecord,
)

MAX_ROWS = 50  # steps shown with a row of their own: the newest, plus unfinished older ones
SCHEMA = 1
"""The version of `RunSnapshot.to_json`'s shape; it changes only when a field changes meaning."""
FINISHED = ("completed", "failed", "cancelled")

if TYPE_CHECKING:
    from weft_nb.base.clock import Clock
    from weft_nb.engine.live_runs import LiveRuns
    from weft_nb.journal.protocol import Journal


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptView:
    """One failed attempt of a step, as the journal recorded it."""

    attempt: int
    started_at: float
    finished_at: float
    error_type: str
    error: str

    def to_json(self) -> dict[str, Any]:
        """The attempt as JSON types (one entry of a step's ``attempts``)."""
        return {
            "attempt": self.attempt,
            "status": "failed",
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error_type": self.error_type,
            "error": self.error,
        }


@dataclasses.dataclass(frozen=True)
class StepView:
    """One step as a person reads it."""

    position: int
    activity: str
    status: str  # completed, failed, running, retrying, dispatched
    attempt: int
    max_attempts: int | None
    details: Any
    started_at: float | None
    finished_at: float | None
    error: str | None
    token: str | None = None  # a parked step's out-of-band completion token
    failed_attempts: tuple[AttemptView, ...] = ()  # journaled failures, oldest first
    heartbeat_at: float | None = None  # when ``details`` were recorded (None: no heartbeat)
    note: str | None = None  # a timer's deadline, a child workflow's run (engine.step_notes)

    @property
    def progress(self) -> float | None:
        """1 when completed, else 0..1 from ``progress`` or ``current``/``total`` in the details."""
        if self.status == STEP_COMPLETED:
            return 1.0
        details = self.details if isinstance(self.details, dict) else {}
        value = details.get("progress")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return min(1.0, max(0.0, float(value)))
        current, total = details.get("current"), details.get("total")
        if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
            return min(1.0, max(0.0, float(current) / float(total)))
        return None

    def details_text(self, limit: int = 80) -> str:
        """The latest heartbeat fields as short text."""
        if self.details is None:
            return ""
        if isinstance(self.details, dict):
            parts = [f"{k}={_short(v)}" for k, v in self.details.items()]
            text = " ".join(parts)
        else:
            text = _short(self.details)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def attempt_text(self) -> str:
        """``k/max`` (or ``k`` when the maximum is unknown)."""
        return f"{self.attempt}/{self.max_attempts}" if self.max_attempts else str(self.attempt)

    def attempts_json(self) -> list[dict[str, Any]]:
        """Every attempt: the journaled failures, then the current one unless it is among them.

        The current attempt's start is known while it runs, or when it is the step's first;
        otherwise it is null (the step's ``started_at`` is its first attempt's start).
        """
        attempts = [failed.to_json() for failed in self.failed_attempts]
        if self.attempt and all(f.attempt != self.attempt for f in self.failed_attempts):
            live = self.status in ("running", "stopping") or self.attempt == 1
            attempts.append(
                {
                    "attempt": self.attempt,
                    "status": self.status,
                    "started_at": self.started_at if live else None,
                    "finished_at": self.finished_at,
                    "error_type": None,
                    "error": self.error if self.status == "failed" else None,
                }
            )
        return attempts

    def to_json(self) -> dict[str, Any]:
        """The step as JSON types (one entry of a run's ``steps``)."""
        return {
            "position": self.position,
            "activity": self.activity,
            "status": self.status,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": finite(self.progress),
            "heartbeat": details_json(self.details, self.heartbeat_at),
            "error": self.error,
            "token": self.token,
            "attempts": self.attempts_json(),
            "note": self.note,
        }


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:23] + "…"


@dataclasses.dataclass(frozen=True)
class RunSnapshot:
    """A run and its steps."""

    run_id: str
    workflow: str
    status: str
    created_at: float
    updated_at: float
    now: float
    steps: tuple[StepView, ...]
    error: str | None
    breakers: tuple[BreakerRecord, ...] = ()  # the open circuit breakers of its activities
    parent_run_id: str | None = None  # a child workflow's parent run

    def breaker_notes(self) -> list[str]:
        """One line per open circuit breaker of the run's activities."""
        notes = []
        for breaker in self.breakers:
            since = self.now - (breaker.opened_at or self.now)
            note = f"circuit breaker of {breaker.activity!r} open for {since:.0f}s"
            if breaker.half_open_at is not None and breaker.half_open_at > self.now:
                note += f"; a trial attempt may run in {breaker.half_open_at - self.now:.0f}s"
            elif breaker.half_open_at is not None:
                note += "; half-open: the next attempt is a trial"
            notes.append(note)
        return notes

    @property
    def elapsed(self) -> float:
        """Seconds from the run's start to its end (or to now while it runs)."""
        end = self.now if self.status in ("running", "interrupted") else self.updated_at
        return max(0.0, end - self.created_at)

    def shown_steps(self) -> list[StepView]:
        """The steps worth a row: the newest `MAX_ROWS`, plus older unfinished ones.

        A 10,000-step run would otherwise render 10,000 rows (minutes of widget building, and
        megabytes in the notebook) that nobody reads; SQL and the timeline have every step.
        """
        if len(self.steps) <= MAX_ROWS:
            return list(self.steps)
        cutoff = self.steps[-MAX_ROWS].position
        return [s for s in self.steps if s.position >= cutoff or s.status != "completed"]

    def hidden_note(self, shown: list[StepView]) -> str:
        """One line saying how many steps ``shown`` leaves out and where they are; "" if none."""
        hidden = len(self.steps) - len(shown)
        if not hidden:
            return ""
        return (
            f"{hidden:,} earlier completed steps not shown; %weft sql and %weft timeline have all"
        )

    def to_json(self) -> dict[str, Any]:
        """The run as JSON types, every step included: what ``GET /api/v1/runs/{id}`` sends.

        The shape is versioned by ``"schema"`` (`SCHEMA`); times are clock seconds (Unix time
        on the real clock), and ``finished_at`` is null until the run completes, fails or is
        cancelled.
        """
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "started_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.updated_at if self.status in FINISHED else None,
            "now": self.now,
            "elapsed": self.elapsed,
            "error": self.error,
            "steps": [step.to_json() for step in self.steps],
            "open_breakers": [dataclasses.asdict(breaker) for breaker in self.breakers],
            "parent_run_id": self.parent_run_id,
        }

    def text(self) -> str:
        """Plain text: what a terminal, nbval or GitHub shows."""
        lines = [f"{self.workflow} run {self.run_id}: {self.status}, {self.elapsed:.1f}s"]
        lines += [f"  child of run {self.parent_run_id}"] if self.parent_run_id else []
        shown = self.shown_steps()
        if note := self.hidden_note(shown):
            lines.append(f"  ({note})")
        for step in shown:
            bar = "" if step.progress is None else f" {step.progress:4.0%}"
            lines.append(
                f"  {step.position:>3} {step.activity:<20} {step.status:<10} "
                f"attempt {step.attempt_text():<5}{bar} {step.details_text()}".rstrip()
            )
            if step.error:
                lines.append(f"      error: {step.error}")
            lines += [f"      {step.note}"] if step.note else []
            if step.token:
                lines.append(f"      waiting for completion: token {step.token}")
        if self.error:
            lines.append(f"  error: {self.error}")
        lines += [f"  {note}" for note in self.breaker_notes()]
        return "\n".join(lines)


def take_snapshot(journal: Journal, live: LiveRuns, clock: Clock, run_id: str) -> RunSnapshot:
    """Read a run's state: recorded steps and heartbeats, then what is in flight right now."""
    record = journal.get_run(run_id)
    if record is None:
        from weft_nb.errors import RunNotFoundError

        raise RunNotFoundError(run_id, journal.path)
    steps = journal.load_steps(run_id)
    attempts: dict[int, tuple[int, str | None]] = {}  # position: last attempt, its error
    failures: dict[int, list[AttemptView]] = {}
    for past in journal.attempts_of_run(run_id):  # by position, oldest first: the last wins
        attempts[past.position] = (past.attempt, past.error_message)
        failures.setdefault(past.position, []).append(
            AttemptView(
                attempt=past.attempt,
                started_at=past.started_at,
                finished_at=past.finished_at,
                error_type=past.error_type,
                error=past.error_message,
            )
        )
    beats = journal.latest_heartbeats(run_id)
    views: dict[int, StepView] = {}
    is_live = live.is_active(run_id)
    backoff = live.backoff(run_id)
    for position in sorted(set(steps) | set(attempts) | set(beats)):
        step = steps.get(position)
        beat = beats.get(position)
        details = None if beat is None else _decoded(beat.codec, beat.details)
        beat_at = None if beat is None else beat.recorded_at
        failed, last_error = attempts.get(position, (0, None))
        earlier_tries = tuple(failures.get(position, ()))
        if step is not None:
            status = {STEP_COMPLETED: "completed", STEP_FAILED: "failed"}.get(
                step.status, "dispatched" if step.status == STEP_STARTED else step.status
            )
            error = None
            if step.status == STEP_FAILED and step.error:
                error = str(error_from_json(step.error, run_id=run_id))
            views[position] = StepView(
                position=position,
                activity=step.activity,
                status=status,
                attempt=step.attempts,
                max_attempts=None,
                details=details,
                started_at=step.started_at,
                finished_at=step.finished_at,
                error=error,
                failed_attempts=earlier_tries,
                heartbeat_at=beat_at,
                note=step_note(step, clock.now()),
            )
        else:
            name = beat.activity if beat is not None else None
            name = name or _activity_of(journal, run_id, position)
            # Nothing recorded its end: it waits for a retry, or its process stopped mid-way.
            status = "retrying" if is_live and backoff and backoff[0] == position else "interrupted"
            views[position] = StepView(
                position=position,
                activity=name,
                status=status,
                attempt=failed + 1,
                max_attempts=None,
                details=details,
                started_at=None,
                finished_at=None,
                error=last_error,
                failed_attempts=earlier_tries,
                heartbeat_at=beat_at,
            )
    for position, token in journal.pending_async_tokens(run_id).items():
        parked = journal.async_token(token)
        if parked is not None and (position not in views or views[position].status != "completed"):
            earlier = views.get(position)
            views[position] = StepView(
                position=position,
                activity=parked.activity,
                status="waiting",
                attempt=parked.attempts,
                max_attempts=None,
                details=None if earlier is None else earlier.details,
                started_at=parked.started_at,
                finished_at=None,
                error=None,
                token=token,
                failed_attempts=tuple(failures.get(position, ())),
                heartbeat_at=None if earlier is None else earlier.heartbeat_at,
            )
    for ctx, max_attempts in live.live_attempts(run_id):
        earlier = views.get(ctx.position)
        if ctx.details is not None or earlier is None:
            details, beat_at = ctx.details, ctx.last_heartbeat_at if ctx.heartbeat_count else None
        else:  # no details from this attempt yet: the journal's latest stand
            details, beat_at = earlier.details, earlier.heartbeat_at
        views[ctx.position] = StepView(
            position=ctx.position,
            activity=ctx.activity_name,
            status="running" if not ctx.cancelled.is_set() else "stopping",
            attempt=ctx.attempt,
            max_attempts=max_attempts,
            details=details,
            started_at=ctx.started_at,
            finished_at=None,
            error=attempts.get(ctx.position, (0, None))[1],
            failed_attempts=tuple(failures.get(ctx.position, ())),
            heartbeat_at=beat_at,
        )
    return RunSnapshot(
        run_id=record.run_id,
        workflow=record.workflow,
        status=record.status,
        created_at=record.created_at,
        updated_at=record.updated_at,
        now=clock.now(),
        steps=tuple(views[p] for p in sorted(views)),
        error=str(error_from_json(record.error, run_id=run_id)) if record.error else None,
        breakers=_open_breakers(journal, {view.activity for view in views.values()}),
        parent_run_id=record.parent_run_id,
    )


def _open_breakers(journal: Journal, activities: set[str]) -> tuple[BreakerRecord, ...]:
    found = journal.breakers()
    return tuple(b for b in found if b.state == BREAKER_OPEN and b.activity in activities)


def _decoded(codec: str, data: bytes) -> Any:
    """Journaled heartbeat details, or an `UndecodedDetails` when their code is not loaded."""
    try:
        return decode(codec, data, what="heartbeat details")
    except Exception as exc:  # PayloadError, or anything a pickle's own code raises loading
        named = isinstance(exc, PayloadError)
        return UndecodedDetails(codec, str(exc) if named else f"{type(exc).__name__}: {exc}")


def _activity_of(journal: Journal, run_id: str, position: int) -> str:
    past = journal.attempts_of(run_id, position)
    return past[0].activity if past else "?"
