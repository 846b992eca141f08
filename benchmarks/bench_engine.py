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
import dataclasses
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from _common import FULL, LOAD, QUICK, RESULTS, Config, Result, progress
from _engine_sections import (
    bench_baselines,
    bench_checkpoint,
    bench_heartbeats,
    bench_resume,
    bench_steps,
    profile_steps,
)
from _executor_sections import bench_executors
from _scale_sections import (
    bench_big_checkpoints,
    bench_dbos,
    bench_fan_out,
    bench_memory,
    bench_notebook_surface,
)

import weft_nb

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DOC = REPO / "docs" / "performance.md"
START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"

# The goals of issues 6 and 17 (medians, same run). Timing goals live here, never in tests.
TARGET_STEP_X_FLOOR = 1.5
TARGET_STEP_X_DBOS = 0.25
TARGET_ONE_STEP_X_FLOOR = 4.0
TARGET_ONE_STEP_X_DBOS = 0.25
TARGET_FAN_OUT_X_FLOOR = 0.25
TARGET_HEARTBEAT_US = 2.0
TARGET_HEARTBEAT_LOOP_PCT = {64: 1.0, 256: 2.0}
TARGET_CHECKPOINT_PCT = 90.0
TARGET_BIG_CHECKPOINT_PCT = 80.0
TARGET_BACKGROUND_X_SNAPSHOT = 1.5
TARGET_RESUME_S = 0.5
TARGET_OPEN_MS = 200.0
TARGET_LOAD_OPEN_MS = 150.0
TARGET_DASK_X_BARE = 1.5
TARGET_PROCESS_MS = 0.4


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


def target_row(
    what: str, limit: str, result: Result, value: Any, ok: Any, fmt: str
) -> tuple[str, str, str, str]:
    """One row of the targets table: ``value`` maps a sample to the compared figure.

    The worst round is the one furthest on the wrong side: the limit's sign (``<=`` or ``>=``)
    says which way that is.
    """
    median = value(result.median)
    values = [value(x) for x in result.samples]
    worst = min(values) if limit.startswith(">=") else max(values)
    shown = fmt.format(median) + f" (worst round {fmt.format(worst)})"
    return what, limit, shown, verdict(ok(median), all(ok(value(x)) for x in result.samples))


def maybe(name_start: str) -> Result | None:
    try:
        return find(name_start)
    except KeyError:
        return None


