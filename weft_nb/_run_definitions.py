"""A run keeps the activity definitions it started with (issue 13.12c).

Re-running an ``%%weft_activity`` cell (or re-decorating a function) while a run is live would
otherwise mix versions in one run: steps before the redefinition ran the old code, steps after it
the new. Each execution of a workflow takes a copy of the registry when it starts
(``WorkflowContext._definitions``) and resolves activities, by name or by function, to that copy.
A name (``ctx.run("train")``) resolves to the registry as it was when the execution started; a
function (``ctx.run(train)``) resolves to the definition the execution first used under that name,
so a function edited before the run started runs as edited. A redefinition applies to runs started
(or resumed) later; a resume takes a fresh copy, and its journaled steps whose source changed
follow the run's ``on_change`` policy as always.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._definitions import ActivityDefinition
    from ._workflow_context import WorkflowContext


class ActivityRedefinedWarning(UserWarning):
    """An activity was redefined while a run used it; that run keeps its original definition."""


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


def pin(ctx: WorkflowContext, definition: ActivityDefinition) -> ActivityDefinition:
    """The run's definition of ``definition.name``: the first it saw, for the whole run.

    A function passed to ``ctx.run`` is replaced by the run's definition only when it is a
    redefinition of the same function; a different function that happens to share the name
    runs as itself, as before.
    """
    pinned = ctx._used_definitions.setdefault(definition.name, definition)
    if pinned is definition or pinned.fn is definition.fn:
        return pinned
    if not _same_function(pinned, definition):
        return definition
    if pinned.source_hash != definition.source_hash:
        warned = ctx._definitions_warned
        if definition.name not in warned:
            warned.add(definition.name)
            warnings.warn(
                f"activity {definition.name!r} was redefined while run {ctx.run_id!r} uses it; "
                f"this run keeps the definition it started with (source "
                f"{pinned.source_hash[:8]}), the new one ({definition.source_hash[:8]}) applies "
                "to runs started from now on",
                ActivityRedefinedWarning,
                stacklevel=4,
            )
    return pinned
