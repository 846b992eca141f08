"""Shipping an activity to a worker: the function by value (cloudpickle), and what did not travel.

A function defined in a notebook cell (``%%weft_activity``) or in ``__main__`` cannot be imported
by a worker, so cloudpickle pickles it *by value*: its code, its closure, and the module-level
names its code refers to, each pickled in turn (functions and classes defined in the notebook by
value too; imported modules and library functions by reference, so the worker needs the same
packages installed). A function that travels by value is pickled again for every attempt, so an
attempt always runs what the notebook defines *now* (its globals included), as an inline attempt
would; one that travels by reference (its module and name, which the worker looks up) is pickled
once. A small input of plain values (numbers, strings, lists, dicts) is pickled by ``pickle``
itself: it writes the same bytes without cloudpickle's pure-Python hooks.

What cannot travel: open files, locks, sockets, threads, database connections (DuckDB), the
engine. When pickling fails, `ship()` finds the variable responsible and raises
[`ActivityNotShippableError`][weft_nb.errors.ActivityNotShippableError] naming it.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import types
import weakref
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


class _Pickled:
    """An object pickled ahead of time; it unpickles as that object."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.data,)


_BY_REFERENCE: weakref.WeakKeyDictionary[Any, tuple[tuple[str, int, bool], _Pickled]] = (
    weakref.WeakKeyDictionary()
)
"""Activities whose function pickles by reference, pickled once (keyed by the function; the
value holds no reference to it, which would keep it alive)."""


def _shipped(definition: ActivityDefinition) -> ShippedActivity | _Pickled:
    """The activity to pickle: pickled once if its function travels by reference."""
    fn = definition.fn
    activity = ShippedActivity(
        name=definition.name, fn=fn, arity=definition.arity, is_async=definition.is_async
    )
    if not _named_function(fn):
        # By value (with the globals of now), or an object whose state pickles (a partial, a
        # callable instance): pickled for every attempt, as cloudpickle sends it.
        return activity
    shape = (activity.name, activity.arity, activity.is_async)
    cached = _BY_REFERENCE.get(fn)
    if cached is not None and cached[0] == shape:
        return cached[1]
    try:
        pickled = _Pickled(pickle.dumps(activity, pickle.HIGHEST_PROTOCOL))
    except Exception:  # not importable by its name: cloudpickle pickles it by value
        return activity
    _BY_REFERENCE[fn] = (shape, pickled)
    return pickled


def ship(definition: ActivityDefinition, value: Any, ctx: ActivityContext) -> bytes:
    """Pickle one attempt (function, input, identity) for a worker.

    Raises:
        ActivityNotShippableError: the function or its input does not pickle; names the variable.
    """
    _by_value_if_not_importable(definition.fn)
    activity = _shipped(definition)
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
        if isinstance(activity, _Pickled) and info.checkpoint_storage is None and _plain(value):
            return pickle.dumps((activity, value, info), pickle.HIGHEST_PROTOCOL)  # the same bytes
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


def _named_function(fn: Any) -> bool:
    """True for a plain function its module still names: it pickles as that name, nothing more.

    A module reloaded since names a new function: cloudpickle then sends the old one by value.
    """
    if type(fn) is not types.FunctionType:
        return False
    module_name = fn.__module__
    if module_name in (None, "__main__"):
        return False
    for by_value in cloudpickle.list_registry_pickle_by_value():  # a package's modules too
        if module_name == by_value or module_name.startswith(by_value + "."):
            return False
    found: Any = sys.modules.get(module_name)
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is fn


_PLAIN_ATOMS = (int, float, str, bytes, bool, type(None))
_PLAIN_MAX_ITEMS = 64


def _plain(value: Any) -> bool:
    """True for a small input of plain values only, which pickle and cloudpickle write alike.

    cloudpickle's pure-Python hooks cost more than the rest of a small attempt's pickling.
    """
    budget = [_PLAIN_MAX_ITEMS]

    def plain(item: Any) -> bool:
        kind = type(item)
        if kind in _PLAIN_ATOMS:
            return True
        budget[0] -= len(item) if kind in (list, tuple, dict) else _PLAIN_MAX_ITEMS + 1
        if budget[0] < 0:
            return False
        if kind is dict:
            return all(plain(k) and plain(v) for k, v in item.items())
        return all(plain(v) for v in item)

    return plain(value)


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
