"""Kill a notebook's kernel in the middle of training, then Restart & Run All: it resumes.

Run with ``make demo`` (or ``.venv/bin/python scripts/demo_notebook.py``). The story, told with
``notebooks/train_resume.ipynb`` (scikit-learn digits, ``prepare -> train -> evaluate``):

1. A fresh copy of the notebook goes to ``demo-output/interrupted/``, so its journal (``.weft/``
   beside it) starts empty and the repository's files are not touched. A real Jupyter kernel runs
   its cells; the ``%weft run`` cell is sent without waiting for it.
2. When ``train`` has checkpointed half of its epochs (the checkpoint files appear beside the
   journal), and half an epoch later, the kernel gets SIGKILL.
3. This process opens the journal read-only and shows what survived the crash.
4. A fresh kernel runs the whole notebook again (Restart & Run All): ``prepare`` is replayed from
   the journal, ``train`` resumes from its newest checkpoint, ``evaluate`` runs.
5. Another copy of the notebook (``demo-output/uninterrupted/``) runs once, never killed.

The executed notebooks and ``summary.json`` go to ``demo-output/``. The exit status is non-zero if
a completed step ran again, ``train`` did not resume from its checkpoint, or the resumed run's
accuracy differs from the uninterrupted run's.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import pickle
import queue
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np

from weft_nb.base.payloads import decode
from weft_nb.chaos.kernel import NotebookKernel, run_notebook
from weft_nb.journal.duckdb_journal import DuckDBJournal

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "train_resume.ipynb"
OUT = ROOT / "demo-output"
DEADLINE = 120.0  # seconds; the whole demo takes well under a minute
REPLAY_RE = re.compile(r"replayed from journal: (\d+) steps, (\d+) executed")
TRAIN_START_RE = re.compile(r"train: .*?at epoch (\d+) of (\d+)")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def fresh_copy(name: str) -> Path:
    """A copy of the notebook in its own folder under demo-output/, with an empty journal."""
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copy = folder / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    return copy


def kernel_env(notebook: Path) -> dict[str, str]:
    # What Jupyter Server tells a kernel: the notebook's path. weft_nb puts the journal in
    # .weft/ beside it and derives the run id from it (so Restart & Run All finds the same run).
    return {"JPY_SESSION_NAME": str(notebook)}


@contextlib.contextmanager
def kernel_stderr(log: Path) -> Iterator[None]:
    """Kernels started in here write their stderr (log lines, crashes) to ``log``, not ours."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "ab") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def text_of(outputs: list[Any]) -> str:
    """The printed text of a cell's outputs."""
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def checkpoint_files(journal: Path) -> list[Path]:
    """Committed-or-about-to-be checkpoint files of the journal, oldest first (by sequence)."""
    root = Path(str(journal) + ".checkpoints")
    return sorted(root.glob("*/*/[0-9]*.pkl"), key=lambda p: p.name)


def seq_of(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def read_journal(journal: Path) -> dict[str, Any]:
    """The runs, steps, newest train checkpoint and heartbeat, read-only (any process can)."""
    db = DuckDBJournal(journal, read_only=True)
    try:
        runs = db.query("SELECT run_id, status, result_codec, result FROM runs ORDER BY created_at")
        (run_id, status, result_codec, result) = runs[-1]
        steps = db.query(
            "SELECT position, activity, status, started_at, finished_at, attempts, result_codec, "
            "result FROM steps WHERE run_id = ? AND NOT superseded ORDER BY position",
            [run_id],
        )
        train = [s for s in steps if s[1] == "train"]
        train_pos = train[0][0] if train else 1
        checkpoint = db.query(
            "SELECT seq, path FROM checkpoints WHERE run_id = ? AND position = ? "
            "AND NOT superseded ORDER BY seq DESC LIMIT 1",
            [run_id, train_pos],
        )
        heartbeat = db.query(
            "SELECT codec, details FROM heartbeats WHERE run_id = ? AND position = ? "
            "AND NOT superseded ORDER BY id DESC LIMIT 1",
            [run_id, train_pos],
        )
    finally:
        db.close()
    checkpoint_epoch = None
    if checkpoint:
        with open(Path(str(journal) + ".checkpoints") / checkpoint[0][1], "rb") as handle:
            checkpoint_epoch = pickle.load(handle)["epoch"]
    model = None
    if train and train[0][2] == "completed":
        model = decode(train[0][6], train[0][7], what="the train step's result")
    return {
        "run_id": run_id,
        "status": status,
        "result": None if result is None else decode(result_codec, result, what="the result"),
        "steps": [
            {
                "position": s[0],
                "activity": s[1],
                "status": s[2],
                "started_at": s[3],
                "finished_at": s[4],
                "attempts": s[5],
            }
            for s in steps
        ],
        "checkpoint_seq": checkpoint[0][0] if checkpoint else None,
        "checkpoint_epoch": checkpoint_epoch,
        "heartbeat": decode(*heartbeat[0], what="a heartbeat") if heartbeat else None,
        "model": model,
    }


def weights_difference(a: Any, b: Any) -> float:
    pairs = list(zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True))
    return max(float(np.max(np.abs(x - y))) for x, y in pairs)


