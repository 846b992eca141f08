"""The typed API's type variables and aliases: how a type checker follows an activity's types.

``@weft_nb.activity`` returns the function unchanged, so the function's own signature is what a
type checker sees. The overloads of ``ctx.run``, ``ctx.submit``, ``durable_activity`` and
``Engine.start``/``Engine.run`` read the input and result types from it through these names:
``ctx.run(train, config)`` is checked against ``train``'s first parameter and has ``train``'s
return type (awaited, for an ``async def``); a name (a string) keeps returning ``Any``. Nothing
here changes what runs: they are ordinary ``TypeVar`` objects and aliases of ``Callable``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ParamSpec, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from typing import Any, Concatenate, TypeAlias

InputT = TypeVar("InputT")
"""The input an activity or workflow function takes (its first data parameter)."""

ResultT = TypeVar("ResultT")
"""What an activity or workflow function returns (awaited, for an ``async def``)."""

ResultT_co = TypeVar("ResultT_co", covariant=True)
"""The result of a step future or a run handle: read-only, so a handle of a subclass fits."""

ModelT = TypeVar("ModelT", bound=BaseModel)
"""A pydantic-model input: a mapping of its fields is accepted too, as the engine validates it."""

MoreParams = ParamSpec("MoreParams")
"""The parameters after an activity's input: its ``ActivityContext``, when it takes one."""

if TYPE_CHECKING:  # aliases for type checkers only: nothing at runtime needs them
    ActivityFn: TypeAlias = Callable[Concatenate[InputT, MoreParams], ResultT]
    """An activity ``(input)`` or ``(input, activity_context)`` returning ``ResultT``."""

    AsyncActivityFn: TypeAlias = Callable[Concatenate[InputT, MoreParams], Awaitable[ResultT]]
    """An ``async def`` activity: its step's result is what the coroutine returns."""

    ModelInput: TypeAlias = ModelT | Mapping[str, Any]
    """The input of an activity taking a pydantic model: the model, or its fields to validate."""

__all__ = ["InputT", "ModelT", "MoreParams", "ResultT", "ResultT_co"]
