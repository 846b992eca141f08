"""Storage faults for the chaos harness (``python -m weft_nb.chaos --faults enospc,damage``).

``enospc``: the kernel runs with ``WEFT_NB_IO_FAULT`` armed at a random write site (the step log's
append or sync, a checkpoint file, a DuckDB commit) and kind (disk full, a short write, an I/O
error) on a random visit. The cell running the workflow must fail with ``JournalIOError`` (or
not at all, when the fault hit a retried checkpoint); then the "user frees space" and does
Restart & Run All.

``damage``: the kernel is SIGKILLed right after a completed step reached the step log only
(``steplog.appended``); before the restart the step log is damaged as a disk or a person might:
one byte flipped, the file cut inside a record, or the file deleted. The records the damage
destroyed are noted, so the harness can tell an allowed re-run (a destroyed record, reported
with ``JournalDamageWarning``) from a broken invariant.
"""

from __future__ import annotations

import dataclasses
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weft_nb.errors import JournalDamageWarning
from weft_nb.journal.run_log import RUN_START_FIELDS
from weft_nb.journal.step_log import LOG_MAGIC, RECORD_HEADER, STEP_TYPES, scan

STORAGE_FAULTS = ("enospc", "damage")
DAMAGE_KINDS = ("flip", "truncate", "delete")


def step_log_appends(reference: list[dict[str, Any]]) -> int:
    """How many completed steps of the reference took the step log (those without heartbeats)."""
    beating = {(e["run_id"], e["position"]) for e in reference if e["event"] == "first_heartbeat"}
    return sum(
        e["event"] == "step_completed" and (e["run_id"], e["position"]) not in beating
        for e in reference
    )


def io_fault_spec(rng: random.Random, reference: list[dict[str, Any]]) -> str:
    """A ``WEFT_NB_IO_FAULT`` value for one trial, drawn from the sites the reference reached."""
    steps = sum(e["event"] == "step_completed" for e in reference)
    appends = step_log_appends(reference)
    saves = sum(e["event"] == "checkpoint_saved" for e in reference)
    sites = [("journal.commit", steps)]  # each step has a commit or more: a visit that comes
    if appends:
        sites += [("steplog.append", appends), ("steplog.sync", appends)]
    if saves:
        sites.append(("checkpoint.write", saves))
    site, visits = rng.choice(sites)
    kinds = ["enospc", "eio"] + (["short"] if site == "steplog.append" else [])
    return f"{site}:{rng.choice(kinds)}:{rng.randint(1, max(1, visits))}"


@dataclasses.dataclass
class Damage:
    """What one ``damage`` trial did to the step log."""

    kind: str
    destroyed: set[tuple[str, int]]  # (run_id, position) of records the damage destroyed
    changed: bool  # False when the log was already empty: nothing to damage


def damage_step_log(folder: Path, rng: random.Random) -> Damage:
    """Damage the step logs of ``folder``'s journals (they are closed: the kernel is dead)."""
    kind = rng.choice(DAMAGE_KINDS)
    destroyed: set[tuple[str, int]] = set()
    changed = False
    for log in sorted(folder.glob(".weft/*.steplog")):
        data = log.read_bytes()
        before = _steps(data)
        if kind == "delete":
            log.unlink()
            destroyed |= before
            changed = True
            continue
        if not before:
            continue
        if kind == "flip":
            damaged = bytearray(data)
            damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            after = bytes(damaged)
        else:  # cut inside a record, never on a record boundary (that would be undetectable)
            ends = {len(data)}
            offset = len(LOG_MAGIC)
            for _ in scan(data).records:
                offset += RECORD_HEADER.size + RECORD_HEADER.unpack_from(data, offset)[0]
                ends.add(offset)
            cut = rng.choice([n for n in range(len(LOG_MAGIC), len(data)) if n not in ends])
            after = data[:cut]
        log.write_bytes(after)
        os.sync()
        destroyed |= _lost(data, after)
        changed = True
    return Damage(kind, destroyed, changed)


def _steps(data: bytes) -> set[tuple[str, int]]:
    """(run_id, position) of the step records a log's bytes hold intact."""
    return {(row[0], row[1]) for _lsn, row in scan(data).records if len(row) == len(STEP_TYPES)}


def _lost(before: bytes, after: bytes) -> set[tuple[str, int]]:
    """The steps damage destroyed: their records, and every step of a run whose start it destroyed.

    Such a run cannot resume (recovery names it); started again, all its steps run again.
    """

    def starts(data: bytes) -> set[str]:
        return {row[0] for _lsn, row in scan(data).records if len(row) == RUN_START_FIELDS}

    runs = starts(before) - starts(after)
    steps = _steps(before)
    return (steps - _steps(after)) | {step for step in steps if step[0] in runs}


def reported_damage(open_journals: Callable[[], Any]) -> tuple[Any, bool]:
    """Call ``open_journals`` (the first open after the crash); did it warn about damage?"""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", JournalDamageWarning)
        result = open_journals()
    return result, any(issubclass(w.category, JournalDamageWarning) for w in seen)


def drain_errors(client: Any) -> list[str]:
    """The exception names of the ``error`` messages a kernel published so far."""
    names: list[str] = []
    while True:
        try:
            message = client.get_iopub_msg(timeout=0)
        except Exception:
            return names
        if message["msg_type"] == "error":
            names.append(message["content"]["ename"])
