"""Benchmarks for the executors: per-activity overhead, and a CPU-bound sweep's speed-up.

Run with ``.venv/bin/python benchmarks/bench_executors.py`` (``make bench`` runs it after
``bench_engine.py``). It prints a table and, unless ``--no-doc``, writes it into
``docs/guides/scaling.md`` between the ``<!-- bench-executors:start -->`` and
``<!-- bench-executors:end -->`` markers.

- Per-activity overhead: a workflow of sequential ``ctx.run`` calls of an activity that returns
  its input at once, per executor, against a plain Python call of the same function. Workers are
  started (warmed up) before timing.
- Sweep: 8 pure-Python CPU-bound tasks of about 0.5 s each, run sequentially inline, then with
  ``ctx.all`` on each executor with 2 workers (the thread executor shares one GIL).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import weft_nb

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "guides" / "scaling.md"
START, END = "<!-- bench-executors:start -->", "<!-- bench-executors:end -->"


@weft_nb.activity
def echo(x: Any) -> Any:
    return x


@weft_nb.workflow
def sequential(ctx: weft_nb.WorkflowContext, n: int) -> int:
    for i in range(n):
        ctx.run(echo, i)
    return n


def burn(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


@weft_nb.activity
def burn_activity(loops: int) -> int:
    return burn(loops)


@weft_nb.workflow
def sweep(ctx: weft_nb.WorkflowContext, args: dict[str, int]) -> list[int]:
    return ctx.all([ctx.submit(burn_activity, args["loops"]) for _ in range(args["tasks"])])


def calibrate(seconds: float) -> int:
    loops = 100_000
    while True:
        started = time.perf_counter()
        burn(loops)
        took = time.perf_counter() - started
        if took > 0.05:
            return int(loops * seconds / took)
        loops *= 4


def executors(dask: bool) -> dict[str, Any]:
    made: dict[str, Any] = {
        "thread": weft_nb.ThreadExecutor,
        "process": lambda: weft_nb.ProcessExecutor(max_workers=2),
    }
    if dask:
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0", silence_logs=logging.ERROR,
        )  # fmt: skip
        client = distributed.Client(cluster, set_as_default=False)
        made["dask"] = lambda: weft_nb.DaskExecutor(client)
    return made


def per_step(make: Any, steps: int, rounds: int, folder: Path) -> list[float]:
    times = []
    for r in range(rounds + 1):
        with weft_nb.Engine(folder / f"{id(make)}-{r}.duckdb", executor=make()) as engine:
            engine.run(sequential, 2)  # start the workers
            started = time.perf_counter()
            engine.run(sequential, steps)
            took = time.perf_counter() - started
        if r:  # round 0 warms up imports and caches
            times.append(took / steps)
    return times


def sweep_time(make: Any, tasks: int, loops: int, folder: Path) -> float:
    with weft_nb.Engine(folder / f"sweep-{id(make)}.duckdb", executor=make()) as engine:
        engine.run(sweep, {"tasks": 2, "loops": 1000})  # start the workers
        started = time.perf_counter()
        engine.run(sweep, {"tasks": tasks, "loops": loops})
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--task-seconds", type=float, default=0.5)
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="weft-bench-exec-"))
    made = executors(not args.no_dask)

    calls = 100_000
    started = time.perf_counter()
    for i in range(calls):
        echo(i)
    plain = (time.perf_counter() - started) / calls

    rows = ["| executor | per activity (median of rounds) | min | max | vs a plain call |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| plain Python call | {plain * 1e6:.2f} us | | | 1x |"]  # fmt: skip
    for name, make in made.items():
        times = per_step(make, args.steps, args.rounds, folder)
        med = statistics.median(times)
        rows.append(f"| {name} | {med * 1e3:.2f} ms | {min(times) * 1e3:.2f} ms | "
                    f"{max(times) * 1e3:.2f} ms | {med / plain:,.0f}x |")  # fmt: skip

    loops = calibrate(args.task_seconds)
    started = time.perf_counter()
    for _ in range(args.tasks):
        burn(loops)
    inline = time.perf_counter() - started
    rows += ["", f"| {args.tasks} CPU-bound tasks of ~{args.task_seconds:g} s | wall time | "
             "speed-up vs inline sequential |", "| --- | ---: | ---: |",
             f"| inline, sequential | {inline:.2f} s | 1.00x |"]  # fmt: skip
    for name, make in made.items():
        took = sweep_time(make, args.tasks, loops, folder)
        label = f"{name}, ctx.all, 2 workers" if name != "thread" else "thread, ctx.all"
        rows.append(f"| {label} | {took:.2f} s | {inline / took:.2f}x |")

    machine = f"{platform.python_version()}, {platform.system()}, {os.cpu_count()} CPUs"
    table = "\n".join(rows) + (
        f"\n\nMeasured {time.strftime('%Y-%m-%d')} on Python {machine}; "
        f"{args.steps} sequential steps x {args.rounds} rounds "
        "(`.venv/bin/python benchmarks/bench_executors.py`)."
    )
    print(table)
    if not args.no_doc and DOC.exists():
        text = DOC.read_text(encoding="utf-8")
        block = f"{START}\n{table}\n{END}"
        DOC.write_text(re.sub(f"{START}.*?{END}", lambda _: block, text, flags=re.S), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
