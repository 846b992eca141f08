"""Group commit for parallel steps: many completed steps, one ``fdatasync``, no waiting worker.

A step submitted with ``ctx.submit``/``ctx.all`` runs on a pool thread that holds one of the
engine's ``max_parallel`` slots. If that thread also waited for its record's ``fdatasync``, a
fan-out could never share a sync among more steps than it has slots. Instead the pool thread runs
the step inside ``with deferral:`` (a `Deferral`): the step-log append (`JournalFile.append_record`)
notes its sequence number in the `Deferral` and returns without syncing. The thread releases its
slot and hands the step's settlement to `GroupCommit.when_durable()`, then takes the next step.

`when_durable()` never acknowledges early: the callback that settles the step's future (what the
workflow sees) runs only once an ``fdatasync`` that started after the record was written has
returned, or once the record is committed to DuckDB. One thread at a time leads: it syncs
everything written so far, runs the callbacks that sync covered, and goes on while callbacks
remain, so none is stranded; the others return at once. A failed sync settles the waiting steps
with the error (their records may not be durable: the run stops, and a resume runs them again).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from weft_nb.journal.io_errors import from_os_error
from weft_nb.journal.step_log import StepLog

Done = Callable[[OSError | None], None]
Settle = Callable[[BaseException | None], None]

_local = threading.local()


class GroupCommit:
    """Callbacks waiting for step-log records to be on disk, and the leader that syncs them."""

    def __init__(self, log: StepLog) -> None:
        self.path = log.path
        self._log = log
        self._mutex = threading.Lock()
        self._waiting: list[tuple[int, Done]] = []
        self._leading = False

    def when_durable(self, lsn: int, done: Done) -> None:
        """Call ``done(None)`` once record ``lsn`` is durable (``done(error)`` if a sync fails).

        Runs ``done`` on this thread, or on whichever thread leads the sync that covers it.
        """
        with self._mutex:
            if self._log.synced >= lsn:
                ready = True
            else:
                ready = False
                self._waiting.append((lsn, done))
                if self._leading:
                    return
                self._leading = True
        if ready:
            done(None)
            return
        self._lead()

    def _lead(self) -> None:
        while True:
            with self._mutex:
                if not self._waiting:
                    self._leading = False
                    return
            error: OSError | None = None
            try:
                self._log.sync(self._log.written)
            except OSError as exc:
                error = exc
            with self._mutex:
                durable = self._log.synced
                covered = [done for lsn, done in self._waiting if error or lsn <= durable]
                self._waiting = [] if error else [w for w in self._waiting if w[0] > durable]
            for done in covered:
                done(error)


class Deferral:
    """What a step run inside ``with deferral:`` appended: where to wait for it, and what then.

    Entering it makes step-log appends on this thread note their lsn here instead of syncing (the
    pool thread of every parallel step enters one).
    """

    def __init__(self) -> None:
        self.commit: GroupCommit | None = None
        self.lsn = 0
        self.after: list[Callable[[], None]] = []  # run once durable, before ``done``
        self._previous: Deferral | None = None

    def __enter__(self) -> Deferral:
        """Make step-log appends on this thread note their lsn here instead of syncing."""
        self._previous = getattr(_local, "deferral", None)
        _local.deferral = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Restore the thread's previous deferral (usually none)."""
        _local.deferral, self._previous = self._previous, None

    def note(self, commit: GroupCommit, lsn: int) -> None:
        """Record an append whose sync was deferred (the journal calls this)."""
        self.commit, self.lsn = commit, lsn

    def when_durable(self, done: Settle) -> None:
        """Call ``done`` once everything this deferral appended is durable (at once if nothing).

        ``done`` gets None, or the `JournalIOError` of a failed sync.
        """
        commit = self.commit

        def finish(error: OSError | None) -> None:
            if error is not None and commit is not None:
                done(from_os_error(error, commit.path, "syncing a completed step"))
                return
            for action in self.after:
                action()
            done(None)

        if commit is None:
            finish(None)
        else:
            commit.when_durable(self.lsn, finish)


def after_durable(action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Call ``action(*args, **kwargs)`` once this thread's deferred appends are durable (or now)."""
    deferral = current()
    if deferral is not None and deferral.commit is not None:
        deferral.after.append(functools.partial(action, *args, **kwargs))
    else:
        action(*args, **kwargs)


def current() -> Deferral | None:
    """The deferral of this thread, if an append here should not wait for its sync."""
    found: Deferral | None = getattr(_local, "deferral", None)
    return found
