"""In-process deadlines survive a system clock stepped back (issue 13.8), on a real clock.

:class:`SteppedClock` is the test seam: its wall time (``now``) can jump while its monotonic time
does not, as when NTP or a person steps the system clock. Each timeout here must still fire
after its own length of real time; before the fix, each kept running for an hour more.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.base.clock import RealClock
from weft_nb.errors import (
    ActivityHeartbeatTimeoutError,
    ActivityPerAttemptTimeoutError,
    SignalTimeoutError,
)
from weft_nb.testing import VirtualClock

HANG_GUARD = 60.0  # real seconds: far beyond the 2 s timeouts, far below the hour stepped back

pytestmark = pytest.mark.usefixtures("workflow_kind")


class SteppedClock(RealClock):
    """Real time whose wall reading can be stepped; the monotonic reading never is.

    :meth:`step_back_at_next_timed_wait` steps it the moment the engine next starts a timed wait,
    so the step lands after the deadline was computed, whatever the thread timing.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self._armed = threading.Event()

    def step_back_at_next_timed_wait(self) -> None:
        self._armed.set()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        if timeout is not None and self._armed.is_set():
            self._armed.clear()
            self.step_back(3600)
        return super().wait(event, timeout)

    def now(self) -> float:  # type: ignore[override]  # an instance method, for the offset
        return time.time() + self.offset

    def step_back(self, seconds: float) -> None:
        self.offset -= seconds


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


def assert_run_fails(
    tmp_path: Path, clock: SteppedClock, step: Any, error: type[BaseException]
) -> None:
    """Run a workflow of the one activity ``step`` on ``clock``: its result must raise ``error``."""

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return str(ctx.run(step))

    with weft_nb.Engine(tmp_path / "j.duckdb", clock=clock) as engine:
        handle = engine.start(wf)
        with pytest.raises(error):
            handle.result(timeout=HANG_GUARD)


def test_per_attempt_timeout_fires_after_the_wall_clock_steps_back(
    tmp_path: Path, clock: SteppedClock
) -> None:
    @weft_nb.activity(timeout=2, retry={"max_attempts": 1})
    def stuck(_: None, activity: weft_nb.ActivityContext) -> str:
        clock.step_back_at_next_timed_wait()  # the watchdog's, on the workflow thread
        activity.cancelled.wait(HANG_GUARD * 2)
        return "ran on"

    assert_run_fails(tmp_path, clock, stuck, ActivityPerAttemptTimeoutError)


def test_heartbeat_timeout_fires_after_the_wall_clock_steps_back(
    tmp_path: Path, clock: SteppedClock
) -> None:
    @weft_nb.activity(heartbeat_timeout=2, retry={"max_attempts": 1})
    def silent(_: None, activity: weft_nb.ActivityContext) -> str:
        activity.heartbeat({"step": 1})
        clock.step_back(3600)
        activity.cancelled.wait(HANG_GUARD * 2)
        return "ran on"

    assert_run_fails(tmp_path, clock, silent, ActivityHeartbeatTimeoutError)


def test_signal_timeout_fires_after_the_wall_clock_steps_back(
    tmp_path: Path, clock: SteppedClock
) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return str(ctx.wait_for_signal("approve", timeout=3))

    with weft_nb.Engine(tmp_path / "j.duckdb", clock=clock) as engine:
        handle = engine.start(wf)
        wait_until(
            lambda: engine.journal.query(
                "SELECT 1 FROM steps WHERE run_id = ? AND activity = '<signal>'", [handle.run_id]
            ),
            what="the signal wait journaled its deadline",
        )
        clock.step_back(3600)
        engine.signal(handle.run_id, "unrelated")  # wakes the wait: it recomputes what is left
        with pytest.raises(SignalTimeoutError):
            handle.result(timeout=HANG_GUARD)


def test_virtual_clock_monotonic_follows_virtual_time() -> None:
    virtual = VirtualClock(start=100.0, auto_advance=False)
    assert virtual.monotonic() == 100.0
    virtual.advance(5)
    assert virtual.monotonic() == virtual.now() == 105.0
    assert isinstance(RealClock().monotonic(), float)