def run_until_killed(notebook: Path) -> dict[str, Any]:
    """Run the notebook's cells in a real kernel; SIGKILL it half way through training."""
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    run_index = next(i for i, c in enumerate(code) if "%weft run" in c.source)
    run_cell = code[run_index]
    epochs_match = re.search(r"\bepochs=(\d+)", run_cell.source)
    if epochs_match is None:
        raise SystemExit(f"no epochs=N in the %weft run cell of {NOTEBOOK.name}")
    epochs = int(epochs_match.group(1))
    kill_after = epochs // 2

    with kernel_stderr(notebook.parent / "kernel-stderr.log"):
        kernel = NotebookKernel(notebook.parent, kernel_env(notebook))
    try:
        for count, cell in enumerate(code[:run_index], 1):
            cell.outputs = kernel.execute(cell.source, timeout=DEADLINE)
            cell.execution_count = count
        (answer,) = kernel.execute("%weft journal")
        journal = notebook.parent / ast.literal_eval(answer["data"]["text/plain"])
        print(f"\n[1] kernel {kernel.pid} runs {rel(notebook)}")
        print(f"    journal: {rel(journal)}")
        print(f"    ran {run_index} cells, then sent `{run_cell.source.splitlines()[0]}`")

        msg_id = kernel.start(run_cell.source)
        run_cell.execution_count = run_index + 1
        outputs: list[Any] = []
        shown = ""
        seen = 0
        finished = False
        midline = False  # the line of checkpointed epochs is being printed

        def drain(seconds: float) -> None:
            """Collect the running cell's outputs for ``seconds``; echo its printed lines."""
            nonlocal shown, finished, midline
            end = time.monotonic() + seconds
            while True:
                left = end - time.monotonic()
                try:
                    msg = kernel.client.get_iopub_msg(timeout=max(0.0, min(left, 0.01)))
                except queue.Empty:
                    if left <= 0:
                        break
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append(nbformat.v4.output_from_msg(msg))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    finished = True
            text = text_of(outputs)
            for line in text[len(shown) :].splitlines(keepends=True):
                if line.endswith("\n"):
                    print(f"{chr(10) if midline else ''}    | {line.rstrip()}")
                    midline = False
                    shown += line

        deadline = time.monotonic() + DEADLINE
        while True:
            drain(0.02)
            files = checkpoint_files(journal)
            newest = seq_of(files[-1]) if files else 0
            for epoch in range(seen + 1, newest + 1):
                if not midline:
                    print("    checkpoint written after epoch", end="", flush=True)
                    midline = True
                print(f" {epoch}", end="", flush=True)
            seen = max(seen, newest)
            if newest >= kill_after:
                break
            if finished or not kernel.alive():
                raise SystemExit(f"\nthe %weft run cell ended before epoch {kill_after}")
            if time.monotonic() > deadline:
                raise SystemExit(f"\ntraining did not reach epoch {kill_after} in {DEADLINE}s")
        print()
        midline = False
        # Half an epoch more: the next epoch is under way (heartbeats sent), not checkpointed.
        if len(files) >= 2:
            epoch_seconds = files[-1].stat().st_mtime - files[-2].stat().st_mtime
        else:
            epoch_seconds = (time.monotonic() - kernel.started_at) / max(1, newest)
        drain(epoch_seconds / 2)
        if finished:
            raise SystemExit("the %weft run cell finished before the kernel could be killed")
        pid = kernel.pid
        killed_at = time.time()
        kernel.kill()  # SIGKILL, and wait until the process is gone
        if kernel.alive():
            raise SystemExit(f"kernel {pid} survived SIGKILL")
        print(
            f"    half an epoch later, during epoch {newest + 1}: SIGKILL -> kernel {pid} is gone"
        )
    finally:
        kernel.close()
        if not kernel.alive():
            kernel.manager.cleanup_resources()  # its connection file
    run_cell.outputs = outputs
    killed = notebook.with_name(notebook.stem + ".killed.ipynb")
    nbformat.write(nb, killed)
    return {
        "kernel_pid": pid,
        "killed_at": killed_at,
        "journal": journal,
        "epochs": epochs,
        "checkpoint_files_seen": seen,
        "printed": text_of(outputs),
        "executed_notebook": rel(killed),
    }


