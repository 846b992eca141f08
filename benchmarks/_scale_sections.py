"""Sections beyond the engine's own: DBOS side by side, the notebook surface, scale and memory.

- DBOS Transact on its default SQLite database, with the same trivial steps, its rounds
  interleaved with weft_nb's so both see the same machine (needs the ``bench`` extra).
- ``%load_ext weft_nb`` plus opening a journal, and ``%weft show`` of a 10,000-step run, each in a
  fresh Python process (import time is part of what a user waits for).
- A 500-way ``ctx.all`` of trivial activities (and DBOS async steps under ``asyncio.gather``).
- Resident memory of a process after one 100,000-step workflow.
- Checkpoints of a 1 GiB array, and the training thread's cost of a background checkpoint.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
from _common import MIB, Config, Result, prefault_memory, progress, record
from _engine_sections import checkpoint_bench, noop, record_checkpoint_rounds, steps_wf

import weft_nb

# -- DBOS ----------------------------------------------------------------------------------


def bench_dbos(cfg: Config, tmp: str, floor: Result) -> bool:
    """Per-step and 1-step-workflow times of DBOS and weft_nb, rounds interleaved."""
    try:
        from dbos import DBOS
    except ImportError:
        progress("DBOS: not installed (`pip install -e '.[bench]'`); section skipped")
        return False
    import importlib.metadata
    import logging

    version = importlib.metadata.version("dbos")
    progress(f"DBOS {version} on SQLite vs weft_nb: {cfg.steps}-step workflows x {cfg.rounds}")
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(
        config={
            "name": "weft-bench",
            "system_database_url": f"sqlite:///{os.path.join(tmp, 'dbos.sqlite')}",
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def dbos_noop(x: Any) -> Any:
        return x

    @DBOS.workflow()
    def dbos_steps(n: int) -> int:
        for i in range(n):
            dbos_noop(i)
        return n

    @DBOS.step()
    async def dbos_async_noop(x: Any) -> Any:
        return x

    @DBOS.workflow()
    async def dbos_fan_out(n: int) -> int:
        return len(await asyncio.gather(*(dbos_async_noop(i) for i in range(n))))

    DBOS.launch()
    engine = weft_nb.Engine(os.path.join(tmp, "versus-dbos", "journal.duckdb"))
    engine.register(noop, steps_wf, fan_out_wf)
    width = cfg.fan_out
    try:
        dbos_steps(10)
        engine.run(steps_wf, 10)
        asyncio.run(dbos_fan_out(10))
        engine.run(fan_out_wf, 10)
        samples: dict[str, list[float]] = {
            k: [] for k in ("weft", "dbos", "weft1", "dbos1", "weftfan", "dbosfan")
        }
        runners = {
            "weft": lambda n: engine.run(steps_wf, n),
            "dbos": dbos_steps,
        }
        fans = {
            "weft": lambda n: engine.run(fan_out_wf, n),
            "dbos": lambda n: asyncio.run(dbos_fan_out(n)),
        }
        for r in range(cfg.rounds):
            order = ["weft", "dbos"] if r % 2 == 0 else ["dbos", "weft"]
            for name in order:
                gc.collect()
                t = time.perf_counter()
                runners[name](cfg.steps)
                samples[name].append((time.perf_counter() - t) / cfg.steps * 1e3)
                t = time.perf_counter()
                for _ in range(cfg.single_reps):
                    runners[name](1)
                samples[name + "1"].append((time.perf_counter() - t) / cfg.single_reps * 1e3)
                gc.collect()
                t = time.perf_counter()
                if fans[name](width) != width:
                    raise RuntimeError(f"{name} fan-out returned the wrong count")
                samples[name + "fan"].append((time.perf_counter() - t) / width * 1e3)
    finally:
        engine.close()
        DBOS.destroy(destroy_registry=True)
    weft, dbos = samples["weft"], samples["dbos"]
    pair = [w / d for w, d in zip(weft, dbos, strict=True)]
    floor_ms = floor.median / 1e3
    record(
        Result(
            "versus DBOS",
            f"weft_nb per step, {cfg.steps}-step workflow (interleaved with DBOS)",
            "ms",
            weft,
            ratio=f"{statistics.median(weft) / floor_ms:.1f}x floor",
        )
    )
    record(
        Result(
            "versus DBOS",
            f"DBOS {version} (SQLite) per step, {cfg.steps}-step workflow",
            "ms",
            dbos,
            ratio=f"{statistics.median(dbos) / floor_ms:.1f}x floor",
        )
    )
    record(Result("versus DBOS", "weft_nb / DBOS per step (paired per round)", "x", pair))
    one = samples["weft1"]
    record(
        Result(
            "versus DBOS",
            "weft_nb 1-step workflow end to end",
            "ms",
            one,
            ratio=f"{statistics.median(one) / floor_ms:.1f}x floor",
        )
    )
    record(Result("versus DBOS", "DBOS 1-step workflow end to end", "ms", samples["dbos1"]))
    pair1 = [w / d for w, d in zip(one, samples["dbos1"], strict=True)]
    record(Result("versus DBOS", "weft_nb / DBOS 1-step workflow (paired per round)", "x", pair1))
    for name, label in (("weft", "weft_nb `ctx.all`"), ("dbos", "DBOS async steps, `gather`")):
        per = samples[name + "fan"]
        record(
            Result(
                "versus DBOS",
                f"{label}: per step of a {width}-way fan-out",
                "ms",
                per,
                ratio=f"{statistics.median(per) / floor_ms:.2f}x floor",
            )
        )
    return True


# -- the notebook surface, in fresh processes ------------------------------------------------

_SURFACE_PROBE = textwrap.dedent(
    """
    import json, sys, time
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    journal, run_id = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    import weft_nb
    t_import = time.perf_counter()
    shell.run_line_magic("load_ext", "weft_nb")
    shell.run_line_magic("weft", "journal " + journal)
    runs = shell.run_line_magic("weft", "runs")
    t1 = time.perf_counter()
    panel = shell.run_line_magic("weft", "show " + run_id)
    t2 = time.perf_counter()
    assert any(r.run_id == run_id for r in runs), runs
    lazy = [m for m in ("weft_nb.executors.dask", "weft_nb.executors.process") if m in sys.modules]
    print(json.dumps({"import": t_import - t0, "load_open": t1 - t0, "show": t2 - t1,
                      "eager": lazy}))
    """
)


def bench_notebook_surface(cfg: Config, journal: str, run_id: str, steps: int) -> None:
    """``%load_ext weft_nb`` + first journal use, and ``%weft show`` of a long run."""
    progress(f"notebook surface: %load_ext + open, %weft show of {steps:,} steps, fresh processes")
    load_open, show, imports = [], [], []
    # Compiled bytecode, as an installed package has (PYTHONDONTWRITEBYTECODE would make every
    # fresh process compile weft_nb's ~140 modules again): an own cache, warmed by round 0.
    env = {**os.environ, "PYTHONPYCACHEPREFIX": os.path.join(os.path.dirname(journal), "pyc")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for round_no in range(cfg.rounds + 1):
        done = subprocess.run(
            [sys.executable, "-c", _SURFACE_PROBE, journal, run_id],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env=env,
        )
        if round_no == 0:
            continue  # compiled the modules
        times = json.loads(done.stdout.strip().splitlines()[-1])
        if times["eager"]:
            raise RuntimeError(f"imported by %load_ext + open, meant to be lazy: {times['eager']}")
        imports.append(times["import"] * 1e3)
        load_open.append(times["load_open"] * 1e3)
        show.append(times["show"] * 1e3)
    record(Result("notebook", "`import weft_nb`, fresh process", "ms", imports, digits=1))
    record(
        Result(
            "notebook",
            "`import weft_nb` + `%load_ext weft_nb` + `%weft journal` + first `%weft runs` "
            "(opens the engine), fresh process",
            "ms",
            load_open,
            digits=1,
        )
    )
    record(Result("notebook", f"`%weft show` of a run with {steps:,} steps", "ms", show, digits=1))


# -- fan-out and memory -----------------------------------------------------------------------


@weft_nb.workflow
def fan_out_wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
    return len(ctx.all([ctx.submit(noop, i) for i in range(n)]))


def bench_fan_out(cfg: Config, tmp: str, floor: Result) -> None:
    width = cfg.fan_out
    progress(f"fan-out: {width}-way ctx.all x {cfg.rounds} rounds")
    engine = weft_nb.Engine(os.path.join(tmp, "fan-out", "journal.duckdb"))
    engine.register(noop, fan_out_wf)
    engine.run(fan_out_wf, 10)
    samples = []
    for _ in range(cfg.rounds):
        gc.collect()
        t = time.perf_counter()
        if engine.run(fan_out_wf, width) != width:
            raise RuntimeError("fan-out returned the wrong count")
        samples.append((time.perf_counter() - t) * 1e3)
    engine.close()
    record(
        Result("fan-out", f"{width}-way `ctx.all` of trivial activities, whole run", "ms", samples)
    )
    per = [s / width for s in samples]
    record(
        Result(
            "fan-out",
            f"per activity in the {width}-way `ctx.all`",
            "ms",
            per,
            ratio=f"{statistics.median(per) / (floor.median / 1e3):.1f}x floor",
        )
    )


def rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(cfg: Config, tmp: str) -> None:
    n = cfg.memory_steps
    progress(f"memory: one {n:,}-step workflow")
    gc.collect()
    before = rss_mib()
    engine = weft_nb.Engine(os.path.join(tmp, "memory", "journal.duckdb"))
    engine.register(noop, steps_wf)
    t = time.perf_counter()
    engine.run(steps_wf, n)
    took = time.perf_counter() - t
    gc.collect()
    during = rss_mib()
    engine.close()
    gc.collect()
    after = rss_mib()
    record(Result("memory", f"per step over one {n:,}-step workflow", "ms", [took / n * 1e3]))
    record(
        Result(
            "memory",
            f"process RSS growth after {n:,} steps, engine open",
            "MiB",
            [during - before],
            digits=1,
        )
    )
    record(
        Result(
            "memory", "process RSS growth after `engine.close()`", "MiB", [after - before], digits=1
        )
    )


# -- big and background checkpoints ---------------------------------------------------------


@weft_nb.activity
def background_bench(cfg: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Training-thread cost of checkpoint(background=True) vs its snapshot and a blocking one."""
    arr = np.arange(cfg["mib"] * MIB // 8, dtype=np.float64)
    out: dict[str, list[float]] = {"snapshot": [], "background": [], "blocking": []}
    perf = time.perf_counter

    def snapshot() -> float:
        t = perf()
        pickle.dumps(arr, protocol=5)
        return perf() - t

    def background() -> float:
        t = perf()
        activity.checkpoint(arr, background=True)
        took = perf() - t
        activity.flush_checkpoints()  # untimed: the write the background thread did
        return took

    def blocking() -> float:
        t = perf()
        activity.checkpoint(arr)
        return perf() - t

    variants = {"snapshot": snapshot, "background": background, "blocking": blocking}
    names = list(variants)
    for r in range(cfg["rounds"] + 1):
        for k in range(len(names)):  # rotate the order: no variant always runs first
            name = names[(r + k) % len(names)]
            gc.collect()
            prefault_memory(3 * cfg["mib"])
            out[name].append(variants[name]())
    return {key: values[1:] for key, values in out.items()}  # round 0 is a warm-up


def bench_big_checkpoints(cfg: Config, tmp: str) -> None:
    mib = cfg.big_checkpoint_mib
    rounds = cfg.rounds
    progress(f"checkpoint: {mib} MiB array x {rounds} rounds, then background checkpoints")
    engine = weft_nb.Engine(os.path.join(tmp, "big-checkpoints", "journal.duckdb"))
    engine.register(checkpoint_bench, background_bench)
    raw_dir = os.path.join(tmp, "raw-big")
    os.makedirs(raw_dir, exist_ok=True)

    def one(activity: Any, name: str, params: dict[str, Any]) -> Any:
        def wf(ctx: weft_nb.WorkflowContext, p: dict[str, Any]) -> Any:
            return ctx.run(activity, p)

        return engine.run(weft_nb.workflow(name=name)(wf), params)

    out = one(
        checkpoint_bench, "big_checkpoint_wf", {"mib": mib, "rounds": rounds, "raw_dir": raw_dir}
    )
    record_checkpoint_rounds(out, f"{mib} MiB checkpoint as % of raw (paired)")

    bg_mib = cfg.checkpoint_mib
    out = one(background_bench, "background_checkpoint_wf", {"mib": bg_mib, "rounds": cfg.rounds})
    engine.close()
    ms = {key: [v * 1e3 for v in values] for key, values in out.items()}
    record(
        Result(
            "checkpoint",
            f"snapshot only: `pickle.dumps` of {bg_mib} MiB",
            "ms",
            ms["snapshot"],
            digits=1,
        )
    )
    paired = [b / s for b, s in zip(ms["background"], ms["snapshot"], strict=True)]
    record(
        Result(
            "checkpoint",
            f"`checkpoint(arr, background=True)` of {bg_mib} MiB, training thread",
            "ms",
            ms["background"],
            ratio=f"{statistics.median(paired):.2f}x the snapshot",
            digits=1,
        )
    )
    record(
        Result(
            "checkpoint",
            f"`checkpoint(arr)` of {bg_mib} MiB, blocking",
            "ms",
            ms["blocking"],
            digits=1,
        )
    )
