"""Benchmarks for the weft_nb engine: per-step overhead, heartbeats, checkpoints, resume.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_engine.py``). Everything runs in
one process and one invocation, so the ratios against the baselines (an fsync'd 200-byte write and
a plain Python call) are measured under the same conditions as the engine figures. Each
measurement is repeated for several rounds and reported as median, min and max.

The results table is printed and written into ``docs/performance.md`` between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers; text outside them is kept.

Options: ``--quick`` (fewer rounds and smaller loops, for a smoke run), ``--rounds N``,
``--no-doc`` (print only), ``--doc PATH``, ``--profile`` (only cProfile the 1,000-step workflow and
print its top functions).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import gc
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

import weft_nb

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DOC = REPO / "docs" / "performance.md"
START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
MIB = 1024 * 1024

# The first targets.
TARGET_STEP_MS = 1.5
TARGET_HEARTBEAT_US = 5.0
TARGET_CHECKPOINT_PCT = 50.0
TARGET_RESUME_S = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    rounds: int
    steps: int  # steps of the per-step workflow
    single_reps: int  # 1-step runs averaged into one sample
    fsync_calls: int
    call_loop: int  # iterations of the plain-call loop
    hb_loop: int  # iterations of the heartbeat loop
    matmul_loop: int  # iterations of the numpy loop
    checkpoint_mib: int
    resume_steps: int


FULL = Config(
    rounds=5,
    steps=1000,
    single_reps=5,
    fsync_calls=200,
    call_loop=1_000_000,
    hb_loop=1_000_000,
    matmul_loop=10_000,
    checkpoint_mib=100,
    resume_steps=10_000,
)
QUICK = Config(
    rounds=3,
    steps=1000,
    single_reps=3,
    fsync_calls=100,
    call_loop=200_000,
    hb_loop=200_000,
    matmul_loop=3_000,
    checkpoint_mib=100,
    resume_steps=10_000,
)


# -- results -------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One measured quantity: one sample per round, in ``unit``."""

    section: str
    name: str
    unit: str
    samples: list[float]
    ratio: str = ""
    digits: int = 3

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def fmt(self, value: float) -> str:
        return f"{value:,.{self.digits}f}"


RESULTS: list[Result] = []
LOAD: list[float] = []  # the 1-minute load average when the run started


def record(result: Result) -> Result:
    RESULTS.append(result)
    print(
        f"  {result.name}: median {result.fmt(result.median)} {result.unit} "
        f"(min {result.fmt(min(result.samples))}, max {result.fmt(max(result.samples))})"
        + (f"  [{result.ratio}]" if result.ratio else ""),
        file=sys.stderr,
        flush=True,
    )
    return result


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def journal_bytes(path: str) -> int:
    """The journal file plus its write-ahead log, if one is left."""
    return sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p))


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


