"""weft_nb: durable workflows for Jupyter notebooks, journaled in DuckDB.

Activities (``@weft_nb.activity`` or ``%%weft_activity``) are units of work with retries, timeouts,
heartbeats and checkpoints. Workflows (``@weft_nb.workflow``) call them through ``ctx.run``. The
[`Engine`][weft_nb.Engine] records every step in a DuckDB journal before the workflow moves on, so a
crashed kernel resumes where it stopped.

The public API is what this module exports, plus `weft_nb.errors`, `weft_nb.testing` and
``python -m weft_nb.chaos``. The subpackages (``base``, ``journal``, ``activity``, ``executors``,
``engine``, ``endpoint``, ``notebook``, ``cli``, ``chaos``) are the layers of the implementation
(docs/architecture.md): each subpackage is the private boundary, so the modules inside it carry no
leading underscore, and their names may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from weft_nb.base.posix_only import require_posix

require_posix()  # first: on Windows, one clear error instead of "No module named 'fcntl'"

# E402 (imports after code) is ignored for this file in pyproject.toml: the check above must run
# before any of these imports reaches the journal.
from weft_nb import errors
from weft_nb.activity.context import ActivityContext, current_activity
from weft_nb.activity.storage import CheckpointStorage
from weft_nb.base.circuit_breaker import CircuitBreaker
from weft_nb.base.definitions import ActivityDefinition, WorkflowDefinition, activity, workflow
from weft_nb.base.release import __version__
from weft_nb.base.retry import RetryPolicy, parse_duration
from weft_nb.engine.async_context import AsyncWorkflowContext
from weft_nb.engine.durable_activity import durable_activity
from weft_nb.engine.engine import Engine
from weft_nb.engine.events import WeftEvent
from weft_nb.engine.interceptors import (
    InterceptedAttempt,
    InterceptedRun,
    InterceptedStep,
    Interceptor,
)
from weft_nb.engine.parallel import StepFuture
from weft_nb.engine.reconciliation import VerificationContext
from weft_nb.engine.runs import RecoveryReport, RunHandle, RunInfo
from weft_nb.engine.tracing import OpenTelemetryInterceptor
from weft_nb.engine.workflow_context import WorkflowContext
from weft_nb.errors import ActivityRedefinedWarning, DevelopmentWarning, StepChangedWarning
from weft_nb.executors.base import Executor, ThreadExecutor

if TYPE_CHECKING:
    from weft_nb.executors.dask import DaskExecutor
    from weft_nb.executors.process import ProcessExecutor

# The executors a notebook may never use are imported on first access (`import weft_nb` and
# `%load_ext weft_nb` stay quick): `weft_nb.DaskExecutor`, `from weft_nb import ProcessExecutor`.
_LAZY = {
    "DaskExecutor": "weft_nb.executors.dask",
    "ProcessExecutor": "weft_nb.executors.process",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weft_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext weft_nb``; imports the IPython layer only when a notebook asks for it."""
    from weft_nb.notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext weft_nb``: close the notebook's engine."""
    from weft_nb.notebook.magics import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "ActivityContext",
    "ActivityDefinition",
    "ActivityRedefinedWarning",
    "AsyncWorkflowContext",
    "CheckpointStorage",
    "CircuitBreaker",
    "DaskExecutor",
    "DevelopmentWarning",
    "Engine",
    "Executor",
    "InterceptedAttempt",
    "InterceptedRun",
    "InterceptedStep",
    "Interceptor",
    "OpenTelemetryInterceptor",
    "ProcessExecutor",
    "RecoveryReport",
    "RetryPolicy",
    "RunHandle",
    "RunInfo",
    "StepChangedWarning",
    "StepFuture",
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
