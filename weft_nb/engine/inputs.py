"""What reaches a run from outside its workflow: signals, out-of-band completions, cancels.

The engine's ``signal``, ``complete_async_activity``, ``fail_async_activity`` and ``cancel``
delegate to `ExternalInputs`. They share one rule: the input is validated and journaled before
anything that depends on it, and the run is woken if it waits in this process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from weft_nb.base.payloads import encode, error_to_json
from weft_nb.engine import task_tokens
from weft_nb.engine.live_runs import LiveRuns
from weft_nb.engine.runtime import Runtime
from weft_nb.errors import (
    ActivityFailedError,
    PayloadError,
    RunFinishedError,
    RunNotFoundError,
)
from weft_nb.journal.protocol import (
    CANCELLED,
    STEP_COMPLETED,
    STEP_FAILED,
    TERMINAL_STATUSES,
    SignalRecord,
    StepRecord,
)


def check_failure_size(recorded: str, limit: int, parked: StepRecord, token: str) -> None:
    """Refuse an out-of-band failure too large to journal, before its token is consumed."""
    size = len(recorded.encode())
    if size > limit:
        raise PayloadError(
            f"the failure sent for activity {parked.activity!r} (step {parked.position}, run "
            f"{parked.run_id!r}) is {size} bytes once recorded, over the journal's limit of "
            f"{limit} bytes (max_payload_bytes). Token {token!r} was not used: fail it again "
            "with a shorter error message.",
            run_id=parked.run_id,
            position=parked.position,
            size=size,
            limit=limit,
        )


class ExternalInputs:
    """Signals, async completions and cancels for the runs of one engine.

    Args:
        rt: The engine's services (journal, clock, events, payload limit).
        live: The engine's live runs, woken when an input arrives for one of them.
    """

    def __init__(self, rt: Runtime, live: LiveRuns) -> None:
        self._rt = rt
        self._live = live

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> bool:
        """Send a signal to a run; it is durable when this returns."""
        self._live.check_open()
        record = self._rt.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id, self._rt.journal.path)
        if record.status in TERMINAL_STATUSES:
            raise RunFinishedError(run_id, record.status, signal=name)
        codec, data = encode(
            payload, what=f"payload of signal {name!r}", max_bytes=self._rt.max_payload_bytes
        )
        signal = SignalRecord(
            run_id=run_id,
            name=name,
            signal_id=signal_id,
            codec=codec,
            payload=data,
            created_at=self._rt.clock.now(),
        )
        added = self._rt.journal.add_signal(signal)
        if added:
            self._live.wake(run_id)
        self._rt.emit("signal", run_id, None, name=name, delivered=added)
        return added

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: persist it, then set ``cancelled`` on its in-flight activities.

        Returns False when the run had already finished.
        """
        self._live.check_open()
        record = self._rt.journal.get_run(run_id)
        if record is None:
            raise RunNotFoundError(run_id, self._rt.journal.path)
        if not self._rt.journal.set_run_status(run_id, CANCELLED, self._rt.clock.now()):
            return False  # it finished first
        self._live.cancel(run_id)
        self._rt.emit("run_cancelled", run_id, None)
        # Its child workflows, after its own cancel is set: a child the parent creates from
        # now on is cancelled by the parent itself (weft_nb.engine.child_workflows).
        for child in self._rt.journal.children_of(run_id):
            if child.status not in TERMINAL_STATUSES:
                self.cancel(child.run_id)
        return True

    def complete_async_activity(self, token: str, result: Any = None) -> None:
        """Complete a parked activity (``ActivityContext.complete_async``) with ``result``."""
        parked = self._parked(token)
        codec, data = encode(
            result,
            what=f"completion of activity {parked.activity!r}",
            max_bytes=self._rt.max_payload_bytes,
        )
        completed = dataclasses.replace(
            parked,
            status=STEP_COMPLETED,
            finished_at=self._rt.clock.now(),
            result_codec=codec,
            result=data,
        )
        self._settle_token(token, completed)

    def fail_async_activity(self, token: str, error: BaseException | str) -> None:
        """Fail a parked activity; the workflow's ``ctx.run`` raises ``ActivityFailedError``."""
        parked = self._parked(token)
        failure = ActivityFailedError(
            cause_type=type(error).__name__ if isinstance(error, BaseException) else "AsyncFailure",
            cause_message=str(error),
            attempts=parked.attempts,
            run_id=parked.run_id,
            position=parked.position,
            activity=parked.activity,
        )
        recorded = error_to_json(failure)
        check_failure_size(recorded, self._rt.max_payload_bytes, parked, token)
        failed = dataclasses.replace(
            parked, status=STEP_FAILED, finished_at=self._rt.clock.now(), error=recorded
        )
        self._settle_token(token, failed)

    def _parked(self, token: str) -> StepRecord:
        self._live.check_open()
        parked = self._rt.journal.async_token(token)
        if parked is None:
            raise task_tokens.refusal(self._rt.journal, token)
        record = self._rt.journal.get_run(parked.run_id)
        if record is not None and record.status in TERMINAL_STATUSES:
            raise task_tokens.refusal(self._rt.journal, token)
        return parked

    def _settle_token(self, token: str, outcome: StepRecord) -> None:
        if not self._rt.journal.complete_async_token(token, outcome):
            raise task_tokens.refusal(self._rt.journal, token)  # used, spent or finished meanwhile
        self._live.wake(outcome.run_id)
        self._rt.emit("async_completed", outcome.run_id, outcome.position, status=outcome.status)
