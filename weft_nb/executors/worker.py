"""The worker side of a remote attempt: an ActivityContext that reports to the kernel.

A worker (a process of ``ProcessExecutor``, a Dask worker) runs the activity with a
`WorkerActivityContext`. It never touches the journal or the checkpoint folder: heartbeats,
checkpoints and task-token reads are messages to the kernel, which feeds them into the attempt's
real ``ActivityContext`` there, so they take exactly the inline durable paths (the heartbeat
flusher, the checkpoint store, the widgets). Cancellation arrives as a message and sets
``cancelled``.

Messages (tuples, pickled with cloudpickle):

- worker to kernel: ``("heartbeat", details)``, ``("request", id, kind, payload)`` with kind
  ``checkpoint`` / ``last_checkpoint`` / ``last_heartbeat_details`` / ``task_token``, and, with a
  checkpoint storage (``Engine(checkpoint_storage=URL)``), ``checkpoint_stored`` (the reference
  to an object this worker wrote to the storage itself: the bytes never reach the kernel) /
  ``checkpoint_records`` (the rows this worker then reads from the storage), and
  ``("done", kind, ...)`` with kind ``ok`` / ``error`` / ``complete_async``;
- kernel to worker: ``("reply", id, ok, payload)`` and ``("cancel", reason)``.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import cloudpickle

from weft_nb.activity.checkpoints import CheckpointStore
from weft_nb.activity.context import ActivityContext, CompleteAsync
from weft_nb.activity.restore import first_readable
from weft_nb.activity.storage import CheckpointStorage, is_url, open_record
from weft_nb.base.definitions import ActivityDefinition
from weft_nb.errors import PayloadError
from weft_nb.executors.attempts import call_activity
from weft_nb.executors.shipping import AttemptInfo, ShippedActivity

Send = Callable[[tuple[Any, ...]], None]

HEARTBEAT_SEND_INTERVAL = 0.05  # at most this often a heartbeat message per attempt


class Inbox:
    """Replies and cancellation from the kernel, delivered by the thread that reads them."""

    def __init__(self, *, one_attempt: bool = False) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.ctx: WorkerActivityContext | None = None
        self.one_attempt = one_attempt
        self.cancel_reason: str | None = None
        """With ``one_attempt`` (an inbox for one attempt only, as a Dask task's), set by a
        cancellation even before the activity's context exists: a Dask rerun the kernel gave up
        on must neither wait for a reply that never comes nor start the activity. A process
        worker's inbox serves attempt after attempt, so there a late cancellation is dropped."""

    def attach(self, ctx: WorkerActivityContext | None) -> None:
        """Route cancellations to ``ctx`` from now on; one that came earlier cancels it now."""
        with self._lock:
            self.ctx = ctx
            reason = self.cancel_reason
        if ctx is not None and reason is not None:
            ctx.cancel(reason)

    def expect(self, request_id: int) -> tuple[threading.Event, list[Any]]:
        """Register a request before sending it; its reply lands in the returned slot."""
        slot: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._waiting[request_id] = slot
        return slot

    def wait(self, arrived: threading.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``arrived`` (a reply); True when it is set."""
        return arrived.wait(timeout)

    def pending(self) -> bool:
        """True while a request waits for its reply."""
        return bool(self._waiting)

    def deliver(self, message: tuple[Any, ...]) -> None:
        """Route one message from the kernel."""
        if message[0] == "cancel":
            with self._lock:
                if self.one_attempt:
                    self.cancel_reason = str(message[1])
                ctx = self.ctx
            if ctx is not None:
                ctx.cancel(str(message[1]))
        elif message[0] == "reply":
            with self._lock:
                slot = self._waiting.pop(message[1], None)
            if slot is not None:
                slot[1].append((message[2], message[3]))
                slot[0].set()


class WorkerActivityContext(ActivityContext):
    """``ActivityContext`` on a worker; see the module docstring."""

    def __init__(self, info: AttemptInfo, send: Send, inbox: Inbox) -> None:
        # Deliberately not ActivityContext.__init__: there is no clock or checkpoint store here.
        self.run_id = info.run_id
        self.activity_name = info.activity_name
        self.position = info.position
        self.attempt = info.attempt
        self.max_attempts = info.max_attempts
        self.cancelled = threading.Event()
        self.cancel_reason = ""
        self._on_cancel = None
        self._send = send
        self._inbox = inbox
        self._requests = 0
        self._send_lock = threading.Lock()
        self.details = None
        self.heartbeat_count = 0
        self._sent_count = 0
        self._monotonic = time.monotonic  # what ActivityContext.heartbeat stamps beats with
        self._wall_offset = 0.0  # worker times stay monotonic: only the kernel compares them
        self._warned_unpicklable = False
        self._storage = info.checkpoint_storage
        self.started_at = self.last_beat_monotonic = time.monotonic()
        self.first_heartbeat_at = None

    def flush_heartbeat(self) -> None:
        """Send the newest heartbeat if it was not sent yet (the sender thread and the end)."""
        count = self.heartbeat_count
        if count != self._sent_count:
            self._sent_count = count
            try:
                cloudpickle.dumps(self.details)
            except Exception as exc:  # as the kernel's flusher does: warn once, drop the beat
                if not self._warned_unpicklable:
                    self._warned_unpicklable = True
                    warnings.warn(
                        f"heartbeat details of activity {self.activity_name!r} cannot be sent "
                        f"to the kernel ({type(exc).__name__}: {exc}); pass plain values",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return
            self._post(("heartbeat", self.details))

    def _post(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._send(message)

    def _request(self, kind: str, payload: Any = None) -> Any:
        with self._send_lock:
            self._requests += 1
            request_id = self._requests
        done, reply = self._inbox.expect(request_id)
        self.flush_heartbeat()  # the kernel sees heartbeats before what follows them
        self._post(("request", request_id, kind, payload))
        # A kernel that gave up on this attempt never replies.
        while not self._inbox.wait(done, 0.1):
            self.raise_if_cancelled()
        ok, value = reply[0]
        if not ok:
            raise value
        return value

    @property
    def last_heartbeat_details(self) -> Any:
        """The latest heartbeat details recorded by an earlier attempt (asked of the kernel)."""
        return self._request("last_heartbeat_details")

    def checkpoint(self, state: Any, *, background: bool = False) -> None:
        """Pickle ``state`` here and have it written durably; returns once it is journaled.

        With a checkpoint storage the worker writes the object itself and sends the kernel only
        its reference; otherwise it sends the bytes, and the kernel writes them.

        ``background`` is accepted for the same code to run anywhere, but a worker's checkpoint
        is always synchronous: sending the snapshot to the kernel is the expensive part, and the
        kernel must have it before the attempt can be said to have checkpointed.
        """
        del background
        storage = self._storage
        if storage is None:
            snapshot = CheckpointStore.snapshot(self.run_id, self.position, state)
            self._request("checkpoint", snapshot)
            return
        run_id, position = self.run_id, self.position
        ref = storage.write(
            run_id,
            position,
            self.attempt,
            lambda handle: CheckpointStore.dump_into(handle, run_id, position, state),
        )
        self._request("checkpoint_stored", ref)  # the kernel checks it is there, then journals it

    def flush_checkpoints(self) -> None:
        """Nothing to wait for: `checkpoint()` returns once the kernel wrote the file."""

    @property
    def last_checkpoint(self) -> Any:
        """The newest checkpoint of this step: read here from the storage, else by the kernel."""
        if self._storage is None:
            return self._request("last_checkpoint")
        records = self._request("checkpoint_records")
        if not all(is_url(r.path) for r in records):  # older files in the kernel's folder
            return self._request("last_checkpoint")
        storage = self._storage
        first = [records]  # the rows just read, then the kernel's again

        def rows() -> list[Any]:
            return list(first.pop() if first else self._request("checkpoint_records"))

        return first_readable(
            rows,
            self.run_id,
            self.position,
            lambda record: open_record(storage, record),
            lambda record: record.path,
        )

    @property
    def checkpoint_storage(self) -> CheckpointStorage | None:
        """Where this worker writes checkpoints itself; None: the kernel writes them."""
        return self._storage

    @property
    def task_token(self) -> str:
        """This attempt's task token; the kernel journals it before answering."""
        token: str = self._request("task_token")
        return token


class _HeartbeatSender:
    """One thread per worker process: sends the newest heartbeat of each running attempt.

    Started with the first attempt and kept: a thread started and joined per attempt cost more
    than the rest of a trivial attempt's round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held while flushing: an attempt leaves between flushes
        self._live: set[WorkerActivityContext] = set()
        self._thread: threading.Thread | None = None

    def add(self, ctx: WorkerActivityContext) -> None:
        with self._lock:
            self._live.add(ctx)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="weft-heartbeat-sender", daemon=True
                )
                self._thread.start()

    def remove(self, ctx: WorkerActivityContext) -> None:
        """Stop sending ``ctx``'s beats; returns once no flush of it is under way."""
        with self._lock:
            self._live.discard(ctx)

    def _loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SEND_INTERVAL)
            with self._lock:
                for ctx in list(self._live):
                    with contextlib.suppress(Exception):  # the kernel went away
                        ctx.flush_heartbeat()


_SENDER = _HeartbeatSender()


def run_shipped(payload: bytes, send: Send, inbox: Inbox) -> tuple[Any, ...]:
    """Run one shipped attempt; return its ``done`` message (the caller sends it)."""
    try:
        activity, value, info = pickle.loads(payload)
    except Exception as exc:  # e.g. a module the activity needs is not installed here
        return ("done", "error", _portable(exc), traceback.format_exc())
    assert isinstance(activity, ShippedActivity)
    definition = ActivityDefinition(
        name=activity.name, fn=activity.fn, arity=activity.arity, is_async=activity.is_async
    )
    ctx = WorkerActivityContext(info, send, inbox)
    inbox.attach(ctx)
    _SENDER.add(ctx)
    try:
        result: tuple[Any, ...] = ("done", "ok", call_activity(definition, value, ctx))
    except CompleteAsync:
        result = ("done", "complete_async")
    except BaseException as exc:
        result = ("done", "error", _portable(exc), traceback.format_exc())
    finally:
        _SENDER.remove(ctx)
        inbox.attach(None)
    ctx.flush_heartbeat()
    return result


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles; else a RuntimeError that keeps its type and text."""
    try:
        cloudpickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc} (the original exception does not pickle)")
    return exc


def encode_done(message: tuple[Any, ...]) -> bytes:
    """Pickle a ``done`` message; a result that does not pickle becomes the attempt's error."""
    try:
        data: bytes = cloudpickle.dumps(message)
    except Exception as exc:
        error = PayloadError(
            f"the result of activity attempt could not be sent back from the worker: "
            f"{type(exc).__name__}: {exc}. Return plain data (numbers, lists, dicts, arrays)."
        )
        data = cloudpickle.dumps(("done", "error", error, traceback.format_exc()))
    return data
