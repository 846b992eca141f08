"""Benchmark: a big checkpoint from a Dask worker straight to S3, against a raw fsspec put.

Run with ``.venv/bin/python benchmarks/bench_checkpoint_storage.py [--mib 1024] [--rounds 3]``
(``make bench`` runs it). Self-contained: it starts a moto S3 server on loopback (``moto[server]``,
a test dependency) and a ``LocalCluster`` with one worker process, and needs the ``s3`` and
``dask`` extras. It prints a table and, unless ``--no-doc``, writes it into
``docs/guides/scaling.md`` between the ``<!-- bench-checkpoint-storage:start -->`` and
``<!-- bench-checkpoint-storage:end -->`` markers.

Both sides run on the same Dask worker, with the same bytes (generated there before timing):

- raw: ``fs.pipe_file(path, data)`` with s3fs, the bare cost of putting the bytes into S3;
- weft_nb: ``activity.checkpoint(data)`` in an activity on ``DaskExecutor`` with
  ``checkpoint_storage="s3://..."``: pickle to a temporary key (sha256 on the way), publish it
  (a server-side copy and delete on S3), check its size, and the kernel's check and journal row,
  until ``checkpoint()`` returns; and the same with ``temporary_key=False`` (no copy).

Alongside: the bytes the kernel received from the worker for the whole run (the reference, the
result; never the checkpoint), from ``weft_nb.executors.remote.received_bytes``. The server runs
in this process and keeps objects in memory: these figures compare the two paths on one machine,
they are not S3's own throughput.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import weft_nb
from weft_nb.executors.remote import received_bytes

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "guides" / "scaling.md"
START, END = "<!-- bench-checkpoint-storage:start -->", "<!-- bench-checkpoint-storage:end -->"
MIB = 1 << 20


def make_bytes(size: int) -> bytes:
    block = bytes(range(256)) * 4096  # 1 MiB, not compressible by anything in between
    return (block * (size // len(block) + 1))[:size]


def raw_put(url: str, options: dict[str, Any], size: int) -> float:
    """On the worker: seconds for one ``pipe_file`` of ``size`` bytes (and the delete after)."""
    import fsspec

    data = make_bytes(size)
    fs, path = fsspec.core.url_to_fs(url, **options)
    started = time.perf_counter()
    fs.pipe_file(path, data)
    took = time.perf_counter() - started
    fs.rm(path)
    return took


@weft_nb.activity(retry={"max_attempts": 1})
def save_big(size: int, activity: weft_nb.ActivityContext) -> float:
    """Seconds for one ``checkpoint()`` of ``size`` bytes, on the worker."""
    data = make_bytes(size)
    started = time.perf_counter()
    activity.checkpoint(data)
    return time.perf_counter() - started


@weft_nb.workflow
def one_save(ctx: weft_nb.WorkflowContext, size: int) -> float:
    seconds: float = ctx.run(save_big, size)
    return seconds


def measure(mib: int, rounds: int) -> dict[str, Any]:
    import cloudpickle
    import distributed
    import s3fs
    from moto.server import ThreadedMotoServer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
        # moto assembles a 1 GiB multipart upload slowly: a retried completion fails there
        "config_kwargs": {"read_timeout": 1800, "retries": {"max_attempts": 1}},
    }
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(**options).call_s3("create_bucket", Bucket=bucket)
    size = mib * MIB
    raw: list[float] = []
    ours: dict[bool, list[float]] = {True: [], False: []}  # by temporary_key
    kernel: list[int] = []
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit=0,  # 1 GiB in bytes plus its pickle stream: no nanny restarts mid-round
    )
    try:
        with (
            cluster,
            distributed.Client(cluster, set_as_default=False) as client,
            tempfile.TemporaryDirectory() as folder,
        ):
            engines = {
                temporary: weft_nb.Engine(
                    Path(folder) / f"bench-{temporary}.duckdb",
                    executor=weft_nb.DaskExecutor(client),
                    checkpoint_storage=weft_nb.CheckpointStorage(
                        f"s3://{bucket}/ckpt-{temporary}", options, temporary_key=temporary
                    ),
                    checkpoint_keep=1,
                )
                for temporary in (True, False)
            }
            for engine in engines.values():
                engine.register(save_big, one_save)
                engine.run(one_save, MIB, run_id="warm-up", timeout=600)
            for n in range(rounds):
                url = f"s3://{bucket}/raw/{n}.bin"
                raw.append(client.submit(raw_put, url, options, size, pure=False).result())
                for temporary, engine in engines.items():
                    before = received_bytes()
                    seconds = engine.run(one_save, size, run_id=f"r{n}", timeout=1800)
                    ours[temporary].append(seconds)
                    kernel.append(received_bytes() - before)
                    engine.checkpoints.drain()
                print(
                    f"  round {n + 1}: raw {raw[-1]:.2f} s, weft_nb {ours[True][-1]:.2f} s "
                    f"(temporary_key=False: {ours[False][-1]:.2f} s), kernel received "
                    f"{max(kernel[-2:])} bytes at most",
                    file=sys.stderr,
                    flush=True,
                )
            for engine in engines.values():
                engine.close()
    finally:
        server.stop()
    return {"mib": mib, "rounds": rounds, "raw": raw, "ours": ours, "kernel": kernel}


def table(found: dict[str, Any]) -> str:
    mib = found["mib"]

    def row(name: str, samples: list[float]) -> str:
        med = statistics.median(samples)
        return (
            f"| {name} | {med:.2f} s | {mib / med:,.0f} MiB/s | "
            f"{min(samples):.2f} s | {max(samples):.2f} s |"
        )

    raw = statistics.median(found["raw"])
    ratios = [statistics.median(found["ours"][t]) / raw for t in (True, False)]
    when = datetime.date.today().isoformat()
    lines = [
        f"| {mib:,} MiB from a Dask worker to S3 (moto) | time (median) | rate | min | max |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("raw `fsspec` put (`pipe_file`)", found["raw"]),
        row("`checkpoint()`: temporary key, copy, checks, journal", found["ours"][True]),
        row("`checkpoint()`, `temporary_key=False`", found["ours"][False]),
        "",
        f"weft_nb / raw: {ratios[0]:.2f}x (temporary key), {ratios[1]:.2f}x (final key). Bytes "
        f"the kernel received per run: {max(found['kernel']):,} at most (the checkpoint was "
        f"{mib * MIB:,}).",
        "",
        f"Measured {when} on Python {platform.python_version()}, {platform.system()}, "
        f"{found['rounds']} rounds (`.venv/bin/python benchmarks/bench_checkpoint_storage.py "
        f"--mib {mib}`).",
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    page = DOC.read_text()
    if START not in page:
        print(f"no {START} marker in {DOC}; not written", file=sys.stderr)
        return
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    DOC.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", page))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="checkpoint size (default 1 GiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the docs")
    args = parser.parse_args()
    try:
        import distributed  # noqa: F401
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        print(f"skipped: needs the s3 and dask extras and moto[server] ({exc})", file=sys.stderr)
        return
    text = table(measure(args.mib, args.rounds))
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
