"""ProcessExecutor: attempts run in a pool of local worker processes, outside the kernel's GIL.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies, the whole pool
is marked broken and every attempt in it fails. Here each worker is a fresh Python process with
its own socket, owned by one attempt at a time, so a worker that dies (a segfault, the OOM killer)
or is killed on a timeout fails only that attempt, and the next attempt gets a fresh process.

Why ``subprocess`` rather than ``multiprocessing``: forking would copy the kernel's threads and
its DuckDB handle, and the ``spawn`` method re-runs the parent's main script in every worker (a
script without an ``if __name__ == "__main__":`` guard would start its engine again there). A
worker is ``python -c`` running `worker_main()` on an inherited socket, with the kernel's
``sys.path`` and working directory, so it imports what the kernel imports.

A worker exits by itself when its pipe closes, so a killed kernel leaves no worker behind that
could report a stale result.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import cloudpickle

from weft_nb.errors import WorkerLostError
from weft_nb.executors.remote import TICK, RemoteExecutor, count_received, count_sent
from weft_nb.executors.worker import Inbox, encode_done, run_shipped

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import ActivityDefinition

_SLOT_POLL = 0.05
_WORKER_CODE = (
    "import sys; from multiprocessing.connection import Connection; "
    "from weft_nb.executors.process import worker_main; worker_main(Connection(int(sys.argv[1])))"
)


def worker_main(conn: Connection) -> None:
    """A worker process: run attempts sent on ``conn`` one at a time, until it closes.

    No thread hands tasks over: the main thread reads the socket between attempts and runs what
    it reads at once (a reader thread's hand-off cost two thread wake-ups per attempt, more than
    the rest of a trivial attempt's round trip). While an attempt runs, `_SocketInbox` reads.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel, not for us
    inbox = _SocketInbox(conn)
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = cloudpickle.dumps(message)
        with lock:
            conn.send_bytes(data)

    threading.Thread(target=inbox.watch, name="weft-worker-inbox", daemon=True).start()
    inbox.reading.acquire()
    while True:
        message = _receive(conn)
        if message[0] != "task":
            inbox.deliver(message)  # late: its attempt ended (a cancellation is dropped)
            continue
        inbox.reading.release()
        try:
            result = run_shipped(message[1], send, inbox)
        finally:
            inbox.reading.acquire()  # before the result goes: only this thread reads the next task
        done = encode_done(result)
        with lock:
            conn.send_bytes(done)


def _receive(conn: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        os._exit(0)  # the kernel is gone: nobody would read our result
    return message


class _SocketInbox(Inbox):
    """A worker process's inbox, read from the socket by the threads that need a message.

    Whoever holds ``reading`` may read the socket: the main thread between attempts (the next
    task); during an attempt, a thread waiting for the reply to its request (`wait()`), and the
    `watch()` thread, which looks every ``TICK`` seconds for a cancellation.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.reading = threading.Lock()

    def wait(self, arrived: threading.Event, timeout: float) -> bool:
        """Read the socket until ``arrived`` is set (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not arrived.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.reading.acquire(timeout=left):
                try:
                    if not arrived.is_set() and self.conn.poll(left):
                        self.deliver(_receive(self.conn))
                finally:
                    self.reading.release()
        return True

    def watch(self) -> None:
        """Deliver what arrives while an attempt runs, a cancellation above all (a thread)."""
        while True:
            time.sleep(TICK)
            if self.reading.acquire(blocking=False):
                try:
                    while self.conn.poll(0):
                        self.deliver(_receive(self.conn))
                finally:
                    self.reading.release()


class _Worker:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.poller = select.poll()  # one poll() call per wait (Connection.poll builds a selector)
        self.poller.register(self.conn.fileno(), select.POLLIN)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.wait(5)
        with contextlib.suppress(Exception):
            self.conn.close()


class _ProcessChannel:
    """One attempt's channel to the worker process that owns it."""

    def __init__(self, worker: _Worker, ctx: ActivityContext) -> None:
        self.worker = worker
        self.ctx = ctx
        self.lost = False

    def poll(self, timeout: float) -> tuple[Any, ...] | None:
        worker = self.worker
        try:
            if not worker.poller.poll(math.ceil(timeout * 1000)):
                return None
            raw = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self.lost = True
            raise self._lost_error() from None
        count_received(len(raw))
        message: tuple[Any, ...] = pickle.loads(raw)
        return message

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_bytes(cloudpickle.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        """Send a message pickled already."""
        count_sent(len(data))
        with contextlib.suppress(OSError):  # a dead worker shows up in poll()
            self.worker.conn.send_bytes(data)

    def abandon(self) -> None:
        self.lost = True
        self.worker.kill()

    def _lost_error(self) -> WorkerLostError:
        process, ctx = self.worker.process, self.ctx
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1)
        code = process.returncode
        if code is None:
            how = "stopped answering"
        elif code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        return WorkerLostError(
            f"worker process (pid {process.pid})",
            f"{how}: out of memory, a crash in native code, or killed from outside",
            run_id=ctx.run_id,
            position=ctx.position,
            activity=ctx.activity_name,
            attempt=ctx.attempt,
            pid=process.pid,
            exitcode=code,
        )


class ProcessExecutor(RemoteExecutor):
    """Run activity attempts in local worker processes (``Engine(executor=ProcessExecutor(4))``).

    Activities run outside the kernel's GIL, so CPU-bound pure-Python work runs in parallel
    (``ctx.all``/``ctx.submit``). A per-attempt ``timeout`` or ``heartbeat_timeout`` is enforced
    hard: the worker is killed and replaced and the attempt fails with the timeout error. A worker
    that dies fails only its attempt, with [`WorkerLostError`][weft_nb.errors.WorkerLostError],
    which is retried per the activity's policy. Activities and their inputs are pickled with
    cloudpickle, so functions defined in the notebook travel (see the scaling-out guide for what
    does not).

    Args:
        max_workers: Worker processes at most (started on demand); default ``os.cpu_count()``.
        cancel_grace: Seconds a cancelled attempt (its run cancelled) has to return after its
            ``cancelled`` is set, before its worker is killed. Closing the engine (or this
            executor) kills busy workers at once: the journal keeps the attempt resumable.
    """

    def __init__(self, max_workers: int | None = None, *, cancel_grace: float = 5.0) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1; got {max_workers}")
        self.cancel_grace = cancel_grace
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        atexit.register(_close_quietly, weakref.ref(self))  # no worker outlives the interpreter

    @contextlib.contextmanager
    def start_attempt(
        self,
        definition: ActivityDefinition,
        payload: bytes,
        ctx: ActivityContext,
        queue: str | None,
    ) -> Iterator[_ProcessChannel | None]:
        """Send the attempt to an idle (or new) worker process once one of the slots is free.

        See `RemoteExecutor.start_attempt()`. The worker goes back to the idle workers
        after the attempt, unless it was lost or abandoned (then it is killed).
        """
        del definition, queue  # every worker process runs any activity
        while not self._slots.acquire(timeout=_SLOT_POLL):
            if ctx.cancelled.is_set():
                yield None
                return
        try:
            worker = self._take()
            channel = _ProcessChannel(worker, ctx)
            channel.send_bytes(pickle.dumps(("task", payload), pickle.HIGHEST_PROTOCOL))
            try:
                yield channel
            finally:
                self._give_back(worker, healthy=not channel.lost)
        finally:
            self._slots.release()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._workers.discard(worker)
                worker.kill()
        worker = _Worker()
        with self._lock:
            self._workers.add(worker)
        return worker

    def _give_back(self, worker: _Worker, *, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._idle.append(worker)
                return
            self._workers.discard(worker)
        worker.kill()

    def worker_pids(self) -> list[int]:
        """The process ids of the live worker processes (for monitoring and tests)."""
        with self._lock:
            return [w.process.pid for w in self._workers]

    def close(self) -> None:
        """Kill every worker process (a later attempt starts new ones)."""
        with self._lock:
            workers, self._idle = list(self._workers), []
            self._workers.clear()
        for worker in workers:
            worker.kill()


def _close_quietly(ref: weakref.ref[ProcessExecutor]) -> None:
    executor = ref()
    if executor is not None:
        executor.close()
