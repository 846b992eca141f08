"""The DuckDB journal's inputs from outside a run: buffered signals and out-of-band task tokens.

Each function runs on the connection of a transaction the
`DuckDBJournal` opened (``_write`` or ``_use``), so what
one writes commits all together or not at all.
"""

from __future__ import annotations

import dataclasses

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.journal.protocol import STEP_STARTED, AttemptRecord, SignalRecord, StepRecord
from weft_nb.journal.run_log import UNFINISHED
from weft_nb.journal.sql_records import insert_outcome, settled, updated


def add_signal(con: duckdb.DuckDBPyConnection, signal: SignalRecord) -> bool:
    """Buffer a signal; False (nothing written) if its ``signal_id`` of the same run was seen."""
    if (
        signal.signal_id is not None
        and con.execute(
            "SELECT 1 FROM signals WHERE run_id = ? AND signal_id = ?",
            [signal.run_id, signal.signal_id],
        ).fetchone()
    ):
        return False
    con.execute(
        "INSERT INTO signals (run_id, name, signal_id, codec, payload, created_at) "
        "VALUES (?,?,?,?,?,?)",
        [
            signal.run_id,
            signal.name,
            signal.signal_id,
            signal.codec,
            signal.payload,
            signal.created_at,
        ],
    )
    return True


def consume_signal(
    con: duckdb.DuckDBPyConnection, run_id: str, name: str, step: StepRecord
) -> StepRecord | None:
    """Consume the oldest buffered signal ``name`` and record ``step`` receiving it; or None."""
    row = con.execute(
        "SELECT id, codec, payload FROM signals WHERE run_id = ? AND name = ? "
        "AND consumed_at IS NULL ORDER BY id LIMIT 1",
        [run_id, name],
    ).fetchone()
    if row is None:
        return None
    con.execute(
        "UPDATE signals SET consumed_at = ?, consumed_position = ? WHERE id = ?",
        [step.finished_at, step.position, row[0]],
    )
    received = dataclasses.replace(step, result_codec=row[1], result=row[2])
    insert_outcome(con, received)
    return received


def add_async_token(con: duckdb.DuckDBPyConnection, token: str, step: StepRecord) -> None:
    """Park a step under an out-of-band completion token (a known token is left alone)."""
    con.execute(
        "INSERT INTO async_tokens (token, run_id, position, attempt, activity, input_hash, "
        "source_hash, idempotency_key, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT DO NOTHING",
        [
            token,
            step.run_id,
            step.position,
            step.attempts,
            step.activity,
            step.input_hash,
            step.source_hash,
            step.idempotency_key,
            step.started_at,
        ],
    )


def async_token(con: duckdb.DuckDBPyConnection, token: str) -> StepRecord | None:
    """The parked step of an unconsumed token, or None."""
    row = con.execute(
        "SELECT run_id, position, activity, input_hash, source_hash, attempt, created_at, "
        "idempotency_key FROM async_tokens WHERE token = ? AND consumed_at IS NULL",
        [token],
    ).fetchone()
    if row is None:
        return None
    run_id, position, activity, input_hash, source_hash, attempt, created_at, key = row
    return StepRecord(
        run_id=run_id,
        position=position,
        activity=activity,
        status=STEP_STARTED,
        input_hash=input_hash,
        source_hash=source_hash,
        attempts=attempt,
        started_at=created_at,
        idempotency_key=key,
    )


def pending_async_tokens(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[int, str]:
    """Unconsumed tokens of a run, by position."""
    rows = con.execute(
        "SELECT position, token FROM async_tokens WHERE run_id = ? AND consumed_at IS NULL",
        [run_id],
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def spend_async_token(con: duckdb.DuckDBPyConnection, token: str, at: float) -> bool:
    """Spend an unconsumed token without an outcome; False if it was already consumed."""
    return updated(
        con,
        "UPDATE async_tokens SET consumed_at = ? WHERE token = ? AND consumed_at IS NULL",
        [at, token],
    )


def spend_tokens_of(con: duckdb.DuckDBPyConnection, failed: AttemptRecord) -> None:
    """Spend the unconsumed task tokens of a failed attempt: they die with it.

    A late completion must not settle the step while a retry runs (nor after the step failed).
    """
    con.execute(
        "UPDATE async_tokens SET consumed_at = ? WHERE run_id = ? AND position = ? "
        "AND attempt = ? AND consumed_at IS NULL",
        [failed.finished_at, failed.run_id, failed.position, failed.attempt],
    )


def complete_async_token(con: duckdb.DuckDBPyConnection, token: str, outcome: StepRecord) -> bool:
    """Consume the token and record the step's outcome together.

    Refused (False, nothing written) when the token was consumed or spent, when its run has
    finished (completed, failed, cancelled), or when the step already has an outcome: a step
    never gets a second completed row this way.
    """
    if settled(con, outcome.run_id, outcome.position):
        # The activity returned (or failed) by itself: refused before anything is written.
        return False
    used = updated(
        con,
        "UPDATE async_tokens SET consumed_at = ? WHERE token = ? AND consumed_at IS NULL "
        f"AND run_id IN (SELECT run_id FROM runs WHERE {UNFINISHED})",
        [outcome.finished_at, token],
    )
    if not used:
        return False
    insert_outcome(con, outcome)
    return True
