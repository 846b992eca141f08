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
import dataclasses
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _chaos_storage as storage
from ._duckdb_journal import DuckDBJournal
from ._notebook_runner import NotebookKernel, code_cells
from ._payloads import decode

FAULTS = ("activity", "checkpoint", "commit", "between-steps", "backoff", "interrupt")
# Where a "commit" fault kills: around DuckDB commits, and on the step log's path (a step fsynced
# in the log only; around the commit that moves log rows into DuckDB).
COMMIT_POINTS = (
    "journal.before_commit",
    "journal.after_commit",
    "steplog.appended",
    "steplog.before_apply_commit",
    "steplog.after_apply_commit",
)
DEADLINE = 300.0


@dataclasses.dataclass
class Evidence:
    """The execution log of one folder's kernels."""

    path: Path

    def events(self, kind: str | None = None, pid: int | None = None) -> list[dict[str, Any]]:
        """Logged events, oldest first, optionally of one kind and process."""
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [
            r
            for r in rows
            if (kind is None or r["event"] == kind) and (pid is None or r["pid"] == pid)
        ]


@dataclasses.dataclass
class Outcome:
    """What one trial saw."""

    trial: int
    seed: str
    fault: str
    killed: bool = False
    resumed: bool = False
    duplicated: int = 0
    lost: int = 0
    resumed_from_checkpoint: int = 0
    resume_seconds: float | None = None
    injected: str = ""  # a storage fault: the WEFT_NB_IO_FAULT spec, or the damage done
    fault_fired: bool = False  # a storage fault was reached (an armed visit may never come)
    cell_errors: list[str] = dataclasses.field(default_factory=list)
    damage_reported: bool = False
    rerun_after_reported_damage: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


def _journal_results(folder: Path) -> dict[str, Any]:
    """Each run's workflow, input and outcome, keyed so runs of two folders can be compared."""
    results = {}
    for journal_path in sorted(folder.glob(".weft/*.duckdb")):
        journal = DuckDBJournal(journal_path, read_only=True)
        try:
            for run in journal.list_runs():
                key = f"{journal_path.name}:{run.workflow}:{decode(run.input_codec, run.input)!r}"
                value = None
                if run.result_codec is not None and run.result is not None:
                    value = decode(run.result_codec, run.result)
                results[key] = (run.status, repr(value))
        finally:
            journal.close()
    return results


def _completed_steps(folder: Path) -> set[tuple[str, int]]:
    steps: set[tuple[str, int]] = set()
    for journal_path in folder.glob(".weft/*.duckdb"):
        journal = DuckDBJournal(journal_path, read_only=True)
        try:
            rows = journal.query(
                "SELECT run_id, position FROM steps WHERE status = 'completed' AND NOT superseded"
            )
            steps |= {(r[0], r[1]) for r in rows}
        finally:
            journal.close()
    return steps