def targets_table(cfg: Config, floor: Result, have_dbos: bool) -> list[str]:
    floor_us = floor.median
    floor_ms = floor_us / 1e3
    rows = [
        target_row(
            f"one trivial step in a {cfg.steps}-step workflow (own rounds)",
            f"<= {TARGET_STEP_X_FLOOR:g}x the fsync floor",
            find(f"per step, {cfg.steps}-step"),
            lambda ms: ms / floor_ms,
            lambda x: x <= TARGET_STEP_X_FLOOR,
            "{:.2f}x",
        )
    ]
    if have_dbos:
        rows += [
            target_row(
                f"one trivial step in a {cfg.steps}-step workflow (rounds interleaved with DBOS)",
                f"<= {TARGET_STEP_X_FLOOR:g}x the fsync floor",
                find("weft_nb per step,"),
                lambda ms: ms / floor_ms,
                lambda x: x <= TARGET_STEP_X_FLOOR,
                "{:.2f}x",
            ),
            target_row(
                "per step versus DBOS (paired rounds)",
                f"<= {TARGET_STEP_X_DBOS:g}x DBOS",
                find("weft_nb / DBOS per step"),
                lambda x: x,
                lambda x: x <= TARGET_STEP_X_DBOS,
                "{:.3f}x",
            ),
            target_row(
                "a 1-step workflow, start to result",
                f"<= {TARGET_ONE_STEP_X_FLOOR:g}x the fsync floor",
                find("weft_nb 1-step workflow end to end"),
                lambda ms: ms / floor_ms,
                lambda x: x <= TARGET_ONE_STEP_X_FLOOR,
                "{:.1f}x",
            ),
            target_row(
                "a 1-step workflow versus DBOS's (paired rounds)",
                f"<= {TARGET_ONE_STEP_X_DBOS:g}x DBOS",
                find("weft_nb / DBOS 1-step workflow"),
                lambda x: x,
                lambda x: x <= TARGET_ONE_STEP_X_DBOS,
                "{:.2f}x",
            ),
        ]
    rows.append(
        target_row(
            f"{cfg.fan_out}-way `ctx.all` of trivial activities, per step",
            f"<= {TARGET_FAN_OUT_X_FLOOR:g}x the fsync floor",
            find(f"per activity in the {cfg.fan_out}-way"),
            lambda ms: ms / floor_ms,
            lambda x: x <= TARGET_FAN_OUT_X_FLOOR,
            "{:.2f}x",
        )
    )
    rows += [
        target_row(
            "`heartbeat()` in a hot loop",
            f"<= {TARGET_HEARTBEAT_US:g} us",
            find("`activity.heartbeat({'i': i})`"),
            lambda ns: ns / 1e3,
            lambda us: us <= TARGET_HEARTBEAT_US,
            "{:.3f} us",
        ),
        *(
            target_row(
                f"training loop with a heartbeat per batch; batch: {size}x{size} matmul "
                f"(~{find(f'{size}x{size} matmul loop body, without').median:,.0f} us)",
                f"<= {limit:g}% slower",
                find(f"heartbeat overhead on the {size}x{size} matmul loop"),
                lambda pct: pct,
                lambda pct, limit=limit: pct <= limit,
                "{:.2f}%",
            )
            for size, limit in TARGET_HEARTBEAT_LOOP_PCT.items()
        ),
    ]
    dask = maybe("Dask executor / bare Dask")
    if dask is not None:
        rows.append(
            target_row(
                "Dask executor, per sequential activity, 2-worker `LocalCluster` "
                f"(~{find('dask executor, per').median:.1f} ms; bare round trip "
                f"~{find('bare Dask').median:.1f} ms)",
                f"<= {TARGET_DASK_X_BARE:g}x the bare `client.submit(f).result()`",
                dask,
                lambda x: x,
                lambda x: x <= TARGET_DASK_X_BARE,
                "{:.2f}x",
            )
        )
    rows += [
        target_row(
            "process executor, per sequential activity",
            f"<= {TARGET_PROCESS_MS:g} ms",
            find("process executor, per"),
            lambda ms: ms,
            lambda ms: ms <= TARGET_PROCESS_MS,
            "{:.3f} ms",
        ),
        target_row(
            f"`checkpoint()` of {cfg.checkpoint_mib} MiB",
            f">= {TARGET_CHECKPOINT_PCT:g}% of raw write+fsync",
            find("checkpoint bandwidth as %"),
            lambda pct: pct,
            lambda pct: pct >= TARGET_CHECKPOINT_PCT,
            "{:.0f}%",
        ),
        target_row(
            f"`checkpoint()` of {cfg.big_checkpoint_mib} MiB",
            f">= {TARGET_BIG_CHECKPOINT_PCT:g}% of raw write+fsync",
            find(f"{cfg.big_checkpoint_mib} MiB checkpoint as %"),
            lambda pct: pct,
            lambda pct: pct >= TARGET_BIG_CHECKPOINT_PCT,
            "{:.0f}%",
        ),
        target_row(
            "background checkpoint, cost on the training thread",
            f"<= {TARGET_BACKGROUND_X_SNAPSHOT:g}x the snapshot (`pickle.dumps`)",
            find("`checkpoint(arr, background=True)`"),
            lambda ms: ms / find("snapshot only").median,
            lambda x: x <= TARGET_BACKGROUND_X_SNAPSHOT,
            "{:.2f}x",
        ),
        target_row(
            f"resume of {cfg.resume_steps:,} steps",
            f"<= {TARGET_RESUME_S:g} s",
            find("resume until step"),
            lambda s: s,
            lambda s: s <= TARGET_RESUME_S,
            "{:.3f} s",
        ),
        target_row(
            "opening an engine",
            f"<= {TARGET_OPEN_MS:g} ms",
            find("Engine(path) open, journal with"),
            lambda ms: ms,
            lambda ms: ms <= TARGET_OPEN_MS,
            "{:.1f} ms",
        ),
        target_row(
            "`import weft_nb` + `%load_ext weft_nb` + opening a journal, fresh process",
            f"<= {TARGET_LOAD_OPEN_MS:g} ms",
            find("`import weft_nb` + `%load_ext"),
            lambda ms: ms,
            lambda ms: ms <= TARGET_LOAD_OPEN_MS,
            "{:,.1f} ms",
        ),
    ]
    memory = find("process RSS growth after")
    rows.append(
        (
            f"memory after {cfg.memory_steps:,} steps (RSS growth, engine open)",
            "reported, no goal",
            f"{memory.median:.1f} MiB",
            "n/a",
        )
    )
    lines = ["| Target | Limit | Measured (median) | Verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def report(
    cfg: Config,
    quick: bool,
    sizes: dict[str, Any],
    elapsed: float,
    started: str,
    floor: Result,
    have_dbos: bool,
) -> str:
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
    lines += ["", "### Targets", ""]
    lines += targets_table(cfg, floor, have_dbos)
    if not have_dbos:
        lines += ["", "DBOS was not installed, so its rows are missing: `make bench` installs it."]
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


