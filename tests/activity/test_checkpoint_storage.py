"""Checkpoints in object storage (issue 19): a real S3 API server (moto, server mode) on loopback.

The engine writes checkpoints to ``s3://bucket/prefix`` through s3fs over HTTP; the journal keeps
only the reference (URL, size, sha256). Damage to an object (deleted, truncated, a flipped byte,
done with s3fs behind the engine's back) falls back to the previous checkpoint with a warning; an
unreachable server is `CheckpointStorageError`, never a fallback, and the attempt retries; a
process SIGKILLed between writing an object and journaling it leaves an orphan that a later open
deletes (once past the grace), never a dangling reference. Thread attempts here; worker processes
and Dask in tests/executors/test_checkpoint_storage_workers.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_storage import S3Server, running_s3

import weft_nb
from weft_nb import CheckpointStorage, Engine
from weft_nb.activity.storage import StoredCheckpoint
from weft_nb.errors import ActivityFailedError, CheckpointStorageError, PayloadError

CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "storage_child.py"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


def storage_engine(
    journal: Path, s3: S3Server, *, temporary_key: bool = True, **kwargs: Any
) -> Engine:
    storage = CheckpointStorage(s3.url(), s3.options(), temporary_key=temporary_key)
    return Engine(journal, checkpoint_storage=storage, **kwargs)


def objects(s3: S3Server) -> list[str]:
    """The checkpoint objects under the prefix (not the owner record)."""
    fs = s3.fs()
    found = fs.find(f"{s3.bucket}/ckpt") if fs.exists(f"{s3.bucket}/ckpt") else []
    return sorted(f"s3://{p}" for p in found if not p.endswith(".weft-owner.json"))


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
def epochs(n: int, activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Checkpoint epochs 1..n, resuming from the newest; attempt 1 fails after them."""
    seen = activity.last_checkpoint
    start = 0 if seen is None else seen["epoch"]
    for epoch in range(start + 1, n + 1):
        activity.checkpoint({"epoch": epoch, "weights": bytes(1000) + bytes([epoch])})
    if activity.attempt == 1:
        raise ConnectionError("a flaky step, retried")
    return {"seen": None if seen is None else seen["epoch"], "attempt": activity.attempt}


@weft_nb.workflow
def train(ctx: weft_nb.WorkflowContext, n: int) -> dict[str, Any]:
    result: dict[str, Any] = ctx.run(epochs, n)
    return result


@pytest.mark.parametrize("temporary_key", [True, False])
def test_thread_attempts_write_to_s3_and_the_journal_keeps_only_references(
    tmp_path: Path, s3: S3Server, temporary_key: bool
) -> None:
    journal = tmp_path / "j.duckdb"
    with storage_engine(journal, s3, checkpoint_keep=2, temporary_key=temporary_key) as engine:
        engine.register(epochs, train)
        result = engine.run(train, 3, run_id="r", timeout=60)
        engine.checkpoints.drain()
        rows = engine.journal.query(
            "SELECT seq, path, size, codec FROM checkpoints WHERE run_id = 'r' AND NOT superseded "
            "ORDER BY seq"
        )
    assert result == {"seen": 3, "attempt": 2}  # the retry read epoch 3 back from S3
    assert [r[0] for r in rows] == [2, 3]  # checkpoint_keep=2: the first one was pruned...
    assert sorted(r[1] for r in rows) == objects(s3)  # ...in S3 too; rows name the objects
    fs = s3.fs()
    for _seq, url, size, codec in rows:
        assert url.startswith(s3.url() + "/r/0/a1-")
        assert fs.info(url)["size"] == size and codec.startswith("pickle+sha256:")
    local = tmp_path / "j.duckdb.checkpoints"
    assert not local.exists() or not [p for p in local.rglob("*.pkl")]  # nothing beside it


@pytest.mark.parametrize("temporary_key", [True, False])
def test_a_state_that_does_not_pickle_leaves_no_object(
    tmp_path: Path, s3: S3Server, temporary_key: bool
) -> None:
    with storage_engine(tmp_path / "j.duckdb", s3, temporary_key=temporary_key) as engine:
        engine.checkpoints.save("run", 0, 1, {"epoch": 1})
        before = objects(s3)
        big = bytes(6 << 20)  # past s3fs's first part: an upload was under way
        with pytest.raises(PayloadError, match="cannot be pickled"):
            engine.checkpoints.save("run", 0, 1, {"big": big, "lock": threading.Lock()})
        assert objects(s3) == before
        assert len(engine.journal.checkpoints_of("run", 0)) == 1


def two_checkpoints(tmp_path: Path, s3: S3Server) -> tuple[Engine, str]:
    engine = storage_engine(tmp_path / "j.duckdb", s3, checkpoint_keep=3)
    engine.checkpoints.save("run", 0, 1, {"epoch": 1})
    newest = engine.checkpoints.save("run", 0, 1, {"epoch": 2, "pad": "x" * 5000})
    return engine, newest.path


