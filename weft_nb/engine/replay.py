"""The replay state of one execution of a run: `StepCursor`.

On resume the workflow function runs again from the top. Each durable operation (``ctx.run``,
``ctx.sleep``, ``ctx.memo``, ...) takes the next position; a position whose journaled step has
the same signature (activity name, input hash, activity source hash) is answered from the
journal. On the first mismatch the run's ``on_change`` policy decides: ``"rerun"`` supersedes the
journaled steps from there on (kept for audit) and runs live; ``"error"`` raises
[`NonDeterminismError`][weft_nb.errors.NonDeterminismError].

The cursor is the one owner of that state, so positions, the recorded steps still to be
replayed, the supersede bookkeeping, the memo cache, the recorded-result digests, the run's
activity definitions and the parked task tokens change only through its methods. The code that
executes steps (`weft_nb.engine.steps`, `weft_nb.engine.parallel`,
`weft_nb.engine.recorded_calls`, `weft_nb.engine.durable_activity`) asks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from weft_nb.activity.context import EngineStopped
from weft_nb.base import evidence
from weft_nb.base.input_digest import InputDigest, ResultDigests
from weft_nb.engine.run_definitions import RunDefinitions
from weft_nb.errors import NonDeterminismError, StepChangedWarning, WorkflowCancelledError
from weft_nb.journal.protocol import STEP_COMPLETED, STEP_STARTED, EventRecord, StepRecord

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.clock import Clock
    from weft_nb.base.definitions import ActivityDefinition, Registry
    from weft_nb.engine.runs import RunState
    from weft_nb.journal.protocol import Journal

NOT_SET: Any = object()
"""What `StepCursor.memo_value()` returns for a key not memoised yet."""


@dataclasses.dataclass
class PreparedStep:
    """A step whose position is taken: answered from the journal, or to be executed."""

    position: int
    definition: ActivityDefinition
    value: Any
    input_hash: str
    key: str | None
    options: dict[str, Any]
    replayed: bool = False
    result: Any = None
    error: BaseException | None = None
    record: bool = True  # False: an unkeyed durable_activity call (at-least-once, not journaled)
    sub_operation: bool = False  # a durable_activity call inside a ctx.memo callback


class StepCursor:
    """Where one execution of a run stands in its journal, and what it may still replay.

    Args:
        state: The live run (its journaled steps are loaded into ``state.steps``).
        journal: Where superseded steps are marked and the run's input is read.
        clock: The engine's clock: backoff, durable sleeps, waits for signals, event times.
        registry: The engine's activity registry (the run takes a copy: see
            `weft_nb.engine.run_definitions`).
    """

    def __init__(
        self, state: RunState, *, journal: Journal, clock: Clock, registry: Registry
    ) -> None:
        self._state = state
        self._journal = journal
        self._clock = clock
        self._position = 0
        self._memo: dict[str, Any] = {}
        self._definitions = RunDefinitions(registry, state.run_id, state.workflow.name)
        # id(definition) -> (definition, whether weft_nb.engine.plain_replay answers its calls)
        self.plain_calls: dict[int, tuple[ActivityDefinition, bool]] = {}
        # What this execution received from the engine, by recorded digest: a later input that
        # holds such a value hashes as its record (see weft_nb.base.input_digest).
        self.digests = ResultDigests(state.input_value, self._recorded_input)

    @property
    def state(self) -> RunState:
        """The live run: its cancel event, live attempts, backoff, counters and thread."""
        return self._state

    @property
    def run_id(self) -> str:
        """The run this cursor replays."""
        return self._state.run_id

    @property
    def positions_taken(self) -> int:
        """How many positions this execution has taken (the next one's number)."""
        return self._position

    # -- positions and recorded steps ------------------------------------------------------

    def take_position(self) -> int:
        """The next position, in program order (call it on the workflow's thread)."""
        position = self._position
        self._position += 1
        return position

    def take_recorded(self, position: int) -> StepRecord | None:
        """The journaled record at ``position``, unchecked; each position is visited once."""
        return self._state.steps.pop(position, None)

    def take_replayed(self, row: int) -> None:
        """Take the next position, answered from its recorded ``row`` (see plain_replay)."""
        self._state.steps.status[row] = None  # RecordedSteps.take_row, without its call
        self._position += 1
        self._state.replayed += 1

    def match(
        self, position: int, name: str, source_hash: str, input_hash: str | InputDigest
    ) -> StepRecord | None:
        """The journaled record at ``position`` if its signature matches; else apply on_change.

        An activity input's digest matches under either hash scheme (old journals). A mismatch
        of an inexact digest (part of the input was hashed by re-pickling an object) is not
        trusted: the journaled step is kept, with a
        [`StepChangedWarning`][weft_nb.StepChangedWarning].

        Raises:
            NonDeterminismError: The signature differs and the run's on_change is ``"error"``.
        """
        recorded = self.take_recorded(position)
        if recorded is None:
            return None
        if isinstance(input_hash, InputDigest):
            same_input = input_hash.matches(recorded.input_hash)
            new_hash = input_hash.value
        else:
            same_input, new_hash = recorded.input_hash == input_hash, input_hash
        if (recorded.activity, recorded.source_hash) == (name, source_hash):
            if same_input:
                return recorded
            if isinstance(input_hash, InputDigest) and not input_hash.exact:
                _warn_untrusted_change(self.run_id, position, name, input_hash)
                return recorded
        shown = recorded.input_hash if same_input else new_hash  # matched under the old scheme
        self.supersede(position, recorded, name, source_hash, shown or "")
        return None

    def supersede(
        self, position: int, recorded: StepRecord, name: str, source_hash: str, input_hash: str
    ) -> None:
        """Apply the run's on_change policy to a step that no longer matches its record.

        ``"rerun"`` warns, marks the journaled steps from ``position`` on as superseded (kept for
        audit) and forgets them here, with their failed attempts, so they run live again.

        Raises:
            NonDeterminismError: The run's on_change is ``"error"``.
        """
        what = []
        if recorded.activity != name:
            what.append(f"activity was {recorded.activity!r}, now {name!r}")
        else:
            if recorded.input_hash != input_hash:
                what.append("its input changed")
            if recorded.source_hash != source_hash:
                what.append(
                    f"the activity's source changed ({recorded.source_hash[:8]} -> "
                    f"{source_hash[:8]})"
                )
        reason = "; ".join(what)
        state = self._state
        if state.on_change == "error":
            raise NonDeterminismError(state.run_id, position, reason)
        message = (
            f"step {position} of run {state.run_id!r} changed ({reason}); journaled steps from "
            f"{position} on are superseded and run again"
        )
        warnings.warn(message, StepChangedWarning, stacklevel=3)
        self._journal.supersede_from(
            state.run_id,
            position,
            EventRecord(
                run_id=state.run_id,
                position=position,
                kind="step_changed",
                message=message,
                created_at=self._clock.now(),
            ),
        )
        for stale in [p for p in state.steps if p >= position]:
            del state.steps[stale]
        state.failed_attempts = {p: n for p, n in state.failed_attempts.items() if p < position}
        state.first_started = {p: t for p, t in state.first_started.items() if p < position}

    def count_replayed(self) -> None:
        """Count one position answered from the journal (shown in the run's summary)."""
        self._state.replayed += 1

    def count_executed(self) -> None:
        """Count one step run live."""
        self._state.executed += 1

    # -- attempts and task tokens ----------------------------------------------------------

    def next_attempt(self, position: int, now: float) -> tuple[int, float]:
        """``(attempt, first_start)`` for a live step: after the attempts journaled as failed."""
        state = self._state
        return state.failed_attempts.get(position, 0) + 1, state.first_started.get(position, now)

    def is_parked(self, position: int) -> bool:
        """True when the step at ``position`` waits on a task token journaled before a restart."""
        return position in self._state.pending_tokens

    def take_parked(self, position: int) -> bool:
        """Like `is_parked()`, and forget the token: the step waits for it once."""
        return self._state.pending_tokens.pop(position, None) is not None

    # -- liveness --------------------------------------------------------------------------

    def attempt_started(self, attempt: ActivityContext, wake: threading.Event) -> None:
        """Make a running attempt visible to cancel and stop (which set ``wake`` and cancel it).

        An attempt that starts after the run was cancelled is cancelled at once: the cancel
        could not see it yet.
        """
        self._state.live.add((attempt, wake))
        if self._state.cancel_requested.is_set():
            attempt.cancel("the run was cancelled")

    def attempt_ended(self, attempt: ActivityContext, wake: threading.Event) -> None:
        """The attempt no longer runs: cancel and stop leave it alone."""
        self._state.live.discard((attempt, wake))

    def back_off(self, position: int, delay: float) -> None:
        """Wait ``delay`` seconds before the step at ``position`` retries (shown as backoff).

        Raises:
            EngineStopped: The engine stopped meanwhile.
            WorkflowCancelledError: The run was cancelled meanwhile.
        """
        self._state.backoff = (position, self._clock.now() + delay)
        if evidence.ENABLED:
            evidence.record("backoff", run_id=self.run_id, position=position, delay=delay)
        try:
            self.pause(delay)
        finally:
            self._state.backoff = None

    def check_alive(self) -> None:
        """Raise if the run must stop here.

        Raises:
            EngineStopped: The engine closed (or simulated a crash).
            WorkflowCancelledError: The run was cancelled.
        """
        state = self._state
        if state.stopped:
            raise EngineStopped
        if state.cancel_requested.is_set():
            raise WorkflowCancelledError(state.run_id)

    def is_alive(self) -> bool:
        """False once the run was stopped or cancelled (`check_alive()` would raise)."""
        return not (self._state.stopped or self._state.cancel_requested.is_set())

    def run_wake(self) -> threading.Event:
        """The run's wake-up event: set by signals, completions, cancel and stop (a clock event)."""
        arrived = self._state.signal_arrived
        assert arrived is not None
        return arrived

    @contextlib.contextmanager
    def own_wake(self) -> Iterator[threading.Event]:
        """A wake-up event of the caller's own, set whenever the run's is (signal, cancel, stop).

        For a wait that clears its event before looking: concurrent waiters (an async workflow's
        awaits, each on a thread) never clear each other's wake-up.
        """
        event = self._clock.new_event()
        self._state.signal_waiters.add(event)
        try:
            yield event
        finally:
            self._state.signal_waiters.discard(event)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` on the engine's clock, ending early (and raising) on cancel."""
        if self._clock.wait(self._state.cancel_requested, seconds):
            self.check_alive()

    def wait_signal(self, timeout: float | None, arrived: threading.Event | None = None) -> None:
        """Wait until a signal, completion, cancel or stop arrives (or ``timeout`` passes).

        ``arrived``: a waiter's own event (an async workflow's concurrent signal waits), which
        is set with the run's own; None: the run's.
        """
        arrived = arrived or self._state.signal_arrived
        assert arrived is not None
        self._clock.wait(arrived, timeout)

    def clear_signal(self, arrived: threading.Event | None = None) -> None:
        """Forget earlier arrivals: call it before looking, so a later one wakes the wait."""
        arrived = arrived or self._state.signal_arrived
        assert arrived is not None
        arrived.clear()

    # -- values the run has seen -----------------------------------------------------------

    def remember(self, value: Any, codec: str, data: bytes) -> None:
        """Remember a result as recorded, so a later input holding it hashes by its record."""
        self.digests.remember(value, codec, data)

    def memo_value(self, key: str) -> Any:
        """``ctx.memo(key)``'s answer in this execution (a value or a MemoFailure), or NOT_SET."""
        return self._memo.get(key, NOT_SET)

    def remember_memo(self, key: str, value: Any) -> None:
        """Keep ``ctx.memo(key)``'s answer for later calls with the key in this execution."""
        self._memo[key] = value

    def resolve(self, activity: str | Callable[..., Any]) -> ActivityDefinition:
        """The definition an activity name or function means in this run (see run_definitions)."""
        return self._definitions.resolve(activity)

    def _recorded_input(self) -> tuple[str, bytes] | None:
        """The run's input as journaled: ``(codec, data)``."""
        record = self._journal.get_run(self._state.run_id)
        return None if record is None else (record.input_codec, record.input)


def _warn_untrusted_change(run_id: str, position: int, name: str, signature: InputDigest) -> None:
    kinds = sorted({f"{type(v).__module__}.{type(v).__qualname__}" for v in signature.opaque})
    warnings.warn(
        f"step {position} ({name!r}) of run {run_id!r}: its input hashes differently from the "
        f"journal, but the hash is not reliable: it pickles {', '.join(kinds)} objects, whose "
        "bytes can differ between processes. The journaled step is kept, not run again. If the "
        "input really changed, start a new run; to make the hash exact, pass plain data, "
        "dataclasses, pydantic models, numpy arrays, or values returned by earlier steps.",
        StepChangedWarning,
        stacklevel=4,
    )


def control_record(  # noqa: PLR0913
    run_id: str,
    position: int,
    kind: str,
    signature: str,
    at: float,
    *,
    completed: bool = False,
    result: bytes | None = None,
    codec: str = "json",
    idempotency_key: str | None = None,
) -> StepRecord:
    """The journal row of an engine-made step (``<race>``, ``<timer>``, ``<sleep>``, ...).

    Started at ``at`` (and finished then when ``completed``); ``result`` is encoded with
    ``codec``. Its other outcomes are ``dataclasses.replace``-d from it.
    """
    return StepRecord(
        run_id=run_id,
        position=position,
        activity=kind,
        status=STEP_COMPLETED if completed else STEP_STARTED,
        input_hash=signature,
        source_hash="",
        attempts=1,
        started_at=at,
        finished_at=at if completed else None,
        result_codec=codec if result is not None else None,
        result=result,
        idempotency_key=idempotency_key,
    )
