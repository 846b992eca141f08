"""The kernel side of a remote attempt: answer the worker, watch the deadlines, collect the outcome.

Both remote executors (worker processes, Dask) hand :func:`drive` a :class:`Remote`: a channel
to the worker running one attempt. ``drive`` runs on the workflow's thread and is the only place
where a remote attempt touches the kernel's state: it replays the worker's heartbeats into the
attempt's real ``ActivityContext`` (so the flusher journals them and the widgets show them),
writes its checkpoints through the checkpoint store, journals its task token before handing it
out, and turns the ``done`` message into an :class:`~weft_nb._attempts.AttemptOutcome`.

An attempt is identified by its channel: a message can only reach the ``drive`` call of the
attempt that sent it, and nothing arriving after ``drive`` returned (a late result of an abandoned
or timed-out attempt, or one meant for a kernel that was killed) is ever read or recorded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from ._activity_context import CompleteAsync
from ._attempts import AttemptOutcome, AttemptWatch
from ._checkpoints import PickledState
from .errors import PayloadError, WorkerLostError

if TYPE_CHECKING:
    from ._activity_context import ActivityContext
    from ._clock import Clock

TICK = 0.05  # how soon a cancellation of the run is passed on to the worker


class Remote(Protocol):
    """A channel to the worker running one attempt."""

    def poll(self, timeout: float) -> tuple[Any, ...] | None:
        """The next message within ``timeout`` seconds, or None; raises WorkerLostError."""

    def send(self, message: tuple[Any, ...]) -> None:
        """Send a reply or a cancellation to the worker."""

    def abandon(self) -> None:
        """Stop the attempt as hard as the executor can (kill the process, cancel the task)."""


def drive(
    remote: Remote,
    ctx: ActivityContext,
    clock: Clock,
    *,
    timeout: float | None,
    heartbeat_timeout: float | None,
    cancel_grace: float,
) -> AttemptOutcome | None:
    """Serve one remote attempt until it ends; None when the run was cancelled meanwhile."""
    watch = AttemptWatch(ctx, clock, timeout, heartbeat_timeout)
    give_up_at: float | None = None  # set once a cancellation of the run was passed on
    while True:
        if give_up_at is None and ctx.cancelled.is_set():
            remote.send(("cancel", ctx.cancel_reason or "cancelled"))
            give_up_at = time.monotonic() + cancel_grace
        if give_up_at is not None:
            wait = give_up_at - time.monotonic()
            if wait <= 0:
                remote.abandon()  # it ignored `cancelled` for the whole grace period
                return None
        else:
            remaining = watch.remaining()
            wait = TICK if remaining is None else min(TICK, remaining)
        try:
            message = remote.poll(wait)
        except WorkerLostError as exc:
            return None if give_up_at is not None else AttemptOutcome(ok=False, error=exc)
        if message is not None:
            outcome = _handle(remote, ctx, message)
            if outcome is not None:
                return None if give_up_at is not None else outcome
        elif give_up_at is None:
            expired = watch.expired()
            if expired is not None:
                remote.abandon()
                return expired


def _handle(
    remote: Remote, ctx: ActivityContext, message: tuple[Any, ...]
) -> AttemptOutcome | None:
    kind = message[0]
    if kind == "heartbeat":
        ctx.heartbeat(message[1])
    elif kind == "request":
        _, request_id, what, payload = message
        ok, value = _answer(ctx, what, payload)
        try:
            remote.send(("reply", request_id, ok, value))
        except Exception as exc:  # the answer itself does not pickle
            error = PayloadError(
                f"{what} of step {ctx.position} cannot be sent to the worker: {exc}"
            )
            remote.send(("reply", request_id, False, error))
    elif kind == "done":
        if message[1] == "ok":
            return AttemptOutcome(ok=True, value=message[2])
        if message[1] == "complete_async":
            return AttemptOutcome(ok=False, error=CompleteAsync())
        return AttemptOutcome(ok=False, error=message[2], traceback_text=message[3])
    return None


def _answer(ctx: ActivityContext, what: str, payload: Any) -> tuple[bool, Any]:
    try:
        if what == "checkpoint":
            ctx.checkpoint(PickledState(payload))
            return True, None
        if what == "last_checkpoint":
            return True, ctx.last_checkpoint
        if what == "last_heartbeat_details":
            return True, ctx.last_heartbeat_details
        if what == "task_token":
            return True, ctx.task_token
        return False, ValueError(f"unknown request {what!r} from a worker")
    except Exception as exc:
        return False, exc
