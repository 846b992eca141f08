"""The tables of a memory journal, and the checks a value passes before it is stored.

`MemoryStore` holds the records of one [`MemoryJournal`][weft_nb.testing.MemoryJournal]
as DuckDB holds a journal file's rows: superseded rows stay (flagged) for audit, heartbeats keep
their write order. Its methods are the table operations the journal composes; they take no lock
and check nothing: the journal holds the store's lock around them and checks its input first.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from weft_nb.journal.protocol import (
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_STARTED,
    TERMINAL_STATUSES,
    AttemptRecord,
    BreakerRecord,
    CheckpointRecord,
    EventRecord,
    HeartbeatRecord,
    RunRecord,
    SignalRecord,
    StepRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R")
D = TypeVar("D", bound="DataclassInstance")

# What a record field of each annotated type accepts, and what it is stored as (as DuckDB would).
_ACCEPTED: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bytes": (bytes, bytearray, memoryview),
}
_STORED_AS: dict[str, type] = {"str": str, "int": int, "float": float, "bytes": bytes}
SETTLED = (STEP_COMPLETED, STEP_FAILED)


def storable(record: D) -> D:
    """A copy of a record dataclass fit to store; ``TypeError`` for a value no column could hold.

    Each field is checked against its annotation (``float``, ``bytes | None``...), the check a
    typed database column makes before a transaction commits anything.

    >>> storable(
    ...     EventRecord(run_id="r", position=None, kind="note", message="hi", created_at=1)
    ... ).created_at
    1.0
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        kind, _, nullable = str(field.type).partition(" | ")
        if value is None and nullable:
            values[field.name] = None
        elif isinstance(value, _ACCEPTED[kind]):
            values[field.name] = _STORED_AS[kind](value)
        else:
            raise TypeError(
                f"{type(record).__name__}.{field.name} = {value!r} cannot be stored in a journal "
                f"(a {field.type} is needed); nothing was written"
            )
    return dataclasses.replace(record, **values)


@dataclasses.dataclass(eq=False)  # rows are told apart by identity, like database rows
class Row(Generic[R]):
    """A stored record and its audit flag (superseded rows are kept, hidden from reads)."""

    record: R
    superseded: bool = False


@dataclasses.dataclass
class StoredSignal:
    """A buffered signal (the ``signals`` table)."""

    run_id: str
    name: str
    signal_id: str | None
    codec: str
    payload: bytes
    created_at: float
    consumed_at: float | None = None
    consumed_position: int | None = None


@dataclasses.dataclass
class ParkedToken:
    """An out-of-band completion token (the ``async_tokens`` table)."""

    token: str
    parked: StepRecord  # status ``started``; ``attempts`` is the attempt the token belongs to
    consumed_at: float | None = None

    def row(self) -> dict[str, Any]:
        """The token as a row of the DuckDB journal's ``async_tokens`` table."""
        step = self.parked
        return {
            "token": self.token,
            "run_id": step.run_id,
            "position": step.position,
            "attempt": step.attempts,
            "activity": step.activity,
            "input_hash": step.input_hash,
            "source_hash": step.source_hash,
            "idempotency_key": step.idempotency_key,
            "created_at": step.started_at,
            "consumed_at": self.consumed_at,
        }


