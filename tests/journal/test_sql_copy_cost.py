"""What ``%weft sql`` costs the engine: live runs keep recording, unread BLOBs are not copied.

Review F4: the sandbox copied whole tables, ``steps.result`` BLOBs included, to Parquet while it
held the journal lock that every step's record takes: on an 857 MB journal a ``count(*)`` took
11.5 s (0.8 s before the sandbox) and no live run could record a step meanwhile. Both are
observed here by counting (steps recorded, bytes copied), never by timing.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb import Engine
from weft_nb.errors import JournalError
from weft_nb.journal import sql_sandbox as _sql_sandbox

BLOB_BYTES = 1_000_000
LIVE_STEPS = 4
GATE = threading.Event()


@weft_nb.activity
def big(i: int) -> bytes:
    return random.Random(i).randbytes(BLOB_BYTES)  # incompressible: Parquet keeps its size


@weft_nb.activity
def tick(i: int) -> int:
    if i == 0:
        assert GATE.wait(60), "the query never started copying"  # a hang guard only
    return i


@weft_nb.workflow
def bigs(ctx: Any, n: int) -> int:
    return sum(len(ctx.run(big, i)) for i in range(n))


@weft_nb.workflow
def ticks(ctx: Any, n: int) -> list[int]:
    return [ctx.run(tick, i) for i in range(n)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    GATE.clear()
    with Engine(tmp_path / "j.duckdb") as eng:
        assert eng.run(bigs, 3, run_id="bigs") == 3 * BLOB_BYTES
        yield eng


def _observe(monkeypatch: pytest.MonkeyPatch, on_start: Any = None) -> dict[str, int]:
    """Parquet bytes per table copied by the next query; ``on_start(table)`` runs before each."""
    sizes: dict[str, int] = {}

    def observer(event: str, table: str, target: str) -> None:
        if event == "start" and on_start is not None:
            on_start(table)
        if event == "done":
            sizes[table] = os.path.getsize(target)

    monkeypatch.setattr(_sql_sandbox, "copy_observer", observer)
    return sizes


def test_a_live_run_keeps_recording_steps_while_a_query_copies(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[int] = []
    append_step = engine.journal.append_step

    def counting(row: Any) -> None:
        append_step(row)
        recorded.append(row[1])

    monkeypatch.setattr(engine.journal, "append_step", counting)
    during_copy: list[int] = []

    def while_copying(table: str) -> None:
        if table == "steps":  # the live run records while the query copies this very table
            GATE.set()
            wait_until(lambda: len(recorded) >= LIVE_STEPS, 60, "live steps recorded")
            during_copy.append(len(recorded))

    _observe(monkeypatch, while_copying)
    live = engine.start(ticks, LIVE_STEPS, run_id="live")
    try:
        frame = engine.journal.select_frame("SELECT count(*) AS n FROM steps")
    finally:
        GATE.set()  # never leave the run waiting, whatever failed
        assert live.result(timeout=60) == list(range(LIVE_STEPS))
    assert during_copy == [LIVE_STEPS]
    # The copy is one snapshot, taken when the query started: none of the live steps.
    assert frame["n"].tolist() == [3]
    assert engine.journal.select_frame("SELECT count(*) AS n FROM steps")["n"].tolist() == [
        3 + LIVE_STEPS
    ]


def test_a_query_that_does_not_read_results_copies_no_blobs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _observe(monkeypatch)
    frame = engine.journal.select_frame(
        "SELECT status, count(*) AS n FROM steps GROUP BY status ORDER BY n"
    )
    assert frame.values.tolist() == [["completed", 3]]
    assert sizes["steps"] < BLOB_BYTES // 10, sizes  # 3 MB of results were not copied


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sum(octet_length(result)) FROM steps",
        "SELECT sum(octet_length(s.result)) FROM steps s",
        "SELECT sum(octet_length(r)) FROM (SELECT result AS r FROM steps)",
        "SELECT sum(octet_length(COLUMNS('^res.lt$'))) FROM steps",
        "SELECT sum(octet_length(s.result)) FROM (SELECT * FROM steps) s",
        "SELECT sum(octet_length(struct_extract(s, 'result'))) FROM steps s",
        "SELECT sum(octet_length(x)) FROM steps AS s(a, b, c, d, e, f, g, h, x)",  # x: result
        "EXPLAIN ANALYZE SELECT sum(octet_length(result)) FROM steps",
    ],
)
def test_a_query_that_may_read_results_gets_them(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, sql: str
) -> None:
    [(total,)] = engine.journal.query("SELECT sum(octet_length(result)) FROM steps")
    assert total > 3 * BLOB_BYTES
    sizes = _observe(monkeypatch)
    frame = engine.journal.select_frame(sql)
    assert sizes["steps"] > 3 * BLOB_BYTES // 2, sizes
    if not sql.startswith("EXPLAIN"):
        assert frame.values.tolist() == [[total]]


def test_pivot_is_refused_with_a_word_the_user_knows(engine: Engine) -> None:
    with pytest.raises(JournalError, match="PIVOT is not supported here; use GROUP BY") as info:
        engine.journal.select_frame("PIVOT steps ON status USING count(*)")
    assert "MULTI" not in str(info.value)


def test_an_idle_release_during_the_copy_does_not_lose_the_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle engine closes its connection (and so the copying cursor) between two tables."""
    with Engine(tmp_path / "j.duckdb", idle_release=0.01) as eng:
        assert eng.run(bigs, 3, run_id="bigs") == 3 * BLOB_BYTES
        [(total,)] = eng.journal.query("SELECT sum(octet_length(result)) FROM steps")
        released: list[bool] = []
        release_if_idle = eng.journal.release_if_idle

        def counting(min_idle: float) -> bool:
            done = release_if_idle(min_idle)
            if done:
                released.append(done)
            return done

        monkeypatch.setattr(eng.journal, "release_if_idle", counting)
        before_copy: list[int] = []

        def after_the_first_table(table: str) -> None:
            if not before_copy:  # the copy has begun: the cursor is open, the lock released
                before_copy.append(len(released))
            elif len(before_copy) == 1:  # the second table: let the engine release it first
                wait_until(lambda: len(released) > before_copy[0], 60, "an idle release")
                before_copy.append(len(released))

        sizes = _observe(monkeypatch, after_the_first_table)
        frame = eng.journal.select_frame(
            "SELECT (SELECT count(*) FROM runs) AS r, sum(octet_length(result)) AS b FROM steps"
        )
        assert len(before_copy) == 2  # released during the copy, and the query still answered
        assert frame.values.tolist() == [[1, total]]
        assert sizes["steps"] > 3 * BLOB_BYTES // 2


def test_a_reader_that_closes_its_connection_after_each_use_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``weft-nb sql`` reads through a read-only journal, whose connection closes after each use."""
    from weft_nb.journal.duckdb_journal import DuckDBJournal

    with Engine(tmp_path / "j.duckdb") as eng:
        assert eng.run(bigs, 3, run_id="bigs") == 3 * BLOB_BYTES
        [(total,)] = eng.journal.query("SELECT sum(octet_length(result)) FROM steps")
    reader = DuckDBJournal(tmp_path / "j.duckdb", read_only=True)
    try:
        sizes = _observe(monkeypatch)
        frame = reader.select_frame("SELECT count(*) AS n, sum(octet_length(result)) FROM steps")
        assert frame.values.tolist() == [[3, total]]
        assert sizes["steps"] > 3 * BLOB_BYTES // 2
        assert reader.select_frame("SELECT count(*) AS n FROM steps")["n"].tolist() == [3]
    finally:
        reader.close()
    with Engine(tmp_path / "j.duckdb") as eng:  # the reader left nothing open
        assert eng.run(bigs, 3, run_id="bigs") == 3 * BLOB_BYTES
