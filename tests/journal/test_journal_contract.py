"""The contract every journal backend must satisfy (see ``weft_nb/journal/protocol.py``).

Each test runs once per backend in ``BACKENDS`` (``DuckDBJournal`` and ``MemoryJournal``), as
huey's ``StorageTests`` run against every storage. A factory takes a directory and returns a
journal stored at a fixed place for it, so calling it again on the same directory reopens the
same storage (that is how durability is checked). A new backend adds one ``pytest.param`` line
and a way to list its stored rows in :func:`stored_rows`.

Besides the protocol's operations, the suite reads every stored row (:func:`stored_rows`) where
the protocol promises something its reads cannot show: that superseded rows are kept for audit,
and that a failed operation wrote nothing. That inspection is each backend's own (SQL for DuckDB,
``MemoryJournal.stored_rows``); the protocol has no SQL.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from weft_nb.errors import JournalClosedError, JournalError, JournalLockedError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.memory_journal import MemoryJournal
from weft_nb.journal.memory_store import MemoryStore
from weft_nb.journal.protocol import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    AttemptRecord,
    BreakerRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    Journal,
    RunOutcome,
    RunRecord,
    SignalRecord,
    StepRecord,
)
from weft_nb.journal.recorded_steps import RecordedSteps

JournalFactory = Callable[[Path], Journal]


def _duckdb_backend(folder: Path) -> Journal:
    return DuckDBJournal(folder / "j.duckdb")


_MEMORY_STORES: dict[Path, MemoryStore] = {}  # emptied after each test (see the fixture)


def _memory_backend(folder: Path) -> Journal:
    return MemoryJournal(_MEMORY_STORES.setdefault(folder, MemoryStore()))


BACKENDS = [
    pytest.param(_duckdb_backend, id="duckdb"),
    pytest.param(_memory_backend, id="memory"),
]

ALL_BYTES = bytes(range(256)) * 3  # every byte value, NUL included


# -- record builders -------------------------------------------------------------------------


def make_run(
    run_id: str = "run-1",
    *,
    created_at: float = 100.0,
    status: str = RUNNING,
    workflow: str = "train",
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version="v1",
        status=status,
        on_change="rerun",
        input_codec="pickle",
        input=b"\x80\x05input\x00" + run_id.encode(),
        created_at=created_at,
        updated_at=created_at,
    )


def make_step(
    run_id: str = "run-1",
    position: int = 0,
    *,
    status: str = STEP_COMPLETED,
    key: str | None = None,
    result: bytes | None = b'{"ok":true}',
    activity: str = "fit",
) -> StepRecord:
    done = status != STEP_STARTED
    return StepRecord(
        run_id=run_id,
        position=position,
        activity=activity,
        status=status,
        input_hash=f"in-{position}",
        source_hash=f"src-{position}",
        attempts=0 if not done else 1,
        started_at=1000.0 + position,
        finished_at=1000.5 + position if done else None,
        result_codec="json" if done and result is not None else None,
        result=result if done else None,
        error=None,
        idempotency_key=key,
    )


def make_attempt(run_id: str = "run-1", position: int = 0, attempt: int = 1) -> AttemptRecord:
    return AttemptRecord(
        run_id=run_id,
        position=position,
        attempt=attempt,
        activity="fit",
        started_at=2000.0 + attempt,
        finished_at=2000.25 + attempt,
        error_type="ValueError",
        error_message=f"attempt {attempt} failed: ünïcode ✓",
        traceback=f'Traceback (most recent call last):\n  File "x.py", line {attempt}\n',
    )


def make_heartbeat(
    run_id: str = "run-1",
    position: int = 0,
    attempt: int = 1,
    recorded_at: float = 3000.0,
    details: Any = b'{"epoch":1}',
    beat: int = 1,
) -> HeartbeatRecord:
    return HeartbeatRecord(
        run_id=run_id,
        position=position,
        attempt=attempt,
        recorded_at=recorded_at,
        codec="json",
        details=details,
        beat=beat,
    )


def make_checkpoint(
    run_id: str = "run-1", position: int = 0, seq: int = 1, attempt: int = 1
) -> CheckpointRecord:
    return CheckpointRecord(
        run_id=run_id,
        position=position,
        attempt=attempt,
        seq=seq,
        created_at=4000.0 + seq,
        path=f"{run_id}/{position}/{seq:08d}-a{attempt}.pkl",
        size=100 + seq,
        codec="pickle",
    )


def make_event(
    run_id: str = "run-1",
    position: int | None = 0,
    created_at: float = 5000.0,
    kind: str = "note",
    message: Any = "something happened",
) -> EventRecord:
    return EventRecord(
        run_id=run_id, position=position, kind=kind, message=message, created_at=created_at
    )


def make_signal(
    name: str = "go", signal_id: str | None = None, payload: bytes = b"1", at: float = 10.0
) -> SignalRecord:
    return SignalRecord(
        run_id="run-1", name=name, signal_id=signal_id, codec="json", payload=payload, created_at=at
    )


def stored_rows(journal: Journal, table: str, **match: Any) -> list[dict[str, Any]]:
    """Every stored row of ``table`` (superseded ones too) whose columns equal ``match``."""
    if isinstance(journal, DuckDBJournal):
        names = [
            row[0]
            for row in journal.query(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index",
                [table],
            )
        ]
        rows = [
            dict(zip(names, row, strict=True)) for row in journal.query(f"SELECT * FROM {table}")
        ]
    elif isinstance(journal, MemoryJournal):
        rows = journal.stored_rows(table)
    else:
        raise TypeError(f"no way to list the rows of {journal!r}")
    return [row for row in rows if all(row[k] == v for k, v in match.items())]


def count(journal: Journal, table: str, run_id: str, **match: Any) -> int:
    return len(stored_rows(journal, table, run_id=run_id, **match))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> JournalFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def journal(factory: JournalFactory, tmp_path: Path) -> Iterator[Journal]:
    opened = factory(tmp_path)
    yield opened
    opened.close()
    _MEMORY_STORES.clear()


@pytest.fixture
def reopen(journal: Journal, factory: JournalFactory, tmp_path: Path) -> Iterator[Any]:
    """Close ``journal`` and open a new instance on the same storage (closed at teardown)."""
    opened: list[Journal] = []

    def _reopen() -> Journal:
        journal.close()
        fresh = factory(tmp_path)
        opened.append(fresh)
        return fresh

    yield _reopen
    for item in opened:
        item.close()


# -- runs ------------------------------------------------------------------------------------


class TestRuns:
    def test_the_first_trace_context_kept_stays_and_survives_a_reopen(
        self, journal: Journal, reopen: Any
    ) -> None:
        journal.create_run(make_run())
        assert journal.trace_context("run-1") is None
        first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert journal.trace_context("run-1", keep=first) == first
        assert journal.trace_context("run-1", keep="00-another-01") == first
        assert journal.trace_context("run-2") is None
        assert reopen().trace_context("run-1") == first

    def test_create_and_get_round_trips_every_field(self, journal: Journal) -> None:
        run = make_run()
        run.input = ALL_BYTES
        run.result_codec, run.result, run.error = "pickle", b"\x00\xff", "an error"
        journal.create_run(run)
        assert journal.get_run("run-1") == run
        assert journal.get_run("missing") is None

    def test_a_child_run_keeps_its_parent_link_across_a_reopen(
        self, journal: Journal, reopen: Any
    ) -> None:
        journal.create_run(make_run("parent"))
        child = make_run("parent.3", created_at=200.0)
        child.parent_run_id = "parent"
        journal.create_run(child)
        assert journal.get_run("parent.3") == child
        assert journal.get_run("parent") == make_run("parent")  # no parent: None
        fresh = reopen()
        assert [(r.run_id, r.parent_run_id) for r in fresh.list_runs()] == [
            ("parent", None),
            ("parent.3", "parent"),
        ]
        assert fresh.finish_run("parent.3", RunOutcome(status=COMPLETED, at=5.0))
        finished = fresh.get_run("parent.3")
        assert finished is not None
        assert finished.parent_run_id == "parent"  # an outcome keeps the link

    def test_empty_input_bytes_stay_bytes(self, journal: Journal) -> None:
        run = make_run()
        run.input = b""
        journal.create_run(run)
        got = journal.get_run("run-1")
        assert got is not None
        assert got.input == b""

    def test_duplicate_run_id_is_rejected_and_keeps_the_original(self, journal: Journal) -> None:
        journal.create_run(make_run(workflow="first"))
        with pytest.raises(JournalError, match="already exists"):
            journal.create_run(make_run(workflow="second"))
        got = journal.get_run("run-1")
        assert got is not None
        assert got.workflow == "first"
        assert len(journal.list_runs()) == 1

    def test_list_runs_is_oldest_first_whatever_the_insert_order(self, journal: Journal) -> None:
        for run_id, created in [("c", 30.0), ("a", 10.0), ("d", 40.0), ("b", 20.0)]:
            journal.create_run(make_run(run_id, created_at=created))
        assert [r.run_id for r in journal.list_runs()] == ["a", "b", "c", "d"]

    def test_children_of_finds_a_runs_own_children_oldest_first(
        self, journal: Journal, reopen: Any
    ) -> None:
        journal.create_run(make_run("parent"))
        for run_id, parent, created in [
            ("parent.9", "parent", 300.0),
            ("parent.2", "parent", 200.0),
            ("parent.2.0", "parent.2", 250.0),  # a grandchild is its parent's child only
            ("other.1", "other", 150.0),
        ]:
            child = make_run(run_id, created_at=created)
            child.parent_run_id = parent
            journal.create_run(child)
        assert [r.run_id for r in journal.children_of("parent")] == ["parent.2", "parent.9"]
        assert journal.children_of("parent")[0] == journal.get_run("parent.2")
        assert [r.run_id for r in journal.children_of("parent.2")] == ["parent.2.0"]
        assert journal.children_of("parent.9") == []
        assert journal.children_of("nobody") == []
        assert [r.run_id for r in reopen().children_of("parent")] == ["parent.2", "parent.9"]

    def test_list_runs_filters_by_status(self, journal: Journal) -> None:
        statuses = [RUNNING, COMPLETED, FAILED, RUNNING, CANCELLED, INTERRUPTED]
        for i, status in enumerate(statuses):
            journal.create_run(make_run(f"r{i}", created_at=float(10 - i), status=status))
        assert [r.run_id for r in journal.list_runs(RUNNING)] == ["r3", "r0"]
        assert [r.run_id for r in journal.list_runs(COMPLETED)] == ["r1"]
        assert [r.run_id for r in journal.list_runs(INTERRUPTED)] == ["r5"]
        assert journal.list_runs("no-such-status") == []
        assert len(journal.list_runs()) == len(statuses)

    def test_finish_run_records_outcome_and_keeps_the_rest(self, journal: Journal) -> None:
        run = make_run()
        journal.create_run(run)
        journal.create_run(make_run("other"))
        journal.finish_run(
            "run-1",
            RunOutcome(status=COMPLETED, at=150.5, result_codec="pickle", result=ALL_BYTES),
        )
        got = journal.get_run("run-1")
        expected = dataclasses.replace(
            run, status=COMPLETED, updated_at=150.5, result_codec="pickle", result=ALL_BYTES
        )
        assert got == expected
        other = journal.get_run("other")
        assert other is not None
        assert other.status == RUNNING

    def test_finish_run_failed_records_the_error(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.finish_run(
            "run-1", RunOutcome(status=FAILED, at=151.0, error='{"type": "ValueError"}')
        )
        got = journal.get_run("run-1")
        assert got is not None
        assert (got.status, got.updated_at, got.error) == (FAILED, 151.0, '{"type": "ValueError"}')
        assert got.result is None
        assert got.result_codec is None

    def test_set_run_status_changes_only_status_and_time(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.finish_run(
            "run-1",
            RunOutcome(status=INTERRUPTED, at=120.0, result_codec="json", result=b"1", error="why"),
        )
        journal.set_run_status("run-1", CANCELLED, 130.0)
        got = journal.get_run("run-1")
        assert got is not None
        assert (got.status, got.updated_at) == (CANCELLED, 130.0)
        assert (got.result_codec, got.result, got.error) == ("json", b"1", "why")
        assert got.created_at == 100.0


# -- steps and markers -----------------------------------------------------------------------


class TestSteps:
    def test_record_step_round_trips_every_field(self, journal: Journal) -> None:
        journal.create_run(make_run())
        step = StepRecord(
            run_id="run-1",
            position=7,
            activity="train_model",
            status=STEP_COMPLETED,
            input_hash="a" * 64,
            source_hash="b" * 64,
            attempts=3,
            started_at=1234.125,
            finished_at=1299.875,
            result_codec="pickle",
            result=ALL_BYTES,
            error=None,
            idempotency_key=None,
        )
        failed = StepRecord(
            run_id="run-1",
            position=8,
            activity="evaluate",
            status=STEP_FAILED,
            input_hash="c",
            source_hash="d",
            attempts=5,
            started_at=1300.0,
            finished_at=1301.0,
            result_codec=None,
            result=None,
            error='{"type": "RuntimeError", "message": "boom"}',
            idempotency_key=None,
        )
        journal.record_step(step)
        journal.record_step(failed)
        assert journal.load_steps("run-1") == {7: step, 8: failed}

    @pytest.mark.parametrize("positions", [(0, 1, 2, 3), (2, 0, 5, 1, 3)])
    def test_step_columns_hold_what_load_steps_does(
        self, journal: Journal, positions: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Positions 0..n-1 in order, and with gaps out of order: both ways a replay indexes."""
        for position in positions:
            journal.record_step(make_step("run-1", position, result=b"[%d]" % position))
        last = max(positions)
        journal.record_marker(make_step("run-1", last + 1, status=STEP_STARTED, key="k"))
        failed = make_step("run-1", last + 2, status=STEP_FAILED, result=None)
        failed.error = "gave up"
        journal.record_step(failed)
        journal.record_step(make_step("run-2", 4, activity="other"))
        journal.record_step(make_step("run-1", last + 3))
        journal.supersede_from("run-1", last + 3, make_event(position=last + 3))
        expected = journal.load_steps("run-1")
        assert sorted(expected) == sorted({*positions, last + 1, last + 2})
        numpy = pytest.importorskip("numpy")  # DuckDB's columnar fetch, and rows without it
        for with_numpy in (True, False):
            if not with_numpy:
                monkeypatch.delitem(sys.modules, "numpy")
            recorded = RecordedSteps("run-1", journal.step_columns("run-1"))
            assert len(recorded) == len(expected)
            assert list(recorded) == sorted(expected)
            assert last + 1 in recorded and last + 3 not in recorded and -1 not in recorded
            first = min(positions)
            assert recorded.result[recorded.row_of(first)] == b"[%d]" % first
            got = {p: recorded.pop(p) for p in sorted(expected)}
            assert got == expected
            assert all(type(r.result) in (bytes, type(None)) for r in got.values() if r)
            assert len(recorded) == 0 and recorded.pop(first) is None
            assert recorded.row_of(first) == -1
        monkeypatch.setitem(sys.modules, "numpy", numpy)

    def test_step_columns_of_a_run_without_steps_are_empty(self, journal: Journal) -> None:
        recorded = RecordedSteps("nobody", journal.step_columns("nobody"))
        assert len(recorded) == 0 and list(recorded) == [] and recorded.pop(0) is None

    def test_load_steps_is_per_run_and_keyed_by_position(self, journal: Journal) -> None:
        for position in (2, 0, 1):
            journal.record_step(make_step("run-1", position))
        journal.record_step(make_step("run-2", 0, activity="other"))
        steps = journal.load_steps("run-1")
        assert sorted(steps) == [0, 1, 2]
        assert all(s.run_id == "run-1" and s.position == p for p, s in steps.items())
        assert journal.load_steps("run-2")[0].activity == "other"
        assert journal.load_steps("nobody") == {}

    def test_record_step_with_heartbeat_stores_both(self, journal: Journal) -> None:
        hb = make_heartbeat(position=4, details=ALL_BYTES)
        journal.record_step(make_step(position=4), heartbeat=hb)
        assert journal.load_steps("run-1")[4].status == STEP_COMPLETED
        assert journal.latest_heartbeat("run-1", 4) == hb

    def test_marker_is_visible_until_its_outcome_replaces_it(self, journal: Journal) -> None:
        marker = make_step(position=3, status=STEP_STARTED, key="charge-card-42")
        journal.record_marker(marker)
        assert journal.load_steps("run-1") == {3: marker}

        done = make_step(position=3, key="charge-card-42", result=b'"receipt-1"')
        journal.record_step(done)
        assert journal.load_steps("run-1") == {3: done}
        rows = stored_rows(journal, "steps", run_id="run-1", position=3, superseded=False)
        assert [(r["status"], r["idempotency_key"]) for r in rows] == [
            (STEP_COMPLETED, "charge-card-42")
        ], "the marker must be replaced"

    def test_failed_keyed_outcome_also_replaces_the_marker(self, journal: Journal) -> None:
        journal.record_marker(make_step(position=0, status=STEP_STARTED, key="k"))
        hb = make_heartbeat(position=0, attempt=2)
        failed = make_step(position=0, status=STEP_FAILED, key="k", result=None)
        failed.error = "gave up"
        journal.record_step(failed, heartbeat=hb)
        assert journal.load_steps("run-1") == {0: failed}
        assert count(journal, "steps", "run-1", superseded=False) == 1
        assert journal.latest_heartbeat("run-1", 0) == hb

    def test_replacing_a_marker_leaves_other_markers_alone(self, journal: Journal) -> None:
        journal.record_marker(make_step("run-1", 1, status=STEP_STARTED, key="k1"))
        journal.record_marker(make_step("run-1", 2, status=STEP_STARTED, key="k2"))
        journal.record_marker(make_step("run-2", 1, status=STEP_STARTED, key="k1"))
        journal.record_step(make_step("run-1", 1, key="k1"))
        steps = journal.load_steps("run-1")
        assert {p: s.status for p, s in steps.items()} == {1: STEP_COMPLETED, 2: STEP_STARTED}
        assert journal.load_steps("run-2")[1].status == STEP_STARTED


