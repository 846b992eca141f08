"""An in-memory journal: the `Journal` protocol with no database.

For tests and throwaway runs (``TestEngine(MemoryJournal())``): nothing survives the process.
The records live in a `MemoryStore`; a [`MemoryJournal`][weft_nb.testing.MemoryJournal] is one
open handle on it, as a `DuckDBJournal` is on its file. Closing the handle keeps the store, and
``MemoryJournal(closed.store)`` opens it again, as a restarted process opens the same file
(``TestEngine.simulate_restart``). One open handle at a time holds a store; another gets
[`JournalLockedError`][weft_nb.errors.JournalLockedError]: a "crashed" engine's threads can't write.

Each operation runs under the store's lock and checks its whole input first, so it is atomic
and isolated as a DuckDB transaction is (``object()`` as heartbeat details raises ``TypeError``,
writing nothing). Records are copied in and out. Sidecar files (checkpoints, the dispatch log) go
to the store's own temporary folder (`MemoryJournal.sidecar_base`), removed with the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
from collections.abc import Iterator
from typing import Any

from weft_nb.errors import JournalClosedError, JournalError, JournalLockedError
from weft_nb.journal.dispatch_log import CRASHED
from weft_nb.journal.memory_store import SETTLED, MemoryStore, ParkedToken, Row, storable
from weft_nb.journal.protocol import (
    STEP_STARTED,
    TERMINAL_STATUSES,
    AttemptRecord,
    BreakerRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    RunOutcome,
    RunRecord,
    SignalRecord,
    StepRecord,
)
from weft_nb.journal.recorded_steps import columns_of

__all__ = ["MemoryJournal", "MemoryStore"]


class MemoryJournal:
    """A journal held in memory (see the module docstring); thread-safe.

    Args:
        store: The records to open; a new, empty store when omitted. ``MemoryJournal(old.store)``
            reopens the records of a closed journal.

    Raises:
        JournalLockedError: Another open ``MemoryJournal`` holds ``store``.
    """

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.path = f"memory:{self.store.name}"
        self._users = 0
        self._closed = False
        with self.store.lock:
            holder = self.store.holder
            if isinstance(holder, MemoryJournal) and not holder.closed:
                raise JournalLockedError(
                    self.path,
                    "another open MemoryJournal of this process",
                    holder_pid=os.getpid(),
                    advice="Close that one (or its engine) first.",
                )
            self.store.holder = self

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    @property
    def sidecar_base(self) -> str:
        """Where checkpoints and the dispatch log go: inside the store's temporary folder."""
        return os.path.join(self.store.folder, "journal")

    @contextlib.contextmanager
    def _use(self) -> Iterator[MemoryStore]:
        with self.store.lock:
            if self._closed:
                raise JournalClosedError(self.path)
            yield self.store

    # -- lifecycle -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Count a user (nothing to open: the records are always in memory)."""
        with self._use():
            self._users += 1

    def release(self) -> None:
        """Undo one `acquire()`."""
        with self.store.lock:
            self._users = max(0, self._users - 1)

    def release_if_idle(self, min_idle: float) -> bool:
        """Always False: there is no file to hand to other readers."""
        return False

    def close(self) -> None:
        """Close this handle for good (idempotent); the store keeps the records."""
        with self.store.lock:
            self._closed = True
            if self.store.holder is self:
                self.store.holder = None

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord, *, sync: bool = True) -> None:
        """Insert a new run; ``JournalError`` (nothing written) if its run id exists already."""
        record = storable(run)
        with self._use() as store:
            if record.run_id in store.runs:
                raise JournalError(
                    f"run {record.run_id!r} already exists in journal {self.path}; nothing was "
                    "written. Choose another run id.",
                    path=self.path,
                    run_id=record.run_id,
                )
            store.runs[record.run_id] = record

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        with self._use() as store:
            run = store.runs.get(run_id)
            return None if run is None else dataclasses.replace(run)

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """Runs, oldest first, optionally of one status."""
        with self._use() as store:
            return store.runs_where(lambda r: status is None or r.status == status)

    def children_of(self, run_id: str) -> list[RunRecord]:
        """The runs whose ``parent_run_id`` is ``run_id``, oldest first."""
        with self._use() as store:
            return store.runs_where(lambda r: r.parent_run_id == run_id)

    def finish_run(self, run_id: str, outcome: RunOutcome) -> bool:
        """Record an unfinished run's outcome; False (nothing written) if it already finished."""
        return self._update_run(
            run_id,
            status=outcome.status,
            updated_at=outcome.at,
            result_codec=outcome.result_codec,
            result=outcome.result,
            error=outcome.error,
        )

    def set_run_status(self, run_id: str, status: str, at: float) -> bool:
        """Change an unfinished run's status; False (nothing written) if it already finished."""
        return self._update_run(run_id, status=status, updated_at=at)

    def trace_context(self, run_id: str, keep: str | None = None) -> str | None:
        """The run's journaled trace context; with ``keep``, the first one kept (see `Journal`)."""
        with self._use() as store:
            return store.trace_context(run_id, keep)

    def _update_run(self, run_id: str, **changes: Any) -> bool:
        with self._use() as store:
            run = store.runs.get(run_id)
            if run is None or run.status in TERMINAL_STATUSES:
                return False
            store.runs[run_id] = storable(dataclasses.replace(run, **changes))
            return True

    # -- steps and attempts ----------------------------------------------------------------

    def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        """The current step records of a run, by position."""
        with self._use() as store:
            return {s.position: dataclasses.replace(s) for s in store.current(store.steps, run_id)}

    def step_columns(self, run_id: str) -> dict[str, list[Any]]:
        """`load_steps()` as columns (see `Journal.step_columns`)."""
        return columns_of(self.load_steps(run_id).values())

    def orphaned_steps(self, run_id: str) -> bool:
        """Never: a memory journal has no step log whose damage could destroy a run's start."""
        return False

    def step_outcome(self, run_id: str, position: int) -> StepRecord | None:
        """The current completed or failed record of one step, or None."""
        with self._use() as store:
            for step in store.current(store.steps, run_id, position):
                if step.status in SETTLED:
                    return dataclasses.replace(step)
            return None

    def record_step(self, step: StepRecord, heartbeat: HeartbeatRecord | None = None) -> None:
        """Record a step's outcome, replacing a keyed dispatch marker if there is one."""
        record = storable(step)
        beat = None if heartbeat is None else storable(heartbeat)
        with self._use() as store:
            checked = beat is not None or record.idempotency_key is not None
            if checked and store.settled(record.run_id, record.position):
                raise JournalError(
                    f"step {record.position} of run {record.run_id!r} already has an outcome in "
                    f"{self.path}; a second one is refused (nothing was written). This is a "
                    "weft_nb bug: please report it with the run's timeline.",
                    path=self.path,
                )
            store.add_outcome(record)
            if beat is not None:
                store.heartbeats.append(Row(beat))

    def record_marker(self, step: StepRecord) -> None:
        """Record a keyed activity's dispatch marker."""
        record = storable(step)
        with self._use() as store:
            store.steps.append(Row(record))

    def record_attempt_failure(
        self,
        attempt: AttemptRecord,
        heartbeat: HeartbeatRecord | None = None,
        final: StepRecord | None = None,
    ) -> None:
        """Record a failed attempt, its last heartbeat and the step's failure; spend its token."""
        failed = storable(attempt)
        beat = None if heartbeat is None else storable(heartbeat)
        outcome = None if final is None else storable(final)
        with self._use() as store:
            if outcome is not None:
                store.add_outcome(outcome)
            store.attempts.append(Row(failed))
            if beat is not None:
                store.heartbeats.append(Row(beat))
            store.spend_tokens_of(failed)

    def attempts_of(self, run_id: str, position: int) -> list[AttemptRecord]:
        """Current failed attempts of a step, oldest first."""
        with self._use() as store:
            found = store.current(store.attempts, run_id, position)
            attempts = [dataclasses.replace(a) for a in found]
        return sorted(attempts, key=lambda a: a.attempt)

    def attempts_of_run(self, run_id: str) -> list[AttemptRecord]:
        """Current failed attempts of every step of a run, by position, then oldest first."""
        with self._use() as store:
            attempts = [dataclasses.replace(a) for a in store.current(store.attempts, run_id)]
        return sorted(attempts, key=lambda a: (a.position, a.attempt))

    def crashed_attempts(self, run_id: str, position: int) -> int:
        """How many current attempts of one step died with their process (``ActivityCrashed``)."""
        return sum(a.error_type == CRASHED for a in self.attempts_of(run_id, position))

    # -- heartbeats and checkpoints --------------------------------------------------------

    def record_heartbeats(self, heartbeats: list[HeartbeatRecord]) -> None:
        """Append heartbeats, all or none."""
        beats = [storable(hb) for hb in heartbeats]
        with self._use() as store:
            store.heartbeats.extend(Row(hb) for hb in beats)

    def latest_heartbeat(
        self, run_id: str, position: int, before_attempt: int | None = None
    ) -> HeartbeatRecord | None:
        """The newest current heartbeat of a step (of an attempt before ``before_attempt``)."""
        with self._use() as store:
            beats = [
                hb
                for hb in store.current(store.heartbeats, run_id, position)
                if before_attempt is None or hb.attempt < before_attempt
            ]
        return dataclasses.replace(beats[-1]) if beats else None

    def latest_heartbeats(self, run_id: str) -> dict[int, HeartbeatRecord]:
        """The newest current heartbeat of each step of a run, by position."""
        with self._use() as store:
            latest = {hb.position: hb for hb in store.current(store.heartbeats, run_id)}
        return {position: dataclasses.replace(hb) for position, hb in latest.items()}

    def heartbeat_history(self, run_id: str) -> list[HeartbeatRecord]:
        """Every current heartbeat of a run, in the order written."""
        with self._use() as store:
            return [dataclasses.replace(hb) for hb in store.current(store.heartbeats, run_id)]

    def add_checkpoint(self, checkpoint: CheckpointRecord, keep: int) -> list[CheckpointRecord]:
        """Add a checkpoint and drop all but the newest ``keep`` of that step; return those."""
        record = storable(checkpoint)
        keep = operator.index(keep)
        if keep < 0:
            raise ValueError(f"checkpoints to keep must be >= 0; got {keep}")
        with self._use() as store:
            store.checkpoints.append(Row(record))
            stale = store.trim_checkpoints(record.run_id, record.position, keep)
        return [dataclasses.replace(cp) for cp in stale]

    def checkpoints_of(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """Current checkpoints of a step, newest first."""
        with self._use() as store:
            return store.checkpoints_at(run_id, position)

    def last_checkpoint_seq(self, run_id: str, position: int) -> int:
        """The highest checkpoint number of a step, superseded ones included; 0 if none."""
        with self._use() as store:
            return store.last_checkpoint_seq(run_id, position)

    def all_checkpoint_paths(self) -> set[str]:
        """Every referenced checkpoint path (superseded ones too)."""
        with self._use() as store:
            return {row.record.path for row in store.checkpoints}

    # -- supersession, signals, tokens and events ------------------------------------------

    def supersede_from(self, run_id: str, position: int, event: EventRecord) -> None:
        """Supersede everything recorded at ``position`` and after, with an audit event."""
        audit = storable(event)
        with self._use() as store:
            store.supersede(run_id, position)
            store.events.append(audit)

    def add_signal(self, signal: SignalRecord) -> bool:
        """Buffer a signal; a repeated ``signal_id`` of the same run is ignored."""
        record = storable(signal)
        with self._use() as store:
            return store.add_signal(record)

    def consume_signal(self, run_id: str, name: str, step: StepRecord) -> StepRecord | None:
        """Consume the oldest buffered signal together with the step that receives it."""
        record = storable(step)
        with self._use() as store:
            received = store.consume_signal(run_id, name, record)
            return None if received is None else dataclasses.replace(received)

    def add_async_token(self, token: str, step: StepRecord) -> None:
        """Park a step under an out-of-band completion token (a known token is left alone)."""
        parked = dataclasses.replace(step, status=STEP_STARTED, finished_at=None, error=None)
        parked = storable(dataclasses.replace(parked, result_codec=None, result=None))
        with self._use() as store:
            store.tokens.setdefault(token, ParkedToken(token=token, parked=parked))

    def async_token(self, token: str) -> StepRecord | None:
        """The parked step of an unconsumed token, or None."""
        with self._use() as store:
            found = store.unconsumed_token(token)
            return None if found is None else dataclasses.replace(found.parked)

    def pending_async_tokens(self, run_id: str) -> dict[int, str]:
        """Unconsumed tokens of a run, by position."""
        with self._use() as store:
            return store.pending_tokens(run_id)

    def spend_async_token(self, token: str, at: float) -> bool:
        """Spend an unconsumed token without an outcome; False if it was already consumed."""
        if not isinstance(at, (int, float)):
            raise TypeError(f"a token's spending time must be a number, not {at!r}")
        with self._use() as store:
            found = store.unconsumed_token(token)
            if found is None:
                return False
            found.consumed_at = float(at)
            return True

    def complete_async_token(self, token: str, outcome: StepRecord) -> bool:
        """Consume the token and record the step's outcome together (see the protocol)."""
        record = storable(outcome)
        with self._use() as store:
            return store.complete_token(token, record)

    def add_event(self, event: EventRecord) -> None:
        """Append an audit event."""
        audit = storable(event)
        with self._use() as store:
            store.events.append(audit)

    def events_of(self, run_id: str) -> list[EventRecord]:
        """A run's events, oldest first (in write order when their times are equal)."""
        with self._use() as store:
            events = [dataclasses.replace(e) for e in store.events if e.run_id == run_id]
        return sorted(events, key=lambda e: e.created_at)  # stable: ties keep their write order

    def save_breaker(self, breaker: BreakerRecord) -> None:
        """Store an activity's circuit breaker, replacing the one stored under its name."""
        record = storable(breaker)
        with self._use() as store:
            store.breakers[record.activity] = record

    def breakers(self) -> list[BreakerRecord]:
        """Every stored circuit breaker, by activity name."""
        with self._use() as store:
            return [dataclasses.replace(store.breakers[name]) for name in sorted(store.breakers)]

    def stored_rows(self, table: str) -> list[dict[str, Any]]:
        """Every stored row of a table, superseded and consumed ones included, for audit checks.

        The tables and columns of the DuckDB journal (docs/journal-schema.md), less its ``id``
        columns (rows in write order); like ``DuckDBJournal.query``, for tests and tools only.

        Raises:
            ValueError: An unknown table.
        """
        with self._use() as store:
            return store.rows(table)
