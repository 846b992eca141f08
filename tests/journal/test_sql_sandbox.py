"""Users' SQL (``%weft sql``, ``weft-nb sql``) cannot change the journal or write any file.

Issue 12.1: ``EXPLAIN ANALYZE DELETE FROM runs`` passed the statement-type check and deleted every
run on the engine's read-write connection; afterwards a completed run executed its activity
again. Two layers are tested separately: the policy refuses writes (also hidden in EXPLAIN,
after comments, in odd case, as a second statement), and the sandbox, with the policy bypassed,
still changes nothing and writes no file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalError

REPO = Path(__file__).resolve().parents[2]
CALLS: list[int] = []


@weft_nb.activity
def record_call(x: int) -> int:
    CALLS.append(x)
    return x * 2


@weft_nb.workflow
def once(ctx: Any, x: int) -> int:
    return ctx.run(record_call, x)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    with Engine(tmp_path / "j.duckdb") as eng:
        assert eng.run(once, 4, run_id="done") == 8
        yield eng


def _state(engine: Engine) -> list[Any]:
    return engine.journal.query(
        "SELECT (SELECT list(run_id || ':' || status ORDER BY run_id) FROM runs), "
        "(SELECT count(*) FROM steps), (SELECT count(*) FROM duckdb_tables())"
    )


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def _hostile(target: Path) -> list[str]:
    out = f"'{target / 'out.csv'}'"
    return [
        "EXPLAIN ANALYZE DELETE FROM runs",
        "EXPLAIN ANALYZE UPDATE runs SET status = 'failed'",
        "EXPLAIN ANALYZE DROP TABLE steps",
        f"EXPLAIN ANALYZE COPY runs TO {out}",
        "EXPLAIN (ANALYZE) DELETE FROM steps",
        "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM steps",
        "/* hi */ eXpLaIn\n AnAlYzE -- a comment\n DeLeTe FROM runs",
        "SELECT 1; DELETE FROM runs",
        "SELECT 1; EXPLAIN ANALYZE DELETE FROM runs",
        "WITH r AS (SELECT * FROM runs) DELETE FROM steps",
        "DELETE FROM runs",
        f"COPY runs TO {out}",
        f"ATTACH '{target / 'other.duckdb'}' AS other",
        "INSTALL httpfs",
        "LOAD json",
        "SET threads = 1",
        "PRAGMA enable_profiling",
        "CHECKPOINT",
        f"EXPORT DATABASE '{target / 'exported'}'",
        "EXPLAIN ANALYZE CHECKPOINT",
        f"EXPLAIN ANALYZE ATTACH '{target / 'other.duckdb'}'",
    ]


def test_writes_are_refused_by_name_and_change_nothing(engine: Engine, tmp_path: Path) -> None:
    before, files = _state(engine), _files(tmp_path)
    for sql in _hostile(tmp_path):
        with pytest.raises(JournalError, match="only read-only queries|does not parse") as caught:
            engine.journal.select_frame(sql)
        assert str(tmp_path / "j.duckdb") in caught.value.path, sql
        assert _state(engine) == before, sql
    assert _files(tmp_path) == files
    # the completed run replays from the journal: its activity does not run again
    assert engine.run(once, 4, run_id="done") == 8
    assert CALLS == [4]


def test_the_sandbox_itself_changes_nothing_even_without_the_policy(
    engine: Engine, tmp_path: Path
) -> None:
    """Every hostile statement executed in the sandbox, no statement check in front of it."""
    from weft_nb.journal.sql_sandbox import _export, _sandbox, _staging

    before, files = _state(engine), _files(tmp_path)
    with _staging(engine.journal.path) as folder:
        with engine.journal.connection() as con:
            box = _sandbox(folder, _export(con, folder))
        try:
            outcomes = {}
            extra = [
                "DROP TABLE runs",
                "RESET lock_configuration",
                "SET enable_external_access = true",
            ]
            for sql in [*_hostile(tmp_path), *extra]:
                try:
                    box.execute(sql)
                    outcomes[sql] = "ran"
                except duckdb.Error as exc:
                    outcomes[sql] = str(exc).splitlines()[0]
            # file access and settings are refused inside; table changes hit only the copy
            refused = ("INSTALL httpfs", "SET threads = 1", "PRAGMA enable_profiling", *extra[1:])
            for sql in refused:
                assert outcomes[sql] != "ran", (sql, outcomes[sql])
            with pytest.raises(duckdb.Error, match="disabled"):
                box.execute("LOAD httpfs")  # not built in: would read a file
            for sql, outcome in outcomes.items():
                if "COPY" in sql or "ATTACH" in sql or "EXPORT" in sql:
                    assert outcome != "ran", (sql, outcome)
            with pytest.raises(duckdb.Error):
                box.execute(f"SELECT * FROM read_text('{tmp_path / 'j.duckdb'}')")
        finally:
            box.close()
    assert _state(engine) == before
    assert _files(tmp_path) == files
    assert engine.run(once, 4, run_id="done") == 8
    assert CALLS == [4]


def test_read_queries_still_work_and_see_every_step(engine: Engine, tmp_path: Path) -> None:
    frame = engine.journal.select_frame(
        "WITH s AS (SELECT * FROM steps) SELECT r.run_id, count(*) AS n FROM runs r "
        "JOIN s USING (run_id) GROUP BY ALL"
    )
    assert frame.to_dict("records") == [{"run_id": "done", "n": 1}]
    plan = engine.journal.select_frame("EXPLAIN ANALYZE SELECT * FROM runs")
    assert len(plan) == 1
    frame = engine.journal.select_frame("/* c */ select count(*) AS n from RUNS; SELECT 2 AS m")
    assert frame.to_dict("records") == [{"m": 2}]
    tables = engine.journal.select_frame("SELECT table_name FROM duckdb_tables() ORDER BY 1")
    assert "steps" in list(tables["table_name"])
    # tables named only inside a string are still copied whole
    for sql in (
        "SELECT count(*) AS n FROM query_table('steps')",
        "SELECT * FROM query('SELECT count(*) AS n FROM steps')",
        'SELECT count(*) AS n FROM "STEPS" s JOIN Runs USING (run_id)',
    ):
        assert engine.journal.select_frame(sql).to_dict("records") == [{"n": 1}], sql
    with pytest.raises(JournalError, match="(?s)the query failed.*no file access"):
        engine.journal.select_frame(f"SELECT * FROM read_text('{tmp_path / 'j.duckdb'}')")


def test_the_magic_refuses_explain_analyze_delete_with_a_usage_error(ip: InteractiveShell) -> None:
    ip.run_cell_magic("weft_activity", "double(n)", "n * 2")
    ip.run_cell_magic("weft_workflow", "flow(n)", 'ctx.run("double", n)')
    ip.run_line_magic("weft", "run flow n=3 --id m1")
    with pytest.raises(UsageError, match="EXPLAIN .*SELECT queries only.*DELETE"):
        ip.run_line_magic("weft", 'sql "EXPLAIN ANALYZE DELETE FROM runs"')
    frame = ip.run_line_magic("weft", 'sql "SELECT run_id, status FROM runs"')
    assert frame.to_dict("records") == [{"run_id": "m1", "status": "completed"}]


def test_the_command_line_uses_the_same_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    with Engine(path) as eng:
        eng.run(once, 1, run_id="cli")
    target = tmp_path / "written.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for sql in (f"EXPLAIN ANALYZE COPY runs TO '{target}'", "EXPLAIN ANALYZE DELETE FROM runs"):
        done = subprocess.run(
            [sys.executable, "-m", "weft_nb", "--journal", str(path), "sql", sql],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
        assert done.returncode == 1, done
        assert "only read-only queries" in done.stderr
    assert not target.exists()
    with Engine(path) as eng:
        assert [r.run_id for r in eng.runs()] == ["cli"]


def test_no_room_for_the_copy_is_a_named_error(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from weft_nb.errors import JournalIOError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    with pytest.raises(JournalIOError, match="TMPDIR") as caught:
        engine.journal.select_frame("SELECT * FROM runs")
    assert caught.value.path == engine.journal.path
