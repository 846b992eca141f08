"""The Dask task of one attempt, on the worker: take the go-ahead, run the activity, report back.

The kernel talks to its attempts on one executor-wide channel instead of two queues per attempt:

- worker to kernel: the executor's event topic (``Worker.log_event``, sent on the worker's stream
  to the scheduler, which pushes it to the kernel's subscription), each event ``[attempt, data]``.
  It costs the task no round trip, and arrives before the task's result (both travel on the same
  streams, in order). A message over `BIG` bytes (a checkpoint without a checkpoint storage) goes
  on the attempt's queue instead, announced by an event with no data: the scheduler keeps a
  topic's last events, which must stay small;
- kernel to worker (replies, cancellation): a call of the `DELIVER` handler this task installs on
  its worker, through the scheduler's ``proxy``: pushed, no reader thread polling a queue.

What a lost worker needs: Dask starts a task again when its worker dies, and that rerun must not
run the activity a second time (weft_nb retries the attempt by its policy instead). The kernel puts
a go-ahead on the attempt's own queue before the task starts; the task takes the queue's contents
in one scheduler call, and only the first start finds the go-ahead. A rerun finds it gone (or the
queue released by a kernel done with the attempt), says so, and returns at once without running
anything; a cancellation put on that queue before the task started arrives with the go-ahead.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle

from weft_nb.executors.worker import Inbox, encode_done, run_shipped

RERUN = "weft-dask-rerun"  # a rerun's result: the kernel fails the attempt as a lost worker
DELIVER = "weft_nb_deliver"  # the worker handler the kernel's messages arrive by
BIG = 4096  # bytes; a longer message travels on a queue, not on the event topic
ANNOUNCE_AFTER = 0.05  # seconds: an attempt still running by then tells the kernel its worker

_inboxes: dict[str, Inbox] = {}  # the attempts running on this worker process, by channel name
_inboxes_lock = threading.Lock()


def deliver(attempt: str, message: bytes) -> None:
    """The `DELIVER` handler: route a kernel message to its attempt; drop one that ended."""
    with _inboxes_lock:
        inbox = _inboxes.get(attempt)
    if inbox is not None:
        inbox.deliver(pickle.loads(message))


def dask_attempt(payload: bytes, attempt: str, topic: str) -> bytes:
    """The task run on a Dask worker for one attempt; returns its pickled ``done`` message.

    ``attempt`` names the attempt's go-ahead queue and its messages on ``topic``.
    """
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    worker.handlers.setdefault(DELIVER, deliver)
    address = worker.address

    def call(handler: str, **kwargs: Any) -> Any:
        return sync(worker.loop, getattr(worker.scheduler, handler), **kwargs)

    def log(message: tuple[Any, ...]) -> None:
        data = cloudpickle.dumps(message)
        if len(data) > BIG:  # on the attempt's queue, which the kernel reads when told
            call("queue_put", name=attempt, data=data)
            worker.log_event(topic, [attempt, None])
        else:
            worker.log_event(topic, [attempt, data])

    # ``started`` is sent only by an attempt still running after ANNOUNCE_AFTER, or before its
    # first message: on the worker's batched stream, an event just before the task's end would
    # hold that end back for the stream's interval (and the scheduler's stream to the kernel
    # again). A short attempt's result says all the kernel needs.
    announcing = threading.Lock()
    announced: list[bool] = []  # [False]: it ended unannounced; [True]: started was sent

    def announce() -> None:
        with announcing:  # held while logging: started goes before any message of the attempt
            if not announced:
                announced.append(True)
                log(("started", address))

    def send(message: tuple[Any, ...]) -> None:
        announce()
        log(message)

    inbox = Inbox(one_attempt=True)
    go, _ = inbox.expect(0)
    with _inboxes_lock:
        _inboxes[attempt] = inbox
    try:
        try:
            records = call("queue_get", name=attempt, batch=True)
        except Exception:  # the kernel released the queue: it is done with this attempt
            records = []
        for record in records:
            inbox.deliver(pickle.loads(record["value"]))
        if not go.is_set():  # a rerun: the first start took the go-ahead
            log(("started", address, "rerun"))
            return pickle.dumps((RERUN, address))
        worker.loop.add_callback(worker.loop.call_later, ANNOUNCE_AFTER, announce)
        return encode_done(run_shipped(payload, send, inbox))
    finally:
        with announcing:
            if not announced:
                announced.append(False)
        with _inboxes_lock:
            _inboxes.pop(attempt, None)
