"""Remote attempts: ship the activity, start it on a worker, serve it from the kernel until it ends.

Both remote executors (worker processes, Dask) run an attempt the same way, and
`RemoteExecutor` does it once for both: `ship()` pickles
the attempt (an activity that does not pickle fails the attempt, naming the variable), the
subclass starts it on one of its workers and hands back a `RemoteChannel` to it
(`RemoteExecutor.start_attempt()`), and `serve_attempt()` serves that channel until the
attempt ends. A subclass says only how to start a task on its workers and how its channel works.

`serve_attempt()` runs on the workflow's thread and is the only place where a remote attempt
touches the kernel's state: it replays the worker's heartbeats into the attempt's real
``ActivityContext`` (so the flusher journals them and the widgets show them), writes its
checkpoints through the checkpoint store, journals its task token before handing it out, and
turns the ``done`` message into an `AttemptOutcome`.

An attempt is identified by its channel: a message can only reach the ``serve_attempt`` call of
the attempt that sent it, and nothing arriving after ``serve_attempt`` returned (a late result of
an abandoned or timed-out attempt, or one meant for a kernel that was killed) is ever read or
recorded.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from weft_nb.activity.checkpoints import PickledState
from weft_nb.activity.context import CompleteAsync
from weft_nb.errors import ActivityNotShippableError, PayloadError, WorkerLostError
from weft_nb.executors.attempts import AttemptOutcome, AttemptRequest, AttemptWatch
from weft_nb.executors.base import Executor
from weft_nb.executors.shipping import ship

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import ActivityDefinition

TICK = 0.05  # how soon a cancellation of the run is passed on to the worker

_traffic = {"received": 0, "sent": 0}  # bytes between the kernel and workers, all attempts
_traffic_lock = threading.Lock()


def count_received(size: int) -> None:
    """Count ``size`` bytes a channel received from a worker (see `received_bytes()`)."""
    with _traffic_lock:
        _traffic["received"] += size


def count_sent(size: int) -> None:
    """Count ``size`` bytes a channel sent to a worker (see `sent_bytes()`)."""
    with _traffic_lock:
        _traffic["sent"] += size


def received_bytes() -> int:
    """Bytes the kernel received from workers so far (messages and results), every executor.

    What a checkpoint costs the kernel: with a checkpoint storage, a reference (a few hundred
    bytes); without, the whole pickled state.
    """
    return _traffic["received"]


def sent_bytes() -> int:
    """Bytes the kernel sent to workers so far (replies, cancellations; not the shipped attempt).

    With a checkpoint storage, ``last_checkpoint`` on a worker costs the kernel the rows, not the
    checkpoint: the worker reads the object itself.
    """
    return _traffic["sent"]


class RemoteChannel(Protocol):
    """A channel to the worker running one attempt."""

    def poll(self, timeout: float) -> tuple[Any, ...] | None:
        """The next message within ``timeout`` seconds, or None; raises WorkerLostError."""

    def send(self, message: tuple[Any, ...]) -> None:
        """Send a reply or a cancellation to the worker."""

    def abandon(self) -> None:
        """Stop the attempt as hard as the executor can (kill the process, cancel the task)."""


class RemoteExecutor(Executor):
    """An executor whose attempts run on workers outside the kernel; see the module docstring.

    Subclasses implement `start_attempt()` and set `cancel_grace`.
    """

    cancel_grace: float
    """Seconds a cancelled attempt (its run cancelled) has to return before it is abandoned."""

    def run(self, attempt: AttemptRequest, wake: threading.Event) -> AttemptOutcome | None:
        """Ship the attempt, start it on a worker and serve it; see `Executor.run()`."""
        definition, ctx = attempt.definition, attempt.ctx
        try:
            payload = ship(definition, attempt.value, ctx)
        except ActivityNotShippableError as exc:
            return AttemptOutcome(ok=False, error=exc)
        with self.start_attempt(definition, payload, ctx, attempt.queue) as channel:
            if channel is None:
                return None  # the run was cancelled before a worker took the attempt
            return serve_attempt(channel, attempt.watch(self.clock), cancel_grace=self.cancel_grace)

    def start_attempt(
        self,
        definition: ActivityDefinition,
        payload: bytes,
        ctx: ActivityContext,
        queue: str | None,
    ) -> AbstractContextManager[RemoteChannel | None]:
        """Start the shipped attempt on a worker; the context holds the channel to it.

        Leaving the context releases what the attempt held (its worker, its queues). The context
        gives None when the run was cancelled before the attempt could start.

        Args:
            definition: The activity (its name makes a task key readable).
            payload: The attempt as `ship()` pickled it.
            ctx: The attempt's context in the kernel.
            queue: The step's queue, for executors that place work by queue.
        """
        raise NotImplementedError


def serve_attempt(
    channel: RemoteChannel, watch: AttemptWatch, *, cancel_grace: float
) -> AttemptOutcome | None:
    """Serve one remote attempt until it ends; None when the run was cancelled meanwhile.

    Answers the worker's requests, replays its heartbeats into ``watch.ctx``, watches the
    attempt's deadlines and passes a cancellation of the run on (abandoning the attempt after
    ``cancel_grace`` seconds).
    """
    ctx = watch.ctx
    give_up_at: float | None = None  # set once a cancellation of the run was passed on
    while True:
        if give_up_at is None and ctx.cancelled.is_set():
            channel.send(("cancel", ctx.cancel_reason or "cancelled"))
            give_up_at = time.monotonic() + cancel_grace
        if give_up_at is not None:
            wait = give_up_at - time.monotonic()
            if wait <= 0:
                channel.abandon()  # it ignored `cancelled` for the whole grace period
                return None
        else:
            remaining = watch.remaining()
            wait = TICK if remaining is None else min(TICK, remaining)
        try:
            message = channel.poll(wait)
        except WorkerLostError as exc:
            return None if give_up_at is not None else AttemptOutcome(ok=False, error=exc)
        if message is not None:
            outcome = _handle(channel, ctx, message)
            if outcome is not None:
                return None if give_up_at is not None else outcome
        elif give_up_at is None:
            expired = watch.expired()
            if expired is not None:
                channel.abandon()
                return expired


def _handle(
    channel: RemoteChannel, ctx: ActivityContext, message: tuple[Any, ...]
) -> AttemptOutcome | None:
    kind = message[0]
    if kind == "heartbeat":
        ctx.heartbeat(message[1])
    elif kind == "request":
        _, request_id, what, payload = message
        ok, value = _answer(ctx, what, payload)
        try:
            channel.send(("reply", request_id, ok, value))
        except Exception as exc:  # the answer itself does not pickle
            error = PayloadError(
                f"{what} of step {ctx.position} cannot be sent to the worker: {exc}"
            )
            channel.send(("reply", request_id, False, error))
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
        if what == "checkpoint_stored":  # a worker wrote it to the storage: journal the reference
            ctx.checkpoint(payload)
            return True, None
        if what == "checkpoint_records":
            return True, ctx.checkpoint_records()
        if what == "last_checkpoint":
            return True, ctx.last_checkpoint
        if what == "last_heartbeat_details":
            return True, ctx.last_heartbeat_details
        if what == "task_token":
            return True, ctx.task_token
        return False, ValueError(f"unknown request {what!r} from a worker")
    except Exception as exc:
        return False, exc