@pytest.mark.parametrize("damage", ["deleted", "truncated", "flipped byte"])
def test_a_damaged_object_falls_back_to_the_previous_one_with_a_warning(
    tmp_path: Path, s3: S3Server, damage: str
) -> None:
    engine, newest = two_checkpoints(tmp_path, s3)
    fs = s3.fs()
    good = fs.cat(newest)
    if damage == "deleted":
        fs.rm(newest)
    elif damage == "truncated":
        fs.pipe(newest, good[:-100])
    else:  # same size: only the digest sees it
        fs.pipe(newest, good[:-10] + bytes([good[-10] ^ 0x01]) + good[-9:])
    with engine, pytest.warns(RuntimeWarning, match=f"{newest}.*unreadable.*falling back"):
        assert engine.checkpoints.load_latest("run", 0) == {"epoch": 1}


def test_an_unreachable_storage_is_named_and_never_taken_for_damage(
    tmp_path: Path, s3: S3Server
) -> None:
    engine, newest = two_checkpoints(tmp_path, s3)
    s3.stop()
    with engine:
        with pytest.raises(CheckpointStorageError) as info:
            engine.checkpoints.load_latest("run", 0)  # not a warning and epoch 1, not None
        assert info.value.url == newest and info.value.operation == "read"
        with pytest.raises(CheckpointStorageError) as info:
            engine.checkpoints.save("run", 0, 1, {"epoch": 3})
        assert info.value.operation == "write"
        s3.start()
        assert engine.checkpoints.load_latest("run", 0)["epoch"] == 2
        assert [r.seq for r in engine.journal.checkpoints_of("run", 0)] == [2, 1]  # none added


def test_a_reference_to_an_unpublished_object_is_never_journaled(
    tmp_path: Path, s3: S3Server
) -> None:
    engine, newest = two_checkpoints(tmp_path, s3)
    size = s3.fs().info(newest)["size"]
    missing = StoredCheckpoint(newest.replace("/a1-", "/a1-never-"), size, "0" * 64)
    wrong_size = StoredCheckpoint(newest, size + 1, "0" * 64)
    with engine:
        for ref in (missing, wrong_size):  # what a worker would send, had its publish failed
            with pytest.raises(CheckpointStorageError, match="the published object is"):
                engine.checkpoints.save("run", 0, 2, ref)
        assert [r.seq for r in engine.journal.checkpoints_of("run", 0)] == [2, 1]


SERVER: list[S3Server] = []  # the running test's server, for `outage` to stop and start


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": 0.01})
def outage(n: int, activity: weft_nb.ActivityContext) -> int:
    """Attempt 1 finds the storage down; attempt 2 finds it back."""
    if activity.attempt == 1:
        SERVER[0].stop()
    else:
        SERVER[0].start()
    activity.checkpoint({"epoch": n})
    return activity.attempt


@weft_nb.workflow
def through_outage(ctx: weft_nb.WorkflowContext, n: int) -> int:
    result: int = ctx.run(outage, n)
    return result


def test_an_outage_fails_the_attempt_with_the_named_error_and_the_retry_succeeds(
    tmp_path: Path, s3: S3Server
) -> None:
    SERVER[:] = [s3]
    with storage_engine(tmp_path / "j.duckdb", s3) as engine:
        engine.register(outage, through_outage)
        assert engine.run(through_outage, 7, run_id="o", timeout=120) == 2
        failed = engine.journal.query("SELECT attempt, error_type FROM attempts WHERE run_id='o'")
        assert failed == [(1, "CheckpointStorageError")]
        assert engine.checkpoints.load_latest("o", 0) == {"epoch": 7}


def test_storage_down_for_every_attempt_fails_only_after_the_retries(tmp_path: Path) -> None:
    with running_s3() as s3:
        options = s3.options()
    # the server is gone: nothing listens on its port. The engine opens anyway (with a warning
    # that its orphan cleanup could not run); each attempt fails on its checkpoint.
    with pytest.warns(RuntimeWarning, match="could not clean checkpoint storage"):
        engine = Engine(tmp_path / "j.duckdb", checkpoint_storage=s3.url(), storage_options=options)
    with engine:
        engine.register(epochs, train)
        with pytest.raises(ActivityFailedError) as info:
            engine.run(train, 2, run_id="down", timeout=120)
    assert info.value.cause_type == "CheckpointStorageError" and info.value.attempts == 3


