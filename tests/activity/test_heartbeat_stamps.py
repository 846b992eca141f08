"""heartbeat() in a fast loop reads the clock only every few beats; nothing it reports is lost.

A beat that read no clock still counts: the watchdog and the flusher date such trailing beats to
the moment they look (`ActivityContext.settle_beats()`), so a loop that slows down or stops after
a burst is never taken for silent, and its last details always reach the journal.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import weft_nb
from weft_nb.activity.context import ActivityContext, AttemptIdentity
from weft_nb.base.clock import RealClock
from weft_nb.base.payloads import decode
from weft_nb.executors.attempts import AttemptWatch


def _context() -> ActivityContext:
    identity = AttemptIdentity(run_id="r", activity_name="a", position=0, attempt=1)
    return ActivityContext(
        identity, clock=RealClock(), checkpoints=None, last_heartbeat_loader=lambda: None
    )  # type: ignore[arg-type]  # no checkpoint store needed: nothing here checkpoints


def test_a_fast_burst_reads_the_clock_rarely_but_counts_every_beat() -> None:
    ctx = _context()
    for i in range(10_000):
        ctx.heartbeat({"i": i})
    assert ctx.heartbeat_count == 10_000
    assert ctx.details == {"i": 9_999}
    assert ctx.first_heartbeat_at is not None


def test_the_watchdog_counts_unstamped_beats_as_alive() -> None:
    ctx = _context()
    ctx.heartbeat({"i": 0})  # the first beat always reads the clock
    ctx._stamp_at = 10**9  # as after a burst: the next beats read no clock
    # The last stamp just past the limit below, so no starvation grace applies.
    ctx.last_beat_monotonic = time.monotonic() - 10.5
    before = time.monotonic()
    ctx.heartbeat({"i": 1})
    assert ctx.last_beat_monotonic < before  # the beat has no time of its own

    watch = AttemptWatch(ctx, RealClock(), timeout=None, heartbeat_timeout=10.0)
    assert watch.remaining() == 0.0
    assert watch.expired() is None  # alive: it beat after the stamp
    assert ctx.last_beat_monotonic >= before
    assert not ctx.cancelled.is_set()
    # Silence from now on is noticed as before.
    ctx.last_beat_monotonic = time.monotonic() - 10.5
    assert watch.remaining() == 0.0
    outcome = watch.expired()
    assert outcome is not None and not outcome.ok
    assert isinstance(outcome.error, weft_nb.errors.ActivityHeartbeatTimeoutError)


def test_the_last_details_of_a_fast_loop_reach_the_journal_before_a_long_gap(
    journal_path: Path,
) -> None:
    looped, release = threading.Event(), threading.Event()
    beats = 20_000

    @weft_nb.activity(heartbeat_timeout=600)
    def train(n: int, activity: weft_nb.ActivityContext) -> int:
        for i in range(n):
            activity.heartbeat({"i": i})
        looped.set()
        release.wait(60)  # the long gap: no heartbeat while the test looks at the journal
        return n

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
        return ctx.run(train, n)

    with weft_nb.Engine(journal_path, heartbeat_interval=0.02) as engine:
        handle = engine.start(wf, beats, run_id="fast")
        try:
            assert looped.wait(60)
            deadline = time.monotonic() + 30
            details = None
            while time.monotonic() < deadline:
                record = engine.journal.latest_heartbeat("fast", 0)
                details = None if record is None else decode(record.codec, record.details)
                if details == {"i": beats - 1}:
                    break
                time.sleep(0.01)
            assert details == {"i": beats - 1}
        finally:
            release.set()
        assert handle.result(timeout=60) == beats
