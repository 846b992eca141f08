"""The typed API's type variables and aliases: how a type checker follows an activity's types.

``@weft_nb.activity`` returns the function unchanged, so the function's own signature is what a
type checker sees. The overloads of ``ctx.run``, ``ctx.submit``, ``durable_activity`` and
``Engine.start``/``Engine.run`` read the input and result types from it through these names:
``ctx.run(train, config)`` is checked against ``train``'s first parameter and has ``train``'s
return type (awaited, for an ``async def``); a name (a string) keeps returning ``Any``. Nothing
here changes what runs: they are ordinary ``TypeVar`` objects and aliases of ``Callable``. The
aliases naming an activity's shapes, ``(input)`` or ``(input, ActivityContext)``, live next to
``ActivityContext`` (`weft_nb.activity.context`), as this layer cannot name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from weft_nb.base.retry import Duration, RetryPolicy

if TYPE_CHECKING:
    from typing import TypeAlias

    from pydantic import BaseModel  # only a bound here: `import weft_nb` leaves pydantic alone

InputT = TypeVar("InputT")
"""The input an activity or workflow function takes (its first data parameter)."""

ResultT = TypeVar("ResultT")
"""What an activity or workflow function returns (awaited, for an ``async def``)."""

ResultT_co = TypeVar("ResultT_co", covariant=True)
"""The result of a step future or a run handle: read-only, so a handle of a subclass fits."""

ModelT = TypeVar("ModelT", bound="BaseModel")
"""A pydantic-model input: a mapping of its fields is accepted too, as the engine validates it."""


class CallOptions(TypedDict, total=False):
    """The keyword options of ``ctx.run``, ``ctx.submit`` and ``durable_activity``.

    Their overloads take ``**call_options: Unpack[CallOptions]``, so a misspelt option
    (``retries=2``) is a type error, and the engine refuses any other name at runtime.
    """

    timeout: Duration | None
    schedule_to_close_timeout: Duration | None
    retry: RetryPolicy | Mapping[str, Any] | None
    queue: str | None
    idempotency_key: str | None
    heartbeat_timeout: Duration | None


CALL_OPTION_NAMES = frozenset(CallOptions.__annotations__)
"""The names `CallOptions` allows: the runtime check and the type check read the same list."""

if TYPE_CHECKING:  # aliases for type checkers only: nothing at runtime needs them
    ModelInput: TypeAlias = ModelT | Mapping[str, Any]
    """The input of a function taking a pydantic model: the model, or its fields to validate."""

__all__ = ["CALL_OPTION_NAMES", "CallOptions", "InputT", "ModelT", "ResultT", "ResultT_co"]
