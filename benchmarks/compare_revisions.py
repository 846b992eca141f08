"""Before/after figures for a refactor: two source trees measured in the same run, interleaved.

``python benchmarks/compare_revisions.py BEFORE_TREE AFTER_TREE`` (each a checkout of the repo,
e.g. ``git worktree add /tmp/before <rev>``). Each round runs one fresh interpreter per tree, in
alternating order, with ``PYTHONPATH`` set to that tree, and measures there:

- ``import weft_nb`` (a fresh interpreter, so nothing is cached in memory),
- the per-step overhead of a 200-step workflow of trivial activities (total / 200),
- a 1-step workflow, ``engine.run()`` start to result,
- ``import weft_nb``, ``%load_ext weft_nb``, ``%weft journal`` and ``%weft runs``
  (``load_open_ms``),
- with ``--resume-steps N``: resuming a run of N completed steps until step N+1 starts
  (``resume_s``; the journal is built once per tree, then copied for each round).

Imports read compiled bytecode, as an installed package does: each tree gets its own
``PYTHONPYCACHEPREFIX`` (``PYTHONDONTWRITEBYTECODE`` is dropped), warmed before the rounds.
Without that every fresh interpreter compiles weft_nb's ~140 modules again, which is most of what
an "import" figure then measures.

It prints the median of each figure per tree and the after/before ratio. Interleaving matters on a
noisy machine: a burst of load hits both trees alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

SURFACE_PROBE = r"""
import json, os, tempfile, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
folder = tempfile.mkdtemp()
t = time.perf_counter()
import weft_nb
shell.run_line_magic("load_ext", "weft_nb")
shell.run_line_magic("weft", "journal " + os.path.join(folder, "journal.duckdb"))
shell.run_line_magic("weft", "runs")
print(json.dumps({"load_open_ms": (time.perf_counter() - t) * 1e3}))
"""

# argv: journal, steps, "build" | "resume". The gate step blocks until the engine closes.
RESUME_PROBE = r"""
import json, sys, threading, time
import weft_nb
journal, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
started, exited = threading.Event(), threading.Event()

@weft_nb.activity
def noop(x):
    return x

@weft_nb.activity
def gate(n, activity: weft_nb.ActivityContext):
    started.set()
    try:
        activity.cancelled.wait(600)
    finally:
        exited.set()
    return n

@weft_nb.workflow
def gated_wf(ctx, n):
    for i in range(n):
        ctx.run(noop, i)
    return ctx.run(gate, n)

engine = weft_nb.Engine(journal)
engine.register(noop, gate, gated_wf)
if mode == "build":
    handle = engine.start(gated_wf, n, run_id="resume-probe")
    assert started.wait(3600)
    figures = {}
else:
    t = time.perf_counter()
    resumed = engine.resume("resume-probe")
    assert started.wait(600)
    figures = {"resume_s": time.perf_counter() - t}
    assert resumed.replayed_steps == n, resumed.replayed_steps
engine.close()
assert exited.wait(60)
print(json.dumps(figures))
"""


def _run(tree: Path, cache: Path, code: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
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


def _copy_journal(source: Path, target: Path) -> Path:
    target.mkdir()
    for item in source.parent.iterdir():
        if item.name.startswith(source.name):
            shutil.copy2(item, target / item.name)
    return target / source.name


def measure(tree: Path, cache: Path, resume: tuple[Path, int] | None) -> dict[str, float]:
    figures = _run(tree, cache, PROBE)
    figures.update(_run(tree, cache, SURFACE_PROBE))
    if resume is not None:
        built, steps = resume
        with tempfile.TemporaryDirectory() as folder:
            journal = _copy_journal(built, Path(folder) / "copy")
            figures.update(_run(tree, cache, RESUME_PROBE, str(journal), str(steps), "resume"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--resume-steps", type=int, default=0, help="also time resuming a run of this many steps"
    )
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as scratch:
        setup: dict[str, tuple[Path, tuple[Path, int] | None]] = {}
        for label, tree in (("before", args.before), ("after", args.after)):
            cache = Path(scratch) / f"pycache-{label}"
            _run(tree.resolve(), cache, SURFACE_PROBE)  # compiles the tree once
            resume = None
            if args.resume_steps:
                journal = Path(scratch) / f"journal-{label}" / "journal.duckdb"
                journal.parent.mkdir()
                steps = str(args.resume_steps)
                _run(tree.resolve(), cache, RESUME_PROBE, str(journal), steps, "build")
                resume = (journal, args.resume_steps)
            setup[label] = (cache, resume)
        for i in range(args.rounds):
            order = [("before", args.before), ("after", args.after)]
            for label, tree in order if i % 2 == 0 else order[::-1]:
                runs[label].append(measure(tree.resolve(), *setup[label]))
    header = f"{'figure':<16} {'before':>10} {'after':>10} {'after/before':>13}"
    print(f"{header}  ({args.rounds} rounds)")
    for key in runs["before"][0]:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        print(f"{key:<16} {before:>10.3f} {after:>10.3f} {after / before:>13.2f}")


if __name__ == "__main__":
    main()