@weft_nb.activity
def heartbeat_bench(cfg: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Time heartbeat loops inside a real activity.

    Every round splits each loop into ``HB_CHUNKS`` chunks and runs the variants' chunks in
    turn (rotating which goes first), so background load hits all variants alike.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64))
    b = rng.standard_normal((64, 64))
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

    groups = [
        (
            cfg["hb_loop"] // HB_CHUNKS,
            {"bare": bare, "dict": dict_only, "hb": heartbeat, "hb_none": heartbeat_none},
        ),
        (cfg["matmul_loop"] // HB_CHUNKS, {"mm": matmul, "mm_hb": matmul_heartbeat}),
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


def prefault_memory(mib: int) -> float:
    """Touch then free ``mib`` MiB of anonymous memory; return the seconds it took.

    On a VM (this benchmark's reference machine is a Firecracker guest with a balloon device) the
    first touch of a guest page is slow, about 0.4 GB/s, and freed pages can be handed back to the
    host, so whichever side of the checkpoint comparison writes into such pages pays for it.
    Touching memory just before each round makes both sides write into backed pages, as on a
    warmed-up physical machine. It lowers the odds of a skewed round; it cannot rule one out.
    """
    t = time.perf_counter()
    block = np.ones(mib * MIB // 8)
    del block
    return time.perf_counter() - t


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
    n, m = cfg.hb_loop // chunks * chunks, cfg.matmul_loop // chunks * chunks

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
    mm = [s / m * 1e6 for s in out["mm"]]
    mm_hb = [s / m * 1e6 for s in out["mm_hb"]]
    record(Result("heartbeat", "64x64 matmul loop body, without heartbeats", "us", mm, digits=2))
    record(
        Result(
            "heartbeat",
            "64x64 matmul loop body, with a heartbeat per iteration",
            "us",
            mm_hb,
            digits=2,
        )
    )
    overhead = [(w - wo) / wo * 100 for w, wo in zip(mm_hb, mm, strict=True)]
    record(
        Result(
            "heartbeat",
            "heartbeat overhead on the matmul loop (paired per round)",
            "%",
            overhead,
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
    record(
        Result(
            "checkpoint", "checkpoint bandwidth as % of raw (paired per round)", "%", pct, digits=0
        )
    )


def wait_for(event: threading.Event, what: str, timeout: float = 300) -> None:
    if not event.wait(timeout):
        raise RuntimeError(f"benchmark stuck: {what} did not happen within {timeout}s")


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
    return {"size": size, "steps": n}


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


# -- report --------------------------------------------------------------------------------


def machine_info() -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return [
        ("CPUs (`nproc`)", str(usable)),
        ("CPU model", cpu),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("duckdb", duckdb.__version__),
        ("numpy", np.__version__),
        ("weft_nb", weft_nb.__version__),
        ("temp dir (journals)", tempfile.gettempdir()),
        ("load average (1 min) at start / end", f"{LOAD[0]:.2f} / {os.getloadavg()[0]:.2f}"),
    ]


def find(name_start: str) -> Result:
    for result in RESULTS:
        if result.name.startswith(name_start):
            return result
    raise KeyError(name_start)


def verdict(ok_median: bool, ok_worst: bool) -> str:
    if ok_median and ok_worst:
        return "**pass**"
    if ok_median:
        return "**pass** (worst round misses)"
    return "**miss**"


def targets_table(cfg: Config) -> list[str]:
    step = find(f"per step, {cfg.steps}-step")
    hb = find("`activity.heartbeat({'i': i})`")
    ckpt = find("checkpoint bandwidth as %")
    resume = find("resume until step")
    rows: list[tuple[str, str, str, str]] = [
        (
            "per-step overhead",
            f"<= {TARGET_STEP_MS} ms",
            f"{step.median:.3f} ms (max {max(step.samples):.3f})",
            verdict(step.median <= TARGET_STEP_MS, max(step.samples) <= TARGET_STEP_MS),
        ),
        (
            "`heartbeat()` in a hot loop",
            f"<= {TARGET_HEARTBEAT_US:g} us",
            f"{hb.median / 1e3:.3f} us (max {max(hb.samples) / 1e3:.3f})",
            verdict(
                hb.median <= TARGET_HEARTBEAT_US * 1e3,
                max(hb.samples) <= TARGET_HEARTBEAT_US * 1e3,
            ),
        ),
        (
            f"`checkpoint()` of {cfg.checkpoint_mib} MiB",
            f">= {TARGET_CHECKPOINT_PCT:g}% of raw write+fsync",
            f"{ckpt.median:.0f}% (min {min(ckpt.samples):.0f}%)",
            verdict(
                ckpt.median >= TARGET_CHECKPOINT_PCT, min(ckpt.samples) >= TARGET_CHECKPOINT_PCT
            ),
        ),
        (
            f"resume of {cfg.resume_steps:,} steps",
            f"<= {TARGET_RESUME_S:g} s",
            f"{resume.median:.3f} s (max {max(resume.samples):.3f})",
            verdict(resume.median <= TARGET_RESUME_S, max(resume.samples) <= TARGET_RESUME_S),
        ),
    ]
    lines = [
        "| Target | Limit | Measured (median) | Verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def report(cfg: Config, quick: bool, sizes: dict[str, Any], elapsed: float, started: str) -> str:
    lines = [
        f"Generated by `benchmarks/bench_engine.py{' --quick' if quick else ''}` on {started} "
        f"({cfg.rounds} rounds per measurement, {elapsed:.0f} s in all).",
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine_info()]
    lines += ["", "### Targets (the issue's first targets)", ""]
    lines += targets_table(cfg)
    lines += [
        "",
        "### Figures",
        "",
        "| Section | Measurement | Median | Min | Max | Unit | Ratio |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in RESULTS:
        lines.append(
            f"| {r.section} | {r.name} | {r.fmt(r.median)} | {r.fmt(min(r.samples))} | "
            f"{r.fmt(max(r.samples))} | {r.unit} | {r.ratio} |"
        )
    steps_journal = sizes["steps"]
    resume_journal = sizes["resume"]
    empty = steps_journal["empty_size"]
    lines += [
        "",
        "### Journal size",
        "",
        "| Journal | Steps | File size after `close()` | Bytes per step (growth over an empty "
        "journal) |",
        "|---|---:|---:|---:|",
        f"| empty (schema only) | 0 | {empty:,} B | |",
        f"| per-step benchmark | {steps_journal['steps']:,} | {steps_journal['size']:,} B | "
        f"{(steps_journal['size'] - empty) / steps_journal['steps']:,.0f} |",
        f"| resume benchmark | {resume_journal['steps'] + 1:,} | {resume_journal['size']:,} B | "
        f"{(resume_journal['size'] - empty) / (resume_journal['steps'] + 1):,.0f} |",
    ]
    return "\n".join(lines) + "\n"


DOC_TEMPLATE = f"""# Performance

Figures from `make bench` (`benchmarks/bench_engine.py`).

{START_MARKER}
{END_MARKER}
"""


def write_doc(doc: Path, body: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else DOC_TEMPLATE
    if START_MARKER not in text or END_MARKER not in text:
        text = text.rstrip("\n") + f"\n\n{START_MARKER}\n{END_MARKER}\n"
    head, rest = text.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{head}{START_MARKER}\n{body}{END_MARKER}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller loops")
    parser.add_argument("--rounds", type=int, help="rounds per measurement")
    parser.add_argument("--no-doc", action="store_true", help=f"do not rewrite {DEFAULT_DOC}")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="the file to update")
    parser.add_argument(
        "--profile", action="store_true", help="only profile the per-step workflow with cProfile"
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.rounds:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)

    if args.profile:
        tmp = tempfile.mkdtemp(prefix="weft-bench-")
        try:
            profile_steps(cfg, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    LOAD.append(os.getloadavg()[0])
    if LOAD[0] > 0.5:
        progress(f"warning: load average {LOAD[0]:.2f}; other work will skew these figures")
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    try:
        floor, call = bench_baselines(cfg, tmp)
        sizes = {"steps": bench_steps(cfg, tmp, floor)}
        bench_heartbeats(cfg, tmp, call)
        bench_checkpoint(cfg, tmp)
        sizes["resume"] = bench_resume(cfg, tmp, floor)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    body = report(cfg, args.quick, sizes, time.perf_counter() - t0, started)
    print(body)
    if not args.no_doc:
        write_doc(args.doc, body)
        print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
