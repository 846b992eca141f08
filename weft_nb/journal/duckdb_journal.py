"""The DuckDB journal: the records of runs, steps, attempts, heartbeats and checkpoints.

File ownership, idle release and transactions live in `weft_nb.journal.file`; this module
maps the `Journal` operations onto SQL. The rows and shared
statements are in `weft_nb.journal.sql_records`, the SQL of heartbeats and checkpoints in
`weft_nb.journal.sql_progress`, and that of signals and task tokens in
`weft_nb.journal.sql_inputs`. The hot path (a completed step without heartbeat or key) is an
fsync'd append to the step log (`weft_nb.journal.step_log`), which reaches DuckDB in batches
before anything else reads or writes the journal.
"""

from __future__ import annotations

from typing import Any

import duckdb

from weft_nb.errors import JournalError
from weft_nb.journal import sql_inputs, sql_progress
from weft_nb.journal.dispatch_log import CRASHED as CRASHED_ERROR_TYPE
from weft_nb.journal.file import JournalFile
from weft_nb.journal.protocol import (
    AttemptRecord,
    BreakerRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    RunOutcome,
    RunRecord,
    SignalRecord,
    StepRecord,
)
from weft_nb.journal.sql_records import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    INSERT_HEARTBEAT,
    RUN_COLUMNS,
    UNFINISHED,
    attempt_from_row,
    event_from_row,
    heartbeat_row,
    insert_event,
    insert_outcome,
    runs_from,
    settled,
    step_from_row,
    step_row,
    updated,
)
from weft_nb.journal.step_log import INSERT_STEP, STEP_COLUMNS