# -- attempts and heartbeats -----------------------------------------------------------------


class TestAttemptsAndHeartbeats:
    def test_attempt_failure_without_heartbeat(self, journal: Journal) -> None:
        attempt = make_attempt(position=2, attempt=1)
        journal.record_attempt_failure(attempt)
        assert journal.attempts_of("run-1", 2) == [attempt]
        assert journal.latest_heartbeat("run-1", 2) is None

    def test_attempt_failure_with_heartbeat_stores_both(self, journal: Journal) -> None:
        attempt = make_attempt(position=2, attempt=1)
        hb = make_heartbeat(position=2, attempt=1, details=ALL_BYTES)
        journal.record_attempt_failure(attempt, heartbeat=hb)
        assert journal.attempts_of("run-1", 2) == [attempt]
        assert journal.latest_heartbeat("run-1", 2) == hb

    def test_attempts_are_oldest_first_and_per_step(self, journal: Journal) -> None:
        for n in (3, 1, 2):
            journal.record_attempt_failure(make_attempt(position=0, attempt=n))
        journal.record_attempt_failure(make_attempt(position=1, attempt=9))
        journal.record_attempt_failure(make_attempt("run-2", 0, 7))
        assert [a.attempt for a in journal.attempts_of("run-1", 0)] == [1, 2, 3]
        assert [a.attempt for a in journal.attempts_of("run-1", 1)] == [9]
        assert [a.attempt for a in journal.attempts_of("run-2", 0)] == [7]
        assert journal.attempts_of("run-1", 5) == []

    def test_latest_heartbeat_is_the_last_written(self, journal: Journal) -> None:
        journal.record_heartbeats(
            [
                make_heartbeat(attempt=1, recorded_at=90.0, beat=40, details=b"a1"),
                make_heartbeat(attempt=2, recorded_at=50.0, beat=1, details=b"a2-first"),
                make_heartbeat(attempt=2, recorded_at=70.0, beat=3, details=b"a2-third"),
                make_heartbeat(position=1, attempt=5, recorded_at=99.0, details=b"other-step"),
            ]
        )
        latest = journal.latest_heartbeat("run-1", 0)
        assert latest == make_heartbeat(attempt=2, recorded_at=70.0, beat=3, details=b"a2-third")
        other = journal.latest_heartbeat("run-1", 1)
        assert other is not None
        assert other.details == b"other-step"
        assert journal.latest_heartbeat("run-1", 2) is None
        assert journal.latest_heartbeat("run-2", 0) is None

    def test_latest_heartbeat_follows_write_order_not_attempt_or_time(
        self, journal: Journal, reopen: Any
    ) -> None:
        # After a crash attempt numbers start again, and a virtual clock may not move: the
        # heartbeat written last is the latest one, whatever its attempt, beat or timestamp.
        journal.record_heartbeats([make_heartbeat(attempt=3, recorded_at=9.0, beat=7)])
        journal.record_attempt_failure(
            make_attempt(attempt=1),
            heartbeat=make_heartbeat(attempt=1, recorded_at=5.0, beat=2, details=b"failure"),
        )
        latest = journal.latest_heartbeat("run-1", 0)
        assert latest is not None
        assert (latest.attempt, latest.details) == (1, b"failure")

        journal.record_heartbeats([make_heartbeat(attempt=1, recorded_at=5.0, beat=1)])
        latest = journal.latest_heartbeat("run-1", 0)
        assert latest is not None
        assert (latest.attempt, latest.beat) == (1, 1)

        fresh = reopen()  # a new process continues the order
        fresh.record_step(
            make_step(position=0),
            heartbeat=make_heartbeat(attempt=1, recorded_at=1.0, beat=0, details=b"final"),
        )
        latest = fresh.latest_heartbeat("run-1", 0)
        assert latest is not None
        assert latest.details == b"final"

    def test_heartbeat_history_is_every_current_beat_of_the_run_in_write_order(
        self, journal: Journal, reopen: Any
    ) -> None:
        # Write order, not time or attempt: a virtual clock repeats timestamps, and attempt
        # numbers start again after a crash.
        written = [
            make_heartbeat(attempt=2, recorded_at=7.0, beat=1, details=b"a2"),
            make_heartbeat(position=1, attempt=1, recorded_at=7.0, details=b"other-step"),
            make_heartbeat(attempt=1, recorded_at=5.0, beat=9, details=ALL_BYTES),
        ]
        journal.record_heartbeats(written[:2])
        journal.record_heartbeats([make_heartbeat("run-2", recorded_at=1.0, details=b"run-2")])
        journal.record_attempt_failure(make_attempt(attempt=1), heartbeat=written[2])
        assert journal.heartbeat_history("run-1") == written
        assert journal.heartbeat_history("run-3") == []
        history = journal.heartbeat_history("run-1")
        history[0].details = b"changed by the caller"  # a copy: the store keeps its own
        assert journal.heartbeat_history("run-1") == written

        journal.record_heartbeats([make_heartbeat(position=2, recorded_at=8.0)])
        journal.supersede_from("run-1", 1, make_event(position=1, kind="superseded"))
        assert journal.heartbeat_history("run-1") == [written[0], written[2]]
        fresh = reopen()  # durable, in the same order
        final = make_heartbeat(recorded_at=9.0, beat=10, details=b"final")
        fresh.record_step(make_step(position=0), heartbeat=final)
        assert fresh.heartbeat_history("run-1") == [written[0], written[2], final]
        assert [hb.details for hb in fresh.heartbeat_history("run-2")] == [b"run-2"]

    def test_record_heartbeats_appends_every_row(self, journal: Journal) -> None:
        journal.record_heartbeats([])
        assert count(journal, "heartbeats", "run-1") == 0
        beats = [make_heartbeat(recorded_at=float(t)) for t in range(10)]
        journal.record_heartbeats(beats[:4])
        journal.record_heartbeats(beats[4:])
        assert count(journal, "heartbeats", "run-1") == 10
        assert journal.latest_heartbeat("run-1", 0) == beats[-1]


