"""ProcessExecutor: the engine's semantics with attempts in real worker processes.

Worker crashes are real SIGKILLs; the hard timeout kills a real runaway process. Each test gets
its own journal and executor (worker processes start on demand and are killed at the end).
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from executor_cases import CASES, engine_for
from executor_workflows import lines, runaway_then_square
from helpers import process_alive, wait_until
from IPython.core.interactiveshell import InteractiveShell

import weft_nb
from weft_nb.activity.context import ActivityContext, AttemptIdentity
from weft_nb.base.clock import RealClock
from weft_nb.base.definitions import definition_of
from weft_nb.errors import ActivityNotShippableError, PayloadError
from weft_nb.executors.shipping import ship


@pytest.fixture
def executor() -> Iterator[weft_nb.ProcessExecutor]:
    pool = weft_nb.ProcessExecutor(max_workers=2)
    yield pool
    pool.close()


@pytest.fixture
def engine(tmp_path: Path, executor: weft_nb.ProcessExecutor) -> Iterator[weft_nb.Engine]:
    with engine_for(tmp_path / "journal.duckdb", executor) as eng:
        yield eng


@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_semantics_on_worker_processes(
    case: str, engine: weft_nb.Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "evidence"
    folder.mkdir()
    CASES[case](engine, folder)


def test_a_hard_timeout_kills_the_runaway_worker_and_the_next_step_runs(
    engine: weft_nb.Engine, executor: weft_nb.ProcessExecutor, tmp_path: Path
) -> None:
    result = engine.run(runaway_then_square, {"dir": str(tmp_path)}, run_id="h", timeout=120)
    assert result == {"error": "ActivityPerAttemptTimeoutError", "next": 49}
    runaway_pid = int(lines(tmp_path, "runaway")[0].split()[0])
    assert runaway_pid not in executor.worker_pids()
    wait_until(lambda: not process_alive(runaway_pid))
    rows = engine.journal.query(
        "SELECT activity, status FROM steps WHERE run_id = 'h' ORDER BY position"
    )
    assert rows == [("runaway", "failed"), ("square", "completed")]


NOTEBOOK_HELPERS = """
import math
OFFSET = 10

def helper(x):
    return math.isqrt(x) + OFFSET
