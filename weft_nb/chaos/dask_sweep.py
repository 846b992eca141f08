"""The Dask chaos sweep: ``python -m weft_nb.chaos --executor dask --trials 40 --seed S``.

A workflow submits ``--trials`` trials with ``ctx.submit`` (`weft_nb.chaos.dask_trial`) to a
``DaskExecutor`` on a real ``LocalCluster`` of ``--workers`` worker processes, each under a nanny.
While the sweep runs, a killer thread SIGKILLs workers at moments drawn from the seed: most kills
wait for evidence that a trial is mid-run past a checkpoint and kill the worker running it; the
rest kill any worker, busy or idle. The nanny starts a replacement, and the killer waits for the
cluster to be whole again before the next kill (when no replacement joins within a minute, it
scales the cluster up by one worker instead, and counts it).

Afterwards the journal and the trials' evidence file must show: every trial completed once, with
the right result (none lost); no trial began again after it was journaled complete (none run
twice); every attempt that followed a durable checkpoint resumed from the newest one; every
failed attempt failed because its worker was lost (`WorkerLostError`), nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from weft_nb.base.definitions import workflow
from weft_nb.base.extras import import_extra
from weft_nb.chaos.dask_trial import chaos_trial, read_events, running_with_checkpoint
from weft_nb.chaos.dask_trial import check_sweep as check_trials
from weft_nb.engine.engine import Engine
from weft_nb.engine.workflow_context import WorkflowContext
from weft_nb.executors.dask import DaskExecutor
from weft_nb.journal.duckdb_journal import DuckDBJournal

RUN_ID = "dask-chaos-sweep"
_POLL = 0.05  # how often the killer re-reads the evidence while it waits for a target
_NANNY_WAIT = 60.0  # seconds the killer waits for a nanny's replacement before adding a worker


@workflow(name="weft-dask-chaos-sweep")
def sweep(ctx: WorkflowContext, spec: dict[str, Any]) -> list[Any]:
    """Submit every trial at once, then wait for all of them."""
    trial = {"epochs": spec["epochs"], "seconds": spec["seconds"], "log": spec["log"]}
    futures = [ctx.submit(chaos_trial, {**trial, "trial": i}) for i in range(spec["trials"])]
    return ctx.all(futures)


@dataclasses.dataclass
class SweepConfig:
    """One campaign's shape; every random choice comes from ``seed``."""

    trials: int = 40
    workers: int = 3
    kills: int = 8
    epochs: int = 6
    seconds: float = 0.25
    seed: int = 0
    any_worker_share: float = 0.25  # kills aimed at any worker instead of a mid-trial one
    deadline: float = 900.0  # seconds for the whole sweep; past it the sweep counts as hung


@dataclasses.dataclass
class Kill:
    """One SIGKILL: when, which worker process, and how it was aimed."""

    t: float
    pid: int
    address: str
    aim: str  # "mid-trial" or "any"
    trials: list[int]


def worker_pids(client: Any) -> dict[str, int]:
    """``{address: pid}`` of the workers that answer now."""
    pids: dict[str, int] = client.run(os.getpid, on_error="ignore")
    return pids


