"""Background checkpoints: ``checkpoint(state, background=True)`` writes on a thread of its own.

``checkpoint(state, background=True)`` pickles ``state`` into memory on the caller's thread (the
snapshot: later changes to ``state`` do not leak into it) and hands the bytes to a
`BackgroundWriter`, which writes them through the checkpoint store on its own thread. If a newer
snapshot arrives while one is still waiting, the waiting one is dropped (latest wins), so a fast
training loop never queues up hundreds of megabytes. The attempt's end waits for the writer, so
a retry always sees the newest checkpoint.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class _SavesSnapshots(Protocol):
    def save_snapshot(self, run_id: str, position: int, attempt: int, data: bytes) -> Any: ...


class BackgroundWriter:
    """Writes one step's checkpoint snapshots on a thread of its own, newest first.

    At most one snapshot waits while another is written; a newer one replaces it. A failed
    write is raised by the next `submit()` or `flush()`, on the activity's thread.
    """

    def __init__(self, store: _SavesSnapshots, run_id: str, position: int, attempt: int) -> None:
        self._store = store
        self._key = (run_id, position, attempt)
        self._cond = threading.Condition()
        self._waiting: bytes | None = None
        self._busy = False
        self._error: BaseException | None = None
        self.dropped = 0  # snapshots replaced by newer ones before they were written

    def submit(self, data: bytes) -> None:
        """Queue a snapshot for writing; returns at once."""
        with self._cond:
            self._raise_error()
            if self._waiting is not None:
                self.dropped += 1
            self._waiting = data
            if not self._busy:
                self._busy = True
                threading.Thread(target=self._drain, name="weft-checkpoint", daemon=True).start()

    def flush(self) -> None:
        """Wait until every queued snapshot is durable; raise a failed write's error."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _drain(self) -> None:
        while True:
            with self._cond:
                data, self._waiting = self._waiting, None
                if data is None:
                    self._busy = False
                    self._cond.notify_all()
                    return
            try:
                self._store.save_snapshot(*self._key, data)
            except BaseException as exc:  # surfaced on the activity's thread
                with self._cond:
                    self._error = exc
