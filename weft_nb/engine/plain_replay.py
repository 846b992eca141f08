"""The fast path of a resume: a plain ``ctx.run`` answered from the journal's columns.

A resume runs the workflow from the top and answers every completed step from the journal; a
long run replays 100,000 of them before it does new work. Most are plain: no call options, JSON
input and result, an activity without a pydantic model hint, compensation or key function. For
those `replay_plain()` does only what decides the answer (the signature check: activity name,
source hash and input digest) on the row `RecordedSteps` holds, with no `StepRecord`,
`PreparedStep` or message built. Everything else, including every mismatch, goes to the general
path (`weft_nb.engine.steps.prepare_step` and ``WorkflowContext._prepare``), which applies the
run's ``on_change`` policy and reports a changed step exactly as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import current_thread
from typing import TYPE_CHECKING, Any

from weft_nb.base import evidence
from weft_nb.base.input_digest import json_input_digest
from weft_nb.base.payloads import JSON, is_model_class, loads_compact_json, plain_json
from weft_nb.engine.durable_activity import in_memo
from weft_nb.engine.replay import NOT_SET
from weft_nb.journal.protocol import STEP_COMPLETED

if TYPE_CHECKING:
    from weft_nb.base.definitions import ActivityDefinition
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runtime import Runtime


def replay_plain(
    cursor: StepCursor,
    rt: Runtime,
    activity: str | Callable[..., Any],
    value: Any,
    options: dict[str, Any],
) -> Any:
    """``ctx.run(activity, value, **options)``'s journaled result at the next position; `NOT_SET`.

    For a call without options: a completed step whose input and result are JSON, whose
    activity needs nothing more (`has_plain_calls()`), and whose signature matches is answered
    with what the general path would return, and its position taken.
    Anything else returns `NOT_SET` and takes nothing.

    Raises:
        EngineStopped: The engine closed (as the general path raises it).
        WorkflowCancelledError: The run was cancelled.
    """
    state = cursor.state
    steps = state.steps
    position = cursor.positions_taken
    row = position if steps.identity else steps.row_of(position)
    owner = state.thread
    if (
        options
        or row < 0
        or row >= len(steps.status)
        or steps.status[row] != STEP_COMPLETED
        or steps.result_codec[row] != JSON
        or in_memo()  # check_scope raises
        or (owner is not None and current_thread() is not owner)  # check_scope raises
        or evidence.ENABLED  # the general path records the replay
        or rt.dev_checks.active
    ):
        return NOT_SET
    if state.stopped or state.cancel_requested.is_set():
        cursor.check_alive()  # raises
    definition = cursor.resolve(activity)
    known = cursor.plain_calls.get(id(definition))
    if known is None or known[0] is not definition:
        known = cursor.plain_calls[id(definition)] = (definition, has_plain_calls(definition))
    data = plain_json(value) if known[1] else None
    if (
        data is None
        or len(data) > rt.max_payload_bytes  # the general path raises PayloadError
        or steps.activity[row] != definition.name
        or steps.source_hash[row] != definition.source_hash
        or steps.input_hash[row] != json_input_digest(value, data)
    ):
        return NOT_SET
    try:
        result = loads_compact_json(steps.result[row])
    except Exception:  # damaged, or written otherwise: the general path reads or reports it
        return NOT_SET
    cursor.take_replayed(row)
    return result


def has_plain_calls(definition: ActivityDefinition) -> bool:
    """Whether a replayed call of ``definition`` needs no more than `replay_plain()`.

    A pydantic model hint validates the input and rehydrates the result; a compensation keeps
    the step for a later undo; a key function is called on the input.
    """
    hints = (definition.input_hint, definition.result_hint)
    no_model = not any(is_model_class(hint) for hint in hints)
    return no_model and definition.compensate is None and definition.idempotency_key is None