def crash_child(tmp_path: Path, s3: S3Server, kill_at: str, temporary_key: bool) -> Path:
    journal = tmp_path / "j.duckdb"
    env = {**os.environ, "WEFT_NB_KILL_AT": kill_at}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    args = [sys.executable, str(CHILD), str(journal), s3.url(), json.dumps(s3.options())]
    args.append("1" if temporary_key else "0")
    done = subprocess.run(args, check=False, env=env, timeout=120, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr  # SIGKILLed at the fault point
    return journal


def load_child() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("storage_child", CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("kill_at", "temporary_key"),
    [
        ("checkpoint.published:2", True),
        ("checkpoint.object_written:2", True),
        ("checkpoint.object_written:2", False),
    ],
)
def test_a_crash_between_object_and_journal_leaves_an_orphan_that_a_later_open_deletes(
    tmp_path: Path, s3: S3Server, kill_at: str, temporary_key: bool
) -> None:
    journal = crash_child(tmp_path, s3, kill_at, temporary_key)
    left = objects(s3)
    assert len(left) == 2  # epoch 1 (journaled) and epoch 2 (published or temporary, not)
    # A fresh open within the grace leaves it: a live worker may have just published it.
    with storage_engine(journal, s3) as engine:
        rows = [r.path for r in engine.journal.checkpoints_of("s3-crash", 0)]
        assert len(rows) == 1 and rows[0] in left  # never a reference to the orphan
    assert objects(s3) == left
    child = load_child()
    storage = CheckpointStorage(s3.url(), s3.options(), orphan_grace=0)
    with Engine(journal, checkpoint_storage=storage) as engine:
        assert objects(s3) == rows  # past the grace: the orphan is gone, the reference kept
        engine.register(child.train, child.training)
        result = engine.resume(child.RUN_ID).result(timeout=120)
    assert result == {"resumed_from": 1}


def test_orphan_cleanup_deletes_only_what_weft_nb_wrote_for_this_journals_runs(
    tmp_path: Path,
) -> None:
    """A user's objects under the prefix, and another journal's checkpoints, are never deleted."""
    prefix = tmp_path / "shared"
    users = {
        prefix / "notes.csv": b"a,b\n",
        prefix / "data" / "part-0.parquet": b"PAR1",
        prefix / "mine" / "0" / "model.bin": b"weights",  # shaped like a run folder
        prefix / "mine" / "0" / "a1-notours.pkl": b"x",  # a name weft_nb never writes
    }

    def storage() -> CheckpointStorage:
        return CheckpointStorage(str(prefix), orphan_grace=0)

    with Engine(tmp_path / "a.duckdb", checkpoint_storage=storage()) as first:  # claims it
        first.register(epochs, train)
        first.run(train, 1, run_id="mine", timeout=60)
        first.checkpoints.drain()
    for path, data in users.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="belongs to another journal"):
        with Engine(tmp_path / "b.duckdb", checkpoint_storage=storage()) as other:
            theirs = other.checkpoints.save("theirs", 0, 1, {"epoch": 1}).path
    with Engine(tmp_path / "a.duckdb", checkpoint_storage=storage()) as first:
        kept = first.journal.all_checkpoint_paths()
    for path, data in users.items():
        assert path.read_bytes() == data, path
    assert Path(theirs.removeprefix("file://")).exists()  # another journal's checkpoint
    assert all(Path(url.removeprefix("file://")).exists() for url in kept)


def test_a_bucket_that_is_gone_is_named_not_taken_for_damage(tmp_path: Path, s3: S3Server) -> None:
    """Every object missing with its whole prefix (wrong/deleted bucket): never a silent restart."""
    engine, _newest = two_checkpoints(tmp_path, s3)
    with engine:
        s3.fs().rm(s3.bucket, recursive=True)
        with pytest.raises(CheckpointStorageError, match="nothing is stored under"):
            engine.checkpoints.load_latest("run", 0)


def test_a_checkpoint_pruned_while_it_is_read_is_not_taken_for_damage(tmp_path: Path) -> None:
    """A reader that read the rows just before a newer checkpoint pruned (keep=1) the one it
    is about to open gets the newer one: no damage warning, never None."""
    import warnings

    from weft_nb.activity.restore import first_readable

    storage = CheckpointStorage(str(tmp_path / "store"))
    with Engine(tmp_path / "j.duckdb", checkpoint_storage=storage, checkpoint_keep=1) as engine:
        store = engine.checkpoints
        store.save("r", 0, 1, {"epoch": 1})
        stale = store.records("r", 0)  # what a reader read...
        store.save("r", 0, 1, {"epoch": 2})  # ...before a newer checkpoint pruned it
        store.drain()
        assert not Path(stale[0].path.removeprefix("file://")).exists()
        reads = [stale]

        def rows() -> list[Any]:
            return reads.pop() if reads else store.records("r", 0)

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            state = first_readable(rows, "r", 0, store.open_checked, store.where)
    assert state == {"epoch": 2}
