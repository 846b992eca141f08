"""The journal interface: what the engine stores, as plain records, and the operations on them.

Every write method is atomic: it either commits all it was given or nothing. A step's result is
committed before the workflow sees it. Reads are named operations that return records, never SQL:
table names are a detail of `DuckDBJournal` (whose
``query``/``select_frame`` serve ``%weft sql``, the CLI and chaos), so a backend such as
[`MemoryJournal`][weft_nb.testing.MemoryJournal] needs no database. Every backend passes
one contract suite, ``tests/journal/test_journal_contract.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})

STEP_COMPLETED = "completed"
STEP_FAILED = "failed"
STEP_STARTED = "started"  # a keyed activity's dispatch marker, before its outcome is known


@dataclasses.dataclass(kw_only=True)
class RunRecord:
    """One workflow run."""

    run_id: str
    workflow: str
    version: str
    status: str
    on_change: str
    input_codec: str
    input: bytes
    created_at: float
    updated_at: float
    result_codec: str | None = None
    result: bytes | None = None
    error: str | None = None
    parent_run_id: str | None = None  # a child workflow's parent run (``ctx.run_workflow``)


@dataclasses.dataclass(kw_only=True)
class StepRecord:
    """The outcome of one ``ctx.run`` position (or a keyed activity's dispatch marker)."""

    run_id: str
    position: int
    activity: str
    status: str
    input_hash: str
    source_hash: str
    attempts: int
    started_at: float
    finished_at: float | None = None
    result_codec: str | None = None
    result: bytes | None = None
    error: str | None = None
    idempotency_key: str | None = None


@dataclasses.dataclass(kw_only=True)
class AttemptRecord:
    """A failed attempt (successful ones are summed up in their step)."""

    run_id: str
    position: int
    attempt: int
    activity: str
    started_at: float
    finished_at: float
    error_type: str
    error_message: str
    traceback: str


@dataclasses.dataclass(kw_only=True)
class HeartbeatRecord:
    """The latest heartbeat details of an attempt at one moment."""

    run_id: str
    position: int
    attempt: int
    recorded_at: float
    codec: str
    details: bytes
    beat: int = 0  # the attempt's heartbeat count: orders beats that share a timestamp
    activity: str = ""  # names the step when nothing else about it was recorded yet


@dataclasses.dataclass(kw_only=True)
class CheckpointRecord:
    """A durable checkpoint file written by ``ActivityContext.checkpoint``."""

    run_id: str
    position: int
    attempt: int
    seq: int
    created_at: float
    path: str
    size: int
    codec: str


@dataclasses.dataclass(kw_only=True)
class RunOutcome:
    """How a run ended (or paused): what `Journal.finish_run()` records on it."""

    status: str
    at: float
    result_codec: str | None = None
    result: bytes | None = None
    error: str | None = None


@dataclasses.dataclass(kw_only=True)
class SignalRecord:
    """A signal sent to a run, buffered until the workflow waits for it."""

    run_id: str
    name: str
    signal_id: str | None  # a repeated id of the same run is ignored (exactly-once delivery)
    codec: str
    payload: bytes
    created_at: float


@dataclasses.dataclass(kw_only=True)
class EventRecord:
    """Something worth an audit line: a superseded step, a reconciliation, a recovery skip."""

    run_id: str
    position: int | None
    kind: str
    message: str
    created_at: float


BREAKER_CLOSED = "closed"
BREAKER_OPEN = "open"  # half-open is an open breaker past its reset timeout: not stored


@dataclasses.dataclass(kw_only=True)
class BreakerRecord:
    """An activity's circuit breaker, shared by all its runs: one record per activity name."""

    activity: str
    state: str  # BREAKER_CLOSED or BREAKER_OPEN
    failures: int  # consecutive failed attempts counted since it last closed
    opened_at: float | None  # when it last opened (None while it never did)
    updated_at: float
    half_open_at: float | None = None  # while open: when a trial may run (for people to read)


class Journal(Protocol):
    """Durable storage for runs, steps, attempts, heartbeats, checkpoints and events.

    Operations on a closed journal raise ``JournalClosedError``; a journal that another owner
    holds open raises ``JournalLockedError`` when opened.
    """

    path: str
    """The journal's name in messages: a file journal's resolved path, ``memory:<id>`` otherwise."""

    @property
    def sidecar_base(self) -> str:
        """The path prefix of the files kept beside the records; the engine derives their names.

        Checkpoint files go to ``<sidecar_base>.checkpoints/``, the dispatch log to
        ``<sidecar_base>.dispatch`` and a serving engine's endpoint to
        ``<sidecar_base>.endpoint.json``. A file journal's own path; for a journal that has no
        file, a path in a folder of its own that lives as long as its storage does.
        """

    def acquire(self) -> None:
        """Keep the storage open while a run is active (nestable)."""

    def release(self) -> None:
        """Undo one `acquire()`; when none remain the file may be released to readers."""

    def release_if_idle(self, min_idle: float) -> bool:
        """Release the underlying file to other readers if unused for ``min_idle`` seconds.

        Returns True when it released the file; a journal without one never does.
        """

    def close(self) -> None:
        """Close for good; later calls raise ``JournalClosedError``."""

    def create_run(self, run: RunRecord, *, sync: bool = True) -> None:
        """Insert a new run; ``JournalError`` (nothing written) if its run id exists already.

        Durable on return. With ``sync=False`` it is written (it survives the process's death)
        but reaches the disk only with the journal's next sync: the first step's, the run's
        outcome's, or any commit, each covering what was written before it. For a caller that
        acknowledges nothing before the run's outcome (``engine.run``): a run whose start a power
        loss took had completed no step and returned nothing.
        """

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Runs, oldest first, optionally of one status."""

    def children_of(self, run_id: str) -> list[RunRecord]:
        """The runs whose ``parent_run_id`` is ``run_id`` (its child workflows), oldest first."""

    def finish_run(self, run_id: str, outcome: RunOutcome) -> bool:
        """Record the status, result or error of a run that has not finished yet.

        Returns False, writing nothing, when the run already has a final status (completed,
        failed, cancelled): a cancellation can never be overwritten by a late outcome.
        """

    def set_run_status(self, run_id: str, status: str, at: float) -> bool:
        """Change the status of a run that has not finished yet (False when it had)."""

    def trace_context(self, run_id: str, keep: str | None = None) -> str | None:
        """The run's journaled trace context (a W3C ``traceparent``), or None.

        With ``keep``, journal it first when the run has none yet: the first execution's stays,
        so a resumed run continues its trace. Durable once the call returns.
        """

    def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        """The current (not superseded) step records of a run, by position."""

    def step_columns(self, run_id: str) -> dict[str, list[Any]]:
        """`load_steps()` as columns, for a replay (`weft_nb.journal.recorded_steps`).

        One list per `StepRecord` field but ``run_id``; row ``i`` of each is one step, in the
        journal's order (a later row at a position wins). ``result`` may hold ``bytearray``s.
        """

    def orphaned_steps(self, run_id: str) -> bool:
        """Whether steps of ``run_id`` are journaled while the run itself is not.

        Only damage does that: a run-start record destroyed in the step log while records of its
        completed steps survive. Starting that run id again replays those steps.
        """

    def step_outcome(self, run_id: str, position: int) -> StepRecord | None:
        """The current completed or failed record of one step; None while it has no outcome.

        A dispatch marker (status ``started``) is not an outcome.
        """

    def record_step(self, step: StepRecord, heartbeat: HeartbeatRecord | None = None) -> None:
        """Record a step's outcome (replacing its dispatch marker), with its last heartbeat.

        With a heartbeat or an idempotency key, a step that already has an outcome is refused
        with ``JournalError`` (nothing written). Without either (the hot path, a plain append),
        the caller guarantees that the step has none.
        """

    def record_marker(self, step: StepRecord) -> None:
        """Record a keyed activity's dispatch marker (status ``started``) before dispatch."""

    def record_attempt_failure(
        self,
        attempt: AttemptRecord,
        heartbeat: HeartbeatRecord | None = None,
        final: StepRecord | None = None,
    ) -> None:
        """Record a failed attempt with its last heartbeat, atomically; spend its task token.

        When the failure ends the step, ``final`` is the step's failed record; it is written in
        the same transaction (replacing a dispatch marker).
        """

    def attempts_of(self, run_id: str, position: int) -> list[AttemptRecord]:
        """The current failed attempts of one step, oldest first."""

    def attempts_of_run(self, run_id: str) -> list[AttemptRecord]:
        """The current failed attempts of every step of a run, by position, then oldest first."""

    def crashed_attempts(self, run_id: str, position: int) -> int:
        """How many current attempts of one step died with their process (``ActivityCrashed``).

        These are the attempts the dispatch log found open when an engine opened the journal.
        """

    def record_heartbeats(self, heartbeats: list[HeartbeatRecord]) -> None:
        """Append heartbeat rows in one transaction."""

    def latest_heartbeat(
        self, run_id: str, position: int, before_attempt: int | None = None
    ) -> HeartbeatRecord | None:
        """The most recently written current heartbeat of one step, from any attempt or process.

        With ``before_attempt``, only heartbeats of earlier attempts count.
        """

    def latest_heartbeats(self, run_id: str) -> dict[int, HeartbeatRecord]:
        """The most recently written current heartbeat of each step of a run, by position."""

    def heartbeat_history(self, run_id: str) -> list[HeartbeatRecord]:
        """Every current heartbeat of a run, all steps and attempts, in the order written.

        The series a run panel rebuilt after a restart draws (``%weft show``). Superseded
        heartbeats are left out, as every other read leaves them out.
        """

    def add_checkpoint(self, checkpoint: CheckpointRecord, keep: int) -> list[CheckpointRecord]:
        """Add a checkpoint and drop all but the newest ``keep``; return the dropped ones."""

    def checkpoints_of(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """The current checkpoints of one step, newest first."""

    def last_checkpoint_seq(self, run_id: str, position: int) -> int:
        """The highest checkpoint number recorded for one step, superseded ones included; 0 if none.

        The next checkpoint takes a higher number, so a rerun never overwrites an audited file.
        """

    def all_checkpoint_paths(self) -> set[str]:
        """Every checkpoint path the journal references (for orphan cleanup)."""

    def supersede_from(self, run_id: str, position: int, event: EventRecord) -> None:
        """Supersede what was recorded at ``position`` and after, and record why, atomically.

        Steps, attempts, heartbeats and checkpoints are marked, not deleted (kept for audit).
        """

    def add_signal(self, signal: SignalRecord) -> bool:
        """Buffer a signal for a run; False (nothing written) if its ``signal_id`` was seen."""

    def consume_signal(self, run_id: str, name: str, step: StepRecord) -> StepRecord | None:
        """Consume the oldest buffered signal ``name`` and record ``step`` with it, atomically.

        The step is recorded with the signal's payload as its result. Returns None, writing
        nothing, when no such signal is buffered.
        """

    def add_async_token(self, token: str, step: StepRecord) -> None:
        """Park ``step`` under ``token`` until an out-of-band completion arrives."""

    def async_token(self, token: str) -> StepRecord | None:
        """The parked step of an unconsumed token (status ``started``), or None."""

    def pending_async_tokens(self, run_id: str) -> dict[int, str]:
        """Unconsumed tokens of a run, by position."""

    def spend_async_token(self, token: str, at: float) -> bool:
        """Mark an unconsumed token used, recording nothing else; False if it was used already."""

    def complete_async_token(self, token: str, outcome: StepRecord) -> bool:
        """Consume ``token`` and record ``outcome`` in one transaction; False if already used.

        Also False (nothing written) when the token's run has finished, or the step already has
        an outcome.
        """

    def add_event(self, event: EventRecord) -> None:
        """Append an audit event."""

    def events_of(self, run_id: str) -> list[EventRecord]:
        """A run's events, oldest first."""

    def save_breaker(self, breaker: BreakerRecord) -> None:
        """Store an activity's circuit breaker, replacing the one stored under its name."""

    def breakers(self) -> list[BreakerRecord]:
        """Every stored circuit breaker, by activity name."""