"""


def test_cell_activities_and_notebook_functions_travel_by_value(
    ip: InteractiveShell, engine: weft_nb.Engine
) -> None:
    ip.run_cell(NOTEBOOK_HELPERS, store_history=False).raise_error()
    ip.run_cell_magic("weft_activity", "scaled(x)", "(helper(x), __import__('os').getpid())")
    definition = definition_of(ip.user_ns["scaled"])
    assert definition is not None
    engine.register(definition)

    @weft_nb.workflow
    def uses_cell(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run("scaled", x)

    value, pid = engine.run(uses_cell, 49, timeout=120)
    assert value == 17  # helper and OFFSET came from the notebook's namespace
    assert pid != os.getpid()


def test_an_unshippable_global_is_named(ip: InteractiveShell, engine: weft_nb.Engine) -> None:
    ip.user_ns["guard"] = threading.Lock()
    ip.run_cell_magic("weft_activity", "locked(x)", "with guard:\n    x + 1")
    definition = definition_of(ip.user_ns["locked"])
    assert definition is not None
    engine.register(definition)

    @weft_nb.workflow
    def uses_lock(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run("locked", x)

    with pytest.raises(ActivityNotShippableError) as info:
        engine.run(uses_lock, 1, timeout=120)
    assert info.value.name == "guard"
    assert "'guard'" in str(info.value)


@weft_nb.activity(retry={"max_attempts": 2})
def beats_a_lock(n: int, activity: weft_nb.ActivityContext) -> int:
    activity.heartbeat({"lock": threading.Lock()})  # cannot travel to the kernel
    return n + 1


@weft_nb.activity(retry={"max_attempts": 3})
def checkpoints_a_lock(n: int, activity: weft_nb.ActivityContext) -> int:
    activity.checkpoint({"lock": threading.Lock()})
    return n


@weft_nb.workflow
def worker_payloads(ctx: weft_nb.WorkflowContext, n: int) -> Any:
    return ctx.run(beats_a_lock, n)


@weft_nb.workflow
def worker_checkpoint(ctx: weft_nb.WorkflowContext, n: int) -> Any:
    return ctx.run(checkpoints_a_lock, n)


def test_unsendable_worker_payloads_fail_as_they_do_inline(engine: weft_nb.Engine) -> None:
    # A heartbeat that cannot be pickled is dropped (with a warning on the worker), as inline;
    # it must not take the worker down and turn a success into a lost worker.
    assert engine.run(worker_payloads, 1, run_id="beat", timeout=120) == 2
    assert engine.journal.query("SELECT attempts FROM steps WHERE run_id = 'beat'") == [(1,)]
    # An unpicklable checkpoint is the same non-retryable PayloadError as inline.
    with pytest.raises(PayloadError, match="cannot be pickled"):
        engine.run(worker_checkpoint, 1, run_id="ckpt", timeout=120)
    assert engine.journal.query("SELECT count(*) FROM attempts WHERE run_id = 'ckpt'")[0][0] <= 1


def test_notebook_activities_see_the_notebook_globals_of_each_attempt(
    ip: InteractiveShell, engine: weft_nb.Engine
) -> None:
    # Functions that travel by value are pickled for every attempt (only importable ones are
    # pickled once): a global changed in the notebook reaches the next attempt, as inline.
    ip.run_cell(NOTEBOOK_HELPERS, store_history=False).raise_error()
    ip.run_cell_magic("weft_activity", "offset_of(x)", "helper(x)")
    definition = definition_of(ip.user_ns["offset_of"])
    assert definition is not None
    engine.register(definition)

    @weft_nb.workflow
    def uses_offset(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run("offset_of", x)

    assert engine.run(uses_offset, 49, run_id="before", timeout=120) == 17
    ip.user_ns["OFFSET"] = 20
    assert engine.run(uses_offset, 49, run_id="after", timeout=120) == 27


POINT_CELL = """
import dataclasses

@dataclasses.dataclass
class Point:
    x: int
    y: int
"""


@weft_nb.activity
def described(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def test_inputs_of_every_kind_reach_the_worker_intact(
    ip: InteractiveShell, engine: weft_nb.Engine
) -> None:
    # Small plain inputs are pickled without cloudpickle's hooks; the rest (long, or holding a
    # class defined in the notebook, which must travel by value) with them. Both arrive intact.
    ip.run_cell(POINT_CELL, store_history=False).raise_error()
    point = ip.user_ns["Point"]
    inputs = [7, "text", {"a": [1, 2.5, None, True], "b": (b"x",)}, list(range(100))]
    inputs += [point(1, 2), {"p": [point(3, 4)]}]

    @weft_nb.workflow
    def describes(ctx: weft_nb.WorkflowContext, n: int) -> Any:
        return [ctx.run(described, value) for value in inputs[:n]]

    assert engine.run(describes, len(inputs), timeout=120) == [described(v) for v in inputs]


class Scaler:
    """A callable object whose state is part of what an attempt runs."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


