"""A run keeps the activity definitions it started with (issue 13.12c).

Re-running an ``%%weft_activity`` cell (or re-decorating a function) while a run is live would
otherwise mix versions in one run: steps before the redefinition ran the old code, steps after it
the new. Each execution of a workflow takes a copy of the registry when it starts
(`RunDefinitions`, held by the run's `StepCursor`) and
resolves activities, by name or by function, to that copy. A name (``ctx.run("train")``)
resolves to the registry as it was when the execution started; a function (``ctx.run(train)``)
resolves to the definition the execution first used under that name, so a function edited
before the run started runs as edited. A redefinition applies to runs started (or resumed)
later; a resume takes a fresh copy, and its journaled steps whose source changed follow the
run's ``on_change`` policy as always.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from weft_nb.base.definitions import (
    DEFINITION_ATTR,
    ActivityDefinition,
    Registry,
    definition_of,
    make_activity,
)
from weft_nb.errors import ActivityNotRegisteredError, ActivityRedefinedWarning


def _same_function(a: ActivityDefinition, b: ActivityDefinition) -> bool:
    """True when ``b``'s function is a redefinition of ``a``'s: same module, same qualified name.

    A function made inside another (``<locals>``: closures, lambdas) is not pinned: each one may
    capture other values, and two lambdas share a name.
    """
    qualname = getattr(a.fn, "__qualname__", "<locals>")
    return (
        "<locals>" not in qualname
        and qualname == getattr(b.fn, "__qualname__", None)
        and getattr(a.fn, "__module__", None) == getattr(b.fn, "__module__", None)
    )


class RunDefinitions:
    """The activity definitions one execution of a run resolves ``ctx.run`` calls to.

    Args:
        registry: The engine's registry; copied now, and added to when a function is first run.
        run_id: The run, for messages.
        workflow_name: The run's workflow, for messages.
    """

    def __init__(self, registry: Registry, run_id: str, workflow_name: str) -> None:
        self._registry = registry
        self._run_id = run_id
        self._workflow_name = workflow_name
        self._started_with: dict[str, ActivityDefinition] = dict(registry.activities)
        self._used: dict[str, ActivityDefinition] = {}
        self._warned: set[str] = set()
        # id(activity) -> (activity, its definition attribute, the registry's entry, resolved)
        self._resolved: dict[int, tuple[Any, Any, Any, ActivityDefinition]] = {}

    def resolve(self, activity: str | Callable[..., Any]) -> ActivityDefinition:
        """The definition ``activity`` (a registered name or a function) means in this run.

        Raises:
            ActivityNotRegisteredError: A name that neither the run nor the registry knows.
            TypeError: Neither a name nor a function, or a workflow.
        """
        registry = self._registry
        seen = self._resolved.get(id(activity))
        # Resolving again gives the same definition while the function (and its definition)
        # and the registry's entry for the name are the ones it was resolved with.
        if (
            seen is not None
            and seen[0] is activity
            and seen[1] is getattr(activity, DEFINITION_ATTR, None)
            and seen[2] is registry.activities.get(seen[3].name)
        ):
            return seen[3]
        resolved = self._resolve(activity)
        entry = registry.activities.get(resolved.name)
        attribute = getattr(activity, DEFINITION_ATTR, None)
        self._resolved[id(activity)] = (activity, attribute, entry, resolved)
        return resolved

    def _resolve(self, activity: str | Callable[..., Any]) -> ActivityDefinition:
        registry = self._registry
        if isinstance(activity, str):
            found = self._started_with.get(activity) or registry.activity(activity)
            if found is None:
                raise ActivityNotRegisteredError(
                    activity,
                    workflow=self._workflow_name,
                    run_id=self._run_id,
                    registered=registry.activities,
                )
            self._started_with.setdefault(found.name, found)
            return self._used.setdefault(found.name, found)
        definition = definition_of(activity)
        if definition is None:
            if not callable(activity):
                raise TypeError(f"ctx.run takes an activity name or function; got {activity!r}")
            definition = make_activity(activity)
        if not isinstance(definition, ActivityDefinition):
            raise TypeError(f"{definition.name!r} is a workflow, not an activity")
        current = registry.activity(definition.name)
        if current is None or current.fn is not definition.fn:
            registry.add(definition)
        return self._pin(definition)

    def _pin(self, definition: ActivityDefinition) -> ActivityDefinition:
        """The run's definition of ``definition.name``: the first it saw, for the whole run.

        A function passed to ``ctx.run`` is replaced by the run's definition only when it is a
        redefinition of the same function; a different function that happens to share the name
        runs as itself, as before.
        """
        pinned = self._used.setdefault(definition.name, definition)
        if pinned is definition or pinned.fn is definition.fn:
            return pinned
        if not _same_function(pinned, definition):
            return definition
        if pinned.source_hash != definition.source_hash and definition.name not in self._warned:
            self._warned.add(definition.name)
            warnings.warn(
                f"activity {definition.name!r} was redefined while run {self._run_id!r} uses "
                f"it; this run keeps the definition it started with (source "
                f"{pinned.source_hash[:8]}), the new one ({definition.source_hash[:8]}) applies "
                "to runs started from now on",
                ActivityRedefinedWarning,
                stacklevel=5,  # _pin, resolve, StepCursor.resolve, _prepare: ctx.run, as before
            )
        return pinned
