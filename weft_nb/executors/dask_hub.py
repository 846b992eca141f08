"""The kernel's end of DaskExecutor's executor-wide channel: one event topic, go-ahead queues.

Every attempt of a `DaskExecutor` reports on the executor's event topic (see
`weft_nb.executors.dask_task`); the hub subscribes to it once, before the first task is submitted
(on the client's stream, so the subscription is in place before any task can send), and routes
each event by the attempt's name to the channel registered under it. An event for a name that is
not registered (an attempt that ended, or a rerun of one) is dropped: nothing late is read.

It also keeps a couple of go-ahead queues made and filled ahead of time, on a thread of its own:
the scheduler calls that make an attempt's queue are then off the attempt's path.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle

from weft_nb.base.extras import import_extra

if TYPE_CHECKING:
    from distributed import Client

Queue = Any  # a distributed.Queue (untyped there); distributed is imported where used

SPARE = 2  # go-ahead queues made ahead of the attempts that will take them
GO_AHEAD = cloudpickle.dumps(("reply", 0, True, None))  # request 0 of every Dask attempt


class Recipient(Protocol):
    """What the hub routes an attempt's events to."""

    def arrive(self, data: bytes | None) -> None:
        """A message from the worker (called on the client's event loop)."""


class DaskHub:
    """Routes one executor's events to its attempts' channels; hands out go-ahead queues."""

    def __init__(self, client: Client) -> None:
        self.client: Any = client  # distributed.Client, largely untyped
        self.topic = f"weft-nb-{uuid.uuid4().hex}"
        self._recipients: dict[str, Recipient] = {}
        self._subscribed = False
        self._subscribing = threading.Lock()
        self._spare: deque[Queue] = deque()  # go-ahead queues, made and filled
        self._lock = threading.Lock()
        self._needed = threading.Condition(self._lock)  # an attempt took a spare queue
        self._filler: threading.Thread | None = None
        self._closed = False

    def go_ahead(self, recipient: Recipient) -> Queue:
        """A go-ahead queue for the next attempt, whose events now go to ``recipient``."""
        if not self._subscribed:
            self._subscribe()
        with self._lock:
            queue = self._spare.popleft() if self._spare else None
            if self._filler is None:
                self._filler = threading.Thread(target=self._fill, name="weft-dask-go", daemon=True)
                self._filler.start()
            self._needed.notify()
        if queue is None:
            queue = self._make()
        with self._lock:
            self._recipients[queue.name] = recipient
        return queue

    def _subscribe(self) -> None:
        """Subscribe to the topic before the first submit, on the same stream: no event is missed.

        Every attempt waits for it: one that submitted while another was still subscribing would
        send events that reach nobody (its requests would never be answered).
        """
        with self._subscribing:
            if not self._subscribed:
                self.client.subscribe_topic(self.topic, self._on_event)
                self._subscribed = True

    def _make(self) -> Queue:
        distributed = import_extra("distributed", extra="dask", feature="weft_nb.DaskExecutor")
        queue: Queue = distributed.Queue(f"weft-go-{uuid.uuid4().hex}", client=self.client)
        queue.put(GO_AHEAD)
        return queue

    def _fill(self) -> None:
        """Keep `SPARE` go-ahead queues made, on a thread of its own: off any attempt's path."""
        while True:
            with self._needed:
                while not self._closed and len(self._spare) >= SPARE:
                    self._needed.wait()
                if self._closed:
                    return
            try:
                queue = self._make()
            except Exception:  # the scheduler went away: attempts make their own, as it did
                with self._lock:
                    self._filler = None
                return
            if not self._keep(queue):  # made while the executor closed
                with contextlib.suppress(Exception):
                    queue.close()
                return

    def _keep(self, queue: Queue) -> bool:
        """Add ``queue`` to the spare ones unless the hub closed; whether it did."""
        with self._lock:
            if not self._closed:
                self._spare.append(queue)
            return not self._closed

    def _on_event(self, event: tuple[float, Any]) -> None:
        name, data = event[1]
        recipient = self._recipients.get(name)
        if recipient is not None:
            recipient.arrive(data)

    def forget(self, name: str) -> None:
        """Route nothing more to the attempt ``name``."""
        with self._lock:
            self._recipients.pop(name, None)

    def close(self) -> None:
        """Release the spare go-ahead queues and leave the topic."""
        with self._lock:
            self._closed = True
            self._needed.notify()
            spare, self._spare = list(self._spare), deque()
        for queue in spare:
            with contextlib.suppress(Exception):
                queue.close()
        if self._subscribed:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.topic)
