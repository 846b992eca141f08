"""Shipping an activity to a worker: the function by value (cloudpickle), and what did not travel.

A function defined in a notebook cell (``%%weft_activity``) or in ``__main__`` cannot be imported
by a worker, so cloudpickle pickles it *by value*: its code, its closure, and the module-level
names its code refers to, each pickled in turn (functions and classes defined in the notebook by
value too; imported modules and library functions by reference, so the worker needs the same
packages installed). It is pickled again for every attempt, so an attempt always runs what the
notebook defines *now*, as an inline attempt would.

What cannot travel: open files, locks, sockets, threads, database connections (DuckDB), the
engine. When pickling fails, `ship()` finds the variable responsible and raises
[`ActivityNotShippableError`][weft_nb.errors.ActivityNotShippableError] naming it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import cloudpickle

from weft_nb.errors import ActivityNotShippableError

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.activity.storage import CheckpointStorage
    from weft_nb.base.definitions import ActivityDefinition

_MAX_DEPTH = 4


@dataclasses.dataclass(frozen=True)
class AttemptInfo:
    """Who the attempt is, as the worker-side context reports it."""

    run_id: str
    activity_name: str
    position: int
    attempt: int
    max_attempts: int | None
    checkpoint_storage: CheckpointStorage | None = None
    """Where the worker writes checkpoints itself; None: it sends them to the kernel."""


@dataclasses.dataclass(frozen=True)
class ShippedActivity:
    """What a worker needs to call the activity (not its retry policy or verify hook)."""

    name: str
    fn: Callable[..., Any]
    arity: int
    is_async: bool


def ship(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> bytes:
    """Pickle one attempt (function, input, identity) for a worker.

    Raises:
        ActivityNotShippableError: the function or its input does not pickle; names the variable.
    """
    _by_value_if_not_importable(definition.fn)
    activity = ShippedActivity(
        name=definition.name,
        fn=definition.fn,
        arity=definition.arity,
        is_async=definition.is_async,
    )
    storage = ctx.checkpoint_storage
    info = AttemptInfo(
        run_id=ctx.run_id,
        activity_name=ctx.activity_name,
        position=ctx.position,
        attempt=ctx.attempt,
        max_attempts=ctx.max_attempts,
        checkpoint_storage=storage if storage is not None and storage.reaches_workers else None,
    )
    try:
        data: bytes = cloudpickle.dumps((activity, value, info))
        return data
    except Exception as exc:
        culprit = _culprit(definition.fn, 0) or _input_culprit(value)
        path, bad = culprit or (definition.fn.__name__, exc)
        raise ActivityNotShippableError(
            f"activity {definition.name!r} (step {ctx.position}, run {ctx.run_id!r}) cannot be "
            f"sent to a worker: {path!r} does not pickle ({type(bad).__name__}: {bad}). Open "
            "files, locks, sockets and connections cannot travel: create them inside the "
            "activity, or pass plain data (paths, parameters) in its input.",
            activity=definition.name,
            name=path,
            run_id=ctx.run_id,
        ) from exc


def _by_value_if_not_importable(fn: Callable[..., Any]) -> None:
    """Ship a module that exists only in this process (no file: built by exec) by value."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ == "__main__" or hasattr(module, "__file__"):
        return
    if module.__spec__ is None or module.__spec__.origin is None:
        cloudpickle.register_pickle_by_value(module)


def _input_culprit(value: Any) -> tuple[str, BaseException] | None:
    try:
        cloudpickle.dumps(value)
    except Exception as exc:
        return "the input", exc
    return None


def _referenced(fn: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """The closure variables and module-level names a function's code uses."""
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False):
        try:
            yield name, cell.cell_contents
        except ValueError:  # an empty cell
            continue
    for name in sorted(_global_names(fn.__code__)):
        if name in fn.__globals__:
            yield name, fn.__globals__[name]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _culprit(fn: Any, depth: int) -> tuple[str, BaseException] | None:
    """The first variable that ``fn`` (or a function it uses) refers to and that does not pickle."""
    if not isinstance(fn, types.FunctionType) or depth > _MAX_DEPTH:
        return None
    for name, value in _referenced(fn):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            deeper = _culprit(value, depth + 1)
            return deeper or (name, exc)
    return None