# -- checkpoints -----------------------------------------------------------------------------


class TestCheckpoints:
    def test_keep_n_drops_the_oldest_and_returns_them(self, journal: Journal) -> None:
        cps = [make_checkpoint(seq=n, attempt=1 if n < 3 else 2) for n in range(1, 6)]
        assert journal.add_checkpoint(cps[0], keep=2) == []
        assert journal.add_checkpoint(cps[1], keep=2) == []
        assert journal.add_checkpoint(cps[2], keep=2) == [cps[0]]
        assert journal.checkpoints_of("run-1", 0) == [cps[2], cps[1]]
        assert journal.add_checkpoint(cps[3], keep=2) == [cps[1]]
        assert journal.checkpoints_of("run-1", 0) == [cps[3], cps[2]]
        dropped = journal.add_checkpoint(cps[4], keep=1)
        assert sorted(dropped, key=lambda c: c.seq) == [cps[2], cps[3]]
        assert journal.checkpoints_of("run-1", 0) == [cps[4]]

    def test_keep_n_counts_per_step(self, journal: Journal) -> None:
        journal.add_checkpoint(make_checkpoint(position=0, seq=1), keep=1)
        journal.add_checkpoint(make_checkpoint(position=1, seq=1), keep=1)
        journal.add_checkpoint(make_checkpoint("run-2", 0, seq=1), keep=1)
        assert journal.add_checkpoint(make_checkpoint(position=0, seq=2), keep=1) == [
            make_checkpoint(position=0, seq=1)
        ]
        assert [c.seq for c in journal.checkpoints_of("run-1", 1)] == [1]
        assert [c.seq for c in journal.checkpoints_of("run-2", 0)] == [1]
        assert journal.checkpoints_of("run-1", 9) == []

    def test_all_checkpoint_paths_lists_current_ones_not_dropped_ones(
        self, journal: Journal
    ) -> None:
        assert journal.all_checkpoint_paths() == set()
        for seq in range(1, 5):
            journal.add_checkpoint(make_checkpoint(seq=seq), keep=2)
        kept = [make_checkpoint(seq=3).path, make_checkpoint(seq=4).path]
        other = make_checkpoint("run-2", 3, seq=1)
        journal.add_checkpoint(other, keep=2)
        assert journal.all_checkpoint_paths() == {*kept, other.path}

    def test_keep_n_deletes_only_the_rows_it_returns(self, journal: Journal) -> None:
        """Superseded checkpoints are audit rows: a later keep-N on the same step (the rerun
        starts its seq again at 1) must neither delete them nor drop anything it does not return.
        """
        for seq in (1, 2):
            journal.add_checkpoint(make_checkpoint(seq=seq), keep=5)
        journal.supersede_from("run-1", 0, make_event(kind="superseded"))
        assert journal.checkpoints_of("run-1", 0) == []
        for seq in (1, 2, 3):
            before = count(journal, "checkpoints", "run-1")
            dropped = journal.add_checkpoint(make_checkpoint(seq=seq, attempt=2), keep=2)
            assert count(journal, "checkpoints", "run-1") == before + 1 - len(dropped)
        assert count(journal, "checkpoints", "run-1", superseded=True) == 2


