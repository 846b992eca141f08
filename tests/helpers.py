"""Helpers shared by the tests."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import weft_nb
from weft_nb.journal.duckdb_journal import DuckDBJournal

if TYPE_CHECKING:  # the magics are imported only by the tests that use them
    from IPython.core.interactiveshell import InteractiveShell

    from weft_nb.notebook.magics import WeftMagics

T = TypeVar("T")


CHECKPOINT_CHILD = Path(__file__).resolve().parent / "crash_children" / "checkpoint_env_child.py"
"""The child script that writes checkpoints of a class only its own process can import."""


def load_checkpoint_child() -> types.ModuleType:
    """The checkpoint child script as a module: the same activity and workflow definitions."""
    spec = importlib.util.spec_from_file_location("checkpoint_env_child", CHECKPOINT_CHILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail at the deadline.

    For threads and processes under test that signal nothing else.
    """
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        pause.wait(0.01)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().split()[2] != "Z"


def run_status(journal: Path, run_id: str) -> str:
    """The status of ``run_id`` in the journal file, read through a read-only connection."""
    reader = DuckDBJournal(journal, read_only=True)
    try:
        record = reader.get_run(run_id)
        assert record is not None
        return record.status
    finally:
        reader.close()


def weft_magics(shell: InteractiveShell) -> WeftMagics:
    """The shell's one ``WeftMagics`` (``%load_ext weft_nb`` registers it once)."""
    from weft_nb.notebook.magics import WeftMagics

    found = [m for m in shell.magics_manager.registry.values() if isinstance(m, WeftMagics)]
    assert len(found) == 1
    return found[0]


def parked_run(
    engine: weft_nb.Engine, run_id: str | None = None, **call_options: Any
) -> tuple[weft_nb.RunHandle, list[str]]:
    """Start a run whose one activity hands out its task token and calls ``complete_async``.

    Returns once the step is parked on its token (not only once the token is out: a restart
    while the attempt still runs counts it as crashed): the run's handle and the list holding
    that token. ``call_options`` go to the workflow's ``ctx.run`` (e.g. ``idempotency_key``).
    """
    tokens: list[str] = []
    parked = threading.Event()
    engine.add_listener(lambda e: parked.set() if e.kind == "async_pending" else None)

    @weft_nb.activity
    def ask(_: object, activity: weft_nb.ActivityContext) -> None:
        tokens.append(activity.task_token)
        activity.complete_async()

    @weft_nb.workflow
    def review(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(ask, **call_options)

    handle = engine.start(review, run_id=run_id)
    wait_until(parked.is_set, what="the activity parked on its task token")
    return handle, tokens


def cancellable_run(
    engine: weft_nb.Engine, run_id: str, timeout: float = 30.0
) -> weft_nb.RunHandle:
    """Start a run whose one activity waits until it is cancelled (interrupt, cancel, shutdown).

    Returns the run's handle once the activity runs.
    """
    started = threading.Event()

    @weft_nb.activity
    def wait_forever(_: object, activity: weft_nb.ActivityContext) -> None:
        started.set()
        activity.cancelled.wait()
        activity.raise_if_cancelled()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.run(wait_forever)

    handle = engine.start(wf, run_id=run_id)
    assert started.wait(timeout), "the activity did not start"
    return handle


@weft_nb.activity
def checkpoint_epochs(epochs: int, activity: weft_nb.ActivityContext) -> int:
    """Checkpoint ``{"epoch": e}`` for each epoch up to ``epochs`` after the last checkpoint."""
    state = activity.last_checkpoint or {"epoch": 0}
    for epoch in range(state["epoch"] + 1, epochs + 1):
        activity.checkpoint({"epoch": epoch})
    return epochs


@weft_nb.workflow
def training(ctx: weft_nb.WorkflowContext, epochs: int) -> int:
    """One step, :func:`checkpoint_epochs`: a run that leaves checkpoint files behind."""
    return ctx.run(checkpoint_epochs, epochs)
