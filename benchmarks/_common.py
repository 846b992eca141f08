"""Shared pieces of the benchmark suite: configuration, recorded results, helpers.

Every section appends :class:`Result` objects to :data:`RESULTS` through :func:`record`; the
report in ``bench_engine.py`` turns them into the table of ``docs/performance.md``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import threading
import time

import numpy as np

MIB = 1024 * 1024


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
    big_checkpoint_mib: int  # the large checkpoint (1 GiB in full runs)
    fan_out: int  # width of the ctx.all benchmark
    memory_steps: int  # steps of the memory benchmark's workflow
    executor_steps: int  # sequential activities per round on each executor


FULL = Config(
    rounds=5,
    steps=200,
    single_reps=5,
    fsync_calls=200,
    call_loop=1_000_000,
    hb_loop=1_000_000,
    matmul_loop=10_000,
    checkpoint_mib=100,
    resume_steps=100_000,
    big_checkpoint_mib=1024,
    fan_out=500,
    memory_steps=100_000,
    executor_steps=100,
)
QUICK = Config(
    rounds=3,
    steps=200,
    single_reps=3,
    fsync_calls=100,
    call_loop=200_000,
    hb_loop=200_000,
    matmul_loop=3_000,
    checkpoint_mib=100,
    resume_steps=10_000,
    big_checkpoint_mib=256,
    fan_out=500,
    memory_steps=20_000,
    executor_steps=30,
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


def wait_for(event: threading.Event, what: str, timeout: float = 300) -> None:
    if not event.wait(timeout):
        raise RuntimeError(f"benchmark stuck: {what} did not happen within {timeout}s")
