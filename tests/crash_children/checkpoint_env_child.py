"""Child process for tests/activity/test_checkpoint_environment.py: checkpoints, then dies.

Usage: ``python checkpoint_env_child.py JOURNAL MODULE_DIR``. ``MODULE_DIR`` holds the module
named by ``WEIGHTS_MODULE``, which only this process can import. The run ``env-1`` trains
``EPOCHS`` epochs, checkpointing an instance of that module's ``Weights`` after each; after
epoch ``DIE_AFTER`` the process exits at once (``os._exit``), as a kernel killed mid-training,
so the run stays unfinished with its checkpoints on disk. The test process imports this file for
the same definitions, and resumes the run where the module is missing.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import weft_nb

RUN_ID = "env-1"
EPOCHS = 4
DIE_AFTER = 2
DIED = 17  # the exit status after the checkpoint of epoch DIE_AFTER
WEIGHTS_MODULE = "weft_test_checkpoint_weights"
WEIGHTS_SOURCE = (
    "class Weights:\n    def __init__(self, epoch):\n        self.values = [float(epoch)] * 8\n"
)


@weft_nb.activity(retry={"max_attempts": 3})
def train(epochs: int, activity: weft_nb.ActivityContext) -> dict[str, Any]:
    """Resume from the newest checkpoint; checkpoint ``Weights`` after each epoch."""
    state = activity.last_checkpoint
    start = 0 if state is None else state["epoch"]
    weights = importlib.import_module(WEIGHTS_MODULE)  # only where it is installed
    for epoch in range(start + 1, epochs + 1):
        activity.checkpoint({"epoch": epoch, "weights": weights.Weights(epoch)})
        if os.environ.get("WEFT_TEST_DIE") and epoch == DIE_AFTER:
            os._exit(DIED)
    return {"resumed_from": start, "epochs": epochs}


@weft_nb.workflow
def training(ctx: weft_nb.WorkflowContext, epochs: int) -> dict[str, Any]:
    """One training step."""
    result: dict[str, Any] = ctx.run(train, epochs)
    return result


if __name__ == "__main__":
    journal, module_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, module_dir)
    os.environ["WEFT_TEST_DIE"] = "1"
    with weft_nb.Engine(journal) as engine:
        engine.run(training, EPOCHS, run_id=RUN_ID)
    sys.exit(1)  # never reached: the activity exits the process after epoch DIE_AFTER