def test_a_callable_object_ships_its_state_of_now(engine: weft_nb.Engine) -> None:
    # Only a plain function pickled by reference (its module and name) may be pickled once: a
    # callable object pickles its state, which can change between attempts, as inline.
    scaler = Scaler(2)
    scale = weft_nb.activity(name="scale")(scaler)

    @weft_nb.workflow
    def scales(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run(scale, x)

    assert engine.run(scales, 5, run_id="before", timeout=120) == 10
    scaler.factor = 3
    assert engine.run(scales, 5, run_id="after", timeout=120) == 15


def test_a_partial_of_a_notebook_function_travels_by_value(
    ip: InteractiveShell, engine: weft_nb.Engine
) -> None:
    # A partial's module is functools, but the function it wraps lives in the notebook: it must
    # travel by value, as cloudpickle sends it, not as a name the worker cannot look up.
    ip.run_cell(
        "import functools, weft_nb\n"
        "def add(x, y):\n    return x + y\n"
        "plus_one = weft_nb.activity(name='plus_one')(functools.partial(add, 1))\n",
        store_history=False,
    ).raise_error()
    plus_one = ip.user_ns["plus_one"]

    @weft_nb.workflow
    def adds(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run(plus_one, x)

    assert engine.run(adds, 41, timeout=120) == 42


def test_a_function_its_module_no_longer_names_travels_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: weft_nb.Engine
) -> None:
    # After a reload the registered definition still holds the old function; a worker importing
    # the module by name would run the new body. Inline runs the old one, so the worker must too.
    module = tmp_path / "reloaded_acts.py"
    module.write_text("import weft_nb\n@weft_nb.activity\ndef version(x):\n    return 'old'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = importlib.import_module("reloaded_acts")
    old = loaded.version

    @weft_nb.workflow
    def versions(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run(old, x)

    assert engine.run(versions, 1, run_id="first", timeout=120) == "old"  # now pickled once
    module.write_text("import weft_nb\n@weft_nb.activity\ndef version(x):\n    return 'new'\n")
    importlib.reload(loaded)
    definition = definition_of(old)
    assert definition is not None
    identity = AttemptIdentity(run_id="r", activity_name="version", position=0, attempt=1)
    ctx = ActivityContext(identity, clock=RealClock(), checkpoints=None, last_heartbeat_loader=dict)  # type: ignore[arg-type]  # nothing here checkpoints
    shipped = pickle.loads(ship(definition, 1, ctx))  # what a fresh worker would run
    assert shipped[0].fn(1) == "old"


def test_a_module_inside_a_package_registered_by_value_travels_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: weft_nb.Engine
) -> None:
    # cloudpickle sends a module by value when its package is registered so: its globals of now
    # reach the worker, as inline. Caching it as a reference would run the worker's own import.
    package = tmp_path / "byvalue_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "acts.py").write_text(
        "import weft_nb\nFACTOR = 2\n@weft_nb.activity\ndef scaled(x):\n    return x * FACTOR\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    acts = importlib.import_module("byvalue_pkg.acts")
    cloudpickle.register_pickle_by_value(importlib.import_module("byvalue_pkg"))
    try:

        @weft_nb.workflow
        def scales(ctx: weft_nb.WorkflowContext, x: int) -> Any:
            return ctx.run(acts.scaled, x)

        assert engine.run(scales, 5, run_id="before", timeout=120) == 10
        acts.FACTOR = 3
        assert engine.run(scales, 5, run_id="after", timeout=120) == 15
    finally:
        cloudpickle.unregister_pickle_by_value(importlib.import_module("byvalue_pkg"))


def test_a_function_pickled_once_is_not_kept_alive_by_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: weft_nb.Engine
) -> None:
    # The cache is keyed weakly by the function: a module reloaded again and again in a long
    # notebook session must not keep every old function (and its module's globals) alive.
    (tmp_path / "dropped_acts.py").write_text(
        "import weft_nb\n@weft_nb.activity\ndef once(x):\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("dropped_acts")

    @weft_nb.workflow
    def runs_once(ctx: weft_nb.WorkflowContext, x: int) -> Any:
        return ctx.run("once", x)

    engine.register(module.once)
    assert engine.run(runs_once, 4, run_id="once", timeout=120) == 4
    gone = weakref.ref(module.once)

    def replacement(x: int) -> int:
        return x

    engine.register(weft_nb.activity(name="once")(replacement))  # the registry lets go of it
    del module, runs_once
    sys.modules.pop("dropped_acts")
    gc.collect()
    assert gone() is None
