"""Fault injection for crash tests: SIGKILL this process at a named point.

Set ``WEFT_NB_KILL_AT="point"`` or ``"point:N"`` (the N-th time the point is reached) before the
process imports weft_nb. Points: ``checkpoint.tmp_written`` (checkpoint bytes fsynced, not
yet renamed), ``checkpoint.renamed`` (file in place, journal row not committed),
``checkpoint.object_written`` (a checkpoint's bytes under a temporary key of the checkpoint
storage, not yet published), ``checkpoint.published`` (its object published and checked, its
journal row not committed), ``journal.before_commit`` and ``journal.after_commit`` (around every
multi-statement journal transaction), ``step.before_record`` (an activity returned, its result not
yet journaled), ``steplog.appended`` (a completed step is fsynced in the step log, not yet in
DuckDB), ``runlog.started`` / ``runlog.finished`` (a run's start or outcome record is in the step
log, not yet in DuckDB: fsynced, except the start of an ``engine.run()``, which its first step's
sync covers), ``steplog.runs_staged`` (a batch's run starts are inserted, not
committed), and ``steplog.before_apply_commit`` / ``steplog.after_apply_commit`` (around the
commit that moves step-log records into DuckDB). When the variable is unset, `fault_point()` is
one global lookup.
"""

from __future__ import annotations

import os
import signal

_spec = os.environ.get("WEFT_NB_KILL_AT", "")
ENABLED = bool(_spec)
_point, _, _count = _spec.partition(":")
_remaining = int(_count or 1)


def fault_point(name: str) -> None:
    """SIGKILL the process if ``name`` is the configured point and its count is reached."""
    global _remaining
    if not ENABLED or name != _point:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
