"""The executors' section: per sequential activity on each executor, beside the bare round trips.

- thread (inline), process (2 worker processes) and Dask (a 2-worker ``LocalCluster`` of
  processes): a workflow of sequential ``ctx.run`` calls of an activity that returns its input,
  workers started before timing, rounds interleaved so background load hits all alike;
- the bare Dask round trip, ``client.submit(f).result()`` on the same cluster, in the same rounds:
  what Dask itself costs, the Dask executor's baseline.

Dask is optional (the ``dask`` extra); without ``distributed`` its rows are left out.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from typing import Any

from _common import Config, Result, progress, record
from _engine_sections import noop, steps_wf

import weft_nb


def _one() -> int:
    return 1


def _dask_client() -> Any:
    try:
        import distributed
    except ImportError:
        progress("executors: distributed is not installed; the Dask rows are left out")
        return None
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", silence_logs=logging.ERROR,
    )  # fmt: skip
    return distributed.Client(cluster, set_as_default=False)


def bench_executors(cfg: Config, tmp: str, floor: Result) -> None:
    """Per sequential activity on the thread, process and Dask executors; the bare Dask trip."""
    steps = cfg.executor_steps
    client = _dask_client()
    makers: dict[str, Any] = {
        "thread": weft_nb.ThreadExecutor,
        "process": lambda: weft_nb.ProcessExecutor(max_workers=2),
    }
    if client is not None:
        makers["dask"] = lambda: weft_nb.DaskExecutor(client)
    progress(f"executors: {steps} sequential activities on {', '.join(makers)} x {cfg.rounds}")
    engines = {}
    for name, make in makers.items():
        engine = weft_nb.Engine(
            os.path.join(tmp, f"executor-{name}", "journal.duckdb"), executor=make()
        )
        engine.register(noop, steps_wf)
        engine.run(steps_wf, 3)  # start the workers
        engines[name] = engine
    samples: dict[str, list[float]] = {name: [] for name in engines}
    bare: list[float] = []
    try:
        for r in range(cfg.rounds):
            names = list(engines)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                gc.collect()
                t = time.perf_counter()
                engines[name].run(steps_wf, steps)
                samples[name].append((time.perf_counter() - t) / steps * 1e3)
            if client is not None:
                t = time.perf_counter()
                for _ in range(steps):
                    client.submit(_one, pure=False).result()
                bare.append((time.perf_counter() - t) / steps * 1e3)
    finally:
        for engine in engines.values():
            engine.close()
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    floor_ms = floor.median / 1e3
    for name, values in samples.items():
        record(
            Result(
                "executors",
                f"{name} executor, per sequential activity",
                "ms",
                values,
                ratio=f"{statistics.median(values) / floor_ms:.1f}x floor",
            )
        )
    if bare:
        record(Result("executors", "bare Dask `client.submit(f).result()` round trip", "ms", bare))
        pair = [d / b for d, b in zip(samples["dask"], bare, strict=True)]
        record(Result("executors", "Dask executor / bare Dask round trip (paired)", "x", pair))