def wait_for(condition: Any, timeout: float, stop: threading.Event) -> bool:
    """Poll ``condition`` until it holds (True), ``stop`` is set or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if stop.wait(_POLL) or time.monotonic() > deadline:
            return False
    return True


class Killer(threading.Thread):
    """SIGKILLs up to ``config.kills`` workers during the sweep; see the module docstring."""

    def __init__(
        self,
        cluster: Any,
        client: Any,
        config: SweepConfig,
        evidence: Path,
        done: threading.Event,
    ) -> None:
        super().__init__(name="weft-dask-chaos-killer", daemon=True)
        self.cluster, self.client, self.config = cluster, client, config
        self.evidence, self.done = evidence, done
        self.rng = random.Random(f"{config.seed}-killer")
        self.kills: list[Kill] = []
        self.replacement_timeouts = 0
        self.error: str | None = None

    def run(self) -> None:
        """Kill, wait for the replacement, repeat; until the sweep ends or the kills are spent."""
        try:
            while len(self.kills) < self.config.kills and not self.done.is_set():
                aim = "any" if self.rng.random() < self.config.any_worker_share else "mid-trial"
                if self.done.wait(self.rng.uniform(0.0, 2 * self.config.seconds)):
                    return
                if not self._kill_one(aim):
                    return
        except Exception as exc:  # reported, never silently ending the campaign's kills
            self.error = f"{type(exc).__name__}: {exc}"

    def _kill_one(self, aim: str) -> bool:
        target: list[tuple[int, str, list[int]]] = []

        def found() -> bool:
            pids = worker_pids(self.client)
            choices: list[tuple[int, str, list[int]]]
            if aim == "any":
                choices = [(pid, address, []) for address, pid in sorted(pids.items())]
            else:
                running = running_with_checkpoint(read_events(self.evidence))
                choices = [
                    (pid, address, sorted(t for t, p in running.items() if p == pid))
                    for address, pid in sorted(pids.items())
                    if pid in running.values()
                ]
            if choices:
                target.append(self.rng.choice(choices))
            return bool(choices)

        if not wait_for(found, self.config.deadline, self.done):
            return False
        pid, address, trials = target[0]
        os.kill(pid, signal.SIGKILL)
        self.kills.append(Kill(time.time(), pid, address, aim, trials))
        if (
            not wait_for(self._replaced(pid, address), _NANNY_WAIT, self.done)
            and not self.done.is_set()
        ):
            # The nanny did not bring a worker back in time (seen once on a loaded machine):
            # start one more worker instead, as an operator (or an autoscaler) would.
            self.replacement_timeouts += 1
            self.cluster.scale(len(self.cluster.worker_spec) + 1)
            wait_for(self._replaced(pid, address), _NANNY_WAIT, self.done)
        return True

    def _replaced(self, pid: int, address: str) -> Any:
        def check() -> bool:
            # The scheduler must have dropped the killed worker (until then it still counts it)
            # and counted a replacement; killing a worker still starting up can stop its nanny.
            info = self.client.scheduler_info(n_workers=-1).get("workers", {})
            if address in info or len(info) < self.config.workers:
                return False
            for nanny in list(self.cluster.workers.values()):  # none still starting its worker
                process = getattr(nanny, "process", None)
                if getattr(getattr(process, "status", None), "name", "") in ("init", "starting"):
                    return False
            return pid not in worker_pids(self.client).values()

        return check


_DETECTIONS = {  # what a WorkerLostError's message says -> how the kernel noticed the loss
    "left the cluster": "left the cluster",
    "Dask restarted it": "Dask started the task again",
    "Dask gave up on it": "KilledWorker",
    "result was lost": "result lost with its worker",
    "could not be fetched": "result fetch failed",
    "cancelled by the scheduler": "task cancelled",
}


def detected_by(messages: Any) -> dict[str, int]:
    """How many worker losses the kernel noticed each way (from their journaled messages)."""
    counts: dict[str, int] = {}
    for message in messages:
        how = next((h for k, h in _DETECTIONS.items() if k in message), "other")
        counts[how] = counts.get(how, 0) + 1
    return counts


def run_sweep(config: SweepConfig, workdir: Path) -> dict[str, Any]:
    """Run one campaign in ``workdir`` (journal, evidence); return its figures."""
    distributed = import_extra("distributed", extra="dask", feature="the Dask chaos sweep")
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # kills make it loud, by design
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)  # a failed restart is news
    workdir.mkdir(parents=True, exist_ok=True)
    evidence = workdir / "evidence.jsonl"
    spec = {
        "trials": config.trials,
        "epochs": config.epochs,
        "seconds": config.seconds,
        "log": str(evidence),
    }
    began = time.monotonic()
    cluster = distributed.LocalCluster(
        n_workers=config.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        journal = DuckDBJournal(workdir / "journal.duckdb")
        engine = Engine(
            journal,
            executor=DaskExecutor(client),
            max_parallel=config.workers,
            heartbeat_interval=0.2,
        )
        engine.register(chaos_trial, sweep)
        done = threading.Event()
        killer = Killer(cluster, client, config, evidence, done)
        error: str | None = None
        results: list[Any] | None = None
        with engine:
            handle = engine.start(sweep, spec, run_id=RUN_ID)
            killer.start()
            try:
                results = handle.result(timeout=config.deadline)
            except TimeoutError:
                error = f"the sweep did not finish within {config.deadline:g}s (hung)"
                engine.cancel(RUN_ID)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                done.set()
                killer.join()
            steps = journal.query(
                "SELECT position, status, finished_at FROM steps WHERE run_id = ?", [RUN_ID]
            )
            failures = journal.query(
                "SELECT error_type, count(*) FROM attempts WHERE run_id = ? GROUP BY error_type",
                [RUN_ID],
            )
            lost_messages = journal.query(
                "SELECT error_message FROM attempts WHERE run_id = ? "
                "AND error_type = 'WorkerLostError'",
                [RUN_ID],
            )
    trials = check_trials(read_events(evidence), steps, results, config.trials, config.epochs)
    failed_attempts = dict(failures)
    lost_with_worker = failed_attempts.pop("WorkerLostError", 0)
    problems = [
        f"{name}: {value}"
        for name, value in (
            ("sweep error", error),
            ("killer error", killer.error),
            ("trials lost", trials.lost),
            ("trials run twice", trials.run_twice),
            ("wrong results", trials.wrong_result),
            ("resumed from an older checkpoint", trials.resumed_from_older_checkpoint),
            ("attempts failed other than by a lost worker", failed_attempts),
        )
        if value
    ]
    return {
        "executor": "dask",
        "seed": config.seed,
        "trials": config.trials,
        "workers": config.workers,
        "epochs": config.epochs,
        "completed": trials.completed,
        "workers_killed": len(killer.kills),
        "kills_mid_trial": sum(k.aim == "mid-trial" for k in killer.kills),
        "kills_any_worker": sum(k.aim == "any" for k in killer.kills),
        "workers_added_by_harness": killer.replacement_timeouts,
        "lost": len(trials.lost),
        "run_twice": len(trials.run_twice),
        "wrong_results": len(trials.wrong_result),
        "attempts": trials.attempts,
        "attempts_lost_with_worker": lost_with_worker,
        "resumed_from_checkpoint": trials.resumed_from_checkpoint,
        "resumed_on_another_worker": trials.resumed_on_another_worker,
        "resumed_from_older_checkpoint": len(trials.resumed_from_older_checkpoint),
        "resumed_on_same_worker": trials.resumed_on_same_worker,
        "worker_lost_detected_by": detected_by(m for (m,) in lost_messages),
        "seconds": round(time.monotonic() - began, 1),
        "kills": [dataclasses.asdict(k) for k in killer.kills],
        "problems": problems,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--executor dask`` (``--trials``, ``--seed``, ``--json`` are shared)."""
    group = parser.add_argument_group("--executor dask (no notebook: a sweep on a LocalCluster)")
    group.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    group.add_argument("--kills", type=int, help="SIGKILLs at most (default: trials / 5)")
    group.add_argument("--epochs", type=int, default=6, help="checkpoints per trial (default 6)")
    group.add_argument(
        "--epoch-seconds", type=float, default=0.25, help="work per epoch (default 0.25)"
    )
    group.add_argument(
        "--deadline", type=float, default=900.0, help="seconds before the sweep counts as hung"
    )


def main_dask(args: argparse.Namespace, workdir: Path) -> int:
    """Run the campaign the parsed arguments describe; print (and keep) its figures."""
    config = SweepConfig(
        trials=args.trials,
        workers=args.workers,
        kills=max(1, args.trials // 5) if args.kills is None else args.kills,
        epochs=args.epochs,
        seconds=args.epoch_seconds,
        seed=args.seed,
        deadline=args.deadline,
    )
    print(f"dask sweep: {dataclasses.asdict(config)} in {workdir}", flush=True)
    figures = run_sweep(config, workdir)
    text = json.dumps({k: v for k, v in figures.items() if k != "kills"}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if figures["problems"] else 0
