"""Task-token lifetime: a token belongs to one attempt and dies with it.

A token (``ActivityContext.task_token``) is journaled when the attempt first reads it, so it can
be handed out before ``complete_async()``. It stays usable only while that attempt can still be
settled by it:

- the attempt fails or times out: the failure's transaction spends it (a completion of it while
  the retry runs, or after the step failed, is refused), unless an outside completion or failure
  arrived first, which then settles the step (:func:`spend`);
- the process dies while the attempt runs: the next engine spends it when it counts the attempt
  as crashed (:mod:`weft_nb._dispatch_log`), so the resumed run retries the step instead of
  waiting on a token no one will use;
- the attempt parks (``complete_async()``): the token settles the step, once;
- the run finishes or is cancelled: the journal refuses it (:func:`refusal` says
  ``RunFinishedError``, HTTP 409, for a token that was never used).

A used, spent or unknown token raises ``AsyncTokenNotFoundError`` (HTTP 404).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._journal import TERMINAL_STATUSES
from .errors import AsyncTokenNotFoundError, RunFinishedError, WeftError

if TYPE_CHECKING:
    from ._journal import Journal
    from ._workflow_context import WorkflowContext


def spend(ctx: WorkflowContext, token: str) -> bool:
    """Spend a failed attempt's token; False when an outside outcome consumed it first."""
    return ctx._engine.journal.spend_async_token(token, ctx._engine.clock.now())


def refusal(journal: Journal, token: str) -> WeftError:
    """The error for a token that cannot settle anything (unknown, used, spent, run finished)."""
    rows = journal.query(
        "SELECT run_id, position FROM async_tokens WHERE token = ? AND consumed_at IS NULL",
        [token],
    )
    run = journal.get_run(rows[0][0]) if rows else None
    if run is not None and run.status in TERMINAL_STATUSES:  # still unused, but too late
        return RunFinishedError(
            f"token {token!r} belongs to step {rows[0][1]} of run {run.run_id!r}, which is "
            f"{run.status}; nothing can be completed in a finished run",
            run_id=run.run_id,
        )
    return AsyncTokenNotFoundError(
        f"no parked activity has token {token!r}: it is unknown, already used (tokens are "
        "single-use), or spent because its attempt failed, timed out or died with its process "
        "(a token belongs to one attempt)",
        token=token,
    )
