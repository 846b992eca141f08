"""Fault injection over real kernels: ``python -m weft_nb.chaos NOTEBOOK --trials N [--seed S]``.

Each trial copies the notebook into a fresh folder, runs all its cells in a real Jupyter kernel,
and injects one fault: SIGKILL inside an activity, during a checkpoint write, around a journal
commit, between steps or during a retry backoff, or an Interrupt Kernel (SIGINT). Then it does
what a person would: Restart & Run All (a fresh kernel; for an interrupt, Run All in the same
kernel). The result is compared with a reference run that was never disturbed.

Evidence comes from outside the kernel: the engine's execution log (``WEFT_NB_EVIDENCE_LOG``,
fsynced line by line) and the journal itself, opened read-only after every kill. A trial fails
when a completed step ran again, a completed step was lost, an interrupted activity did not
resume from its newest durable checkpoint, the final results differ from the reference, or the
journal did not open cleanly. The exit status is non-zero then, naming the trial and its seed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from weft_nb.chaos import dask_sweep, storage
from weft_nb.chaos.kernel import NotebookKernel, code_cells, require_kernel_packages
from weft_nb.chaos.trials import (
    DEADLINE,
    FAULTS,
    Disturbance,
    Evidence,
    Outcome,
    TrialRecord,
    check_journal_opens,
    check_trial,
    fault_environment,
    journal_results,
)
from weft_nb.errors import MissingExtraError


class Harness:
    """Runs the reference and the trials of one notebook."""

    def __init__(
        self, notebook: Path, workdir: Path, seed: int, faults: tuple[str, ...] = ("kill",)
    ) -> None:
        self.faults = faults  # "kill" (every kind of FAULTS), "enospc", "damage"
        self.notebook = notebook.resolve()
        self.workdir = workdir
        self.seed = seed
        self.cells = code_cells(self.notebook)
        self.reference: dict[str, Any] = {}
        self.reference_events: list[dict[str, Any]] = []

    def _folder(self, name: str) -> tuple[Path, Evidence]:
        folder = self.workdir / name
        folder.mkdir(parents=True)
        shutil.copy(self.notebook, folder / self.notebook.name)
        for extra in self.notebook.parent.iterdir():  # data files the notebook reads
            if extra.is_file() and extra.suffix != ".ipynb" and extra.stat().st_size < 50_000_000:
                shutil.copy(extra, folder / extra.name)
        return folder, Evidence(folder / "evidence.jsonl")

    def _kernel(self, folder: Path, env: dict[str, str]) -> NotebookKernel:
        """A kernel for ``folder``; its stderr goes to ``folder/kernel-stderr.log``.

        The kernel is told that it runs the folder's copy of the notebook, as Jupyter Server
        tells its kernels (``JPY_SESSION_NAME``). Otherwise it would find its notebook by its
        cells among those named on this harness's command line, take the original, and every
        trial would share the journal beside it (`weft_nb.notebook.identity`).
        """
        own = {"JPY_SESSION_NAME": str(folder / self.notebook.name), **env}
        with open(folder / "kernel-stderr.log", "ab") as log:  # the child keeps its own copy
            return NotebookKernel(folder, own, stderr=log)

    def _run_all(self, kernel: NotebookKernel) -> None:
        for source in self.cells:
            kernel.execute(source, timeout=DEADLINE)

    def run_reference(self) -> None:
        """Run the notebook once, undisturbed."""
        folder, evidence = self._folder("reference")
        kernel = self._kernel(folder, {"WEFT_NB_EVIDENCE_LOG": str(evidence.path)})
        try:
            self._run_all(kernel)
        finally:
            kernel.close()
        self.reference = journal_results(folder)
        self.reference_events = evidence.events()
        if not self.reference_events:
            raise SystemExit(
                f"{self.notebook} ran no weft_nb activity: nothing to inject faults into"
            )

    def applicable_faults(self) -> list[str]:
        """The fault kinds the reference run gives a chance to hit."""
        kinds = {e["event"] for e in self.reference_events}
        faults = []
        if "kill" in self.faults:
            faults = ["activity", "commit", "between-steps", "interrupt"]
            if "checkpoint_saved" in kinds:
                faults.append("checkpoint")
            if "backoff" in kinds:
                faults.append("backoff")
        faults += [f for f in storage.STORAGE_FAULTS if f in self.faults]
        return faults

    def trial(self, number: int) -> Outcome:
        """One trial: a fault, then recovery, then the checks."""
        seed = f"{self.seed}-{number}"
        rng = random.Random(seed)
        fault = rng.choice(self.applicable_faults())
        outcome = Outcome(number, seed, fault)
        folder, evidence = self._folder(f"trial-{number:03d}")
        evidence_env = {"WEFT_NB_EVIDENCE_LOG": str(evidence.path)}
        env = evidence_env | fault_environment(fault, rng, self.reference_events, outcome)
        disturbance = Disturbance(fault, rng, outcome, self.reference_events)
        allowed: set[tuple[str, int]] = set()
        kernel = self._kernel(folder, env)
        first_pid = kernel.pid
        try:
            disturbance.run(kernel, self.cells, evidence)
            if fault == "enospc":
                outcome.fault_fired = bool(evidence.events("io_fault_fired", first_pid))
                outcome.cell_errors = storage.drain_errors(kernel.client)
                wrong = [name for name in outcome.cell_errors if name != "JournalIOError"]
                if wrong:
                    outcome.problems.append(f"a storage fault surfaced as {wrong}")
            if fault == "damage" and outcome.killed:
                allowed = disturbance.damage(folder)
            elif outcome.killed:
                check_journal_opens(folder, outcome)
            restart: float | None = None
            if outcome.killed:
                kernel.close()
                restart = time.time()
                kernel = self._kernel(folder, evidence_env)
                outcome.resumed = True
            elif fault in ("interrupt", "enospc"):  # enospc: space freed, Restart & Run All
                if fault == "enospc":
                    kernel.close()
                    kernel = self._kernel(folder, evidence_env)
                restart = time.time()
                outcome.resumed = True
            self._run_all(kernel)  # Restart & Run All (or Run All again after an interrupt)
            second_pid = kernel.pid
        finally:
            kernel.close()
        record = TrialRecord(folder, evidence, first_pid, second_pid, restart, allowed)
        check_trial(record, outcome, self.reference)
        return outcome


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """The figures of a harness run."""
    times = [o.resume_seconds for o in outcomes if o.resume_seconds is not None]
    return {
        "trials": len(outcomes),
        "kills": sum(o.killed for o in outcomes),
        "interrupts": sum(o.fault == "interrupt" for o in outcomes),
        "resumes": sum(o.resumed for o in outcomes),
        "lost_steps": sum(o.lost for o in outcomes),
        "duplicated_steps": sum(o.duplicated for o in outcomes),
        "resumed_from_checkpoint": sum(o.resumed_from_checkpoint for o in outcomes),
        "resume_seconds_median": statistics.median(times) if times else None,
        "resume_seconds_max": max(times) if times else None,
        "faults": {f: sum(o.fault == f for o in outcomes) for f in FAULTS + storage.STORAGE_FAULTS},
        "storage_faults_injected": [
            {
                "trial": o.trial,
                "fault": o.fault,
                "injected": o.injected,
                "fired": o.fault_fired,
                "errors": o.cell_errors,
            }
            for o in outcomes
            if o.fault in storage.STORAGE_FAULTS
        ],
        "journal_io_errors_seen": sum("JournalIOError" in o.cell_errors for o in outcomes),
        "damage_reported": sum(o.damage_reported for o in outcomes),
        "rerun_after_reported_damage": sum(o.rerun_after_reported_damage for o in outcomes),
        "failed_trials": [
            {"trial": o.trial, "seed": o.seed, "fault": o.fault, "problems": o.problems}
            for o in outcomes
            if o.problems
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m weft_nb.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("notebook", type=Path, nargs="?", help="the notebook (kernel executor)")
    parser.add_argument(
        "--executor",
        choices=("kernel", "dask"),
        default="kernel",
        help="kernel: kill the notebook's kernel (default); dask: kill the Dask workers of a "
        "ctx.submit sweep (weft_nb.chaos.dask_sweep)",
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-trial", type=int, help="replay one trial of this seed")
    parser.add_argument("--workdir", type=Path, help="keep trial folders here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--faults",
        default="kill",
        help="comma-separated fault families: kill (SIGKILL/SIGINT at every kind of point), "
        "enospc (disk full, short writes, I/O errors at our write sites), damage (the step "
        "log flipped, cut or deleted between the crash and the restart); default: kill",
    )
    dask_sweep.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.executor == "dask":
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="weft-dask-chaos-"))
        try:
            status = dask_sweep.main_dask(args, workdir)
        except MissingExtraError as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return status
    if args.notebook is None:
        parser.error("a notebook is needed (or --executor dask)")
    try:
        require_kernel_packages()
    except MissingExtraError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = set(faults) - {"kill", *storage.STORAGE_FAULTS}
    if unknown or not faults:
        parser.error(f"--faults: unknown {sorted(unknown)}; use kill, enospc, damage")
    if not args.notebook.exists():
        parser.error(f"no notebook at {args.notebook}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="weft-chaos-"))
    harness = Harness(args.notebook, workdir, args.seed, faults)
    print(f"reference run of {args.notebook} ...", flush=True)
    harness.run_reference()
    numbers = [args.only_trial] if args.only_trial is not None else range(args.trials)
    outcomes = []
    for number in numbers:
        outcome = harness.trial(number)
        outcomes.append(outcome)
        state = "FAIL" if outcome.problems else "ok"
        resume = None if outcome.resume_seconds is None else round(outcome.resume_seconds, 2)
        print(
            f"trial {number:3d} seed {outcome.seed:>8} {outcome.fault:<13} "
            f"killed={outcome.killed!s:<5} resume={resume} {outcome.injected} {state}",
            flush=True,
        )
    figures = summarise(outcomes)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    for failed in figures["failed_trials"]:
        print(
            f"INVARIANT BROKEN in trial {failed['trial']} (replay: --seed {args.seed} "
            f"--only-trial {failed['trial']}): {failed['problems']}",
            file=sys.stderr,
        )
    return 1 if figures["failed_trials"] else 0
