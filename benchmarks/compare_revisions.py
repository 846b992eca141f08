"""Before/after figures for a refactor: two source trees measured in the same run, interleaved.

``python benchmarks/compare_revisions.py BEFORE_TREE AFTER_TREE`` (each a checkout of the repo,
e.g. ``git worktree add /tmp/before <rev>``). Each round runs one fresh interpreter per tree, in
alternating order, with ``PYTHONPATH`` set to that tree, and measures there:

- ``import weft_nb`` (a fresh interpreter, so nothing is cached in memory),
- the per-step overhead of a 200-step workflow of trivial activities (total / 200),
- a 1-step workflow, ``engine.run()`` start to result.

It prints the median of each figure per tree and the after/before ratio. Interleaving matters on a
noisy machine: a burst of load hits both trees alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r"""
import json, os, sys, tempfile, time
t = time.perf_counter()
import weft_nb
import_s = time.perf_counter() - t

@weft_nb.activity
def noop(x):
    return x

@weft_nb.workflow
def steps_wf(ctx, n):
    for i in range(n):
        ctx.run(noop, i)
    return n

folder = tempfile.mkdtemp()
engine = weft_nb.Engine(os.path.join(folder, "journal.duckdb"))
engine.register(noop, steps_wf)
engine.run(steps_wf, 10)
t = time.perf_counter()
engine.run(steps_wf, 200)
per_step_ms = (time.perf_counter() - t) / 200 * 1e3
t = time.perf_counter()
for _ in range(20):
    engine.run(steps_wf, 1)
single_ms = (time.perf_counter() - t) / 20 * 1e3
engine.close()
figures = {"import_ms": import_s * 1e3, "per_step_ms": per_step_ms, "single_run_ms": single_ms}
print(json.dumps(figures))
"""


def measure(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode:
        raise SystemExit(f"probe failed in {tree}:\n{out.stderr}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        order = [("before", args.before), ("after", args.after)]
        for label, tree in order if i % 2 == 0 else order[::-1]:
            runs[label].append(measure(tree.resolve()))
    header = f"{'figure':<16} {'before':>10} {'after':>10} {'after/before':>13}"
    print(f"{header}  ({args.rounds} rounds)")
    for key in runs["before"][0]:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        print(f"{key:<16} {before:>10.3f} {after:>10.3f} {after / before:>13.2f}")


if __name__ == "__main__":
    main()
