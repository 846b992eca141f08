"""Workers write checkpoints straight to object storage (issue 19): worker processes and Dask.

A real S3 API server (moto, server mode) on loopback; worker processes of ``ProcessExecutor`` and
a real ``LocalCluster`` with worker processes. A worker writes the object itself and sends the
kernel only the reference, which the kernel checks and journals; ``last_checkpoint`` on any
worker reads from S3. The kernel's traffic with its workers (every message and result, counted by
``weft_nb.executors.remote.received_bytes`` and ``sent_bytes``) shows that a checkpoint's bytes
never pass through it, either way.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from executor_workflows import REGISTERED, training
from s3_storage import S3Server, running_s3

import weft_nb
from weft_nb.executors.remote import received_bytes, sent_bytes

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file

BIG = 24 << 20  # bytes of the big checkpoint: far above what a reference costs


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


def storage_engine(journal: Path, s3: S3Server, executor: weft_nb.Executor) -> weft_nb.Engine:
    engine = weft_nb.Engine(
        journal,
        executor=executor,
        checkpoint_storage=s3.url(journal.parent.name),
        storage_options=s3.options(),
        heartbeat_interval=0.05,
    )
    engine.register(*REGISTERED, big, with_big)
    return engine


def payload(size: int) -> bytes:
    return random.Random(7).randbytes(size)


@weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 0.01})
def big(size: int, activity: weft_nb.ActivityContext) -> str:
    """Attempt 1 checkpoints ``size`` bytes and fails; attempt 2 reads them back (on a worker)."""
    if activity.attempt == 1:
        activity.checkpoint({"blob": payload(size)})
        raise ConnectionError("retried: the next attempt resumes from the checkpoint")
    return hashlib.sha256(activity.last_checkpoint["blob"]).hexdigest()


@weft_nb.workflow
def with_big(ctx: weft_nb.WorkflowContext, size: int) -> str:
    digest: str = ctx.run(big, size)
    return digest


def check_resume_on_another_worker(engine: weft_nb.Engine, s3: S3Server, folder: Path) -> None:
    """Attempt 1 checkpoints and SIGKILLs its worker; attempt 2 reads the checkpoint from S3."""
    result = engine.run(training, {"dir": str(folder)}, run_id="t", timeout=180)
    assert result["seen"]["checkpoint"] == {"epoch": 3} and result["epoch"] == 6
    engine.checkpoints.drain()
    rows = engine.journal.query(
        "SELECT path, size FROM checkpoints WHERE run_id = 't' AND NOT superseded"
    )
    fs = s3.fs()
    assert len(rows) == 2 and all(
        p.startswith("s3://") and fs.info(p)["size"] == n for p, n in rows
    )


def check_kernel_never_gets_the_bytes(engine: weft_nb.Engine, s3: S3Server) -> None:
    before, sent_before = received_bytes(), sent_bytes()
    digest = engine.run(with_big, BIG, run_id="big", timeout=300)
    received, sent = received_bytes() - before, sent_bytes() - sent_before
    assert digest == hashlib.sha256(payload(BIG)).hexdigest()  # written and read on workers
    (url, size), *_ = engine.journal.query("SELECT path, size FROM checkpoints WHERE run_id='big'")
    assert url.startswith("s3://") and s3.fs().info(url)["size"] == size > BIG
    assert received < 256 << 10, f"the kernel received {received} bytes from the workers"
    assert sent < 256 << 10, f"the kernel sent {sent} bytes to the workers"  # read from S3


def test_worker_processes_write_to_s3_and_resume_from_it(tmp_path: Path, s3: S3Server) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    with storage_engine(tmp_path / "j.duckdb", s3, weft_nb.ProcessExecutor(2)) as engine:
        check_resume_on_another_worker(engine, s3, folder)
        check_kernel_never_gets_the_bytes(engine, s3)


def test_dask_workers_write_to_s3_and_the_kernel_never_gets_the_bytes(
    tmp_path: Path, s3: S3Server
) -> None:
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    folder = tmp_path / "evidence"
    folder.mkdir()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        executor = weft_nb.DaskExecutor(client)
        with storage_engine(tmp_path / "j.duckdb", s3, executor) as engine:
            check_kernel_never_gets_the_bytes(engine, s3)
            check_resume_on_another_worker(engine, s3, folder)


def test_without_storage_the_bytes_do_pass_through_the_kernel(tmp_path: Path) -> None:
    """The counter's control: the same step without a storage sends the kernel the bytes."""
    with weft_nb.Engine(tmp_path / "j.duckdb", executor=weft_nb.ProcessExecutor(1)) as engine:
        engine.register(big, with_big)
        before = received_bytes()
        engine.run(with_big, 1 << 20, run_id="small", timeout=120)
        assert received_bytes() - before > 1 << 20


def test_a_shared_folder_works_as_the_storage_for_worker_processes(tmp_path: Path) -> None:
    """A path (a shared file system) is a storage too: workers write there, not the kernel."""
    shared = tmp_path / "shared-ckpt"
    with weft_nb.Engine(
        tmp_path / "j.duckdb", executor=weft_nb.ProcessExecutor(1), checkpoint_storage=str(shared)
    ) as engine:
        engine.register(big, with_big)
        before, sent_before = received_bytes(), sent_bytes()
        digest = engine.run(with_big, 4 << 20, run_id="shared", timeout=120)
        assert received_bytes() - before < 64 << 10 and sent_bytes() - sent_before < 64 << 10
        (url,) = [r.path for r in engine.journal.checkpoints_of("shared", 0)]
    assert digest == hashlib.sha256(payload(4 << 20)).hexdigest()
    assert url.startswith(f"file://{shared}/shared/0/a1-") and url.endswith(".pkl")
    assert [p.name for p in shared.rglob("*.pkl")] == [url.rsplit("/", 1)[1]]  # no temporary
