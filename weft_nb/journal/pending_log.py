"""What the step log holds that DuckDB does not yet: its records, in order, and their runs.

`weft_nb.journal.file.JournalFile` owns one `PendingLog` while it writes the journal. Appends
happen under the journal's lock; `sync()` outside it, so that concurrent appenders share one
``fdatasync`` (`weft_nb.journal.step_log.StepLog.sync()`). ``runs`` says, for every run that has
a start or outcome record here, the status those records leave it in: a read of a run that is
not in it can read DuckDB without moving the log first (`weft_nb.journal.run_index`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from weft_nb.journal.group_commit import GroupCommit
from weft_nb.journal.run_log import is_finished, run_status_of
from weft_nb.journal.step_log import APPLY_BYTES, APPLY_ROWS, StepLog, StepRow


class PendingLog:
    """The journal's step log and the records it holds that are not in DuckDB yet.

    Args:
        path: The step log file (emptied: the caller has applied what it held).
        next_lsn: The sequence number of the next record.

    Raises:
        OSError: The file cannot be opened or emptied.
    """

    def __init__(self, path: str, next_lsn: int) -> None:
        self.log = StepLog(path)
        try:
            self.log.reset()
        except OSError:
            self.log.close()
            raise
        self.commit = GroupCommit(self.log)  # syncs shared by parallel steps
        self.rows: list[StepRow] = []
        self.runs: dict[str, str] = {}
        self._ids: set[str] | None = None  # every run id in DuckDB, once loaded
        self._unfinished: dict[str, str] = {}  # statuses of unfinished runs in DuckDB, as known
        self._orphaned: set[str] | None = None  # run ids of DuckDB's steps without their run
        self._bytes = 0
        self._next_lsn = next_lsn

    def append(self, row: StepRow) -> int:
        """Write one record, not yet synced (the caller holds the journal's lock); its lsn.

        Raises:
            OSError: The write failed; the file was cut back to its last whole record.
        """
        lsn = self._next_lsn
        self._bytes += self.log.append(lsn, row)
        self._next_lsn += 1
        self.rows.append(row)
        status = run_status_of(row)
        if status is not None:
            self.runs[row[0]] = status
            if self._orphaned is not None:
                self._orphaned.discard(row[0])  # started again: its steps have their run now
        return lsn

    def full(self) -> bool:
        """Whether the records make a batch to move into DuckDB now."""
        return len(self.rows) >= APPLY_ROWS or self._bytes >= APPLY_BYTES

    def applied(self) -> None:
        """Forget records that a committed DuckDB transaction now holds; empty the file."""
        self.log.mark_durable(self._next_lsn - 1)
        self.log.reset()
        self.rows = []
        self._bytes = 0
        self._learned(self.runs)
        self.runs = {}

    # -- what DuckDB holds, as far as this writer knows (weft_nb.journal.run_index) ----------

    def run_status(
        self,
        run_id: str,
        ids: Callable[[], Iterable[str]],
        read: Callable[[str], str | None] | None,
    ) -> str | None:
        """The run's status as DuckDB and this log leave it; None when there is no such run.

        Reads DuckDB only for a run this writer has not seen: ``ids()`` (every run id, once per
        open) or ``read(run_id)`` (its status; without ``read``, ``""`` says that the run
        exists). Valid while this writer is DuckDB's only one.
        """
        if run_id in self.runs:
            return self.runs[run_id]
        if run_id in self._unfinished:
            return self._unfinished[run_id]
        if self._ids is None:
            self._ids = set(ids())
        if run_id not in self._ids:
            return None
        if read is None:
            return ""
        status = read(run_id)
        self._learned({run_id: status} if status is not None else {})
        return status

    def _learned(self, statuses: dict[str, str]) -> None:
        """Note the statuses DuckDB now holds for some runs."""
        for run_id, status in statuses.items():
            if self._ids is not None:
                self._ids.add(run_id)
            if is_finished(status):
                self._unfinished.pop(run_id, None)
            else:
                self._unfinished[run_id] = status

    def orphaned(self, run_id: str, read: Callable[[], Iterable[str]]) -> bool:
        """Whether DuckDB holds steps of ``run_id`` and not the run (``read()`` once per open)."""
        if self._orphaned is None:
            self._orphaned = set(read())
        return run_id in self._orphaned and run_id not in self.runs

    def status_changed(self, run_id: str, status: str | None) -> None:
        """A DuckDB write set a run's status (None: unknown now)."""
        if status is None:
            self._unfinished.pop(run_id, None)
        else:
            self._learned({run_id: status})

    def forget_runs(self) -> None:
        """Someone may have written ``runs`` directly (SQL, a salvage): read DuckDB again."""
        self._ids = self._orphaned = None
        self._unfinished = {}

    def close(self) -> None:
        """Close the file (its records stay for the next open to apply)."""
        self.log.close()
