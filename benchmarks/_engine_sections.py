"""The engine's own sections: baselines, per-step overhead, heartbeats, checkpoints, resume."""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np
from _common import MIB, Config, Result, journal_bytes, prefault_memory, progress, record, wait_for

import weft_nb

# -- activities and workflows under test ---------------------------------------------------


@weft_nb.activity
def noop(x: Any) -> Any:
    return x


@weft_nb.workflow
def steps_wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
    for i in range(n):
        ctx.run(noop, i)
    return n


PROFILER: cProfile.Profile | None = None


@weft_nb.workflow
def profiled_wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
    """``steps_wf`` under cProfile; the profiler must be enabled on the workflow's own thread."""
    assert PROFILER is not None
    PROFILER.enable()
    try:
        for i in range(n):
            ctx.run(noop, i)
    finally:
        PROFILER.disable()
    return n


HB_CHUNKS = 20  # each round's loops run in chunks, the variants taking turns


def matmul_loops(base: int) -> dict[int, int]:
    """Iterations per matmul size: a harsh ~10 us batch, and a small but real ~0.5 ms one."""
    return {64: base, 256: max(HB_CHUNKS, base // 40)}


@weft_nb.activity
def heartbeat_bench(cfg: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Time heartbeat loops inside a real activity.

    Every round splits each loop into ``HB_CHUNKS`` chunks and runs the variants' chunks in
    turn (rotating which goes first), so background load hits all variants alike.
    """
    rng = np.random.default_rng(0)
    hb = activity.heartbeat
    perf = time.perf_counter

    def bare(k: int) -> float:
        t = perf()
        for _i in range(k):
            pass
        return perf() - t

    def dict_only(k: int) -> float:
        t = perf()
        for i in range(k):
            _d = {"i": i}
        return perf() - t

    def heartbeat(k: int) -> float:
        t = perf()
        for i in range(k):
            hb({"i": i})
        return perf() - t

    def heartbeat_none(k: int) -> float:
        t = perf()
        for _i in range(k):
            hb()
        return perf() - t

    class NoOp:
        def beat(self, details: Any = None) -> None:
            """A heartbeat that does nothing: the call and the dict alone (reference)."""

    noop = NoOp().beat

    def matmul_pair(size: int) -> dict[str, Any]:
        """A training-loop stand-in whose batch is a size x size matmul, without and with beats.

        For the 64x64 batch also the loop building the dict only, and calling a no-op bound
        method with it: what of the overhead is the user's dict, what Python's call, and what
        ``heartbeat()``'s own.
        """
        a = rng.standard_normal((size, size))
        b = rng.standard_normal((size, size))

        def matmul(k: int) -> float:
            t = perf()
            for _i in range(k):
                a @ b
            return perf() - t

        def matmul_heartbeat(k: int) -> float:
            t = perf()
            for i in range(k):
                a @ b
                hb({"i": i})
            return perf() - t

        def matmul_dict(k: int) -> float:
            t = perf()
            for i in range(k):
                a @ b
                _d = {"i": i}
            return perf() - t

        def matmul_noop(k: int) -> float:
            t = perf()
            for i in range(k):
                a @ b
                noop({"i": i})
            return perf() - t

        variants = {f"mm{size}": matmul, f"mm{size}_hb": matmul_heartbeat}
        if size == 64:
            variants |= {f"mm{size}_dict": matmul_dict, f"mm{size}_noop": matmul_noop}
        return variants

    groups = [
        (
            cfg["hb_loop"] // HB_CHUNKS,
            {"bare": bare, "dict": dict_only, "hb": heartbeat, "hb_none": heartbeat_none},
        ),
        *(
            (loops // HB_CHUNKS, matmul_pair(size))
            for size, loops in matmul_loops(cfg["matmul_loop"]).items()
        ),
    ]
    out: dict[str, list[float]] = {"chunks": [float(HB_CHUNKS)]}
    for _ in range(cfg["rounds"]):
        gc.collect()
        for k, variants in groups:
            names = list(variants)
            totals = dict.fromkeys(names, 0.0)
            for c in range(HB_CHUNKS):
                for j in range(len(names)):
                    name = names[(c + j) % len(names)]
                    totals[name] += variants[name](k)
            for name, total in totals.items():
                out.setdefault(name, []).append(total)
    return out


@weft_nb.activity
def checkpoint_bench(cfg: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Checkpoint a numpy array vs write+fsync of the same bytes, interleaved per round."""
    arr = np.arange(cfg["mib"] * MIB // 8, dtype=np.float64)
    raw = arr.tobytes()
    raw_dir = cfg["raw_dir"]
    out: dict[str, list[float]] = {"raw": [], "checkpoint": []}
    perf = time.perf_counter

    def write_raw(path: str) -> float:
        t = perf()
        with open(path, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        return perf() - t

    def write_checkpoint() -> float:
        t = perf()
        activity.checkpoint(arr)
        return perf() - t

    # Round 0 is an untimed warm-up; after it the kernel's free pages include the ones both
    # sides release (raw files are unlinked, checkpoints beyond `keep` are deleted).
    for r in range(cfg["rounds"] + 1):
        gc.collect()
        prefault_memory(3 * cfg["mib"])  # see prefault_memory: freed pages may go back to the host
        path = os.path.join(raw_dir, f"raw-{r}.bin")
        if r % 2:  # alternate the order, so neither side always runs first
            ckpt = write_checkpoint()
            rw = write_raw(path)
        else:
            rw = write_raw(path)
            ckpt = write_checkpoint()
        os.unlink(path)
        if r:
            out["raw"].append(rw)
            out["checkpoint"].append(ckpt)
    out["bytes"] = [float(len(raw))]
    return out


GATE_STARTED = threading.Event()
GATE_EXITED = threading.Event()


@weft_nb.activity
def gate(n: int, activity: weft_nb.ActivityContext) -> int:
    """Signal that it started, then block until the engine closes (which cancels it)."""
    GATE_STARTED.set()
    try:
        activity.cancelled.wait(600)
    finally:
        GATE_EXITED.set()
    return n


@weft_nb.workflow
def gated_wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
    for i in range(n):
        ctx.run(noop, i)
    return ctx.run(gate, n)


# -- sections ------------------------------------------------------------------------------


def bench_baselines(cfg: Config, tmp: str) -> tuple[Result, Result]:
    progress("baselines")
    path = os.path.join(tmp, "fsync-floor.bin")
    payload = b"x" * 200
    fsync_samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(cfg.rounds):
            t = time.perf_counter()
            for _i in range(cfg.fsync_calls):
                os.write(fd, payload)
                os.fsync(fd)
            fsync_samples.append((time.perf_counter() - t) / cfg.fsync_calls * 1e6)
    finally:
        os.close(fd)
    floor = record(
        Result(
            "baselines", "write 200 B + fsync (durable-commit floor)", "us", fsync_samples, digits=1
        )
    )

    def plain(x: int) -> int:
        return x

    n = cfg.call_loop
    call_samples = []
    for _ in range(cfg.rounds):
        t = time.perf_counter()
        for i in range(n):
            plain(i)
        call_samples.append((time.perf_counter() - t) / n * 1e9)
    call = record(
        Result(
            "baselines", "plain Python function call (loop iteration)", "ns", call_samples, digits=1
        )
    )
    return floor, call


def bench_steps(cfg: Config, tmp: str, floor: Result) -> dict[str, Any]:
    progress(f"per-step overhead: {cfg.steps}-step workflow x {cfg.rounds} rounds")
    empty = os.path.join(tmp, "empty", "journal.duckdb")
    weft_nb.Engine(empty).close()
    empty_size = journal_bytes(empty)

    path = os.path.join(tmp, "steps", "journal.duckdb")
    engine = weft_nb.Engine(path)
    engine.register(noop, steps_wf)
    engine.run(steps_wf, 10)  # warm-up: imports, first connection, caches
    steps_done = 10
    per_step = []
    for _ in range(cfg.rounds):
        gc.collect()
        t = time.perf_counter()
        engine.run(steps_wf, cfg.steps)
        per_step.append((time.perf_counter() - t) / cfg.steps * 1e3)
        steps_done += cfg.steps
    floor_ms = floor.median / 1e3
    record(
        Result(
            "engine",
            f"per step, {cfg.steps}-step workflow (total / {cfg.steps})",
            "ms",
            per_step,
            ratio=f"{statistics.median(per_step) / floor_ms:.1f}x floor",
        )
    )

    single = []
    for _ in range(cfg.rounds):
        gc.collect()
        t = time.perf_counter()
        for _i in range(cfg.single_reps):
            engine.run(steps_wf, 1)  # a fresh run id every time
        single.append((time.perf_counter() - t) / cfg.single_reps * 1e3)
        steps_done += cfg.single_reps
    record(
        Result(
            "engine",
            "1-step workflow, engine.run() end to end",
            "ms",
            single,
            ratio=f"{statistics.median(single) / floor_ms:.0f}x floor",
        )
    )
    engine.close()
    size = journal_bytes(path)

    opens, closes = [], []
    for _ in range(cfg.rounds):
        gc.collect()
        t = time.perf_counter()
        eng = weft_nb.Engine(path)
        t1 = time.perf_counter()
        eng.close()
        t2 = time.perf_counter()
        opens.append((t1 - t) * 1e3)
        closes.append((t2 - t1) * 1e3)
    record(Result("engine", f"Engine(path) open, journal with {steps_done:,} steps", "ms", opens))
    record(Result("engine", "Engine.close(), idle engine", "ms", closes))
    return {"empty_size": empty_size, "size": size, "steps": steps_done}


def bench_heartbeats(cfg: Config, tmp: str, call: Result) -> None:
    progress(f"heartbeat: {cfg.hb_loop:,}-iteration loops x {cfg.rounds} rounds")
    engine = weft_nb.Engine(os.path.join(tmp, "heartbeats", "journal.duckdb"))
    engine.register(heartbeat_bench)
    params = {"hb_loop": cfg.hb_loop, "matmul_loop": cfg.matmul_loop, "rounds": cfg.rounds}

    def wf(ctx: weft_nb.WorkflowContext, p: dict[str, Any]) -> Any:
        return ctx.run(heartbeat_bench, p)

    out = engine.run(weft_nb.workflow(name="heartbeat_wf")(wf), params)
    engine.close()
    chunks = int(out["chunks"][0])
    n = cfg.hb_loop // chunks * chunks

    def per_iter(key: str) -> list[float]:
        return [s / n * 1e9 for s in out[key]]

    bare = per_iter("bare")
    hb = per_iter("hb")
    record(
        Result(
            "heartbeat", "loop without heartbeats (`for i in range(n): pass`)", "ns", bare, digits=1
        )
    )
    record(Result("heartbeat", "loop building `{'i': i}` only", "ns", per_iter("dict"), digits=1))
    net = [h - b for h, b in zip(hb, bare, strict=True)]
    record(
        Result(
            "heartbeat",
            "`activity.heartbeat({'i': i})`, net of the empty loop",
            "ns",
            net,
            ratio=f"{statistics.median(net) / call.median:.1f}x plain call",
            digits=1,
        )
    )
    net_none = [h - b for h, b in zip(per_iter("hb_none"), bare, strict=True)]
    record(
        Result(
            "heartbeat",
            "`activity.heartbeat()` (no details), net of the empty loop",
            "ns",
            net_none,
            ratio=f"{statistics.median(net_none) / call.median:.1f}x plain call",
            digits=1,
        )
    )
    for size, loops in matmul_loops(cfg.matmul_loop).items():
        m = loops // chunks * chunks
        mm = [s / m * 1e6 for s in out[f"mm{size}"]]
        mm_hb = [s / m * 1e6 for s in out[f"mm{size}_hb"]]
        shape = f"{size}x{size} matmul"
        record(Result("heartbeat", f"{shape} loop body, without heartbeats", "us", mm, digits=2))
        record(
            Result(
                "heartbeat",
                f"{shape} loop body, with a heartbeat per iteration",
                "us",
                mm_hb,
                digits=2,
            )
        )
        overhead = [(w - wo) / wo * 100 for w, wo in zip(mm_hb, mm, strict=True)]
        record(
            Result(
                "heartbeat",
                f"heartbeat overhead on the {shape} loop (paired per round)",
                "%",
                overhead,
                digits=2,
            )
        )
        refs = (("dict", "building `{'i': i}` only"), ("noop", "`noop({'i': i})`, a no-op method"))
        for key, what in refs:
            if f"mm{size}_{key}" in out:
                ref = [s / m * 1e6 for s in out[f"mm{size}_{key}"]]
                part = [(r - wo) / wo * 100 for r, wo in zip(ref, mm, strict=True)]
                record(
                    Result(
                        "heartbeat",
                        f"reference: {what}, on the {shape} loop (paired per round)",
                        "%",
                        part,
                        digits=2,
                    )
                )


def bench_checkpoint(cfg: Config, tmp: str) -> None:
    progress(f"checkpoint: {cfg.checkpoint_mib} MiB array x {cfg.rounds} rounds")
    engine = weft_nb.Engine(os.path.join(tmp, "checkpoints", "journal.duckdb"))
    engine.register(checkpoint_bench)
    raw_dir = os.path.join(tmp, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    params = {"mib": cfg.checkpoint_mib, "rounds": cfg.rounds, "raw_dir": raw_dir}
    spent = prefault_memory(6 * cfg.checkpoint_mib)
    progress(f"  pre-faulted {6 * cfg.checkpoint_mib} MiB of memory in {spent:.2f} s")

    def wf(ctx: weft_nb.WorkflowContext, p: dict[str, Any]) -> Any:
        return ctx.run(checkpoint_bench, p)

    out = engine.run(weft_nb.workflow(name="checkpoint_wf")(wf), params)
    engine.close()
    record_checkpoint_rounds(out, "checkpoint bandwidth as % of raw (paired per round)")


def record_checkpoint_rounds(out: dict[str, Any], pct_name: str) -> None:
    """Record what ``checkpoint_bench`` measured: both bandwidths and their paired ratio."""
    mib = out["bytes"][0] / MIB
    raw = [mib / s for s in out["raw"]]
    ckpt = [mib / s for s in out["checkpoint"]]
    pct = [c / r * 100 for c, r in zip(ckpt, raw, strict=True)]
    record(
        Result(
            "checkpoint",
            f"raw write + fsync of {mib:.0f} MiB (`arr.tobytes()`)",
            "MiB/s",
            raw,
            digits=0,
        )
    )
    record(
        Result(
            "checkpoint",
            f"`activity.checkpoint(arr)`, {mib:.0f} MiB numpy array",
            "MiB/s",
            ckpt,
            ratio=f"{statistics.median(ckpt) / statistics.median(raw) * 100:.0f}% of raw",
            digits=0,
        )
    )
    record(Result("checkpoint", pct_name, "%", pct, digits=0))


def bench_resume(cfg: Config, tmp: str, floor: Result) -> dict[str, Any]:
    n = cfg.resume_steps
    progress(f"resume: building a run with {n:,} completed steps (takes a while)")
    path = os.path.join(tmp, "resume", "journal.duckdb")
    engine = weft_nb.Engine(path)
    engine.register(noop, gate, gated_wf)
    GATE_STARTED.clear()
    GATE_EXITED.clear()
    t = time.perf_counter()
    handle = engine.start(gated_wf, n)
    wait_for(GATE_STARTED, "the gate step of the first execution")
    build = time.perf_counter() - t
    engine.close()  # stops the live run; it stays resumable (status 'running')
    wait_for(GATE_EXITED, "the gate step to stop on close")
    record(
        Result(
            "engine",
            f"per step, {n:,}-step workflow (one round)",
            "ms",
            [build / n * 1e3],
            ratio=f"{build / n * 1e6 / floor.median:.1f}x floor",
        )
    )
    size = journal_bytes(path)
    run_id = handle.run_id

    resumes, resume_calls, opens = [], [], []
    for _ in range(cfg.rounds):
        gc.collect()
        GATE_STARTED.clear()
        GATE_EXITED.clear()
        t0 = time.perf_counter()
        engine = weft_nb.Engine(path)
        engine.register(noop, gate, gated_wf)
        t1 = time.perf_counter()
        resumed = engine.resume(run_id)
        t2 = time.perf_counter()
        wait_for(GATE_STARTED, "the gate step after resume")
        t3 = time.perf_counter()
        replayed = resumed.replayed_steps
        engine.close()
        wait_for(GATE_EXITED, "the gate step to stop on close")
        if replayed != n:
            raise RuntimeError(f"resume replayed {replayed} steps, expected {n}")
        opens.append((t1 - t0) * 1e3)
        resume_calls.append((t2 - t1) * 1e3)
        resumes.append(t3 - t1)
    record(Result("resume", f"Engine(path) open + register, journal with {n:,} steps", "ms", opens))
    record(Result("resume", "`engine.resume(run_id)` call returns", "ms", resume_calls))
    record(
        Result(
            "resume",
            f"resume until step {n + 1:,} starts ({n:,} steps replayed)",
            "s",
            resumes,
            ratio=f"{statistics.median(resumes) / n * 1e6:.0f} us per replayed step",
        )
    )
    return {"size": size, "steps": n, "journal": path, "run_id": run_id}


def profile_steps(cfg: Config, tmp: str, top: int = 20) -> None:
    """Print where the time of a ``cfg.steps``-step workflow goes (``--profile``).

    DuckDB's methods are C++ (pybind11) and invisible to cProfile, so the time of a statement,
    commit and fsync included, shows up as *tottime* of the Python function that calls it.
    """
    global PROFILER
    progress(f"profile: {cfg.steps}-step workflow under cProfile")
    engine = weft_nb.Engine(os.path.join(tmp, "profile", "journal.duckdb"))
    engine.register(noop, steps_wf, profiled_wf)
    engine.run(steps_wf, 10)
    PROFILER = cProfile.Profile()
    t = time.perf_counter()
    engine.run(profiled_wf, cfg.steps)
    wall = time.perf_counter() - t
    engine.close()
    print(f"\n{cfg.steps}-step workflow under cProfile: {wall:.3f} s wall", file=sys.stderr)
    stats = pstats.Stats(PROFILER, stream=sys.stderr)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    PROFILER = None