class DuckDBJournal(JournalFile):
    """A weft_nb journal in one DuckDB file (see `JournalFile` for the arguments)."""

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Insert a new run; ``JournalError`` (nothing written) if its run id exists already."""
        with self.writing() as con:
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run.run_id]).fetchone():
                raise JournalError(
                    f"run {run.run_id!r} already exists in journal {self.path}; nothing was "
                    "written. Choose another run id.",
                    path=self.path,
                    run_id=run.run_id,
                )
            con.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    run.run_id,
                    run.workflow,
                    run.version,
                    run.status,
                    run.on_change,
                    run.input_codec,
                    run.input,
                    run.created_at,
                    run.updated_at,
                    run.result_codec,
                    run.result,
                    run.error,
                    run.parent_run_id,
                ],
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        with self.connection() as con:
            runs = runs_from(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        return runs[0] if runs else None

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        sql = "SELECT * FROM runs"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        with self.connection() as con:
            return runs_from(con.execute(sql + " ORDER BY created_at, run_id", params))

    def finish_run(self, run_id: str, outcome: RunOutcome) -> bool:
        """Record an unfinished run's outcome; False (nothing written) if it already finished."""
        with self.writing() as con:  # commits before the value is returned
            return updated(
                con,
                "UPDATE runs SET status = ?, updated_at = ?, result_codec = ?, result = ?, "
                f"error = ? WHERE run_id = ? AND {UNFINISHED}",
                [
                    outcome.status,
                    outcome.at,
                    outcome.result_codec,
                    outcome.result,
                    outcome.error,
                    run_id,
                ],
            )

    def set_run_status(self, run_id: str, status: str, at: float) -> bool:
        """Change an unfinished run's status; False (nothing written) if it already finished."""
        with self.writing() as con:  # commits before the value is returned
            return updated(
                con,
                f"UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? AND {UNFINISHED}",
                [status, at, run_id],
            )

    def trace_context(self, run_id: str, keep: str | None = None) -> str | None:
        """The run's journaled trace context; with ``keep``, the first one kept (see `Journal`).

        Kept in ``weft_meta`` under ``trace_context/<run id>``: no schema change.
        """
        key = f"trace_context/{run_id}"
        if keep is not None:
            with self.writing() as con:  # commits before the value is returned
                con.execute(
                    "INSERT INTO weft_meta VALUES (?, ?) ON CONFLICT DO NOTHING", [key, keep]
                )
        with self.connection() as con:
            row = con.execute("SELECT value FROM weft_meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    # -- steps and attempts ----------------------------------------------------------------

    def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        """Current step records by position."""
        with self.connection() as con:
            rows = con.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND NOT superseded",
                [run_id],
            ).fetchall()
        return {row[1]: step_from_row(row) for row in rows}

    def step_outcome(self, run_id: str, position: int) -> StepRecord | None:
        """The current completed or failed record of one step, or None."""
        with self.connection() as con:
            row = con.execute(
                f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND position = ? "
                "AND NOT superseded AND status IN ('completed', 'failed') LIMIT 1",
                [run_id, position],
            ).fetchone()
        return step_from_row(row) if row else None

    def record_step(self, step: StepRecord, heartbeat: HeartbeatRecord | None = None) -> None:
        """Record a step's outcome, replacing a keyed dispatch marker if there is one."""
        if heartbeat is None and step.idempotency_key is None:
            self.append_step(step_row(step))  # the hot path: durable in the step log
            return
        with self.writing() as con:
            if settled(con, step.run_id, step.position):
                raise JournalError(
                    f"step {step.position} of run {step.run_id!r} already has an outcome in "
                    f"{self.path}; a second one is refused (nothing was written). This is a "
                    "weft_nb bug: please report it with the run's timeline.",
                    path=self.path,
                )
            insert_outcome(con, step)
            if heartbeat is not None:
                con.execute(INSERT_HEARTBEAT, heartbeat_row(heartbeat))

    def record_marker(self, step: StepRecord) -> None:
        """Record a keyed activity's dispatch marker."""
        with self.writing() as con:
            con.execute(INSERT_STEP, step_row(step))

    def record_attempt_failure(
        self,
        attempt: AttemptRecord,
        heartbeat: HeartbeatRecord | None = None,
        final: StepRecord | None = None,
    ) -> None:
        """Record a failed attempt, its last heartbeat and the step's failure, atomically.

        ``final`` is the step's failed record when this failure ends the step.
        """
        with self.writing() as con:
            if final is not None:
                insert_outcome(con, final)
            con.execute(
                f"INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    attempt.run_id,
                    attempt.position,
                    attempt.attempt,
                    attempt.activity,
                    attempt.started_at,
                    attempt.finished_at,
                    attempt.error_type,
                    attempt.error_message,
                    attempt.traceback,
                ],
            )
            if heartbeat is not None:
                con.execute(INSERT_HEARTBEAT, heartbeat_row(heartbeat))
            sql_inputs.spend_tokens_of(con, attempt)

    def attempts_of(self, run_id: str, position: int) -> list[AttemptRecord]:
        """Current failed attempts of a step, oldest first."""
        with self.connection() as con:
            rows = con.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? AND position = ? "
                "AND NOT superseded ORDER BY attempt",
                [run_id, position],
            ).fetchall()
        return [attempt_from_row(row) for row in rows]

    def attempts_of_run(self, run_id: str) -> list[AttemptRecord]:
        """Current failed attempts of every step of a run, by position, then oldest first."""
        with self.connection() as con:
            rows = con.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ? AND NOT superseded "
                "ORDER BY position, attempt",
                [run_id],
            ).fetchall()
        return [attempt_from_row(row) for row in rows]

    def crashed_attempts(self, run_id: str, position: int) -> int:
        """How many current attempts of one step died with their process (``ActivityCrashed``)."""
        with self.connection() as con:
            row = con.execute(
                "SELECT count(*) FROM attempts WHERE run_id = ? AND position = ? "
                "AND error_type = ? AND NOT superseded",
                [run_id, position, CRASHED_ERROR_TYPE],
            ).fetchone()
        return int(row[0]) if row else 0

    # -- heartbeats and checkpoints (weft_nb.journal.sql_progress) -------------------------

    def record_heartbeats(self, heartbeats: list[HeartbeatRecord]) -> None:
        """Append heartbeat rows in one transaction."""
        if not heartbeats:
            return
        with self.writing() as con:
            sql_progress.record_heartbeats(con, heartbeats)

    def latest_heartbeat(
        self, run_id: str, position: int, before_attempt: int | None = None
    ) -> HeartbeatRecord | None:
        """The newest current heartbeat of a step (of an attempt before ``before_attempt``)."""
        with self.connection() as con:
            return sql_progress.latest_heartbeat(con, run_id, position, before_attempt)

    def latest_heartbeats(self, run_id: str) -> dict[int, HeartbeatRecord]:
        """The newest current heartbeat of each step of a run, by position."""
        with self.connection() as con:
            return sql_progress.latest_heartbeats(con, run_id)

    def heartbeat_history(self, run_id: str) -> list[HeartbeatRecord]:
        """Every current heartbeat of a run, in the order written."""
        with self.connection() as con:
            return sql_progress.heartbeat_history(con, run_id)

    def add_checkpoint(self, checkpoint: CheckpointRecord, keep: int) -> list[CheckpointRecord]:
        """Add a checkpoint row and drop all but the newest ``keep`` of that step."""
        with self.writing() as con:
            return sql_progress.add_checkpoint(con, checkpoint, keep)

    def checkpoints_of(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """Current checkpoints of a step, newest first."""
        with self.connection() as con:
            return sql_progress.checkpoints_of(con, run_id, position)

    def last_checkpoint_seq(self, run_id: str, position: int) -> int:
        """The highest checkpoint number of a step, superseded ones included; 0 if none."""
        with self.connection() as con:
            return sql_progress.last_checkpoint_seq(con, run_id, position)

    def all_checkpoint_paths(self) -> set[str]:
        """Every referenced checkpoint path."""
        with self.connection() as con:
            return {row[0] for row in con.execute("SELECT path FROM checkpoints").fetchall()}

    # -- supersession and events -----------------------------------------------------------

    def supersede_from(self, run_id: str, position: int, event: EventRecord) -> None:
        """Supersede everything recorded at ``position`` and after, with an audit event."""
        with self.writing() as con:
            for table in ("steps", "attempts", "heartbeats", "checkpoints"):
                con.execute(
                    f"UPDATE {table} SET superseded = true "
                    "WHERE run_id = ? AND position >= ? AND NOT superseded",
                    [run_id, position],
                )
            insert_event(con, event)

    def add_event(self, event: EventRecord) -> None:
        """Append an audit event."""
        with self.writing() as con:
            insert_event(con, event)

    def events_of(self, run_id: str) -> list[EventRecord]:
        """A run's events, oldest first."""
        with self.connection() as con:
            rows = con.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY created_at, id",
                [run_id],
            ).fetchall()
        return [event_from_row(row) for row in rows]

    # -- signals and task tokens (weft_nb.journal.sql_inputs) ------------------------------

    def add_signal(self, signal: SignalRecord) -> bool:
        """Buffer a signal; a repeated ``signal_id`` of the same run is ignored."""
        with self.writing() as con:
            return sql_inputs.add_signal(con, signal)

    def consume_signal(self, run_id: str, name: str, step: StepRecord) -> StepRecord | None:
        """Consume the oldest buffered signal together with the step that receives it."""
        with self.writing() as con:
            return sql_inputs.consume_signal(con, run_id, name, step)

    def add_async_token(self, token: str, step: StepRecord) -> None:
        """Park a step under an out-of-band completion token."""
        with self.writing() as con:
            sql_inputs.add_async_token(con, token, step)

    def async_token(self, token: str) -> StepRecord | None:
        """The parked step of an unconsumed token."""
        with self.connection() as con:
            return sql_inputs.async_token(con, token)

    def pending_async_tokens(self, run_id: str) -> dict[int, str]:
        """Unconsumed tokens of a run, by position."""
        with self.connection() as con:
            return sql_inputs.pending_async_tokens(con, run_id)

    def spend_async_token(self, token: str, at: float) -> bool:
        """Spend an unconsumed token without an outcome; False if it was already consumed."""
        with self.writing() as con:  # commits before the value is returned
            return sql_inputs.spend_async_token(con, token, at)

    def complete_async_token(self, token: str, outcome: StepRecord) -> bool:
        """Consume the token and record the step's outcome together (see the protocol)."""
        with self.writing() as con:  # commits before the value is returned
            return sql_inputs.complete_async_token(con, token, outcome)

    # -- circuit breakers ------------------------------------------------------------------

    def save_breaker(self, breaker: BreakerRecord) -> None:
        """Store an activity's circuit breaker, replacing the one stored under its name."""
        with self.writing() as con:
            con.execute(
                f"INSERT OR REPLACE INTO breakers ({BREAKER_COLUMNS}) VALUES (?,?,?,?,?,?)",
                [getattr(breaker, name) for name in BREAKER_COLUMNS.split(", ")],
            )

    def breakers(self) -> list[BreakerRecord]:
        """Every stored circuit breaker (none in a journal an older weft_nb wrote, read-only)."""
        with self.connection() as con:
            try:
                rows = con.execute(
                    f"SELECT {BREAKER_COLUMNS} FROM breakers ORDER BY activity"
                ).fetchall()
            except duckdb.CatalogException:  # read-only, and older than the breakers table
                return []
        names = BREAKER_COLUMNS.split(", ")
        return [BreakerRecord(**dict(zip(names, row, strict=True))) for row in rows]


BREAKER_COLUMNS = "activity, state, failures, opened_at, updated_at, half_open_at"
