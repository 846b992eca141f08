"""The DuckDB journal: the records of runs, steps, attempts, heartbeats and checkpoints.

File ownership, idle release and transactions live in `weft_nb.journal.file`; this module maps
the `Journal` operations onto SQL (rows and shared statements: `weft_nb.journal.sql_records`;
heartbeats and checkpoints: `sql_progress`; signals and task tokens: `sql_inputs`). The hot path
(a completed step without heartbeat or key) is an fsync'd append to the step log
(`weft_nb.journal.step_log`), which reaches DuckDB in batches before any other read or write.
"""

from __future__ import annotations

import functools
from typing import Any

from weft_nb.errors import JournalError
from weft_nb.journal import run_log, sql_breakers, sql_inputs, sql_progress
from weft_nb.journal.dispatch_log import CRASHED as CRASHED_ERROR_TYPE
from weft_nb.journal.file import JournalFile
from weft_nb.journal.pending_log import PendingLog
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
from weft_nb.journal.run_log import UNFINISHED, is_finished, run_finish_row, run_start_row
from weft_nb.journal.sql_records import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    INSERT_ATTEMPT,
    INSERT_HEARTBEAT,
    attempt_from_row,
    attempt_row,
    event_from_row,
    heartbeat_row,
    insert_event,
    insert_outcome,
    runs_from,
    settled,
    step_columns,
    step_from_row,
    step_row,
    steps_by_position,
    updated,
)
from weft_nb.journal.step_log import INSERT_STEP, STEP_COLUMNS


class DuckDBJournal(JournalFile):
    """A weft_nb journal in one DuckDB file (see `JournalFile` for the arguments)."""

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord, *, sync: bool = True) -> None:
        """Insert a new run; ``JournalError`` (nothing written) if its run id exists already.

        In the step log on return (`Journal.create_run`), in ``runs`` after a batch (`run_log`).
        """

        def new_run(log: PendingLog) -> bool:
            if self._status_of(log, run.run_id) is not None:
                raise JournalError(
                    f"run {run.run_id!r} already exists in journal {self.path}; nothing was "
                    "written. Choose another run id.",
                    path=self.path,
                    run_id=run.run_id,
                )
            return True

        row = run_start_row(run)
        self.append_record(row, "recording a new run", "runlog.started", new_run, sync)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        with self._lock:
            log = self._log
            in_log = True
            if log is not None and run_id not in log.runs:
                in_log = False  # DuckDB alone is current for it: read it without a batch
                if self._status_of(log, run_id, exists_only=True) is None:
                    return None
            with self.connection(apply_pending=in_log) as con:
                runs = runs_from(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        return runs[0] if runs else None

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        return self._runs("" if status is None else "WHERE status = ?", status)

    def children_of(self, run_id: str) -> list[RunRecord]:
        """The runs whose ``parent_run_id`` is ``run_id``, oldest first."""
        return self._runs("WHERE parent_run_id = ?", run_id)

    def _runs(self, where: str, value: str | None) -> list[RunRecord]:
        with self.connection() as con:
            sql = f"SELECT * FROM runs {where} ORDER BY created_at, run_id"
            return runs_from(con.execute(sql, [] if value is None else [value]))

    def finish_run(self, run_id: str, outcome: RunOutcome) -> bool:
        """Record an unfinished run's outcome; False (nothing written) if it already finished.

        Durable in the step log on return (`weft_nb.journal.run_log`).
        """

        def unfinished(log: PendingLog) -> bool:
            status = self._status_of(log, run_id)
            return status is not None and not is_finished(status)

        row = run_finish_row(run_id, outcome)
        return self.append_record(row, "recording a run's outcome", "runlog.finished", unfinished)

    def set_run_status(self, run_id: str, status: str, at: float) -> bool:
        """Change an unfinished run's status; False (nothing written) if it already finished."""
        with self._lock:  # no finish_run() between the commit and the note of the new status
            with self.writing() as con:  # commits before the value is returned
                changed = updated(
                    con,
                    f"UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? AND {UNFINISHED}",
                    [status, at, run_id],
                )
            if self._log is not None:
                self._log.status_changed(run_id, status if changed else None)
        return changed

    def _status_of(self, log: PendingLog, run_id: str, *, exists_only: bool = False) -> str | None:
        """A run's status as DuckDB and the step log leave it (`PendingLog.run_status`)."""

        def status(wanted: str) -> str | None:
            with self.connection(apply_pending=False) as con:
                found = con.execute("SELECT status FROM runs WHERE run_id = ?", [wanted]).fetchone()
            return None if found is None else str(found[0])

        ids = functools.partial(self._column, "SELECT run_id FROM runs")
        return log.run_status(run_id, ids, None if exists_only else status)

    def orphaned_steps(self, run_id: str) -> bool:
        """Whether steps of ``run_id`` are in DuckDB without the run (its start was destroyed)."""
        read = functools.partial(self._column, run_log.ORPHANED_RUNS)
        with self._lock:
            return run_id in read() if self._log is None else self._log.orphaned(run_id, read)

    def _column(self, sql: str) -> list[Any]:
        with self.connection(apply_pending=False) as con:
            return [found[0] for found in con.execute(sql).fetchall()]

    def forget_runs(self) -> None:
        """Internal: ``runs`` was written directly (a salvage); the next lookups read DuckDB."""
        with self._lock:
            if self._log is not None:
                self._log.forget_runs()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Internal: weft_nb's own SQL on the journal (see `JournalFile.query`)."""
        try:
            return super().query(sql, params)
        finally:
            self.forget_runs()  # it may have written runs

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

        def fetch() -> list[Any]:
            with self.connection() as con:
                return con.execute(
                    f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND NOT superseded",
                    [run_id],
                ).fetchall()

        return steps_by_position(fetch)

    def step_columns(self, run_id: str) -> dict[str, list[Any]]:
        """`load_steps()` as columns (see `Journal.step_columns`): one columnar fetch."""
        with self.connection() as con:
            return step_columns(con, run_id)

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
            con.execute(INSERT_ATTEMPT, attempt_row(attempt))
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
            sql_breakers.save_breaker(con, breaker)

    def breakers(self) -> list[BreakerRecord]:
        """Every stored circuit breaker (none in a journal an older weft_nb wrote, read-only)."""
        with self.connection() as con:
            return sql_breakers.all_breakers(con)