# -- supersession and events -----------------------------------------------------------------


def _populate_steps(journal: Journal, run_id: str, positions: range) -> None:
    for p in positions:
        journal.record_step(make_step(run_id, p))
        journal.record_attempt_failure(
            make_attempt(run_id, p, 1), heartbeat=make_heartbeat(run_id, p, 1, 10.0 + p)
        )
        journal.record_heartbeats([make_heartbeat(run_id, p, 2, 20.0 + p)])
        journal.add_checkpoint(make_checkpoint(run_id, p, seq=1), keep=2)


class TestSupersede:
    def test_supersede_hides_position_and_after_keeps_earlier(self, journal: Journal) -> None:
        _populate_steps(journal, "run-1", range(4))
        _populate_steps(journal, "run-2", range(4))
        event = make_event(position=2, kind="step_superseded", message="code of step 2 changed")
        journal.supersede_from("run-1", 2, event)

        assert sorted(journal.load_steps("run-1")) == [0, 1]
        for p in (0, 1):
            assert [a.attempt for a in journal.attempts_of("run-1", p)] == [1]
            hb = journal.latest_heartbeat("run-1", p)
            assert hb is not None
            assert (hb.attempt, hb.recorded_at) == (2, 20.0 + p)
            assert [c.seq for c in journal.checkpoints_of("run-1", p)] == [1]
        for p in (2, 3):
            assert journal.attempts_of("run-1", p) == []
            assert journal.latest_heartbeat("run-1", p) is None
            assert journal.checkpoints_of("run-1", p) == []
        assert journal.events_of("run-1") == [event]

        # Another run is untouched.
        assert sorted(journal.load_steps("run-2")) == [0, 1, 2, 3]
        assert journal.checkpoints_of("run-2", 3) != []
        assert journal.events_of("run-2") == []

    def test_superseded_rows_stay_in_the_tables_for_audit(self, journal: Journal) -> None:
        _populate_steps(journal, "run-1", range(4))
        journal.supersede_from("run-1", 2, make_event(position=2))
        expected = {"steps": 4, "attempts": 4, "heartbeats": 8, "checkpoints": 4}
        for table, total in expected.items():
            assert count(journal, table, "run-1") == total, table
            rows = stored_rows(journal, table, run_id="run-1", superseded=True)
            assert sorted({row["position"] for row in rows}) == [2, 3], table
        # Superseded checkpoint files are still referenced (by their audit rows).
        assert make_checkpoint("run-1", 3, seq=1).path in journal.all_checkpoint_paths()

    def test_a_rerun_after_supersede_is_the_current_step(self, journal: Journal) -> None:
        _populate_steps(journal, "run-1", range(3))
        journal.supersede_from("run-1", 1, make_event(position=1))
        rerun = make_step("run-1", 1, result=b'"new result"')
        journal.record_step(rerun)
        assert journal.load_steps("run-1")[1] == rerun
        assert sorted(journal.load_steps("run-1")) == [0, 1]
        journal.supersede_from("run-1", 1, make_event(position=1, created_at=5001.0))
        assert sorted(journal.load_steps("run-1")) == [0]
        assert count(journal, "steps", "run-1", position=1, superseded=True) == 2
        assert len(journal.events_of("run-1")) == 2

    def test_events_are_per_run_and_oldest_first(self, journal: Journal) -> None:
        e3 = make_event(created_at=30.0, kind="c", message="third")
        e1 = make_event(position=None, created_at=10.0, kind="a", message="first")
        e2 = make_event(position=4, created_at=20.0, kind="b", message="second ✓")
        for event in (e3, e1, e2):
            journal.add_event(event)
        journal.add_event(make_event("run-2", created_at=1.0))
        assert journal.events_of("run-1") == [e1, e2, e3]
        assert [e.kind for e in journal.events_of("run-2")] == ["note"]
        assert journal.events_of("nobody") == []

    @pytest.mark.parametrize("release_between", [False, True], ids=["held", "released"])
    def test_events_at_the_same_time_keep_their_order(
        self, journal: Journal, reopen: Any, release_between: bool
    ) -> None:
        # A virtual clock that does not move stamps many events with one time.
        events = [make_event(position=i, created_at=7.0, message=f"m{i}") for i in range(50)]
        for event in events:
            journal.add_event(event)
            if release_between:
                journal.release_if_idle(0.0)
        assert journal.events_of("run-1") == events
        assert reopen().events_of("run-1") == events


