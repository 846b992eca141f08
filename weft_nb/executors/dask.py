"""DaskExecutor: attempts run as tasks on a Dask cluster (``distributed``, the ``dask`` extra).

Each attempt is one task, submitted with ``pure=False`` and ``retries=0``: weft_nb's retry policy
decides about retries, not Dask's. Messages travel on two ``distributed.Queue`` objects named
after the attempt (worker to kernel: ``started``, heartbeats, requests; kernel to worker: the
go-ahead, put before the task is submitted, then replies and cancellation). The result travels as
the task's result, on Dask's data path: the kernel wakes when the task's future completes, and the
attempts running at once share one worker-list query a second for their liveness checks. A short
attempt costs Dask's own round trip plus a few queue calls on the scheduler.

A lost worker shows up three ways, all mapped to
[`WorkerLostError`][weft_nb.errors.WorkerLostError]: ``KilledWorker``, the task starting a second
time (Dask reschedules the tasks of a dead worker; the rerun finds no go-ahead and does not run
the activity, and weft_nb retries with a new attempt instead), or the worker the task started on
leaving the cluster. A result lost with its worker before the kernel fetched it (Dask then runs
the task again) is a lost worker too: the kernel waits for it a second at a time, checking.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

from weft_nb.base.extras import import_extra
from weft_nb.errors import SchedulerUnreachableError, WorkerLostError
from weft_nb.executors.remote import RemoteExecutor, count_received, count_sent
from weft_nb.executors.worker import Inbox, encode_done, run_shipped

if TYPE_CHECKING:
    from distributed import Client, Future, Queue

    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import ActivityDefinition

_LIVENESS_EVERY = 1.0  # seconds between checks that the task's worker is still there
_MIN_POLL = 0.01  # the kernel's first pause between looks at an attempt's queue
_MAX_PAUSE = 0.04  # a finished task wakes the kernel at once; these pace heartbeats and requests
_READER_POLL = 0.1  # how soon a worker sees a cancellation
_READER_POLL_BUSY = 0.001  # while it waits for a reply (the go-ahead, a checkpoint, a token)
_WORKERS_MAX_AGE = 5.0  # how old the worker list may be when placing an attempt by its queue


def _distributed() -> Any:
    return import_extra("distributed", extra="dask", feature="weft_nb.DaskExecutor")


_RERUN = "weft-dask-rerun"  # a rerun's result: the kernel fails the attempt as a lost worker


def dask_attempt(payload: bytes, out_name: str, in_name: str) -> bytes:
    """The task run on a Dask worker for one attempt; returns its pickled ``done`` message.

    The kernel puts a go-ahead on the attempt's incoming queue before it submits the task. Dask
    reruns the tasks of a lost worker; only the first start of an attempt finds the go-ahead and
    runs it. A rerun says so and returns at once, never waiting for the kernel (which may have
    given up on the attempt, or finished with it), and the kernel fails the attempt with
    WorkerLostError and retries it by its policy. Reporting the worker's address, reading the
    kernel's later messages and releasing the queues happen on a reader thread, off the path of
    a short attempt.
    """
    from distributed import Queue, get_worker

    incoming = Queue(in_name)
    inbox, stop, ready = Inbox(one_attempt=True), threading.Event(), threading.Event()
    address = get_worker().address
    outs: list[Queue] = []

    def send(message: tuple[Any, ...]) -> None:
        ready.wait()
        if not outs:
            raise OSError("the kernel's channel to this attempt is gone")
        outs[0].put(cloudpickle.dumps(message))

    go, _ = inbox.expect(0)
    for raw in incoming.get(batch=True):
        inbox.deliver(pickle.loads(raw))
    if not go.is_set():  # a rerun: the first start took the go-ahead
        with contextlib.suppress(Exception):  # the kernel may have released it already
            outs.append(Queue(out_name))
            outs[0].put(cloudpickle.dumps(("started", address, "rerun")))
        _release(*outs, incoming)
        return pickle.dumps((_RERUN, address))

    def read() -> None:
        # Polls with qsize() instead of a blocking get(timeout): a get still waiting in the
        # scheduler when the kernel releases the queue is logged there as an error.
        try:
            try:
                outs.append(Queue(out_name))
            finally:
                ready.set()
            send(("started", address))
            while not stop.is_set():
                if incoming.qsize():
                    for raw in incoming.get(batch=True):
                        inbox.deliver(pickle.loads(raw))
                stop.wait(_READER_POLL_BUSY if inbox.pending() else _READER_POLL)
        except Exception:  # the kernel released the queue or went away: nobody to answer
            inbox.deliver(("cancel", "the kernel's channel to this attempt is gone"))
        _release(*outs, incoming)

    reader = threading.Thread(target=read, name="weft-dask-reader", daemon=True)
    reader.start()
    try:
        return encode_done(run_shipped(payload, send, inbox))
    finally:
        stop.set()  # the reader releases the queues as it leaves; nobody waits for it


def _release(*queues: Queue) -> None:
    for queue in queues:  # each Queue() here took a reference on the scheduler
        with contextlib.suppress(Exception):
            queue.close()


class _DaskChannel:
    """One attempt's channel: its task's future and its two queues."""

    def __init__(
        self,
        executor: DaskExecutor,
        future: Future[bytes],
        out: Queue,
        incoming: Queue,
        ctx: ActivityContext,
    ) -> None:
        self.executor = executor
        self.future = future
        self.out = out
        self.incoming = incoming
        self.ctx = ctx
        self.worker: str | None = None
        self._buffer: list[tuple[Any, ...]] = []
        self._next_check = time.monotonic() + _LIVENESS_EVERY
        # Set when the task ends: a wait wakes at once instead of at its next look at the queue.
        self._ended = threading.Event()
        future.add_done_callback(lambda _: self._ended.set())

    def poll(self, timeout: float) -> tuple[Any, ...] | None:
        # qsize() then get(batch=True), never a get(timeout) that may time out: the scheduler
        # logs every such timeout as an error.
        deadline = time.monotonic() + timeout
        pause = _MIN_POLL
        while not self._buffer:
            ended = self._ended.is_set()  # before the look: what it sent is in the queue then
            if self._drain():
                break
            if ended:
                return self._result()  # its messages are read: put() returns once queued
            checked = self._check()
            if checked is not None:
                return checked
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._ended.wait(min(pause, left))
            pause = min(pause * 2, _MAX_PAUSE)
        message = self._buffer.pop(0)
        if message[0] == "started":
            if len(message) > 2 or self.worker is not None:  # a rerun (see dask_attempt)
                first = self.worker or "its first worker"
                raise self._lost(f"Dask restarted it on {message[1]} after {first} was lost")
            self.worker = message[1]
            return None
        return message

    def _drain(self) -> bool:
        """Move what the worker sent into the buffer; True if there was something."""
        if not self.out.qsize():
            return False
        for raw in self.out.get(batch=True):
            count_received(len(raw))
            self._buffer.append(pickle.loads(raw))
        return True

    def _result(self) -> tuple[Any, ...]:
        distributed = _distributed()
        while True:
            try:
                data = self.future.result(timeout=_LIVENESS_EVERY)
                break
            except distributed.TimeoutError:
                # The worker holding the result died before the kernel fetched it: Dask runs the
                # task again ("Couldn't gather ... rescheduling"), a rerun this attempt declines.
                # Without this check the kernel would wait for that result forever.
                if self._rerun_started() or not self._worker_present():
                    raise self._lost("its result was lost with its worker") from None
            except distributed.KilledWorker as exc:
                raise self._lost(f"Dask gave up on it: {exc}") from None
            except (distributed.CancelledError, OSError) as exc:  # cancelled, or a comm closed
                raise self._lost(f"its result could not be fetched: {exc!r}") from None
            except Exception as exc:  # e.g. weft_nb is not installed on the worker
                return ("done", "error", exc, f"{type(exc).__name__}: {exc}")
        count_received(len(data))
        message: tuple[Any, ...] = pickle.loads(data)
        if message[0] == _RERUN:  # the result Dask fetched is a rerun's (see dask_attempt)
            first = self.worker or "its first worker"
            raise self._lost(f"Dask restarted it on {message[1]} after {first} was lost")
        return message

    def _rerun_started(self) -> bool:
        """Whether Dask started this attempt's task again (a rerun's ``started`` arrived)."""
        with contextlib.suppress(Exception):
            self._drain()
        return any(m[0] == "started" and len(m) > 2 for m in self._buffer)

    def _worker_present(self) -> bool:
        """Whether the worker the attempt started on is in the (cached) worker list."""
        if self.worker is None:
            return True  # its ``started`` has not arrived: the future's state tells
        return self.worker in self.executor.workers(max_age=_LIVENESS_EVERY)

    def _check(self) -> tuple[Any, ...] | None:
        status = self.future.status
        if status == "error":  # a finished task wakes poll() through its done callback
            return self._result()
        if status == "cancelled":
            raise self._lost("its task was cancelled by the scheduler")
        now = time.monotonic()
        if self.worker is not None and now >= self._next_check:
            self._next_check = now + _LIVENESS_EVERY
            if not self._worker_present():
                raise self._lost(f"worker {self.worker} left the cluster")
        return None

    def send(self, message: tuple[Any, ...]) -> None:
        data = cloudpickle.dumps(message)  # an unpicklable reply raises: the caller answers so
        count_sent(len(data))
        with contextlib.suppress(Exception):  # the worker or the scheduler went away
            self.incoming.put(data)

    def abandon(self) -> None:
        self.send(("cancel", self.ctx.cancel_reason or "abandoned"))
        with contextlib.suppress(Exception):
            self.future.cancel()

    def _lost(self, how: str) -> WorkerLostError:
        ctx = self.ctx
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
        for queue in (self.out, self.incoming):
            with contextlib.suppress(Exception):
                queue.close()
        with contextlib.suppress(Exception):
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
        """Submit the attempt as a task, placed by ``queue``, with its two message queues.

        See `RemoteExecutor.start_attempt()`. The queues and the task's future are released
        after the attempt.
        """
        distributed = _distributed()
        nonce = uuid.uuid4().hex[:8]  # a rerun of this attempt id after a restart is another task
        key = f"weft-{definition.name}-{ctx.run_id}-{ctx.position}-{ctx.attempt}-{nonce}"
        out = distributed.Queue(f"{key}-out", client=self.client)
        incoming = distributed.Queue(f"{key}-in", client=self.client)
        incoming.put(cloudpickle.dumps(("reply", 0, True, None)))  # the go-ahead: dask_attempt
        future = self.client.submit(
            dask_attempt,
            payload,
            out.name,
            incoming.name,
            key=key,
            pure=False,
            retries=0,
            resources=self._resources(queue),
        )
        channel = _DaskChannel(self, future, out, incoming, ctx)
        try:
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
        """Close the client if this executor created it from an address."""
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()