def restart_and_run_all(notebook: Path, suffix: str) -> dict[str, Any]:
    """Run every cell in a fresh kernel, as Restart & Run All does; write the executed copy."""
    executed = notebook.with_name(f"{notebook.stem}.{suffix}.ipynb")
    started = time.monotonic()
    with kernel_stderr(notebook.parent / "kernel-stderr.log"):
        results = run_notebook(
            notebook, env=kernel_env(notebook), output=executed, timeout=DEADLINE
        )
    nb = nbformat.read(notebook, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    run_index = next(i for i, s in enumerate(sources) if "%weft run" in s)
    printed = text_of(results[run_index])
    replay = REPLAY_RE.search(printed)
    start = TRAIN_START_RE.search(printed)
    return {
        "executed_notebook": rel(executed),
        "seconds": round(time.monotonic() - started, 2),
        "printed": printed,
        "replayed_steps": int(replay.group(1)) if replay else None,
        "executed_steps": int(replay.group(2)) if replay else None,
        "train_started_at_epoch": int(start.group(1)) if start else None,
    }


def fmt(accuracy: float | None) -> str:
    return "none" if accuracy is None else f"{accuracy:.4f}"


def public(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "model"}


def main() -> int:
    started = time.monotonic()
    OUT.mkdir(exist_ok=True)
    print(
        "weft_nb demo: SIGKILL a notebook's kernel in the middle of training, "
        "then Restart & Run All"
    )
    print(f"  notebook: {rel(NOTEBOOK)} (scikit-learn digits; prepare -> train -> evaluate)")

    # 1. Run the notebook in a real kernel and kill it during training.
    interrupted = fresh_copy("interrupted")
    t0 = time.monotonic()
    first = run_until_killed(interrupted)
    journal: Path = first["journal"]
    epochs = first["epochs"]
    seconds_killed = round(time.monotonic() - t0, 2)

    # 2. What survived: the journal, opened read-only by this process.
    crash = read_journal(journal)
    done = [s for s in crash["steps"] if s["status"] == "completed"]
    hb = crash["heartbeat"]
    print("\n[2] the journal after the crash (opened read-only by this process)")
    print(f"    run {crash['run_id']}: status {crash['status']!r}")
    print(
        "    completed steps: "
        + (", ".join(f"{s['position']} {s['activity']}" for s in done) or "none")
    )
    print(f"    newest checkpoint of train: after epoch {crash['checkpoint_epoch']}")
    if hb is not None:
        print(
            f"    last heartbeat of train in the journal: epoch {hb['epoch']}, loss {hb['loss']}, "
            f"progress {hb['progress']:.0%}\n"
            "      (heartbeats are journaled about once a second, checkpoints when they are taken)"
        )

    # 3. Restart & Run All in a fresh kernel.
    print(f"\n[3] Restart & Run All: a fresh kernel runs every cell of {rel(interrupted)} again")
    resumed = restart_and_run_all(interrupted, "resumed")
    for line in resumed["printed"].splitlines():
        if line.startswith(("train:", "run ")):
            print(f"    | {line}")
    after = read_journal(journal)
    accuracy = (after["result"] or {}).get("accuracy")
    epochs_trained = (after["checkpoint_seq"] or 0) - (crash["checkpoint_seq"] or 0)
    before = {s["position"]: s for s in done}
    rerun = [
        f"{s['position']} {s['activity']}"
        for s in after["steps"]
        if s["position"] in before and s != before[s["position"]]
    ]
    for step in after["steps"]:
        name = f"    {step['position']} {step['activity']:<9}"
        if step["position"] in before:
            changed = step != before[step["position"]]
            print(f"{name}RAN AGAIN" if changed else f"{name}replayed from the journal, not run")
        elif step["activity"] == "train":
            at = resumed["train_started_at_epoch"]
            ok = at == (crash["checkpoint_epoch"] or 0) + 1
            how = f"resumed at epoch {at} from its checkpoint" if ok else f"started at epoch {at}"
            print(
                f"{name}{how}, trained {epochs_trained} more epochs "
                f"(checkpoint {crash['checkpoint_seq']} -> {after['checkpoint_seq']})"
            )
        else:
            print(f"{name}ran")
    print(f"    test accuracy: {fmt(accuracy)} (Restart & Run All took {resumed['seconds']}s)")

    # 4. The same notebook, never interrupted.
    print("\n[4] the same notebook uninterrupted, in another fresh copy and kernel")
    clean_copy = fresh_copy("uninterrupted")
    clean = restart_and_run_all(clean_copy, "executed")
    clean_journal = read_journal(clean_copy.parent / ".weft" / f"{clean_copy.stem}.duckdb")
    clean_accuracy = (clean_journal["result"] or {}).get("accuracy")
    print(f"    {clean['printed'].strip().splitlines()[-1]}")
    print(f"    test accuracy: {fmt(clean_accuracy)} (Run All took {clean['seconds']}s)")

    diff = None
    if after["model"] is not None and clean_journal["model"] is not None:
        diff = weights_difference(after["model"], clean_journal["model"])

    problems = []
    if rerun:
        problems.append(f"completed steps ran again after the crash: {', '.join(rerun)}")
    if resumed["replayed_steps"] != len(done) or not done:
        problems.append(
            f"the resumed run replayed {resumed['replayed_steps']} steps from the journal; "
            f"{len(done)} had completed before the crash"
        )
    if not crash["checkpoint_epoch"]:
        problems.append("no checkpoint of train survived the crash")
    elif resumed["train_started_at_epoch"] != crash["checkpoint_epoch"] + 1:
        problems.append(
            f"train started at epoch {resumed['train_started_at_epoch']}, not after the "
            f"journal's newest checkpoint (epoch {crash['checkpoint_epoch']})"
        )
    if crash["checkpoint_epoch"] and epochs_trained != epochs - crash["checkpoint_epoch"]:
        problems.append(
            f"train ran {epochs_trained} epochs after the crash, expected "
            f"{epochs - crash['checkpoint_epoch']}"
        )
    if after["status"] != "completed" or clean_journal["status"] != "completed":
        problems.append(f"runs ended {after['status']!r} and {clean_journal['status']!r}")
    if accuracy is None or accuracy != clean_accuracy:
        problems.append(f"accuracy {accuracy} after the crash, {clean_accuracy} without one")
    same = "?" if diff is None else "identical" if diff == 0.0 else f"max difference {diff:.2e}"
    print(
        f"\nresumed vs uninterrupted: test accuracy {fmt(accuracy)} vs {fmt(clean_accuracy)}; "
        f"model weights {same}"
    )

    summary = {
        "notebook": rel(NOTEBOOK),
        "run_id": crash["run_id"],
        "epochs": epochs,
        "killed": {
            "kernel_pid": first["kernel_pid"],
            "after_checkpoint": first["checkpoint_files_seen"],
            "executed_notebook": first["executed_notebook"],
            "printed": first["printed"],
            "seconds": seconds_killed,
        },
        "journal_after_crash": public(crash),
        "resumed": {
            **resumed,
            "journal": public(after),
            "epochs_trained": epochs_trained,
            "accuracy": accuracy,
        },
        "uninterrupted": {**clean, "journal": public(clean_journal), "accuracy": clean_accuracy},
        "max_weight_difference": diff,
        "problems": problems,
        "seconds": round(time.monotonic() - started, 2),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"notebooks and summary: {rel(OUT)}/ ({summary['seconds']}s)")
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1
    print(
        "OK: finished steps were replayed from the journal, training resumed from its "
        "checkpoint, and the result equals the uninterrupted run's"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