# -- lifecycle: durability, acquire/release, close -------------------------------------------


class TestLifecycle:
    def test_everything_survives_close_and_reopen(self, journal: Journal, reopen: Any) -> None:
        run = make_run()
        journal.create_run(run)
        journal.create_run(make_run("run-2", created_at=200.0))
        journal.finish_run(
            "run-2", RunOutcome(status=COMPLETED, at=201.0, result_codec="json", result=b"42")
        )
        step = make_step(position=0, result=ALL_BYTES)
        step.result_codec = "pickle"
        journal.record_step(step)
        marker = make_step(position=1, status=STEP_STARTED, key="k")
        journal.record_marker(marker)
        attempt = make_attempt(position=0)
        journal.record_attempt_failure(attempt)
        hb = make_heartbeat(position=0, attempt=2, details=ALL_BYTES)
        journal.record_heartbeats([hb])
        cp = make_checkpoint(position=0, seq=1)
        journal.add_checkpoint(cp, keep=2)
        event = make_event(position=None)
        journal.add_event(event)

        fresh = reopen()
        assert fresh.get_run("run-1") == run
        assert [r.run_id for r in fresh.list_runs(COMPLETED)] == ["run-2"]
        assert fresh.load_steps("run-1") == {0: step, 1: marker}
        assert fresh.attempts_of("run-1", 0) == [attempt]
        assert fresh.latest_heartbeat("run-1", 0) == hb
        assert fresh.checkpoints_of("run-1", 0) == [cp]
        assert fresh.all_checkpoint_paths() == {cp.path}
        assert fresh.events_of("run-1") == [event]

    def test_writes_while_acquired_survive_reopen(self, journal: Journal, reopen: Any) -> None:
        journal.acquire()
        journal.create_run(make_run())
        journal.record_step(make_step(position=0))
        journal.release()
        journal.acquire()
        journal.record_step(make_step(position=1))
        # close() while acquired must still persist and release everything.
        fresh = reopen()
        assert sorted(fresh.load_steps("run-1")) == [0, 1]
        fresh.create_run(make_run("run-3"))
        assert fresh.get_run("run-3") is not None

    def test_acquire_and_release_nest(self, journal: Journal) -> None:
        journal.acquire()
        journal.acquire()
        journal.create_run(make_run())
        journal.release()
        journal.record_step(make_step(position=0))  # still acquired once
        assert sorted(journal.load_steps("run-1")) == [0]
        journal.release()
        journal.record_step(make_step(position=1))  # works when idle too
        journal.release()  # an unmatched release is harmless
        journal.acquire()
        assert sorted(journal.load_steps("run-1")) == [0, 1]
        journal.release()

    def test_release_if_idle_keeps_an_acquired_journal(self, journal: Journal) -> None:
        journal.acquire()
        journal.create_run(make_run())
        assert journal.release_if_idle(0.0) is False
        journal.record_step(make_step(position=0))
        journal.release()
        assert journal.release_if_idle(3600.0) is False, "used a moment ago"
        assert sorted(journal.load_steps("run-1")) == [0]

    def test_release_if_idle_then_use_again(self, journal: Journal, reopen: Any) -> None:
        journal.create_run(make_run())
        journal.release_if_idle(0.0)
        journal.release_if_idle(0.0)  # nothing left to release: harmless
        journal.record_step(make_step(position=0))  # reopens on demand
        journal.release_if_idle(0.0)
        journal.acquire()
        journal.record_step(make_step(position=1))
        journal.release()
        assert sorted(journal.load_steps("run-1")) == [0, 1]
        assert sorted(reopen().load_steps("run-1")) == [0, 1]

    def test_close_is_idempotent(self, journal: Journal) -> None:
        journal.close()
        journal.close()
        with pytest.raises(JournalClosedError):
            journal.get_run("run-1")

    @pytest.mark.parametrize(
        "operation",
        [
            pytest.param(lambda j: j.acquire(), id="acquire"),
            pytest.param(lambda j: j.create_run(make_run("new")), id="create_run"),
            pytest.param(lambda j: j.get_run("run-1"), id="get_run"),
            pytest.param(lambda j: j.list_runs(), id="list_runs"),
            pytest.param(lambda j: j.list_runs(RUNNING), id="list_runs_status"),
            pytest.param(
                lambda j: j.finish_run("run-1", RunOutcome(status=COMPLETED, at=1.0)),
                id="finish_run",
            ),
            pytest.param(lambda j: j.set_run_status("run-1", FAILED, 1.0), id="set_run_status"),
            pytest.param(lambda j: j.load_steps("run-1"), id="load_steps"),
            pytest.param(lambda j: j.record_step(make_step(position=5)), id="record_step"),
            pytest.param(
                lambda j: j.record_step(make_step(position=5, key="k"), make_heartbeat()),
                id="record_step_keyed",
            ),
            pytest.param(
                lambda j: j.record_marker(make_step(position=5, status=STEP_STARTED, key="k")),
                id="record_marker",
            ),
            pytest.param(
                lambda j: j.record_attempt_failure(make_attempt(), make_heartbeat()),
                id="record_attempt_failure",
            ),
            pytest.param(lambda j: j.attempts_of("run-1", 0), id="attempts_of"),
            pytest.param(lambda j: j.record_heartbeats([make_heartbeat()]), id="heartbeats"),
            pytest.param(lambda j: j.latest_heartbeat("run-1", 0), id="latest_heartbeat"),
            pytest.param(lambda j: j.add_checkpoint(make_checkpoint(seq=9), 2), id="add_cp"),
            pytest.param(lambda j: j.checkpoints_of("run-1", 0), id="checkpoints_of"),
            pytest.param(lambda j: j.all_checkpoint_paths(), id="all_checkpoint_paths"),
            pytest.param(lambda j: j.supersede_from("run-1", 0, make_event()), id="supersede"),
            pytest.param(lambda j: j.add_event(make_event()), id="add_event"),
            pytest.param(lambda j: j.events_of("run-1"), id="events_of"),
            pytest.param(lambda j: j.step_outcome("run-1", 0), id="step_outcome"),
            pytest.param(lambda j: j.attempts_of_run("run-1"), id="attempts_of_run"),
            pytest.param(lambda j: j.crashed_attempts("run-1", 0), id="crashed_attempts"),
            pytest.param(lambda j: j.latest_heartbeats("run-1"), id="latest_heartbeats"),
            pytest.param(lambda j: j.last_checkpoint_seq("run-1", 0), id="last_checkpoint_seq"),
            pytest.param(lambda j: j.add_signal(make_signal(at=1.0)), id="add_signal"),
            pytest.param(
                lambda j: j.consume_signal("run-1", "go", make_step(position=5)),
                id="consume_signal",
            ),
            pytest.param(
                lambda j: j.add_async_token("t", make_step(position=5)), id="add_async_token"
            ),
            pytest.param(lambda j: j.async_token("t"), id="async_token"),
            pytest.param(lambda j: j.pending_async_tokens("run-1"), id="pending_async_tokens"),
            pytest.param(lambda j: j.spend_async_token("t", 1.0), id="spend_async_token"),
            pytest.param(
                lambda j: j.complete_async_token("t", make_step(position=5)),
                id="complete_async_token",
            ),
        ],
    )
    def test_operations_after_close_raise_closed(
        self, journal: Journal, reopen: Any, operation: Callable[[Journal], object]
    ) -> None:
        journal.create_run(make_run())
        journal.record_step(make_step(position=0))
        journal.close()
        with pytest.raises(JournalClosedError):
            operation(journal)
        # Nothing reached the storage either.
        fresh = reopen()
        assert [r.run_id for r in fresh.list_runs()] == ["run-1"]
        assert fresh.get_run("run-1").status == RUNNING  # type: ignore[union-attr]
        assert sorted(fresh.load_steps("run-1")) == [0]
        assert fresh.events_of("run-1") == []

    @pytest.mark.parametrize("acquired", [False, True], ids=["idle", "acquired"])
    def test_concurrent_writers_lose_nothing(self, journal: Journal, acquired: bool) -> None:
        threads_n, per_thread = 8, 15
        if acquired:
            journal.acquire()
        barrier = threading.Barrier(threads_n)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                barrier.wait(timeout=30)
                for i in range(per_thread):
                    position = t * per_thread + i
                    journal.record_step(make_step(position=position))
                    journal.record_heartbeats([make_heartbeat(position=position, attempt=1)])
                    journal.load_steps("run-1")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        if acquired:
            journal.release()
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert sorted(journal.load_steps("run-1")) == list(range(threads_n * per_thread))
        assert count(journal, "heartbeats", "run-1") == threads_n * per_thread


