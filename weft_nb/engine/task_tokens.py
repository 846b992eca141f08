"""Task-token lifetime: a token belongs to one attempt and dies with it.

A token (``ActivityContext.task_token``) is journaled when the attempt first reads it, so it can
be handed out before ``complete_async()``. It stays usable only while that attempt can still be
settled by it:

- the attempt fails or times out: the failure's transaction spends it (a completion of it while
  the retry runs, or after the step failed, is refused), unless an outside completion or failure
  arrived first, which then settles the step (`spend()`);
- the process dies while the attempt runs: the next engine spends it when it counts the attempt
  as crashed (`weft_nb.journal.dispatch_log`), so the resumed run retries the step instead of
  waiting on a token no one will use;
- the attempt parks (``complete_async()``): the token settles the step, once;
- the run finishes or is cancelled: the journal refuses it (`refusal()` says
  ``RunFinishedError``, HTTP 409, for a token that was never used).

A used, spent or unknown token raises ``AsyncTokenNotFoundError`` (HTTP 404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weft_nb.errors import AsyncTokenNotFoundError, RunFinishedError, WeftError
from weft_nb.journal.protocol import TERMINAL_STATUSES

if TYPE_CHECKING:
    from weft_nb.engine.runtime import Runtime
    from weft_nb.journal.protocol import Journal


def spend(rt: Runtime, token: str) -> bool:
    """Spend a failed attempt's token; False when an outside outcome consumed it first."""
    return rt.journal.spend_async_token(token, rt.clock.now())


def refusal(journal: Journal, token: str) -> WeftError:
    """The error for a token that cannot settle anything (unknown, used, spent, run finished)."""
    parked = journal.async_token(token)
    run = journal.get_run(parked.run_id) if parked is not None else None
    if parked is not None and run is not None and run.status in TERMINAL_STATUSES:  # too late
        return RunFinishedError(run.run_id, run.status, token=token, position=parked.position)
    return AsyncTokenNotFoundError(token)
