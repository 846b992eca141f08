"""Crash and resume a real training workflow: SIGKILL mid-training, resume from the checkpoint.

Run with ``make demo`` (or ``.venv/bin/python scripts/demo_crash_resume.py``). The story:

1. A child process runs the workflow ``prepare -> train(epochs, lr) -> evaluate``: a small MLP
   (numpy only) learns a synthetic two-moons dataset. ``train`` heartbeats ``{"epoch", "loss",
   "progress"}`` every batch, checkpoints its weights every epoch and restores from
   ``activity.last_checkpoint`` when it starts.
2. Half way through training, this script kills the child with SIGKILL.
3. A new child resumes the same run id on the same journal: ``prepare`` is replayed from the
   journal, ``train`` restarts from its newest checkpoint, ``evaluate`` runs.
4. Another child runs the workflow uninterrupted on another journal, for comparison.

Journals, logs and ``summary.json`` go to ``demo-output/``. The exit status is non-zero if the
resumed run re-executed a completed step, did not resume from the checkpoint, or ended with a
different accuracy than the uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import weft_nb

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
RUN_ID = "demo-run"
CONFIG = {"n": 50000, "noise": 0.2, "seed": 42, "hidden": 32, "epochs": 10, "lr": 0.1, "batch": 16}
TRAIN_POSITION = 1  # prepare is step 0, train step 1, evaluate step 2
DEADLINE = 120.0

EVENTS: Path | None = None  # set in the child: the evidence file the parent reads


# -- the workflow (runs in the child processes) --------------------------------------------


def log_event(**record: Any) -> None:
    """Append one line the parent can read even after a SIGKILL."""
    assert EVENTS is not None
    with open(EVENTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "t": time.time(), **record}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@weft_nb.activity
def prepare(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Two interleaving half moons with Gaussian noise, split 80/20."""
    log_event(event="activity", activity="prepare")
    rng = np.random.default_rng(spec["seed"])
    n = spec["n"]
    angle = rng.uniform(0.0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(label == 0, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(label == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + rng.normal(0.0, spec["noise"], (n, 2))
    points = (points - points.mean(axis=0)) / points.std(axis=0)
    cut = int(0.8 * n)
    return {
        "x_train": points[:cut],
        "y_train": label[:cut].astype(np.float64),
        "x_test": points[cut:],
        "y_test": label[cut:].astype(np.float64),
    }


def forward(model: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ model["w1"] + model["b1"])
    logits = hidden @ model["w2"] + model["b2"]
    return hidden, 1.0 / (1.0 + np.exp(-logits))


def bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@weft_nb.activity
def train(spec: dict[str, Any], activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Minibatch SGD; heartbeats every batch, checkpoints every epoch, resumes from the newest."""
    state = activity.last_checkpoint
    log_event(
        event="train_start",
        from_epoch=0 if state is None else state["epoch"],
        last_heartbeat=activity.last_heartbeat_details,
    )
    data = spec["data"]
    x, y = data["x_train"], data["y_train"]
    if state is None:
        rng = np.random.default_rng(spec["seed"] + 1)
        h = spec["hidden"]
        state = {
            "epoch": 0,
            "w1": rng.normal(0.0, 1.0, (2, h)),
            "b1": np.zeros(h),
            "w2": rng.normal(0.0, 1.0 / np.sqrt(h), h),
            "b2": 0.0,
        }
    epochs, lr, batch = spec["epochs"], spec["lr"], spec["batch"]
    batches = int(np.ceil(len(x) / batch))
    model = {k: v for k, v in state.items() if k != "epoch"}
    for epoch in range(state["epoch"] + 1, epochs + 1):
        # The shuffle depends only on the epoch, so a resumed run replays the same batches.
        order = np.random.default_rng(spec["seed"] * 1000 + epoch).permutation(len(x))
        total = 0.0
        for b in range(batches):
            idx = order[b * batch : (b + 1) * batch]
            xb, yb = x[idx], y[idx]
            hidden, p = forward(model, xb)
            loss = bce(p, yb)
            total += loss * len(idx)
            grad_logits = (p - yb) / len(idx)
            grad_hidden = np.outer(grad_logits, model["w2"]) * (1.0 - hidden**2)
            model["w2"] = model["w2"] - lr * (hidden.T @ grad_logits)
            model["b2"] = model["b2"] - lr * float(grad_logits.sum())
            model["w1"] = model["w1"] - lr * (xb.T @ grad_hidden)
            model["b1"] = model["b1"] - lr * grad_hidden.sum(axis=0)
            progress = ((epoch - 1) + (b + 1) / batches) / epochs
            activity.heartbeat({"epoch": epoch, "loss": round(loss, 4), "progress": progress})
        activity.checkpoint({"epoch": epoch, **model})
        log_event(event="epoch", epoch=epoch, loss=total / len(x))
    return {"epochs": epochs, **model}


@weft_nb.activity
def evaluate(spec: dict[str, Any]) -> dict[str, float]:
    """Test accuracy and loss of the trained model."""
    log_event(event="activity", activity="evaluate")
    data = spec["data"]
    _, p = forward(spec["model"], data["x_test"])
    accuracy = float(np.mean((p > 0.5) == (data["y_test"] > 0.5)))
    return {"accuracy": accuracy, "loss": bce(p, data["y_test"])}


@weft_nb.workflow
def moons_training(ctx: weft_nb.WorkflowContext, cfg: dict[str, Any]) -> dict[str, Any]:
    data = ctx.run(prepare, {"n": cfg["n"], "noise": cfg["noise"], "seed": cfg["seed"]})
    model = ctx.run(
        train,
        {
            "data": data,
            "epochs": cfg["epochs"],
            "lr": cfg["lr"],
            "batch": cfg["batch"],
            "hidden": cfg["hidden"],
            "seed": cfg["seed"],
        },
    )
    metrics = ctx.run(evaluate, {"model": model, "data": data})
    return {"accuracy": metrics["accuracy"], "test_loss": metrics["loss"], "model": model}


def child_main(folder: Path) -> int:
    """Start (or resume: same run id) the workflow on ``folder``'s journal and report."""
    global EVENTS
    EVENTS = folder / "events.jsonl"
    with weft_nb.Engine(
        folder / "journal.duckdb", heartbeat_interval=0.05, program="demo_crash_resume"
    ) as engine:
        engine.register(prepare, train, evaluate, moons_training)
        handle = engine.start(moons_training, CONFIG, run_id=RUN_ID)
        result = handle.result(timeout=DEADLINE)
        steps = engine.journal.load_steps(RUN_ID)
        report = {
            "pid": os.getpid(),
            "accuracy": result["accuracy"],
            "test_loss": result["test_loss"],
            "replayed_steps": handle.replayed_steps,
            "executed_steps": handle.executed_steps,
            "journal_steps": {str(pos): steps[pos].activity for pos in sorted(steps)},
        }
        np.savez(
            folder / f"model-{os.getpid()}.npz",
            **{k: v for k, v in result["model"].items() if k != "epochs"},
        )
    (folder / f"report-{os.getpid()}.json").write_text(json.dumps(report, indent=2))
    return 0


# -- the story (runs in the parent) --------------------------------------------------------


def read_events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # the child may be writing the last line right now
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def launch(folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = open(folder / "child.log", "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        log.close()


def finish(proc: subprocess.Popen[bytes], folder: Path) -> dict[str, Any]:
    code = proc.wait(timeout=DEADLINE)
    if code != 0:
        tail = (folder / "child.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"child {proc.pid} failed with exit status {code}:\n{tail}")
    report: dict[str, Any] = json.loads((folder / f"report-{proc.pid}.json").read_text())
    return report


def show_epochs(events: list[dict[str, Any]], pid: int, seen: set[tuple[int, int]]) -> None:
    for event in events:
        key = (event["pid"], event.get("epoch", -1))
        if event["pid"] == pid and event["event"] == "epoch" and key not in seen:
            seen.add(key)
            print(
                f"    child {pid}: epoch {event['epoch']:2d}/{CONFIG['epochs']} checkpointed, "
                f"train loss {event['loss']:.4f}"
            )


def journal_after_crash(folder: Path) -> dict[str, Any]:
    """Open the journal read-only, as any other process could after the crash."""
    from weft_nb._checkpoints import CheckpointStore
    from weft_nb._clock import RealClock
    from weft_nb._duckdb_journal import DuckDBJournal
    from weft_nb._payloads import decode

    journal = DuckDBJournal(folder / "journal.duckdb", read_only=True)
    try:
        run = journal.get_run(RUN_ID)
        steps = journal.load_steps(RUN_ID)
        heartbeat = journal.latest_heartbeat(RUN_ID, TRAIN_POSITION)
        checkpoint = CheckpointStore(journal, RealClock()).load_latest(RUN_ID, TRAIN_POSITION)
    finally:
        journal.close()
    return {
        "status": None if run is None else run.status,
        "completed": {
            pos: s.activity for pos, s in sorted(steps.items()) if s.status == "completed"
        },
        "heartbeat": None if heartbeat is None else decode(heartbeat.codec, heartbeat.details),
        "checkpoint_epoch": None if checkpoint is None else checkpoint["epoch"],
    }


def main() -> int:
    started = time.monotonic()
    half = CONFIG["epochs"] // 2
    crashed_dir, clean_dir = OUT / "interrupted", OUT / "uninterrupted"
    for folder in (crashed_dir, clean_dir):
        shutil.rmtree(folder, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    print("weft_nb demo: SIGKILL a training workflow, then resume it from its journal")
    print(
        f"  workflow: prepare -> train(epochs={CONFIG['epochs']}, lr={CONFIG['lr']}) -> evaluate"
        f"  (MLP, {CONFIG['hidden']} hidden units, {CONFIG['n']} two-moons points)"
    )

    # 1. Start, and kill half way through training.
    first = launch(crashed_dir)
    print(
        f"\n[1] child {first.pid} starts run {RUN_ID!r} on "
        f"{(crashed_dir / 'journal.duckdb').relative_to(ROOT)}"
    )
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + DEADLINE
    while True:
        events = read_events(crashed_dir)
        show_epochs(events, first.pid, seen)
        done = [e["epoch"] for e in events if e["event"] == "epoch" and e["pid"] == first.pid]
        if done and max(done) >= half:
            break
        if first.poll() is not None:
            raise SystemExit(f"child {first.pid} exited ({first.returncode}) before epoch {half}")
        if time.monotonic() > deadline:
            first.kill()
            raise SystemExit(f"child {first.pid} did not reach epoch {half} in {DEADLINE}s")
        time.sleep(0.01)
    # Let it get about half way into the next epoch (heartbeats flushed, no checkpoint yet).
    stamps = [e["t"] for e in events if e["event"] == "epoch" and e["pid"] == first.pid]
    epoch_seconds = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    time.sleep(epoch_seconds / 2)
    first.send_signal(signal.SIGKILL)
    code = first.wait()
    print(
        f"    epoch {half} checkpointed, half an epoch later: SIGKILL -> child {first.pid} "
        f"exit status {code}"
    )
    if code != -signal.SIGKILL:
        raise SystemExit(f"expected the child to die by SIGKILL, got exit status {code}")
    show_epochs(read_events(crashed_dir), first.pid, seen)

    # 2. What survived: the journal, read by this process.
    after = journal_after_crash(crashed_dir)
    hb = after["heartbeat"]
    print("\n[2] journal after the crash (opened read-only by this process)")
    print(f"    run status: {after['status']}")
    print(f"    completed steps: {after['completed'] or 'none'}")
    print(f"    newest checkpoint of train: epoch {after['checkpoint_epoch']}")
    if hb is not None:
        print(
            f"    last heartbeat of train: epoch {hb['epoch']}, loss {hb['loss']}, "
            f"progress {hb['progress']:.0%}"
        )
        if after["checkpoint_epoch"] is not None and hb["epoch"] > after["checkpoint_epoch"]:
            print(
                f"    -> epoch {hb['epoch']} was in flight: its partial work is lost and "
                f"redone from the epoch-{after['checkpoint_epoch']} checkpoint"
            )

    # 3. Resume in a new process: same journal, same run id.
    second = launch(crashed_dir)
    print(f"\n[3] child {second.pid} resumes run {RUN_ID!r} (a new process, same journal)")
    resumed = finish(second, crashed_dir)
    events = read_events(crashed_dir)
    show_epochs(events, second.pid, seen)
    mine = [e for e in events if e["pid"] == second.pid]
    ran = [e["activity"] for e in mine if e["event"] == "activity"]
    ran += ["train"] * sum(1 for e in mine if e["event"] == "train_start")
    steps = resumed["journal_steps"]
    replayed = [f"step {pos} {name}" for pos, name in steps.items() if name not in ran]
    executed = [f"step {pos} {name}" for pos, name in steps.items() if name in ran]
    starts = [e for e in mine if e["event"] == "train_start"]
    train_start = starts[0] if starts else {"from_epoch": None, "last_heartbeat": None}
    trained = [e["epoch"] for e in mine if e["event"] == "epoch"]
    print(f"    replayed from the journal, not re-executed: {', '.join(replayed) or 'none'}")
    print(f"    executed: {', '.join(executed) or 'none'}")
    seen_hb = train_start["last_heartbeat"]
    seen_text = (
        "none"
        if seen_hb is None
        else f"epoch {seen_hb['epoch']}, {seen_hb['progress']:.0%} of training"
    )
    span = f"{trained[0]}..{trained[-1]}" if trained else "none"
    print(
        f"    train resumed from checkpoint epoch {train_start['from_epoch']} "
        f"(last heartbeat it saw: {seen_text}); it trained epochs {span}"
    )
    print(f"    final test accuracy: {resumed['accuracy']:.4f}")

    # 4. The same workflow, never interrupted.
    third = launch(clean_dir)
    print(f"\n[4] child {third.pid} runs the workflow uninterrupted on another journal")
    clean = finish(third, clean_dir)
    print(f"    final test accuracy: {clean['accuracy']:.4f}")
    model_a = np.load(crashed_dir / f"model-{second.pid}.npz")
    model_b = np.load(clean_dir / f"model-{third.pid}.npz")
    diff = max(float(np.max(np.abs(model_a[k] - model_b[k]))) for k in model_b.files)

    problems = []
    if "prepare" in ran or resumed["replayed_steps"] < 1:
        problems.append("the completed step 'prepare' was not replayed from the journal")
    if not starts:
        problems.append("train did not run in the resumed process")
    elif not after["checkpoint_epoch"] or train_start["from_epoch"] != after["checkpoint_epoch"]:
        problems.append(
            f"train started from epoch {train_start['from_epoch']}, not from the journal's "
            f"newest checkpoint (epoch {after['checkpoint_epoch']})"
        )
    if starts and trained and trained[0] != train_start["from_epoch"] + 1:
        problems.append(f"train re-ran epochs before {train_start['from_epoch'] + 1}")
    if abs(resumed["accuracy"] - clean["accuracy"]) > 1e-9:
        problems.append("the resumed run's accuracy differs from the uninterrupted run's")
    same = "identical" if diff == 0.0 else f"max weight difference {diff:.2e}"
    print(
        f"\nresumed vs uninterrupted: accuracy {resumed['accuracy']:.4f} vs "
        f"{clean['accuracy']:.4f}; weights {same}"
    )

    summary = {
        "run_id": RUN_ID,
        "config": CONFIG,
        "killed_pid": first.pid,
        "killed_after_epoch": max(e for _pid, e in seen if _pid == first.pid),
        "journal_after_crash": {
            **after,
            "completed": {str(k): v for k, v in after["completed"].items()},
        },
        "resumed": {
            **resumed,
            "replayed": replayed,
            "executed": executed,
            "resumed_from_epoch": train_start["from_epoch"],
            "last_heartbeat_seen": train_start["last_heartbeat"],
            "epochs_trained": trained,
        },
        "uninterrupted": clean,
        "max_weight_difference": diff,
        "problems": problems,
        "seconds": round(time.monotonic() - started, 2),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"summary: {OUT / 'summary.json'} ({summary['seconds']}s)")
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1
    print("OK: completed steps were replayed, training resumed from its checkpoint")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.exit(child_main(args.child) if args.child else main())