# -- atomicity: a failing transaction writes nothing -----------------------------------------

UNSTORABLE = object()  # no backend can store a bare object(): the statement using it fails


class TestAtomicity:
    def test_attempt_failure_is_rolled_back_when_its_heartbeat_fails(
        self, journal: Journal
    ) -> None:
        bad = make_heartbeat(position=0, attempt=1, details=UNSTORABLE)
        with pytest.raises(Exception):
            journal.record_attempt_failure(make_attempt(position=0, attempt=1), heartbeat=bad)
        assert journal.attempts_of("run-1", 0) == []
        assert count(journal, "attempts", "run-1") == 0
        assert count(journal, "heartbeats", "run-1") == 0
        # The journal is still usable, and the same attempt with a valid heartbeat commits.
        good = make_heartbeat(position=0, attempt=1)
        journal.record_attempt_failure(make_attempt(position=0, attempt=1), heartbeat=good)
        assert [a.attempt for a in journal.attempts_of("run-1", 0)] == [1]
        assert journal.latest_heartbeat("run-1", 0) == good

    @pytest.mark.parametrize("acquired", [False, True], ids=["idle", "acquired"])
    def test_keyed_step_is_rolled_back_and_the_marker_kept(
        self, journal: Journal, acquired: bool
    ) -> None:
        if acquired:
            journal.acquire()
        marker = make_step(position=2, status=STEP_STARTED, key="k")
        journal.record_marker(marker)
        bad = make_heartbeat(position=2, details=UNSTORABLE)
        with pytest.raises(Exception):
            journal.record_step(make_step(position=2, key="k"), heartbeat=bad)
        assert journal.load_steps("run-1") == {2: marker}
        assert count(journal, "steps", "run-1") == 1
        assert journal.latest_heartbeat("run-1", 2) is None
        if acquired:
            journal.release()

    def test_record_heartbeats_is_all_or_nothing(self, journal: Journal) -> None:
        beats = [make_heartbeat(recorded_at=1.0), make_heartbeat(recorded_at=2.0)]
        beats.append(make_heartbeat(recorded_at=3.0, details=UNSTORABLE))
        with pytest.raises(Exception):
            journal.record_heartbeats(beats)
        assert count(journal, "heartbeats", "run-1") == 0
        assert journal.latest_heartbeat("run-1", 0) is None

    def test_add_checkpoint_is_rolled_back_when_trimming_fails(self, journal: Journal) -> None:
        first = make_checkpoint(seq=1)
        journal.add_checkpoint(first, keep=1)
        with pytest.raises(Exception):
            journal.add_checkpoint(make_checkpoint(seq=2), keep=UNSTORABLE)  # type: ignore[arg-type]
        assert journal.checkpoints_of("run-1", 0) == [first]
        assert journal.all_checkpoint_paths() == {first.path}

    def test_supersede_is_rolled_back_when_its_event_fails(self, journal: Journal) -> None:
        _populate_steps(journal, "run-1", range(3))
        with pytest.raises(Exception):
            journal.supersede_from("run-1", 1, make_event(position=1, message=UNSTORABLE))
        assert sorted(journal.load_steps("run-1")) == [0, 1, 2]
        assert [a.attempt for a in journal.attempts_of("run-1", 2)] == [1]
        assert journal.latest_heartbeat("run-1", 2) is not None
        assert [c.seq for c in journal.checkpoints_of("run-1", 2)] == [1]
        for table in ("steps", "attempts", "heartbeats", "checkpoints"):
            assert count(journal, table, "run-1", superseded=True) == 0, table
        assert journal.events_of("run-1") == []


