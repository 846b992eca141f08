"""The heartbeat flusher: moves the latest heartbeat details of live attempts into the journal.

``ActivityContext.heartbeat()`` only stores a reference, a count and (every few beats in a fast
loop, see `ActivityContext.settle_beats()`) a timestamp, so it never blocks on disk or a lock.
This thread wakes once per interval, serialises the newest details of every attempt that
heartbeated since its last visit, and appends them in one transaction. When an attempt ends, the
engine takes its final details with `HeartbeatFlusher.finish()` and commits them together with
the step's outcome, so the journal's last heartbeat of a finished attempt is always exact.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from typing import TYPE_CHECKING

from weft_nb.base import evidence
from weft_nb.base.operational import QuietLogger
from weft_nb.base.payloads import encode
from weft_nb.errors import JournalClosedError, PayloadError
from weft_nb.journal.protocol import HeartbeatRecord, Journal

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.clock import Clock

_MAX_DETAILS_BYTES = 1024 * 1024

_LOG = QuietLogger("weft_nb.activity")


class HeartbeatFlusher:
    """One background thread per engine."""

    def __init__(
        self, journal: Journal, clock: Clock, interval: float, idle_release: float = 1.0
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.interval = interval
        self.idle_release = idle_release
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time; finish() waits for it
        self._live: dict[ActivityContext, int] = {}  # context -> heartbeat_count last written
        self._warned: set[str] = set()
        self._first_seen: dict[ActivityContext, bool] = {}  # for the evidence log only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="weft-heartbeats", daemon=True)
        self._thread.start()

    def track(self, ctx: ActivityContext) -> None:
        """Start watching an attempt."""
        with self._lock:
            self._live[ctx] = ctx.heartbeat_count
            self._first_seen[ctx] = False

    def _record(self, ctx: ActivityContext) -> HeartbeatRecord | None:
        ctx.settle_beats()  # a time for the latest beats of a fast loop
        beat = ctx.heartbeat_count  # read before the details: never newer than them
        if (
            evidence.ENABLED
            and ctx.first_heartbeat_at is not None
            and not self._first_seen.get(ctx)
        ):
            self._first_seen[ctx] = True
            _record_first_heartbeat(ctx)
        details = ctx.details
        if details is None:
            return None
        try:
            codec, data = encode(
                details,
                what=f"heartbeat details of {ctx.activity_name!r}",
                max_bytes=_MAX_DETAILS_BYTES,
            )
        except PayloadError as exc:
            if ctx.activity_name not in self._warned:
                self._warned.add(ctx.activity_name)
                warnings.warn(str(exc), RuntimeWarning, stacklevel=1)
            return None
        return HeartbeatRecord(
            run_id=ctx.run_id,
            position=ctx.position,
            attempt=ctx.attempt,
            recorded_at=ctx.last_heartbeat_at,
            codec=codec,
            details=data,
            beat=beat,
            activity=ctx.activity_name,
        )

    def finish(self, ctx: ActivityContext) -> HeartbeatRecord | None:
        """Stop watching an attempt; return its unwritten final details, if any.

        Waits for a flush in progress, so no older row of this attempt can be committed after
        the final one that the caller commits with the attempt's outcome.
        """
        with self._flush_lock, self._lock:
            written = self._live.pop(ctx, None)
            seen = self._first_seen.pop(ctx, True)
        if evidence.ENABLED and not seen and ctx.first_heartbeat_at is not None:
            _record_first_heartbeat(ctx)
        if written is None or written == ctx.heartbeat_count:
            return None
        return self._record(ctx)

    def flush(self) -> None:
        """Write every attempt's newest unwritten details now."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending = [
                (ctx, ctx.heartbeat_count)
                for ctx, n in self._live.items()
                if n != ctx.heartbeat_count
            ]
        records = []
        for ctx, _count in pending:
            record = self._record(ctx)
            if record is not None:
                records.append(record)
        if records:
            with contextlib.suppress(JournalClosedError):
                self.journal.record_heartbeats(records)
        # Only now are they written: after a failed commit, finish() still returns the final
        # details, to be committed with the attempt's outcome.
        with self._lock:
            for ctx, count in pending:
                if ctx in self._live:
                    self._live[ctx] = count

    def _loop(self) -> None:
        # One thread, two chores: flush every `interval`; release the journal file when idle.
        tick = max(0.005, min(self.interval, self.idle_release / 2))
        next_flush = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            try:
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.interval
                    self.flush()
                self.journal.release_if_idle(self.idle_release)
            except JournalClosedError:
                return
            except Exception as exc:
                # Operational, on a background thread, every interval: a log, not a warning.
                _LOG.warning("weft_nb could not write heartbeats: %s", exc)

    def stop(self, *, flush: bool) -> None:
        """Stop the thread, writing what is buffered first when ``flush`` is true."""
        self._stop.set()
        self._thread.join(timeout=5)
        if flush:
            self.flush()


def _record_first_heartbeat(ctx: ActivityContext) -> None:
    """Note an attempt's first heartbeat in the chaos evidence (`weft_nb.base.evidence`)."""
    evidence.record(
        "first_heartbeat",
        run_id=ctx.run_id,
        position=ctx.position,
        attempt=ctx.attempt,
        at=ctx.first_heartbeat_at,
    )