SECTIONS = (
    "steps",
    "dbos",
    "fanout",
    "executors",
    "heartbeat",
    "checkpoint",
    "bigcheckpoint",
    "resume",
    "notebook",
    "memory",
)


def run_only(cfg: Config, sections: list[str]) -> int:
    """Run the baselines and the named sections, print their figures; for work on one figure."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    try:
        floor, call = bench_baselines(cfg, tmp)
        if "steps" in sections:
            bench_steps(cfg, tmp, floor)
        if "dbos" in sections:
            bench_dbos(cfg, tmp, floor)
        if "fanout" in sections:
            bench_fan_out(cfg, tmp, floor)
        if "executors" in sections:
            bench_executors(cfg, tmp, floor)
        if "heartbeat" in sections:
            bench_heartbeats(cfg, tmp, call)
        if "checkpoint" in sections:
            bench_checkpoint(cfg, tmp)
        if "bigcheckpoint" in sections:
            bench_big_checkpoints(cfg, tmp)
        if {"resume", "notebook"} & set(sections):
            resume = bench_resume(cfg, tmp, floor)
            if "notebook" in sections:
                bench_notebook_surface(cfg, resume["journal"], resume["run_id"], resume["steps"])
        if "memory" in sections:
            bench_memory(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
    print("| Section | Measurement | Median | Min | Max | Unit | Ratio |")
    for r in RESULTS:
        print(
            f"| {r.section} | {r.name} | {r.fmt(r.median)} | {r.fmt(min(r.samples))} | "
            f"{r.fmt(max(r.samples))} | {r.unit} | {r.ratio} |"
        )
    return 0


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
    parser.add_argument(
        "--only",
        help=f"comma-separated sections to run ({', '.join(SECTIONS)}); prints their figures "
        "and implies --no-doc",
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
    if args.only:
        return run_only(cfg, args.only.split(","))
    LOAD.append(os.getloadavg()[0])
    if LOAD[0] > 0.5:
        progress(f"warning: load average {LOAD[0]:.2f}; other work will skew these figures")
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    try:
        floor, call = bench_baselines(cfg, tmp)
        sizes = {"steps": bench_steps(cfg, tmp, floor)}
        have_dbos = bench_dbos(cfg, tmp, floor)
        bench_fan_out(cfg, tmp, floor)
        bench_executors(cfg, tmp, floor)
        bench_heartbeats(cfg, tmp, call)
        bench_checkpoint(cfg, tmp)
        bench_big_checkpoints(cfg, tmp)
        sizes["resume"] = bench_resume(cfg, tmp, floor)
        resume = sizes["resume"]
        bench_notebook_surface(cfg, resume["journal"], resume["run_id"], resume["steps"])
        bench_memory(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    body = report(cfg, args.quick, sizes, time.perf_counter() - t0, started, floor, have_dbos)
    print(body)
    if not args.no_doc:
        write_doc(args.doc, body)
        print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
