"""The DuckDB journal's record of an activity's progress: heartbeats and checkpoints.

Each function runs on the connection of a transaction the
`DuckDBJournal` opened, so what one writes commits all
together or not at all.
"""

from __future__ import annotations

from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.journal.protocol import CheckpointRecord, HeartbeatRecord
from weft_nb.journal.sql_records import (
    CHECKPOINT_COLUMNS,
    HEARTBEAT_COLUMNS,
    INSERT_HEARTBEAT,
    checkpoint_from_row,
    heartbeat_from_row,
    heartbeat_row,
)


def record_heartbeats(con: duckdb.DuckDBPyConnection, heartbeats: list[HeartbeatRecord]) -> None:
    """Append heartbeat rows."""
    con.executemany(INSERT_HEARTBEAT, [heartbeat_row(hb) for hb in heartbeats])


def latest_heartbeat(
    con: duckdb.DuckDBPyConnection, run_id: str, position: int, before_attempt: int | None
) -> HeartbeatRecord | None:
    """The newest current heartbeat of a step (of an attempt before ``before_attempt``)."""
    earlier = "" if before_attempt is None else " AND attempt < ?"
    row = con.execute(
        f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats WHERE run_id = ? AND position = ? "
        f"AND NOT superseded{earlier} "
        "ORDER BY id DESC LIMIT 1",  # insertion order: attempt numbers repeat after a crash
        [run_id, position] + ([] if before_attempt is None else [before_attempt]),
    ).fetchone()
    return heartbeat_from_row(row) if row else None


def latest_heartbeats(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[int, HeartbeatRecord]:
    """The newest current heartbeat of each step of a run, by position."""
    # arg_max of a row (a tuple in Python) costs about half a QUALIFY window.
    rows = con.execute(
        f"SELECT arg_max(row({HEARTBEAT_COLUMNS}), id) FROM heartbeats "
        "WHERE run_id = ? AND NOT superseded GROUP BY position",
        [run_id],
    ).fetchall()
    return {row[0][1]: heartbeat_from_row(row[0]) for row in rows}


def heartbeat_history(con: duckdb.DuckDBPyConnection, run_id: str) -> list[HeartbeatRecord]:
    """Every current heartbeat of a run, in insertion order (``id``: timestamps may repeat)."""
    rows = con.execute(
        f"SELECT {HEARTBEAT_COLUMNS} FROM heartbeats WHERE run_id = ? AND NOT superseded "
        "ORDER BY id",
        [run_id],
    ).fetchall()
    return [heartbeat_from_row(row) for row in rows]


def add_checkpoint(
    con: duckdb.DuckDBPyConnection, checkpoint: CheckpointRecord, keep: int
) -> list[CheckpointRecord]:
    """Add a checkpoint row and drop all but the newest ``keep`` of that step; return those."""
    cp = checkpoint
    values: list[Any] = [
        cp.run_id,
        cp.position,
        cp.attempt,
        cp.seq,
        cp.created_at,
        cp.path,
        cp.size,
        cp.codec,
    ]
    con.execute(f"INSERT INTO checkpoints ({CHECKPOINT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", values)
    stale = con.execute(
        f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = ? AND position = ? "
        "AND NOT superseded ORDER BY seq DESC OFFSET ?",
        [cp.run_id, cp.position, keep],
    ).fetchall()
    if stale:
        con.execute(
            "DELETE FROM checkpoints WHERE run_id = ? AND position = ? AND seq <= ? "
            "AND NOT superseded",
            [cp.run_id, cp.position, max(row[3] for row in stale)],
        )
    return [checkpoint_from_row(row) for row in stale]


def checkpoints_of(
    con: duckdb.DuckDBPyConnection, run_id: str, position: int
) -> list[CheckpointRecord]:
    """Current checkpoints of a step, newest first."""
    rows = con.execute(
        f"SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE run_id = ? AND position = ? "
        "AND NOT superseded ORDER BY seq DESC",
        [run_id, position],
    ).fetchall()
    return [checkpoint_from_row(row) for row in rows]


def last_checkpoint_seq(con: duckdb.DuckDBPyConnection, run_id: str, position: int) -> int:
    """The highest checkpoint number of a step, superseded ones included; 0 if none."""
    row = con.execute(
        "SELECT coalesce(max(seq), 0) FROM checkpoints WHERE run_id = ? AND position = ?",
        [run_id, position],
    ).fetchone()
    return int(row[0]) if row else 0
