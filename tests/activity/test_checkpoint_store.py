"""``CheckpointStore``: checkpoint files beside a real DuckDB journal
(``weft_nb/activity/checkpoints.py``).

Files live under ``<journal file name>.checkpoints/<run>/<position>/``; the journal keeps
one row per checkpoint (path relative to that root, size). Nothing here is mocked: the journal is
a real ``DuckDBJournal`` in ``tmp_path`` and every check looks at the files on disk.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from weft_nb import Engine
from weft_nb.activity.checkpoints import CheckpointStore
from weft_nb.base.clock import RealClock
from weft_nb.errors import PayloadError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import EventRecord

RUN = "run-1"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[DuckDBJournal]:
    opened = DuckDBJournal(tmp_path / "j.duckdb")
    yield opened
    opened.close()


@pytest.fixture
def store(journal: DuckDBJournal) -> CheckpointStore:
    return CheckpointStore(journal, RealClock(), keep=2)


def files_under(folder: Path | str) -> list[str]:
    """Every checkpoint file below ``folder`` (not its owner record), relative to it, sorted."""
    found = []
    for parent, _dirs, names in os.walk(folder):
        found.extend(
            os.path.relpath(os.path.join(parent, n), folder)
            for n in names
            if n != ".weft-owner.json"
        )
    return sorted(found)


def rows(journal: DuckDBJournal, run_id: str = RUN) -> int:
    return int(journal.query("SELECT count(*) FROM checkpoints WHERE run_id = ?", [run_id])[0][0])


def test_root_is_beside_the_journal(store: CheckpointStore, tmp_path: Path) -> None:
    assert Path(store.root) == tmp_path / "j.duckdb.checkpoints"
    with pytest.raises(ValueError, match="checkpoint_keep"):
        CheckpointStore(store.journal, RealClock(), keep=0)


def test_numpy_array_round_trip(store: CheckpointStore, journal: DuckDBJournal) -> None:
    np = pytest.importorskip("numpy")
    big = np.random.default_rng(7).standard_normal((512, 1024)).astype(np.float32)  # 2 MiB
    view = np.arange(24, dtype=np.int64).reshape(4, 6).T  # not C-contiguous
    record = store.save(RUN, 3, 1, big)
    path = Path(store.root) / record.path
    assert path.is_file()
    assert record.size == path.stat().st_size > big.nbytes
    assert (record.run_id, record.position, record.attempt, record.seq) == (RUN, 3, 1, 1)
    assert journal.checkpoints_of(RUN, 3) == [record]

    loaded = store.load_latest(RUN, 3)
    assert loaded.dtype == np.float32
    assert loaded.shape == (512, 1024)
    np.testing.assert_array_equal(loaded, big)

    store.save(RUN, 3, 2, {"view": view})
    again = store.load_latest(RUN, 3)
    np.testing.assert_array_equal(again["view"], view)
    assert again["view"].dtype == np.int64


def test_dict_round_trip(store: CheckpointStore) -> None:
    state = {
        "epoch": 12,
        "loss": 0.125,
        "history": [1.0, 0.5, 0.25],
        "blob": bytes(range(256)),
        "nested": {"tuple": (1, "two"), "set": {3, 4}, "none": None},
    }
    store.save(RUN, 0, 1, state)
    assert store.load_latest(RUN, 0) == state
    assert store.load_latest(RUN, 1) is None, "another step has no checkpoint"
    assert store.load_latest("other-run", 0) is None


def test_latest_wins_and_seq_grows_across_attempts(store: CheckpointStore) -> None:
    first = store.save(RUN, 0, 1, {"epoch": 1})
    second = store.save(RUN, 0, 2, {"epoch": 2})
    assert (first.seq, second.seq) == (1, 2)
    assert second.attempt == 2
    assert os.path.dirname(second.path) == f"{RUN}/0"
    assert store.load_latest(RUN, 0) == {"epoch": 2}


def test_keep_n_deletes_older_files_from_disk(
    store: CheckpointStore, journal: DuckDBJournal
) -> None:
    records = [store.save(RUN, 1, 1 + i // 3, {"epoch": i}) for i in range(6)]
    store.drain()  # older files are deleted off the caller's thread
    step_dir = Path(store.root) / RUN / "1"
    kept = records[-2:]
    assert files_under(step_dir) == sorted(os.path.basename(r.path) for r in kept)
    for gone in records[:-2]:
        assert not (Path(store.root) / gone.path).exists()
    assert journal.checkpoints_of(RUN, 1) == list(reversed(kept))
    assert rows(journal) == 2
    assert store.load_latest(RUN, 1) == {"epoch": 5}


def test_keep_n_is_per_step(journal: DuckDBJournal) -> None:
    store = CheckpointStore(journal, RealClock(), keep=1)
    step0 = [store.save(RUN, 0, 1, {"step0": i}) for i in range(3)]
    step1 = store.save(RUN, 1, 1, {"step1": 0})
    run2 = store.save("run-2", 0, 1, {"run2": 0})
    assert [r.seq for r in step0] == [1, 2, 3]
    assert (step1.seq, run2.seq) == (1, 1)
    assert files_under(store.root) == sorted([step0[-1].path, step1.path, run2.path])
    assert store.load_latest(RUN, 0) == {"step0": 2}
    assert store.load_latest(RUN, 1) == {"step1": 0}


def test_remove_orphans_deletes_tmp_and_unreferenced_keeps_referenced(
    store: CheckpointStore,
) -> None:
    assert store.remove_orphans() == 0  # no folder yet
    referenced = [store.save(RUN, 0, 1, {"a": 1}), store.save(RUN, 0, 1, {"a": 2})]
    other = store.save("run-2", 4, 1, [1, 2, 3])
    root = Path(store.root)
    orphans = [
        root / RUN / "0" / ".tmp-0123456789abcdef",  # a crash before the rename
        root / RUN / "0" / "00000009-a1.pkl",  # a crash after the rename, before the row
        root / "run-2" / "4" / ".tmp-deadbeef",
        root / "run-gone" / "0" / "00000001-a1.pkl",  # a run whose rows were deleted
    ]
    for orphan in orphans:
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"partial")

    assert store.remove_orphans() == len(orphans)
    for orphan in orphans:
        assert not orphan.exists(), orphan
    assert files_under(root) == sorted(r.path for r in [*referenced, other])
    assert store.load_latest(RUN, 0) == {"a": 2}
    assert store.load_latest("run-2", 4) == [1, 2, 3]
    assert store.remove_orphans() == 0


def test_engine_open_removes_orphans(tmp_path: Path) -> None:
    path = tmp_path / "j.duckdb"
    journal = DuckDBJournal(path)
    store = CheckpointStore(journal, RealClock())
    kept = store.save(RUN, 0, 1, {"kept": True})
    journal.close()
    root = Path(store.root)
    tmp_file = root / RUN / "0" / ".tmp-leftover"
    unreferenced = root / RUN / "0" / "00000002-a1.pkl"
    tmp_file.write_bytes(b"x")
    unreferenced.write_bytes(b"y")
    with Engine(path):
        assert files_under(root) == [kept.path]


def test_truncated_latest_falls_back_to_previous_with_warning(store: CheckpointStore) -> None:
    store.save(RUN, 2, 1, {"epoch": 1, "payload": "x" * 10_000})
    latest = store.save(RUN, 2, 1, {"epoch": 2, "payload": "y" * 10_000})
    path = Path(store.root) / latest.path
    with open(path, "r+b") as handle:
        handle.truncate(latest.size // 2)
    with pytest.warns(RuntimeWarning, match="unreadable") as caught:
        loaded = store.load_latest(RUN, 2)
    assert loaded == {"epoch": 1, "payload": "x" * 10_000}
    assert len(caught) == 1
    assert str(path) in str(caught[0].message)


def test_corrupt_latest_of_the_same_size_falls_back(store: CheckpointStore) -> None:
    store.save(RUN, 2, 1, {"epoch": 1})
    latest = store.save(RUN, 2, 1, {"epoch": 2})
    path = Path(store.root) / latest.path
    path.write_bytes(b"\x00" * latest.size)  # same size, garbage content
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert store.load_latest(RUN, 2) == {"epoch": 1}


def test_missing_latest_falls_back_and_all_bad_gives_none(store: CheckpointStore) -> None:
    older = store.save(RUN, 2, 1, {"epoch": 1})
    latest = store.save(RUN, 2, 1, {"epoch": 2})
    (Path(store.root) / latest.path).unlink()
    with pytest.warns(RuntimeWarning):
        assert store.load_latest(RUN, 2) == {"epoch": 1}
    (Path(store.root) / older.path).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning) as caught:
        assert store.load_latest(RUN, 2) is None
    assert len(caught) == 2


def test_a_readable_latest_gives_no_warning(store: CheckpointStore) -> None:
    store.save(RUN, 0, 1, {"epoch": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load_latest(RUN, 0) == {"epoch": 1}
        assert store.load_latest(RUN, 5) is None


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(threading.Lock, id="lock"),
        pytest.param(lambda: {"weights": list(range(100_000)), "fn": lambda x: x}, id="late-fail"),
        pytest.param(lambda: (x for x in range(3)), id="generator"),
    ],
)
def test_unpicklable_state_raises_payload_error_and_leaves_nothing(
    store: CheckpointStore, journal: DuckDBJournal, state: object
) -> None:
    good = store.save(RUN, 0, 1, {"epoch": 1})
    with pytest.raises(PayloadError, match="cannot be pickled") as caught:
        store.save(RUN, 0, 1, state())  # type: ignore[operator]
    assert caught.value.run_id == RUN
    assert files_under(Path(store.root)) == [good.path], "no tmp file may be left"
    assert journal.checkpoints_of(RUN, 0) == [good]
    assert rows(journal) == 1
    assert store.load_latest(RUN, 0) == {"epoch": 1}
    # The next save still works and continues the sequence.
    assert store.save(RUN, 0, 1, {"epoch": 2}).seq == 2


def test_unpicklable_first_checkpoint_leaves_no_file(
    store: CheckpointStore, journal: DuckDBJournal
) -> None:
    with pytest.raises(PayloadError):
        store.save(RUN, 7, 1, threading.Lock())
    assert files_under(Path(store.root)) == []
    assert rows(journal) == 0
    assert store.load_latest(RUN, 7) is None


def test_rerun_after_supersede_keeps_superseded_files_intact(
    store: CheckpointStore, journal: DuckDBJournal
) -> None:
    old = store.save(RUN, 3, 1, {"version": "old"})
    old_bytes = (Path(store.root) / old.path).read_bytes()
    journal.supersede_from(
        RUN,
        3,
        EventRecord(
            run_id=RUN, position=3, kind="superseded", message="code changed", created_at=1.0
        ),
    )
    assert store.load_latest(RUN, 3) is None
    new = store.save(RUN, 3, 1, {"version": "new", "padding": "z" * 100})
    assert store.load_latest(RUN, 3) == {"version": "new", "padding": "z" * 100}
    assert new.path != old.path
    assert (Path(store.root) / old.path).read_bytes() == old_bytes
