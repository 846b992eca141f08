"""weft_nb: durable workflows for Jupyter notebooks, journaled in DuckDB.

Activities (``@weft_nb.activity`` or ``%%weft_activity``) are units of work with retries, timeouts,
heartbeats and checkpoints. Workflows (``@weft_nb.workflow``) call them through ``ctx.run``. The
:class:`Engine` records every step in a DuckDB journal before the workflow moves on, so a crashed
kernel resumes where it stopped.
"""

from __future__ import annotations

from . import errors
from ._activity_context import ActivityContext, current_activity
from ._dask_executor import DaskExecutor
from ._definitions import ActivityDefinition, WorkflowDefinition, activity, workflow
from ._durable_activity import durable_activity
from ._engine import Engine
from ._executors import Executor, ThreadExecutor
from ._process_executor import ProcessExecutor
from ._reconciliation import VerificationContext
from ._retry import RetryPolicy, parse_duration
from ._run_definitions import ActivityRedefinedWarning
from ._run_handle import RecoveryReport, RunHandle, RunInfo, WeftEvent
from ._workflow_context import StepChangedWarning, WorkflowContext
from .errors import DevelopmentWarning

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext weft_nb``; imports the IPython layer only when a notebook asks for it."""
    from ._magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext weft_nb``: close the notebook's engine."""
    from ._magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ActivityContext",
    "ActivityDefinition",
    "ActivityRedefinedWarning",
    "DaskExecutor",
    "DevelopmentWarning",
    "Engine",
    "Executor",
    "ProcessExecutor",
    "RecoveryReport",
    "RetryPolicy",
    "RunHandle",
    "RunInfo",
    "StepChangedWarning",
    "ThreadExecutor",
    "VerificationContext",
    "WeftEvent",
    "WorkflowContext",
    "WorkflowDefinition",
    "__version__",
    "activity",
    "current_activity",
    "durable_activity",
    "errors",
    "parse_duration",
    "workflow",
]