class TestSignals:
    def test_signals_are_buffered_deduplicated_and_consumed_oldest_first(
        self, journal: Journal
    ) -> None:
        journal.create_run(make_run())
        assert journal.add_signal(make_signal(signal_id="s1", payload=b"1", at=10.0)) is True
        assert journal.add_signal(make_signal(signal_id="s1", payload=b"99", at=11.0)) is False
        assert journal.add_signal(make_signal(payload=b"2", at=12.0)) is True
        assert journal.add_signal(make_signal("other", payload=b"3", at=13.0)) is True
        first = journal.consume_signal("run-1", "go", make_step(position=0, result=None))
        second = journal.consume_signal("run-1", "go", make_step(position=1, result=None))
        assert (first and first.result, second and second.result) == (b"1", b"2")
        assert journal.consume_signal("run-1", "go", make_step(position=2, result=None)) is None
        steps = journal.load_steps("run-1")
        assert sorted(steps) == [0, 1]  # each consumption recorded its step, nothing else
        assert steps[1].result == b"2"

    def test_consuming_is_atomic_with_the_step(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.add_signal(make_signal(payload=b"1", at=10.0))
        bad = make_step(position=0, result=None)
        bad.input_hash = object()  # type: ignore[assignment]  # the step insert fails
        with pytest.raises(Exception):
            journal.consume_signal("run-1", "go", bad)
        again = journal.consume_signal("run-1", "go", make_step(position=0, result=None))
        assert again is not None
        assert again.result == b"1"  # still deliverable after the failed consumption


class TestAsyncTokens:
    def test_completing_a_settled_step_is_refused_and_writes_nothing(
        self, journal: Journal
    ) -> None:
        """Review F11: the refusal left the token consumed although nothing was to be written."""
        journal.create_run(make_run())
        journal.add_async_token("tok", make_step(position=0, status=STEP_STARTED))
        journal.record_step(make_step(position=0))  # the activity returned by itself
        assert not journal.complete_async_token("tok", make_step(position=0, result=b"2"))
        assert journal.pending_async_tokens("run-1") == {0: "tok"}  # not consumed
        assert [row["consumed_at"] for row in stored_rows(journal, "async_tokens")] == [None]
        assert journal.load_steps("run-1")[0].result == b'{"ok":true}'


class TestCrashedAttempts:
    def test_counts_current_crashed_attempts_of_one_step(self, journal: Journal) -> None:
        journal.create_run(make_run())
        crashed = [
            dataclasses.replace(make_attempt(attempt=n), error_type="ActivityCrashed")
            for n in (1, 2)
        ]
        for attempt in [*crashed, make_attempt(attempt=3), make_attempt(position=1)]:
            journal.record_attempt_failure(attempt)
        assert journal.crashed_attempts("run-1", 0) == 2
        assert journal.crashed_attempts("run-1", 1) == 0
        assert journal.crashed_attempts("other", 0) == 0
        journal.supersede_from("run-1", 0, make_event(kind="superseded"))
        assert journal.crashed_attempts("run-1", 0) == 0


class TestRecordsAreValues:
    def test_changing_a_record_after_writing_or_reading_it_changes_nothing_stored(
        self, journal: Journal
    ) -> None:
        run = make_run()
        journal.create_run(run)
        run.status = "changed after writing"
        got = journal.get_run("run-1")
        assert got is not None
        got.status = "changed after reading"
        assert journal.get_run("run-1") == make_run()

        step, beat = make_step(position=0, key="k"), make_heartbeat()
        journal.record_step(step, heartbeat=beat)
        step.result, beat.details = b"changed", b"changed"
        journal.load_steps("run-1")[0].result = b"changed"
        latest = journal.latest_heartbeat("run-1", 0)
        assert latest is not None
        latest.details = b"changed"
        assert journal.load_steps("run-1")[0] == make_step(position=0, key="k")
        assert journal.latest_heartbeats("run-1")[0] == make_heartbeat()


# -- the named reads the engine, its views and the checkpoint store use ---------------------


class TestStepOutcome:
    def test_only_a_completed_or_failed_current_record_is_an_outcome(
        self, journal: Journal
    ) -> None:
        assert journal.step_outcome("run-1", 0) is None
        marker = make_step(position=0, status=STEP_STARTED, key="k")
        journal.record_marker(marker)
        assert journal.step_outcome("run-1", 0) is None, "a dispatch marker is not an outcome"
        done = make_step(position=0, key="k", result=ALL_BYTES)
        journal.record_step(done)
        assert journal.step_outcome("run-1", 0) == done
        failed = make_step(position=1, status=STEP_FAILED, result=None)
        failed.error = '{"class": "ValueError"}'
        journal.record_step(failed)
        assert journal.step_outcome("run-1", 1) == failed
        assert journal.step_outcome("run-1", 2) is None
        assert journal.step_outcome("run-2", 0) is None

    def test_a_superseded_outcome_is_gone_and_a_rerun_is_the_outcome(
        self, journal: Journal
    ) -> None:
        journal.record_step(make_step(position=0))
        journal.record_step(make_step(position=1))
        journal.supersede_from("run-1", 1, make_event(position=1))
        assert journal.step_outcome("run-1", 1) is None
        assert journal.step_outcome("run-1", 0) == make_step(position=0)
        rerun = make_step(position=1, result=b'"again"')
        journal.record_step(rerun)
        assert journal.step_outcome("run-1", 1) == rerun

    def test_an_out_of_band_completion_is_the_outcome(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.add_async_token("tok", make_step(position=3, status=STEP_STARTED))
        assert journal.step_outcome("run-1", 3) is None
        completion = make_step(position=3, result=b'"from outside"')
        assert journal.complete_async_token("tok", completion)
        assert journal.step_outcome("run-1", 3) == completion


class TestAttemptsOfRun:
    def test_every_step_by_position_then_oldest_first(self, journal: Journal) -> None:
        for position, attempt in [(2, 1), (0, 2), (1, 1), (0, 1), (2, 3), (2, 2)]:
            journal.record_attempt_failure(make_attempt(position=position, attempt=attempt))
        journal.record_attempt_failure(make_attempt("run-2", 0, 1))
        got = journal.attempts_of_run("run-1")
        expected = [(0, 1), (0, 2), (1, 1), (2, 1), (2, 2), (2, 3)]
        assert [(a.position, a.attempt) for a in got] == expected
        assert got[0] == make_attempt(position=0, attempt=1), "every field round-trips"
        assert [a.run_id for a in journal.attempts_of_run("run-2")] == ["run-2"]
        assert journal.attempts_of_run("nobody") == []

    def test_agrees_with_attempts_of_and_hides_superseded(self, journal: Journal) -> None:
        _populate_steps(journal, "run-1", range(4))
        journal.record_attempt_failure(make_attempt(position=1, attempt=2))
        journal.supersede_from("run-1", 2, make_event(position=2))
        per_step = [a for p in range(4) for a in journal.attempts_of("run-1", p)]
        assert journal.attempts_of_run("run-1") == per_step
        assert [(a.position, a.attempt) for a in per_step] == [(0, 1), (1, 1), (1, 2)]


class TestLatestHeartbeats:
    def test_the_last_written_of_each_step_whatever_its_attempt_or_time(
        self, journal: Journal, reopen: Any
    ) -> None:
        journal.record_heartbeats(
            [
                make_heartbeat(position=0, attempt=3, recorded_at=90.0, details=b"p0-first"),
                make_heartbeat(position=1, attempt=1, recorded_at=10.0, details=b"p1"),
                make_heartbeat(position=0, attempt=1, recorded_at=5.0, details=b"p0-last"),
                make_heartbeat("run-2", 0, details=b"other run"),
            ]
        )
        latest = journal.latest_heartbeats("run-1")
        assert {p: hb.details for p, hb in latest.items()} == {0: b"p0-last", 1: b"p1"}
        assert latest[0] == journal.latest_heartbeat("run-1", 0)
        assert journal.latest_heartbeats("nobody") == {}

        fresh = reopen()  # a new process continues the write order
        fresh.record_heartbeats([make_heartbeat(position=1, attempt=1, recorded_at=1.0)])
        assert fresh.latest_heartbeats("run-1")[1].recorded_at == 1.0

    def test_round_trips_every_field_and_hides_superseded(self, journal: Journal) -> None:
        beat = dataclasses.replace(make_heartbeat(position=2, details=ALL_BYTES), activity="fit")
        journal.record_heartbeats([make_heartbeat(position=0), beat])
        assert journal.latest_heartbeats("run-1")[2] == beat
        assert journal.latest_heartbeat("run-1", 2) == beat, "the activity round-trips too"
        journal.supersede_from("run-1", 1, make_event(position=1))
        assert list(journal.latest_heartbeats("run-1")) == [0]


class TestLastCheckpointSeq:
    def test_the_highest_number_ever_recorded_for_the_step(self, journal: Journal) -> None:
        assert journal.last_checkpoint_seq("run-1", 0) == 0
        for seq in (1, 2, 3):
            journal.add_checkpoint(make_checkpoint(seq=seq), keep=1)  # 1 and 2 are dropped
        journal.add_checkpoint(make_checkpoint(position=1, seq=7), keep=1)
        assert journal.last_checkpoint_seq("run-1", 0) == 3
        assert journal.last_checkpoint_seq("run-1", 1) == 7
        assert journal.last_checkpoint_seq("run-2", 0) == 0

    def test_superseded_checkpoints_count(self, journal: Journal) -> None:
        """A rerun numbers on after the audited files, so it never overwrites one."""
        journal.add_checkpoint(make_checkpoint(seq=4), keep=2)
        journal.supersede_from("run-1", 0, make_event(position=0))
        assert journal.checkpoints_of("run-1", 0) == []
        assert journal.last_checkpoint_seq("run-1", 0) == 4


# -- circuit breakers --------------------------------------------------------------------------


def make_breaker(activity: str = "charge", **changes: Any) -> BreakerRecord:
    fields: dict[str, Any] = {
        "activity": activity,
        "state": "open",
        "failures": 5,
        "opened_at": 100.0,
        "updated_at": 100.0,
        "half_open_at": 130.0,
    }
    return BreakerRecord(**{**fields, **changes})


class TestCircuitBreakers:
    def test_a_new_journal_has_no_breakers(self, journal: Journal) -> None:
        assert journal.breakers() == []

    def test_a_saved_breaker_replaces_the_one_of_its_activity_and_survives_reopen(
        self, journal: Journal, reopen: Any
    ) -> None:
        closed = {"state": "closed", "failures": 1, "opened_at": None, "half_open_at": None}
        journal.save_breaker(make_breaker("zeta", **closed))
        journal.save_breaker(make_breaker("charge", failures=4))
        journal.save_breaker(make_breaker("charge", failures=5, updated_at=130.0))
        expected = [
            make_breaker("charge", failures=5, updated_at=130.0),
            make_breaker("zeta", **closed),
        ]
        assert journal.breakers() == expected
        assert len(stored_rows(journal, "breakers")) == 2  # one row per activity
        assert reopen().breakers() == expected

    def test_a_stored_breaker_is_a_copy(self, journal: Journal) -> None:
        record = make_breaker()
        journal.save_breaker(record)
        record.failures = 99
        journal.breakers()[0].failures = 98
        assert journal.breakers()[0].failures == 5


# -- storage: ownership and the files beside the records -------------------------------------


class TestStorage:
    def test_a_second_open_of_the_same_storage_is_refused_until_closed(
        self, journal: Journal, factory: JournalFactory, tmp_path: Path
    ) -> None:
        journal.create_run(make_run())
        with pytest.raises(JournalLockedError):
            factory(tmp_path)
        assert journal.get_run("run-1") is not None, "the holder works on"
        journal.close()
        fresh = factory(tmp_path)
        try:
            assert fresh.get_run("run-1") is not None
        finally:
            fresh.close()

    def test_sidecar_base_is_a_stable_writable_place(self, journal: Journal, reopen: Any) -> None:
        base = journal.sidecar_base
        folder = os.path.dirname(base)
        assert os.path.isdir(folder)
        assert os.access(folder, os.W_OK)
        assert reopen().sidecar_base == base, "the same storage keeps its files"
