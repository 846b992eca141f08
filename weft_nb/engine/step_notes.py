"""What a person reading a run's steps is told about its timers, sleeps and child workflows.

A ``<timer>`` or ``<sleep>`` step shows its journaled deadline (and, while pending, how long is
left); a ``<child>`` step names the child's run, whose id the step keeps (in its
``idempotency_key``, which a marker needs anyway). The run panel, ``%weft show`` and the REST
endpoint show these notes under the step, and ``weft-nb show`` (from rows: `marker_note`).
"""

from __future__ import annotations

import datetime
import json

from weft_nb.engine.child_workflows import CHILD
from weft_nb.engine.recorded_calls import SLEEP
from weft_nb.engine.timers import TIMER
from weft_nb.journal.protocol import STEP_COMPLETED, StepRecord


def step_note(step: StepRecord, now: float) -> str | None:
    """The note for a journaled step, or None when it has nothing to add."""
    return marker_note(step.activity, step.status, step.result, step.idempotency_key, now)


def marker_note(
    activity: str,
    status: str,
    result: str | bytes | None,
    idempotency_key: str | None,
    now: float,
) -> str | None:
    """`step_note` from a step's columns, for readers holding rows (``weft-nb show``)."""
    if activity in (TIMER, SLEEP) and result is not None:
        try:
            deadline = float(json.loads(result))
        except (ValueError, TypeError):
            return None
        at = datetime.datetime.fromtimestamp(deadline).strftime("%Y-%m-%d %H:%M:%S")
        if status == STEP_COMPLETED:
            return f"deadline {at}: fired"
        if deadline <= now:  # a timer fires when the workflow waits on it: maybe never
            return f"deadline {at}: passed, not fired (fires when the workflow waits on it)"
        return f"deadline {at} (in {deadline - now:.0f}s)"
    if activity == CHILD and idempotency_key:
        return f"child workflow run {idempotency_key}"
    return None
