"""A journal written before runs had ``parent_run_id`` (child workflows) opens and migrates."""

from __future__ import annotations

from pathlib import Path

import duckdb

from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import RunRecord


def _run(run_id: str, parent: str | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow="train",
        version="v1",
        status="running",
        on_change="rerun",
        input_codec="json",
        input=b"null",
        created_at=1.0,
        updated_at=1.0,
        parent_run_id=parent,
    )


def _older_journal(path: Path) -> None:
    """A journal as a weft_nb without child workflows left it, with one run in it."""
    DuckDBJournal(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("ALTER TABLE runs DROP COLUMN parent_run_id")
        con.execute(
            "INSERT INTO runs (run_id, workflow, version, status, on_change, input_codec, input, "
            "created_at, updated_at) VALUES ('old', 'train', 'v1', 'running', 'rerun', 'json', "
            "'null', 1.0, 1.0)"
        )


def _columns(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'"
        ).fetchall()
    return [row[0] for row in rows]


def test_an_older_journal_reads_read_only_with_no_parents(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _older_journal(path)
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert reader.list_runs() == [_run("old")]
        assert reader.get_run("old") == _run("old")
    finally:
        reader.close()
    assert "parent_run_id" not in _columns(path)  # a reader changes nothing


def test_a_writer_adds_the_column_and_keeps_the_old_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _older_journal(path)
    writer = DuckDBJournal(path)
    try:
        writer.create_run(_run("child", parent="old"))
        assert writer.list_runs() == [_run("child", parent="old"), _run("old")]
    finally:
        writer.close()
    assert "parent_run_id" in _columns(path)
    with duckdb.connect(str(path)) as con:  # an older weft_nb's insert still works
        con.execute(
            "INSERT INTO runs (run_id, workflow, version, status, on_change, input_codec, input, "
            "created_at, updated_at) VALUES ('older', 'train', 'v1', 'running', 'rerun', 'json', "
            "'null', 1.0, 1.0)"
        )
    reader = DuckDBJournal(path, read_only=True)
    try:
        assert reader.get_run("older") == _run("older")
        version = reader.query("SELECT value FROM weft_meta WHERE key = 'schema_version'")
        assert version == [("1",)]
    finally:
        reader.close()
