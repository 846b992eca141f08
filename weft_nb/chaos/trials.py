"""One chaos trial's parts: where to inject a fault, how to disturb a kernel, what to check after.

`weft_nb.chaos.harness` runs the campaign (the reference run, then trial after trial); this
module holds what one trial does and sees. Evidence comes from outside the kernel: the engine's
execution log (``WEFT_NB_EVIDENCE_LOG``, fsynced line by line) and the journal itself, opened
read-only after every kill.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weft_nb.base.payloads import decode
from weft_nb.chaos import storage
from weft_nb.chaos.kernel import NotebookKernel
from weft_nb.journal.duckdb_journal import DuckDBJournal

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
# The evidence event a kill or an interrupt waits for, by fault.
_TRIGGER_EVENTS = {
    "activity": "attempt_start",
    "between-steps": "step_completed",
    "backoff": "backoff",
    "interrupt": "attempt_start",
}
# Faults armed by an environment variable: the kernel runs the notebook and dies (or fails) alone.
_ARMED_FAULTS = ("checkpoint", "commit", "enospc", "damage")

Step = tuple[str, int]  # (run_id, position)


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


def journal_results(folder: Path) -> dict[str, Any]:
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


def completed_steps(folder: Path) -> set[Step]:
    """The completed, not superseded steps of every journal in ``folder``."""
    steps: set[Step] = set()
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


def wait_for(predicate: Callable[[], bool], kernel: NotebookKernel, what: str) -> bool:
    """Poll until ``predicate()`` or the kernel dies or idles past the deadline; True if met."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if predicate():
            return True
        if not kernel.alive():
            return False
        time.sleep(0.005)
    raise TimeoutError(f"waited {DEADLINE}s for {what}")


def cells_finished(kernel: NotebookKernel, last_msg_id: str) -> bool:
    """True once the last queued cell replied (drains replies without blocking)."""
    while True:
        try:
            reply = kernel.client.get_shell_msg(timeout=0)
        except Exception:
            return False
        if reply["parent_header"].get("msg_id") == last_msg_id:
            return True


def fault_environment(
    fault: str, rng: random.Random, reference_events: list[dict[str, Any]], outcome: Outcome
) -> dict[str, str]:
    """The environment that arms ``fault`` in the kernel (a kill point or an I/O fault)."""
    env: dict[str, str] = {}
    ref = reference_events
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
    return env


def typical_step_seconds(reference_events: list[dict[str, Any]]) -> float:
    """About how long one step of the reference run took."""
    starts = [e["t"] for e in reference_events if e["event"] == "attempt_start"]
    ends = [e["t"] for e in reference_events if e["event"] == "step_completed"]
    if not starts or not ends:
        return 0.1
    return float(max(0.01, (max(ends) - min(starts)) / max(1, len(starts))))


@dataclasses.dataclass
class Disturbance:
    """One trial's fault, injected into a kernel that runs all the notebook's cells."""

    fault: str
    rng: random.Random
    outcome: Outcome
    reference_events: list[dict[str, Any]]

    def run(self, kernel: NotebookKernel, cells: list[str], evidence: Evidence) -> None:
        """Run all cells and inject the fault; sets ``outcome.killed`` when the kernel died."""
        last = ""
        for source in cells:
            last = kernel.start(source)  # queued; the kernel runs them in order
        ref, rng, fault = self.reference_events, self.rng, self.fault
        pid = kernel.pid
        if fault in _ARMED_FAULTS:
            done = wait_for(lambda: cells_finished(kernel, last), kernel, "the notebook")
            self.outcome.killed = not done
            return
        event = _TRIGGER_EVENTS[fault]
        if (
            fault == "activity"
            and rng.random() < 0.5
            and any(e["event"] == "checkpoint_saved" for e in ref)
        ):
            event = "checkpoint_saved"  # inside a long step, after its k-th durable checkpoint
        available = sum(e["event"] == event for e in ref)
        target = rng.randint(1, max(1, available))
        reached = wait_for(
            lambda: len(evidence.events(event, pid)) >= target or cells_finished(kernel, last),
            kernel,
            f"{event} #{target}",
        )
        if not reached or cells_finished(kernel, last):
            return
        if fault in ("activity", "interrupt"):
            time.sleep(rng.uniform(0.0, typical_step_seconds(ref)))
        if fault == "interrupt":
            kernel.kill(signal.SIGINT)
            wait_for(lambda: cells_finished(kernel, last), kernel, "the interrupted cells")
            return
        kernel.kill(signal.SIGKILL)
        self.outcome.killed = True

    def damage(self, folder: Path) -> set[Step]:
        """Damage the dead kernel's step log; the steps allowed to run again (see docs/chaos.md)."""
        outcome = self.outcome
        damage = storage.damage_step_log(folder, self.rng)
        outcome.injected = damage.kind if damage.changed else f"{damage.kind} (empty log)"
        outcome.fault_fired = damage.changed
        _, outcome.damage_reported = storage.reported_damage(
            lambda: check_journal_opens(folder, outcome)
        )
        if damage.destroyed and not outcome.damage_reported:
            outcome.problems.append(f"damage destroyed {damage.destroyed}, unreported")
        return damage.destroyed if outcome.damage_reported else set()


