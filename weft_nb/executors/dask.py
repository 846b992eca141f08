"""DaskExecutor: attempts run as tasks on a Dask cluster (``distributed``, the ``dask`` extra).

Each attempt is one task, submitted with ``pure=False`` and ``retries=0``: weft_nb's retry policy
decides about retries, not Dask's. Its result (the ``done`` message) travels as the task's result,
on Dask's data path; the kernel wakes when the task's future completes. Everything else travels on
one channel per executor (`weft_nb.executors.dask_task` has the worker side): the worker's
messages (``started``, heartbeats, requests) are events on the executor's topic, pushed to the
kernel and routed to the attempt's channel by its name; the kernel's replies and cancellations are
calls of a handler on the attempt's worker. A short attempt costs Dask's own round trip plus one
scheduler call on the worker (taking the go-ahead); the go-ahead queues are made and
filled ahead of time, off the attempt's path.

A lost worker shows up three ways, all mapped to
[`WorkerLostError`][weft_nb.errors.WorkerLostError]: ``KilledWorker``, the task starting a second
time (Dask reschedules the tasks of a dead worker; the rerun finds no go-ahead and does not run
the activity, and weft_nb retries with a new attempt instead), or the worker the task started on
leaving the cluster (the running attempts share one worker-list query a second). A result lost
with its worker before the kernel fetched it (Dask then runs the task again) is a lost worker too:
the kernel waits for it a second at a time, checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

from weft_nb.base.extras import import_extra
from weft_nb.errors import SchedulerUnreachableError, WorkerLostError
from weft_nb.executors.dask_hub import DaskHub
from weft_nb.executors.dask_task import DELIVER, RERUN, dask_attempt
from weft_nb.executors.remote import RemoteExecutor, count_received, count_sent

if TYPE_CHECKING:
    from distributed import Client, Future

    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import ActivityDefinition

__all__ = ["DaskExecutor", "dask_attempt"]

_LIVENESS_EVERY = 1.0  # seconds between checks that the task's worker is still there
_WORKERS_MAX_AGE = 5.0  # how old the worker list may be when placing an attempt by its queue
_RERUN = RERUN
_DELIVERY_PAUSES = (0.05, 0.2, 1.0)  # seconds between the tries of a kernel-to-worker message


def _distributed() -> Any:
    return import_extra("distributed", extra="dask", feature="weft_nb.DaskExecutor")


class _DaskChannel:
    """One attempt's channel: its task's future, its go-ahead queue, the events routed to it."""

    def __init__(self, executor: DaskExecutor, ctx: ActivityContext) -> None:
        self.executor = executor
        self.ctx = ctx
        self.future: Future[bytes] | None = None
        self.worker: str | None = None
        self._arrived: deque[bytes | None] = deque()  # appended on the client's event loop
        self._buffer: list[tuple[Any, ...]] = []
        self._early: list[bytes] = []  # sent before the worker was known: sent again once it is
        self._gone = False  # the worker was lost: nothing more is sent to it
        self._next_check = time.monotonic() + _LIVENESS_EVERY
        self._wake = threading.Event()  # a message arrived, or the task ended
        self._ended = threading.Event()  # the task's result, or its error, was fetched
        self._data: bytes | None = None
        self._error: BaseException | None = None
        self._worker_messages: list[bytes] = []  # read from its queue, not yet announced
        self._undelivered: BaseException | None = None  # a message to the worker never got there
        self.queue = executor.hub.go_ahead(self)
        self.name: str = self.queue.name  # its events carry it

    def start(self, future: Future[bytes]) -> None:
        """Fetch the task's result on the client's event loop as soon as the task ends."""
        self.future = future
        loop: Any = self.executor.client.loop
        loop.add_callback(self._fetch)

    async def _fetch(self) -> None:
        """On the event loop: what it sent arrived before this ends (same stream, in order)."""
        client: Any = self.executor.client
        try:
            self._data = await client.gather(self.future, asynchronous=True)
        except BaseException as exc:  # kept: the workflow's thread raises it
            self._error = exc
        self._ended.set()
        self._wake.set()

    def arrive(self, data: bytes | None) -> None:
        """A message from the worker (None: it is on the attempt's queue); on the event loop."""
        self._arrived.append(data)
        self._wake.set()

    def poll(self, timeout: float) -> tuple[Any, ...] | None:
        deadline = time.monotonic() + timeout
        while not self._buffer:
            self._wake.clear()
            ended = self._ended.is_set()  # before the look: what it sent has arrived then
            if self._take():
                break
            if ended:
                return self._result()
            self._check()
            now = time.monotonic()
            if now >= deadline:
                return None
            self._wake.wait(min(deadline, self._next_check) - now)
        message = self._buffer.pop(0)
        if message[0] == "started":
            if len(message) > 2 or self.worker is not None:  # a rerun (see dask_attempt)
                first = self.worker or "its first worker"
                raise self._lost(f"Dask restarted it on {message[1]} after {first} was lost")
            self.worker = message[1]
            for data in self._early:  # a cancellation put on its queue after it took it
                self._deliver(data)
            return None
        return message

    def _take(self) -> bool:
        """Move what arrived into the buffer; True if there was something."""
        if not self._arrived:
            return False
        while self._arrived:
            data = self._arrived.popleft()
            if data is None:
                data = self._read_up()
            count_received(len(data))
            self._buffer.append(pickle.loads(data))
        return True

    def _read_up(self) -> bytes:
        """The worker's next message on the attempt's queue (put there before its event)."""
        if not self._worker_messages:
            with contextlib.suppress(Exception):
                for data in self.queue.get(batch=True):  # the kernel's own early ones too
                    if pickle.loads(data)[0] not in ("cancel", "reply"):
                        self._worker_messages.append(data)
        if not self._worker_messages:  # taken by a rerun of the task
            raise self._lost("a message from it was not on its queue")
        return self._worker_messages.pop(0)

    def _result(self) -> tuple[Any, ...]:
        distributed = _distributed()
        while not self._ended.wait(_LIVENESS_EVERY):
            # The worker holding the result died before the kernel fetched it: Dask runs the
            # task again ("Couldn't gather ... rescheduling"), a rerun this attempt declines.
            # Without this check the kernel would wait for that result forever.
            if self._rerun_started() or not self._worker_present():
                raise self._lost("its result was lost with its worker")
        exc, data = self._error, self._data
        if isinstance(exc, distributed.KilledWorker):
            raise self._lost(f"Dask gave up on it: {exc}")
        if isinstance(exc, distributed.CancelledError | OSError):  # cancelled, or a comm closed
            raise self._lost(f"its result could not be fetched: {exc!r}")
        if isinstance(exc, Exception):  # e.g. weft_nb is not installed on the worker
            return ("done", "error", exc, f"{type(exc).__name__}: {exc}")
        if exc is not None or data is None:  # the event loop stopped
            raise self._lost(f"its result could not be fetched: {exc!r}")
        count_received(len(data))
        message: tuple[Any, ...] = pickle.loads(data)
        if message[0] == RERUN:  # the result Dask fetched is a rerun's (see dask_attempt)
            first = self.worker or "its first worker"
            raise self._lost(f"Dask restarted it on {message[1]} after {first} was lost")
        return message

    def _rerun_started(self) -> bool:
        """Whether Dask started this attempt's task again (a rerun's ``started`` arrived)."""
        with contextlib.suppress(Exception):
            self._take()
        return any(m[0] == "started" and len(m) > 2 for m in self._buffer)

    def _worker_present(self) -> bool:
        """Whether the worker the attempt started on is in the (cached) worker list."""
        if self.worker is None:
            return True  # its ``started`` has not arrived: the future's state tells
        return self.worker in self.executor.workers(max_age=_LIVENESS_EVERY)

    def _check(self) -> None:
        if self._undelivered is not None and not self._gone:
            tries = len(_DELIVERY_PAUSES) + 1
            raise self._lost(f"a message to it failed {tries} times: {self._undelivered!r}")
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _LIVENESS_EVERY
            if self.worker is not None and not self._worker_present():
                raise self._lost(f"worker {self.worker} left the cluster")

    def send(self, message: tuple[Any, ...]) -> None:
        """Send to the worker; before it started, on the go-ahead queue it will read."""
        data = cloudpickle.dumps(message)  # an unpicklable reply raises: the caller answers so
        count_sent(len(data))
        if self.worker is None or self._gone:
            self._early.append(data)
            with contextlib.suppress(Exception):  # the scheduler went away
                self.queue.put(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        """Call the worker's handler with ``data``, through the scheduler; does not wait.

        A failed call is tried again after a short pause (delivering twice is harmless: a reply
        is taken once, a cancellation is idempotent). When every try failed, the attempt fails
        as a lost worker: the activity may be waiting for this reply, with no timeout.
        """
        client: Any = self.executor.client
        worker = self.worker
        msg = {"op": DELIVER, "attempt": self.name, "message": data}

        async def call() -> None:
            for pause in (*_DELIVERY_PAUSES, None):
                try:
                    await client.scheduler.proxy(msg=msg, worker=worker)
                    return
                except Exception as exc:
                    if pause is None or self._gone:
                        self._undelivered = exc
                        self._wake.set()
                        return
                await asyncio.sleep(pause)

        if not self._gone:
            client.loop.add_callback(call)

    def abandon(self) -> None:
        self.send(("cancel", self.ctx.cancel_reason or "abandoned"))
        with contextlib.suppress(Exception):
            if self.future is not None:
                self.future.cancel()

    def _lost(self, how: str) -> WorkerLostError:
        ctx = self.ctx
        self._gone = True  # a cancellation goes on the queue, for a rerun to read
        self.abandon()
        return WorkerLostError(
            "Dask worker",
            f"was lost: {how}",
            run_id=ctx.run_id,
            position=ctx.position,
            activity=ctx.activity_name,
            attempt=ctx.attempt,
            worker=self.worker,
        )

    def close(self) -> None:
        """Stop routing to this channel; release its queue and its task's future."""
        self.executor.hub.forget(self.name)
        with contextlib.suppress(Exception):
            self.queue.close()
        with contextlib.suppress(Exception):
            if self.future is not None:
                if not self._ended.is_set():
                    self.future.cancel()  # ends the fetch on the event loop
                self.future.release()


class DaskExecutor(RemoteExecutor):
    """Run activity attempts on a Dask cluster: ``Engine(executor=DaskExecutor(client))``.

    The kernel stays the only writer of the journal; workers send heartbeats, checkpoints and
    task-token reads back, and the kernel journals them as for an inline attempt. Needs the
    ``dask`` extra (``pip install 'weft-nb[dask]'``), and weft_nb installed on the workers.

    Args:
        client: A ``distributed.Client`` (a ``LocalCluster``'s, or one connected to a scheduler),
            or a scheduler address such as ``"tcp://10.0.0.5:8786"``. A client made here from an
            address is closed with the executor; a client you pass is left open.
        check_timeout: Seconds to wait for the scheduler (and one worker) when the engine starts;
            beyond it [`SchedulerUnreachableError`][weft_nb.errors.SchedulerUnreachableError] names
            the address.
        cancel_grace: Seconds a cancelled attempt has to return before its task is cancelled.
        queue_resources: Dask resources per activity queue, e.g. ``{"gpu": {"GPU": 1}}``. A
            queue not listed uses the resource of its own name (``{"gpu": 1}``) when some worker
            advertises it (``dask worker --resources "gpu=1"``), else runs on any worker.
    """

    def __init__(
        self,
        client: Client | str,
        *,
        check_timeout: float = 10.0,
        cancel_grace: float = 5.0,
        queue_resources: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        distributed = _distributed()
        self.check_timeout = check_timeout
        self.cancel_grace = cancel_grace
        self.queue_resources = {q: dict(r) for q, r in (queue_resources or {}).items()}
        self._owns_client = isinstance(client, str)
        self._workers_lock = threading.Lock()
        self._workers: dict[str, Any] = {}
        self._workers_at: float | None = None
        if isinstance(client, str):
            self.address = client
            try:
                self.client: Client = distributed.Client(
                    client, timeout=check_timeout, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                raise self._unreachable(exc) from None
        else:
            self.client = client
            self.address = str(getattr(client.scheduler, "address", None) or "the scheduler")
        self.hub = DaskHub(self.client)

    def _unreachable(self, exc: BaseException) -> SchedulerUnreachableError:
        return SchedulerUnreachableError(
            f"the Dask scheduler at {self.address} did not answer within {self.check_timeout:g}s "
            f"({type(exc).__name__}: {exc}). Start it (or check the address and the network), "
            "then create the engine again; nothing was written to the journal.",
            address=self.address,
        )

    def check(self) -> None:
        """Raise SchedulerUnreachableError unless the scheduler answers with a worker."""
        try:
            if self.client.status not in ("running", "connecting", "newly-created"):
                raise OSError(f"the client is {self.client.status}")
            self.client.wait_for_workers(1, timeout=self.check_timeout)
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    @contextlib.contextmanager
    def start_attempt(
        self,
        definition: ActivityDefinition,
        payload: bytes,
        ctx: ActivityContext,
        queue: str | None,
    ) -> Iterator[_DaskChannel]:
        """Submit the attempt as a task, placed by ``queue``, with a go-ahead queue of its own.

        See `RemoteExecutor.start_attempt()`. The queue and the task's future are released after
        the attempt.
        """
        nonce = uuid.uuid4().hex[:8]  # a rerun of this attempt id after a restart is another task
        key = f"weft-{definition.name}-{ctx.run_id}-{ctx.position}-{ctx.attempt}-{nonce}"
        resources = self._resources(queue)
        channel = _DaskChannel(self, ctx)
        try:
            channel.start(
                self.client.submit(
                    dask_attempt,
                    payload,
                    channel.name,
                    self.hub.topic,
                    key=key,
                    pure=False,
                    retries=0,
                    resources=resources,
                )
            )
            yield channel
        finally:
            channel.close()

    def _resources(self, queue: str | None) -> dict[str, float] | None:
        if queue is None:
            return None
        if queue in self.queue_resources:
            return self.queue_resources[queue]
        workers = self.workers(max_age=_WORKERS_MAX_AGE)
        advertised = any(queue in (w.get("resources") or {}) for w in workers.values())
        return {queue: 1} if advertised else None

    def workers(self, *, max_age: float) -> dict[str, Any]:
        """The cluster's workers (address to info), at most ``max_age`` seconds old.

        Every running attempt checks that its worker is still there, once a second: they share
        one scheduler query instead of one each.
        """
        with self._workers_lock:
            now = time.monotonic()
            if self._workers_at is None or now - self._workers_at >= max_age:
                info = self.client.scheduler_info(n_workers=-1)
                self._workers = dict(info.get("workers", {}))
                self._workers_at = time.monotonic()
            return self._workers

    def close(self) -> None:
        """Release the spare go-ahead queues and the topic; close a client made here."""
        self.hub.close()
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()
