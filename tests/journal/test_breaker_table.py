"""A journal written before the ``breakers`` table existed still opens, read-only and to write."""

from __future__ import annotations

from pathlib import Path

import duckdb

from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import BreakerRecord


def _older_journal(path: Path) -> None:
    """A journal as a weft_nb without circuit breakers left it: no ``breakers`` table."""
    DuckDBJournal(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE breakers")


def test_an_older_journal_reads_as_having_no_breakers(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _older_journal(path)
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert reader.breakers() == []
        assert reader.list_runs() == []
    finally:
        reader.close()


def test_a_writer_adds_the_breakers_table_to_an_older_journal(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _older_journal(path)
    record = BreakerRecord(
        activity="charge", state="open", failures=5, opened_at=10.0, updated_at=10.0
    )
    writer = DuckDBJournal(path)
    try:
        writer.save_breaker(record)
    finally:
        writer.close()
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert reader.breakers() == [record]
        version = reader.query("SELECT value FROM weft_meta WHERE key = 'schema_version'")
        assert version == [("1",)]
    finally:
        reader.close()
