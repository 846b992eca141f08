"""Durable timers: ``ctx.timer(duration)``, a future that settles at a journaled deadline.

A timer takes the next position like a step. Its deadline (wall time) is journaled at once, as a
``<timer>`` marker, so a restart keeps it: a resumed run's timer fires at the original deadline,
not a full duration later (a deadline passed while the process was down fires at once). Its
firing is journaled too (the marker completed), and a ``ctx.race`` over it journals its winner,
so a replay returns the same winner whatever the timing now.

A timer is a [`StepFuture`][weft_nb.StepFuture]: ``ctx.race``, ``ctx.all`` and ``.result()`` take
it. Nothing runs in the background: the thread that waits on it (the workflow's) fires it once
its deadline has passed, waking for that on the engine's clock. In this process the wait counts
down on the clock's monotonic reading, so a system clock stepped back does not postpone it.
A timer nobody waits on never fires, and costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import TYPE_CHECKING

from weft_nb.base.payloads import digest
from weft_nb.base.retry import Duration, required_duration
from weft_nb.engine.parallel import StepFuture
from weft_nb.engine.replay import control_record
from weft_nb.journal.protocol import STEP_COMPLETED, StepRecord

if TYPE_CHECKING:
    from weft_nb.engine.replay import StepCursor
    from weft_nb.engine.runtime import Runtime

TIMER = "<timer>"


class TimerFuture(StepFuture[None]):
    """A durable timer (``ctx.timer``): settles with None at its journaled ``deadline``.

    Attributes:
        deadline: When it fires, in seconds since the epoch (the engine clock's ``now()``).
    """

    def __init__(
        self, rt: Runtime, cursor: StepCursor, position: int, deadline: float, record: StepRecord
    ) -> None:
        super().__init__(rt, cursor, position, TIMER)
        self.deadline = deadline
        self._journal = rt.journal
        self._record = record
        # In-process countdown on the monotonic clock (see the module docstring).
        self._local_deadline = rt.clock.monotonic() + deadline - rt.clock.now()
        self._firing = threading.Lock()

    def poll(self) -> float:
        """Fire (journaled) if the deadline has passed; the seconds left (0 once settled)."""
        if self.done():
            return 0.0
        left = self._local_deadline - self.clock.monotonic()
        if left > 0:
            return left
        with self._firing:
            if not self.done() and self._cursor.is_alive():
                at = self.clock.now()
                self._journal.record_step(
                    dataclasses.replace(self._record, status=STEP_COMPLETED, finished_at=at)
                )
                self.settle(None)
        return 0.0

    def __repr__(self) -> str:
        state = "fired" if self.done() else "pending"
        return f"<TimerFuture step {self.position} deadline {self.deadline:.3f} {state}>"


def timer(rt: Runtime, cursor: StepCursor, duration: Duration) -> TimerFuture:
    """Take the next position for a timer of ``duration``; its deadline is journaled now."""
    seconds = required_duration(duration, what="ctx.timer duration")
    position = cursor.take_position()
    signature = digest(json.dumps(seconds).encode())
    recorded = cursor.match(position, TIMER, "", signature)
    started = rt.clock.now()
    if recorded is not None and recorded.result is not None:
        deadline = float(json.loads(recorded.result))  # the original deadline
        started = recorded.started_at
    else:
        deadline = started + seconds
        recorded = None
    deadline_json = json.dumps(deadline).encode()
    record = control_record(
        cursor.run_id,
        position,
        TIMER,
        signature,
        started,
        result=deadline_json,
        idempotency_key=TIMER,
    )
    future = TimerFuture(rt, cursor, position, deadline, record)
    if recorded is None:
        rt.journal.record_marker(record)
    elif recorded.status == STEP_COMPLETED:
        cursor.count_replayed()
        future.settle(None)
    return future