def _wait_for(predicate: Any, kernel: NotebookKernel, what: str) -> bool:
    """Poll until ``predicate()`` or the kernel dies or idles past the deadline; True if met."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if predicate():
            return True
        if not kernel.alive():
            return False
        time.sleep(0.005)
    raise TimeoutError(f"waited {DEADLINE}s for {what}")


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

    @staticmethod
    def _kernel(folder: Path, env: dict[str, str]) -> NotebookKernel:
        """A kernel for ``folder``; its stderr goes to ``folder/kernel-stderr.log``."""
        with open(folder / "kernel-stderr.log", "ab") as log:  # the child keeps its own copy
            return NotebookKernel(folder, env, stderr=log)

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
        self.reference = _journal_results(folder)
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
        env = {"WEFT_NB_EVIDENCE_LOG": str(evidence.path)}
        ref = self.reference_events
        if fault == "checkpoint":
            saves = sum(e["event"] == "checkpoint_saved" for e in ref)
            point = rng.choice(["checkpoint.tmp_written", "checkpoint.renamed"])
            env["WEFT_NB_KILL_AT"] = f"{point}:{rng.randint(1, max(1, saves))}"
        elif fault == "commit":
            steps = sum(e["event"] == "step_completed" for e in ref)
            point = rng.choice(COMMIT_POINTS)
            env["WEFT_NB_KILL_AT"] = f"{point}:{rng.randint(1, max(2, steps))}"
        elif fault == "enospc":
            env["WEFT_NB_IO_FAULT"] = outcome.injected = storage.io_fault_spec(rng, ref)
        elif fault == "damage":  # a step in the step log only, then the log damaged
            appends = storage.step_log_appends(ref)
            env["WEFT_NB_KILL_AT"] = f"steplog.appended:{rng.randint(1, max(1, appends))}"
        allowed: set[tuple[str, int]] = set()
        kernel = self._kernel(folder, env)
        first_pid = kernel.pid
        try:
            self._disturb(kernel, evidence, fault, rng, outcome)
            if fault == "enospc":
                outcome.fault_fired = bool(evidence.events("io_fault_fired", first_pid))
                outcome.cell_errors = storage.drain_errors(kernel.client)
                wrong = [name for name in outcome.cell_errors if name != "JournalIOError"]
                if wrong:
                    outcome.problems.append(f"a storage fault surfaced as {wrong}")
            if fault == "damage" and outcome.killed:
                allowed = self._damage(folder, rng, outcome)
            elif outcome.killed:
                self._check_journal_opens(folder, outcome)
            if outcome.killed:
                kernel.close()
                restart = time.time()
                kernel = self._kernel(folder, {"WEFT_NB_EVIDENCE_LOG": str(evidence.path)})
                outcome.resumed = True
            elif fault in ("interrupt", "enospc"):  # enospc: space freed, Restart & Run All
                if fault == "enospc":
                    kernel.close()
                    kernel = self._kernel(folder, {"WEFT_NB_EVIDENCE_LOG": str(evidence.path)})
                restart = time.time()
                outcome.resumed = True
            else:
                restart = None
            self._run_all(kernel)  # Restart & Run All (or Run All again after an interrupt)
            second_pid = kernel.pid
        finally:
            kernel.close()
        self._check(folder, evidence, first_pid, second_pid, restart, outcome, allowed)
        return outcome

    def _disturb(self, kernel: NotebookKernel, evidence: Evidence, fault: str,
                 rng: random.Random, outcome: Outcome) -> None:  # fmt: skip
        """Run all cells and inject the fault; sets ``outcome.killed`` when the kernel died."""
        last = ""
        for source in self.cells:
            last = kernel.start(source)  # queued; the kernel runs them in order
        ref = self.reference_events
        pid = kernel.pid
        if fault in ("checkpoint", "commit", "enospc", "damage"):
            done = _wait_for(lambda: self._finished(kernel, last), kernel, "the notebook")
            outcome.killed = not done
            return
        event = {"activity": "attempt_start", "between-steps": "step_completed",
                 "backoff": "backoff", "interrupt": "attempt_start"}[fault]  # fmt: skip
        if (
            fault == "activity"
            and rng.random() < 0.5
            and any(e["event"] == "checkpoint_saved" for e in ref)
        ):
            event = "checkpoint_saved"  # inside a long step, after its k-th durable checkpoint
        available = sum(e["event"] == event for e in ref)
        target = rng.randint(1, max(1, available))
        reached = _wait_for(
            lambda: len(evidence.events(event, pid)) >= target or self._finished(kernel, last),
            kernel,
            f"{event} #{target}",
        )
        if not reached or self._finished(kernel, last):
            return
        if fault in ("activity", "interrupt"):
            time.sleep(rng.uniform(0.0, self._typical_step_seconds()))
        if fault == "interrupt":
            kernel.kill(signal.SIGINT)
            _wait_for(lambda: self._finished(kernel, last), kernel, "the interrupted cells")
            return
        kernel.kill(signal.SIGKILL)
        outcome.killed = True

    def _damage(self, folder: Path, rng: random.Random, outcome: Outcome) -> set[tuple[str, int]]:
        """Damage the dead kernel's step log; the steps allowed to run again (see docs/chaos.md)."""
        damage = storage.damage_step_log(folder, rng)
        outcome.injected = damage.kind if damage.changed else f"{damage.kind} (empty log)"
        outcome.fault_fired = damage.changed
        _, outcome.damage_reported = storage.reported_damage(
            lambda: self._check_journal_opens(folder, outcome)
        )
        if damage.destroyed and not outcome.damage_reported:
            outcome.problems.append(f"damage destroyed {damage.destroyed}, unreported")
        return damage.destroyed if outcome.damage_reported else set()

    @staticmethod
    def _finished(kernel: NotebookKernel, last_msg_id: str) -> bool:
        """True once the last queued cell replied (drains replies without blocking)."""
        while True:
            try:
                reply = kernel.client.get_shell_msg(timeout=0)
            except Exception:
                return False
            if reply["parent_header"].get("msg_id") == last_msg_id:
                return True

    def _typical_step_seconds(self) -> float:
        starts = [e["t"] for e in self.reference_events if e["event"] == "attempt_start"]
        ends = [e["t"] for e in self.reference_events if e["event"] == "step_completed"]
        if not starts or not ends:
            return 0.1
        return float(max(0.01, (max(ends) - min(starts)) / max(1, len(starts))))

    @staticmethod
    def _check_journal_opens(folder: Path, outcome: Outcome) -> None:
        try:
            _journal_results(folder)
        except Exception as exc:
            outcome.problems.append(f"journal did not open cleanly after the kill: {exc!r}")

    def _check(self, folder: Path, evidence: Evidence, first_pid: int, second_pid: int,
               restart: float | None, outcome: Outcome,
               allowed: set[tuple[str, int]] | None = None) -> None:  # fmt: skip
        events = evidence.events()
        cut = restart if restart is not None else float("inf")
        before = [e for e in events if e["pid"] == first_pid and e["t"] < cut]
        after = [e for e in events if e["t"] >= cut and e["pid"] in (first_pid, second_pid)]
        done_before = {
            (e["run_id"], e["position"]) for e in before if e["event"] == "step_completed"
        }
        for e in after:
            if e["event"] == "attempt_start" and (e["run_id"], e["position"]) in (allowed or ()):
                outcome.rerun_after_reported_damage += 1  # its record was destroyed, and said so
            elif e["event"] == "attempt_start" and (e["run_id"], e["position"]) in done_before:
                outcome.duplicated += 1
                outcome.problems.append(
                    f"completed step {e['position']} of {e['run_id']} ran again"
                )
        final = _completed_steps(folder)
        for step in sorted(done_before - final):
            outcome.lost += 1
            outcome.problems.append(f"completed step {step[1]} of {step[0]} was lost")
        saved: dict[tuple[str, int], int] = {}
        for e in before:
            if e["event"] == "checkpoint_saved":
                saved[(e["run_id"], e["position"])] = e["seq"]
        for key, seq in saved.items():
            if key in done_before:
                continue
            restores = [e["seq"] for e in after if e["event"] == "restore"
                        and (e["run_id"], e["position"]) == key]  # fmt: skip
            if not restores:
                outcome.problems.append(f"step {key[1]} of {key[0]} restarted from zero "
                                        f"although checkpoint {seq} was durable")  # fmt: skip
            elif restores[0] < seq:
                outcome.problems.append(f"step {key[1]} resumed from checkpoint {restores[0]}, "
                                        f"not the newest durable one ({seq})")  # fmt: skip
            else:
                outcome.resumed_from_checkpoint += 1
        if restart is not None:
            beats = [
                e["at"] for e in after if e["event"] == "first_heartbeat" and e["at"] >= restart
            ]
            if beats:
                outcome.resume_seconds = min(beats) - restart
        results = _journal_results(folder)
        if results != self.reference:
            outcome.problems.append(f"final results differ: {results} != {self.reference}")


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
    parser.add_argument("notebook", type=Path)
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
