"""The contract every journal backend must satisfy (see ``weft_nb/_journal.py``).

Each test runs once per backend in ``BACKENDS``. A factory takes a directory and returns a journal
stored at a fixed place inside it, so calling it again on the same directory reopens the same
storage (that is how durability is checked). A new backend adds one ``pytest.param`` line.

Besides the public methods, the suite reads the tables through ``Journal.query`` where the
protocol promises something the methods cannot show: that superseded rows are kept for audit, and
that a failed transaction wrote nothing. The table names (``runs``, ``steps``, ``attempts``,
``heartbeats``, ``checkpoints``, ``events``) and the ``superseded`` flag are part of the contract.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from weft_nb._duckdb_journal import DuckDBJournal
from weft_nb._journal import (
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    AttemptRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    Journal,
    RunRecord,
    StepRecord,
)
from weft_nb.errors import JournalClosedError

JournalFactory = Callable[[Path], Journal]


def _duckdb_backend(folder: Path) -> Journal:
    return DuckDBJournal(folder / "j.duckdb")


BACKENDS = [
    pytest.param(_duckdb_backend, id="duckdb"),
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


def count(journal: Journal, table: str, run_id: str, extra: str = "") -> int:
    rows = journal.query(f"SELECT count(*) FROM {table} WHERE run_id = ? {extra}", [run_id])
    return int(rows[0][0])


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> JournalFactory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def journal(factory: JournalFactory, tmp_path: Path) -> Iterator[Journal]:
    opened = factory(tmp_path)
    yield opened
    opened.close()


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
    def test_create_and_get_round_trips_every_field(self, journal: Journal) -> None:
        run = make_run()
        run.input = ALL_BYTES
        run.result_codec, run.result, run.error = "pickle", b"\x00\xff", "an error"
        journal.create_run(run)
        assert journal.get_run("run-1") == run
        assert journal.get_run("missing") is None

    def test_empty_input_bytes_stay_bytes(self, journal: Journal) -> None:
        run = make_run()
        run.input = b""
        journal.create_run(run)
        got = journal.get_run("run-1")
        assert got is not None
        assert got.input == b""

    def test_duplicate_run_id_is_rejected_and_keeps_the_original(self, journal: Journal) -> None:
        journal.create_run(make_run(workflow="first"))
        with pytest.raises(Exception):
            journal.create_run(make_run(workflow="second"))
        got = journal.get_run("run-1")
        assert got is not None
        assert got.workflow == "first"
        assert len(journal.list_runs()) == 1

    def test_list_runs_is_oldest_first_whatever_the_insert_order(self, journal: Journal) -> None:
        for run_id, created in [("c", 30.0), ("a", 10.0), ("d", 40.0), ("b", 20.0)]:
            journal.create_run(make_run(run_id, created_at=created))
        assert [r.run_id for r in journal.list_runs()] == ["a", "b", "c", "d"]

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
        journal.finish_run("run-1", COMPLETED, 150.5, "pickle", ALL_BYTES, None)
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
        journal.finish_run("run-1", FAILED, 151.0, error='{"type": "ValueError"}')
        got = journal.get_run("run-1")
        assert got is not None
        assert (got.status, got.updated_at, got.error) == (FAILED, 151.0, '{"type": "ValueError"}')
        assert got.result is None
        assert got.result_codec is None

    def test_set_run_status_changes_only_status_and_time(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.finish_run("run-1", INTERRUPTED, 120.0, "json", b"1", "why")
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
        rows = journal.query(
            "SELECT status, idempotency_key FROM steps WHERE run_id = ? AND position = ? "
            "AND NOT superseded",
            ["run-1", 3],
        )
        assert rows == [(STEP_COMPLETED, "charge-card-42")], "the marker must be replaced"

    def test_failed_keyed_outcome_also_replaces_the_marker(self, journal: Journal) -> None:
        journal.record_marker(make_step(position=0, status=STEP_STARTED, key="k"))
        hb = make_heartbeat(position=0, attempt=2)
        failed = make_step(position=0, status=STEP_FAILED, key="k", result=None)
        failed.error = "gave up"
        journal.record_step(failed, heartbeat=hb)
        assert journal.load_steps("run-1") == {0: failed}
        assert count(journal, "steps", "run-1", "AND NOT superseded") == 1
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
        assert count(journal, "checkpoints", "run-1", "AND superseded") == 2


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
            rows = journal.query(
                f"SELECT DISTINCT position FROM {table} WHERE run_id = ? AND superseded "
                "ORDER BY position",
                ["run-1"],
            )
            assert rows == [(2,), (3,)], table
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
        assert count(journal, "steps", "run-1", "AND position = 1 AND superseded") == 2
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
        journal.finish_run("run-2", COMPLETED, 201.0, "json", b"42")
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
            pytest.param(lambda j: j.finish_run("run-1", COMPLETED, 1.0), id="finish_run"),
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
            pytest.param(lambda j: j.query("SELECT count(*) FROM runs"), id="query"),
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
            assert count(journal, table, "run-1", "AND superseded") == 0, table
        assert journal.events_of("run-1") == []


class TestSignals:
    def test_signals_are_buffered_deduplicated_and_consumed_oldest_first(
        self, journal: Journal
    ) -> None:
        journal.create_run(make_run())
        assert journal.add_signal("run-1", "go", "s1", "json", b"1", 10.0) is True
        assert journal.add_signal("run-1", "go", "s1", "json", b"99", 11.0) is False
        assert journal.add_signal("run-1", "go", None, "json", b"2", 12.0) is True
        assert journal.add_signal("run-1", "other", None, "json", b"3", 13.0) is True
        first = journal.consume_signal("run-1", "go", make_step(position=0, result=None))
        second = journal.consume_signal("run-1", "go", make_step(position=1, result=None))
        assert (first and first.result, second and second.result) == (b"1", b"2")
        assert journal.consume_signal("run-1", "go", make_step(position=2, result=None)) is None
        steps = journal.load_steps("run-1")
        assert sorted(steps) == [0, 1]  # each consumption recorded its step, nothing else
        assert steps[1].result == b"2"

    def test_consuming_is_atomic_with_the_step(self, journal: Journal) -> None:
        journal.create_run(make_run())
        journal.add_signal("run-1", "go", None, "json", b"1", 10.0)
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
        assert journal.query("SELECT consumed_at FROM async_tokens WHERE token = 'tok'") == [
            (None,)
        ]
        assert journal.load_steps("run-1")[0].result == b'{"ok":true}'


class TestCrashedAttempts:
    def test_counts_current_crashed_attempts_of_one_step(self, journal: Journal) -> None:
        journal.create_run(make_run())
        crashed = [dataclasses.replace(make_attempt(attempt=n), error_type="ActivityCrashed")
                   for n in (1, 2)]  # fmt: skip
        for attempt in [*crashed, make_attempt(attempt=3), make_attempt(position=1)]:
            journal.record_attempt_failure(attempt)
        assert journal.crashed_attempts("run-1", 0) == 2
        assert journal.crashed_attempts("run-1", 1) == 0
        assert journal.crashed_attempts("other", 0) == 0
        journal.supersede_from("run-1", 0, make_event(kind="superseded"))
        assert journal.crashed_attempts("run-1", 0) == 0
