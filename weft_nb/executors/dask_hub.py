"""The kernel's end of DaskExecutor's executor-wide channel: one event topic, go-ahead queues.

Every attempt of a `DaskExecutor` reports on the executor's event topic (see
`weft_nb.executors.dask_task`); the hub subscribes to it once, before the first task is submitted
(on the client's stream, so the subscription is in place before any task can send), and routes
each event by the attempt's name to the channel registered under it. An event for a name that is
not registered (an attempt that ended, or a rerun of one) is dropped: nothing late is read.

It also keeps a couple of go-ahead queues made and filled ahead of time, on the client's event
loop: the scheduler calls that make an attempt's queue are then off the attempt's path.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle

if TYPE_CHECKING:
    from distributed import Client

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
        self._spare: deque[str] = deque()  # go-ahead queues, made and filled
        self._filling = False
        self._lock = threading.Lock()

    def go_ahead(self, recipient: Recipient) -> str:
        """A go-ahead queue for the next attempt, whose events now go to ``recipient``."""
        with self._lock:
            subscribe, self._subscribed = not self._subscribed, True
        if subscribe:
            self.client.subscribe_topic(self.topic, self._on_event)
        try:
            name = self._spare.popleft()
        except IndexError:
            name = self.client.sync(self._make)
        with self._lock:
            self._recipients[name] = recipient
            fill, self._filling = not self._filling, True
        if fill:
            loop: Any = self.client.loop
            loop.add_callback(self._fill)
        return name

    async def _make(self) -> str:
        name = f"weft-go-{uuid.uuid4().hex}"
        scheduler: Any = self.client.scheduler
        await scheduler.queue_create(name=name)
        await scheduler.queue_put(name=name, data=GO_AHEAD)
        return name

    async def _fill(self) -> None:
        try:
            while len(self._spare) < SPARE:
                self._spare.append(await self._make())
        except Exception:  # the scheduler went away; an attempt makes its own queue then
            pass
        finally:
            with self._lock:
                self._filling = False

    def _on_event(self, event: tuple[float, Any]) -> None:
        name, data = event[1]
        recipient = self._recipients.get(name)
        if recipient is not None:
            recipient.arrive(data)

    def forget(self, name: str) -> None:
        """Route nothing more to the attempt ``name``; release its go-ahead queue."""
        with self._lock:
            self._recipients.pop(name, None)
        self.release_queue(name)

    def release_queue(self, name: str) -> None:
        """Drop the kernel's reference to a queue on the scheduler (as ``Queue.close()``)."""
        with contextlib.suppress(Exception):
            self.client._send_to_scheduler({"op": "queue_release", "name": name})

    def close(self) -> None:
        """Release the spare go-ahead queues and leave the topic."""
        while self._spare:
            self.release_queue(self._spare.popleft())
        if self._subscribed:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.topic)
