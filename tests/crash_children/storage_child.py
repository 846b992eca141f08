"""Child process for tests/activity/test_checkpoint_storage.py: checkpoints to S3, then is killed.

Usage: ``python storage_child.py JOURNAL URL OPTIONS_JSON TEMPORARY_KEY`` (``1`` or ``0``).
Runs ``train`` (run ``RUN_ID``), which checkpoints epochs 1..EPOCHS to the checkpoint storage
at URL (a moto S3 server on loopback). The parent sets ``WEFT_NB_KILL_AT``:
``checkpoint.published:2`` (the second checkpoint's object is published and checked, its
journal row not yet written) or ``checkpoint.object_written:2`` (its bytes are written, under a
temporary key or, with ``TEMPORARY_KEY`` 0, under the final one, and not yet checked), so this
process is SIGKILLed between writing an object and journaling its reference. The test process
imports this file for the same definitions and resumes the run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import weft_nb  # reads WEFT_NB_KILL_AT, which the parent put in our environment

RUN_ID = "s3-crash"
EPOCHS = 3


@weft_nb.activity(retry={"max_attempts": 2, "initial_backoff": 0.01})
def train(epochs: int, activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Resume from the newest checkpoint; checkpoint after each epoch."""
    state = activity.last_checkpoint
    start = 0 if state is None else state["epoch"]
    for epoch in range(start + 1, epochs + 1):
        activity.checkpoint({"epoch": epoch, "weights": [float(epoch)] * 64})
    return {"resumed_from": start}


@weft_nb.workflow
def training(ctx: weft_nb.WorkflowContext, epochs: int) -> dict[str, Any]:
    """One training step."""
    result: dict[str, Any] = ctx.run(train, epochs)
    return result


if __name__ == "__main__":
    journal, url, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    storage = weft_nb.CheckpointStorage(url, options, temporary_key=sys.argv[4] == "1")
    engine = weft_nb.Engine(journal, checkpoint_storage=storage)
    engine.register(train, training)
    engine.run(training, EPOCHS, run_id=RUN_ID, timeout=120)
    sys.exit(3)  # not reached: the fault point kills this process first
