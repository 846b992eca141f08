"""Where durable operations may be called: the workflow's own thread, outside memo callbacks.

A durable operation (``ctx.run``, ``ctx.submit``, ``ctx.all``, ``ctx.race``, ``ctx.run_all``,
``ctx.sleep``, ``ctx.now``, ``ctx.wait_for_signal``, ``ctx.memo``) takes the next position of the
run, and replay matches positions in program order. Two places break that:

- inside a ``ctx.memo`` callback: on resume the memo is answered from the journal without running
  its callback, so the steps the callback took are not taken again, every later position shifts,
  and completed work runs twice. ``weft_nb.durable_activity`` is the one way to call an activity
  from a memo (its calls live in the memo's own sub-positions);
- on another thread (an activity that captured ``ctx``, a thread the workflow started, a parallel
  step's worker): positions would follow thread timing, not the program. Parallel work goes
  through ``ctx.submit``/``ctx.all``/``ctx.race``/``ctx.run_all``, whose positions are taken on the
  workflow's thread and whose activities run on the engine's worker threads.

Both raise [`StepScopeError`][weft_nb.errors.StepScopeError], naming the call and the line that made
it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from weft_nb.engine.durable_activity import current_memo
from weft_nb.errors import StepScopeError

if TYPE_CHECKING:
    from weft_nb.engine.replay import StepCursor

_PACKAGE = __name__.rpartition(".")[0]


def check_scope(cursor: StepCursor, call: str | Callable[[], str]) -> None:
    """Raise ``StepScopeError`` unless ``call`` runs on the workflow's thread, outside a memo.

    ``call`` names the call in the message: a text, or a function building it (only on an error).
    """
    memo = current_memo()
    owner = cursor.state.thread
    if memo is None and (owner is None or threading.current_thread() is owner):
        return
    call, run_id = call if isinstance(call, str) else call(), cursor.run_id
    if memo is not None:
        raise StepScopeError(
            f"{call} was called inside the ctx.memo({memo[1]!r}) callback (step {memo[0]} of run "
            f"{run_id!r}), at {call_site()}. A memo's callback does not run again on resume, so "
            "steps it takes cannot be replayed and later steps would run twice. Call activities "
            "from a memo with weft_nb.durable_activity(), or make the call in the workflow "
            "itself, outside the callback.",
            run_id=run_id,
            call=call,
        )
    owner = cursor.state.thread
    current = threading.current_thread()
    if owner is not None and current is not owner:
        raise StepScopeError(
            f"{call} was called from thread {current.name!r}, not from run {run_id!r}'s "
            f"workflow thread {owner.name!r}, at {call_site()}. Steps take positions in program "
            "order, which another thread cannot keep. Call it from the workflow function; for "
            "parallel work use ctx.submit with ctx.all or ctx.race, or ctx.run_all.",
            run_id=run_id,
            call=call,
        )


def call_site() -> str:
    """``file:line`` of the innermost frame outside weft_nb: the user's call."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_PACKAGE + "."):
        frame = frame.f_back
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