class MemoryStore:
    """The records of one memory journal; they outlive the journal handles opened on them."""

    def __init__(self) -> None:
        self.name = uuid.uuid4().hex[:12]
        self.lock = threading.RLock()
        self.holder: object | None = None  # the open MemoryJournal on this store, if any
        self.runs: dict[str, RunRecord] = {}
        self.steps: list[Row[StepRecord]] = []
        self.attempts: list[Row[AttemptRecord]] = []
        self.heartbeats: list[Row[HeartbeatRecord]] = []  # in write order, as DuckDB's ids
        self.checkpoints: list[Row[CheckpointRecord]] = []
        self.events: list[EventRecord] = []
        self.signals: list[StoredSignal] = []
        self.tokens: dict[str, ParkedToken] = {}
        self.trace_contexts: dict[str, str] = {}  # run id -> traceparent (DuckDB: weft_meta)
        self.breakers: dict[str, BreakerRecord] = {}  # by activity name
        self._folder: str | None = None

    def trace_context(self, run_id: str, keep: str | None) -> str | None:
        """A run's trace context; ``keep`` is stored when it has none yet (the first one stays)."""
        if keep is not None:
            return self.trace_contexts.setdefault(run_id, keep)
        return self.trace_contexts.get(run_id)

    @property
    def folder(self) -> str:
        """The store's own temporary folder (created on first use, removed with the store)."""
        with self.lock:
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="weft-memory-journal-")
                weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
            return self._folder

    @staticmethod
    def current(table: list[Row[R]], run_id: str, position: int | None = None) -> Iterator[R]:
        """The records of a run (at one position) that are not superseded, in write order."""
        for row in table:
            record: Any = row.record
            here = position is None or record.position == position
            if not row.superseded and record.run_id == run_id and here:
                yield row.record

    def settled(self, run_id: str, position: int) -> bool:
        """Whether the step has a current outcome (completed or failed)."""
        return any(s.status in SETTLED for s in self.current(self.steps, run_id, position))

    def add_outcome(self, step: StepRecord) -> None:
        """Append a step record; a keyed one replaces the step's current dispatch marker."""
        if step.idempotency_key is not None:
            self.steps = [
                row
                for row in self.steps
                if row.superseded
                or (row.record.run_id, row.record.position, row.record.status)
                != (step.run_id, step.position, STEP_STARTED)
            ]
        self.steps.append(Row(step))

    def spend_tokens_of(self, attempt: AttemptRecord) -> None:
        """Consume the unconsumed task tokens of a failed attempt: they die with it."""
        for token in self.tokens.values():
            step = token.parked
            if token.consumed_at is None and (step.run_id, step.position, step.attempts) == (
                attempt.run_id,
                attempt.position,
                attempt.attempt,
            ):
                token.consumed_at = attempt.finished_at

    def trim_checkpoints(self, run_id: str, position: int, keep: int) -> list[CheckpointRecord]:
        """Delete all but the newest ``keep`` current checkpoints of a step; return the deleted."""
        same_step = [
            row
            for row in self.checkpoints
            if not row.superseded and (row.record.run_id, row.record.position) == (run_id, position)
        ]
        same_step.sort(key=lambda row: row.record.seq, reverse=True)
        stale = [row.record for row in same_step[keep:]]
        if stale:
            newest_stale = max(cp.seq for cp in stale)
            dropped = {id(row) for row in same_step if row.record.seq <= newest_stale}
            self.checkpoints = [row for row in self.checkpoints if id(row) not in dropped]
        return stale

    def checkpoints_at(self, run_id: str, position: int) -> list[CheckpointRecord]:
        """Copies of the current checkpoints of a step, newest first."""
        found = [dataclasses.replace(cp) for cp in self.current(self.checkpoints, run_id, position)]
        return sorted(found, key=lambda cp: cp.seq, reverse=True)

    def last_checkpoint_seq(self, run_id: str, position: int) -> int:
        """The highest checkpoint number of a step, superseded ones included; 0 if none."""
        rows = (row.record for row in self.checkpoints)  # superseded rows too
        return max(
            (cp.seq for cp in rows if (cp.run_id, cp.position) == (run_id, position)), default=0
        )

    def runs_where(self, keep: Callable[[RunRecord], bool]) -> list[RunRecord]:
        """Copies of the runs ``keep`` accepts, oldest first."""
        runs = sorted(filter(keep, self.runs.values()), key=lambda r: (r.created_at, r.run_id))
        return [dataclasses.replace(r) for r in runs]

    def supersede(self, run_id: str, position: int) -> None:
        """Flag the steps, attempts, heartbeats and checkpoints at ``position`` and after."""
        tables: list[list[Any]] = [self.steps, self.attempts, self.heartbeats, self.checkpoints]
        for table in tables:
            for row in table:
                if row.record.run_id == run_id and row.record.position >= position:
                    row.superseded = True

    # -- signals and task tokens -----------------------------------------------------------

    def add_signal(self, signal: SignalRecord) -> bool:
        """Buffer a signal; False (nothing stored) if its ``signal_id`` of the run was seen."""
        if signal.signal_id is not None and any(
            (s.run_id, s.signal_id) == (signal.run_id, signal.signal_id) for s in self.signals
        ):
            return False
        self.signals.append(StoredSignal(**dataclasses.asdict(signal)))
        return True

    def consume_signal(self, run_id: str, name: str, step: StepRecord) -> StepRecord | None:
        """Consume the oldest unconsumed signal ``name`` and add ``step`` receiving it; or None."""
        for signal in self.signals:
            if (signal.run_id, signal.name) == (run_id, name) and signal.consumed_at is None:
                received = dataclasses.replace(
                    step, result_codec=signal.codec, result=signal.payload
                )
                signal.consumed_at, signal.consumed_position = step.finished_at, step.position
                self.add_outcome(received)
                return received
        return None

    def unconsumed_token(self, token: str) -> ParkedToken | None:
        """The parked token, unless it is unknown or was consumed (or spent)."""
        found = self.tokens.get(token)
        return None if found is None or found.consumed_at is not None else found

    def pending_tokens(self, run_id: str) -> dict[int, str]:
        """Unconsumed tokens of a run, by position."""
        return {
            t.parked.position: t.token
            for t in self.tokens.values()
            if t.parked.run_id == run_id and t.consumed_at is None
        }

    def complete_token(self, token: str, outcome: StepRecord) -> bool:
        """Consume ``token`` and add ``outcome``; False (nothing changed) when refused.

        Refused when the token was consumed or spent, when its run has finished (or is unknown),
        or when the step already has an outcome.
        """
        found = self.unconsumed_token(token)
        run = None if found is None else self.runs.get(found.parked.run_id)
        if (
            found is None
            or run is None
            or run.status in TERMINAL_STATUSES
            or self.settled(outcome.run_id, outcome.position)
        ):
            return False
        found.consumed_at = outcome.finished_at
        self.add_outcome(outcome)
        return True

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every stored row of a table, as the DuckDB journal's columns (see MemoryJournal)."""
        audited: dict[str, list[Row[Any]]] = {
            "steps": self.steps,
            "attempts": self.attempts,
            "heartbeats": self.heartbeats,
            "checkpoints": self.checkpoints,
        }
        if table in audited:
            return [
                {**dataclasses.asdict(row.record), "superseded": row.superseded}
                for row in audited[table]
            ]
        plain: dict[str, list[Any]] = {
            "runs": list(self.runs.values()),
            "events": self.events,
            "signals": self.signals,
            "breakers": sorted(self.breakers.values(), key=lambda b: b.activity),
        }
        if table in plain:
            return [dataclasses.asdict(record) for record in plain[table]]
        if table == "async_tokens":
            return [token.row() for token in self.tokens.values()]
        raise ValueError(f"no table {table!r} in a weft_nb journal")
