"""The DuckDB journal's circuit breakers: one row per activity that has one."""

from __future__ import annotations

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.journal.protocol import BreakerRecord

BREAKER_COLUMNS = "activity, state, failures, opened_at, updated_at, half_open_at"
_NAMES = BREAKER_COLUMNS.split(", ")


def save_breaker(con: duckdb.DuckDBPyConnection, breaker: BreakerRecord) -> None:
    """Store an activity's circuit breaker, replacing the one stored under its name."""
    con.execute(
        f"INSERT OR REPLACE INTO breakers ({BREAKER_COLUMNS}) VALUES (?,?,?,?,?,?)",
        [getattr(breaker, name) for name in _NAMES],
    )


def all_breakers(con: duckdb.DuckDBPyConnection) -> list[BreakerRecord]:
    """Every stored circuit breaker (none in a journal an older weft_nb wrote, read-only)."""
    try:
        rows = con.execute(f"SELECT {BREAKER_COLUMNS} FROM breakers ORDER BY activity").fetchall()
    except duckdb.CatalogException:  # read-only, and older than the breakers table
        return []
    return [BreakerRecord(**dict(zip(_NAMES, row, strict=True))) for row in rows]