def check_journal_opens(folder: Path, outcome: Outcome) -> None:
    """Record a problem when the journals of ``folder`` do not open and read cleanly."""
    try:
        journal_results(folder)
    except Exception as exc:
        outcome.problems.append(f"journal did not open cleanly after the kill: {exc!r}")


@dataclasses.dataclass
class TrialRecord:
    """What a trial's checks read: the folder, its evidence, the two kernels and the restart."""

    folder: Path
    evidence: Evidence
    first_pid: int
    second_pid: int
    restart: float | None
    allowed: set[Step] = dataclasses.field(default_factory=set)  # rerun after reported damage


def check_trial(record: TrialRecord, outcome: Outcome, reference: dict[str, Any]) -> None:
    """Check the invariants after recovery; every broken one goes to ``outcome.problems``."""
    events = record.evidence.events()
    pids = (record.first_pid, record.second_pid)
    cut = record.restart if record.restart is not None else float("inf")
    before = [e for e in events if e["pid"] == record.first_pid and e["t"] < cut]
    after = [e for e in events if e["t"] >= cut and e["pid"] in pids]
    done_before = {(e["run_id"], e["position"]) for e in before if e["event"] == "step_completed"}
    for e in after:
        if e["event"] == "attempt_start" and (e["run_id"], e["position"]) in record.allowed:
            outcome.rerun_after_reported_damage += 1  # its record was destroyed, and said so
        elif e["event"] == "attempt_start" and (e["run_id"], e["position"]) in done_before:
            outcome.duplicated += 1
            outcome.problems.append(f"completed step {e['position']} of {e['run_id']} ran again")
    final = completed_steps(record.folder)
    for step in sorted(done_before - final):
        outcome.lost += 1
        outcome.problems.append(f"completed step {step[1]} of {step[0]} was lost")
    _check_checkpoints(before, after, done_before, outcome)
    if record.restart is not None:
        restart = record.restart
        beats = [e["at"] for e in after if e["event"] == "first_heartbeat" and e["at"] >= restart]
        if beats:
            outcome.resume_seconds = min(beats) - restart
    results = journal_results(record.folder)
    if results != reference:
        outcome.problems.append(f"final results differ: {results} != {reference}")


def _check_checkpoints(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    done_before: set[Step],
    outcome: Outcome,
) -> None:
    """An interrupted step resumes from its newest durable checkpoint, never from an older one."""
    saved: dict[Step, int] = {}
    for e in before:
        if e["event"] == "checkpoint_saved":
            saved[(e["run_id"], e["position"])] = e["seq"]
    for key, seq in saved.items():
        if key in done_before:
            continue
        restores = [
            e["seq"]
            for e in after
            if e["event"] == "restore" and (e["run_id"], e["position"]) == key
        ]
        if not restores:
            outcome.problems.append(
                f"step {key[1]} of {key[0]} restarted from zero although checkpoint {seq} was "
                "durable"
            )
        elif restores[0] < seq:
            outcome.problems.append(
                f"step {key[1]} resumed from checkpoint {restores[0]}, not the newest durable one "
                f"({seq})"
            )
        else:
            outcome.resumed_from_checkpoint += 1
