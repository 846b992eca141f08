"""The ``%weft`` subcommands that look at or act on a journal's runs (mixed into the magics).

``%weft journal``, ``executor``, ``queue``, ``runs``, ``show``, ``sql``, ``timeline``, ``complete``,
``fail`` and ``cancel``. Running and resuming workflows (``%weft run``, ``resume``) stay in
:mod:`weft_nb._magics` with the cell magics they follow.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ._executors import executor_from_spec
from ._timeline import plot_timeline
from ._widgets import RunPanel
from .errors import JournalError, WeftError

if TYPE_CHECKING:
    from ._engine import Engine
    from ._executors import Executor


class WeftCommands:
    """``%weft`` subcommands; :class:`~weft_nb._magics.WeftMagics` provides the engine."""

    shell: Any
    journal: Any  # the WeftMagics trait
    queue_limits: Any  # the WeftMagics trait
    _engine: Engine | None
    _executor_spec: str
    _next_executor: Executor | None

    @property
    def engine(self) -> Engine:  # provided by WeftMagics
        raise NotImplementedError

    def journal_path(self) -> str:  # provided by WeftMagics
        raise NotImplementedError

    def close(self) -> None:  # provided by WeftMagics
        raise NotImplementedError

    def _weft_journal(self, rest: str) -> str:
        if rest.strip():
            self.close()
            self.journal = os.path.expanduser(rest.strip())
        return self.journal_path()

    def _weft_executor(self, rest: str) -> str:
        """Where activities run: ``%weft executor [thread | process [N] | dask ADDRESS]``.

        Switching closes this notebook's engine (its registrations move to the next one) and
        opens the next one on the new executor, so no run may be live.
        """
        spec = " ".join(rest.split())
        if not spec:
            return self._executor_spec
        if self._engine is not None:
            live = [r.run_id for r in self._engine.runs() if r.active]
            if live:
                raise UsageError(
                    f"runs are live in this kernel ({', '.join(live)}); wait for them or "
                    "cancel them before switching executors"
                )
        try:
            executor = executor_from_spec(spec)  # a bad spec or an unreachable cluster: say so
        except ValueError as exc:
            raise UsageError(f"%weft executor: {exc}") from None
        registry = self._engine.registry if self._engine is not None else None
        self.close()  # the old engine, and an executor chosen before but never used
        self._executor_spec, self._next_executor = spec, executor  # the next engine uses it
        if registry is not None:  # the next engine knows what this one knew
            self.engine.register(*registry.activities.values(), *registry.workflows.values())
        return spec

    def _weft_queue(self, rest: str) -> dict[str, int]:
        """Queue limits: ``%weft queue`` shows them, ``%weft queue gpu 1`` sets one.

        ``%weft queue gpu none`` removes it; ``%config WeftMagics.queue_limits = {...}`` sets
        them all. A live engine takes a change at once (for attempts not yet started).
        """
        words = rest.split()
        usage = "usage: %weft queue [NAME [LIMIT | none]]"
        if len(words) == 2:
            name, text = words
            if text.lower() != "none" and not (text.isdigit() and int(text) >= 1):
                raise UsageError(f"the limit of queue {name!r} must be >= 1 or none\n{usage}")
            limits = dict(self.queue_limits)
            if text.lower() == "none":
                limits.pop(name, None)
            else:
                limits[name] = int(text)
            self.queue_limits = limits  # the trait's observer updates a live engine
        elif len(words) == 1:
            return {q: n for q, n in dict(self.queue_limits).items() if q == words[0]}
        elif words:
            raise UsageError(usage)
        return dict(self.queue_limits)

    def _weft_runs(self, rest: str) -> list[Any]:
        return list(self.engine.runs(rest.strip() or None))

    def _known_run(self, rest: str) -> str:
        run_id = rest.strip()
        known = [r.run_id for r in self.engine.runs()]
        if run_id not in known:
            raise UsageError(f"no run {run_id!r}; runs in this journal: {known or 'none'}")
        return run_id

    def _weft_show(self, rest: str) -> RunPanel:
        """The run's panel, rebuilt from the journal (and live if the run is active here)."""
        panel = RunPanel(self.engine, self._known_run(rest))
        panel.follow()
        return panel

    def _weft_sql(self, rest: str) -> Any:
        """A read-only query over the journal's tables, as a pandas DataFrame."""
        query = rest.strip()
        if len(query) >= 2 and query[0] == query[-1] and query[0] in "\"'":
            query = query[1:-1]
        if not query:
            raise UsageError('%weft sql "SELECT ..." (tables: runs, steps, attempts, heartbeats, '
                             "checkpoints, events; see docs/journal-schema.md)")  # fmt: skip
        try:
            import pandas  # noqa: F401 - DuckDB builds the frame; fail early with a clear message
        except ImportError:
            raise UsageError("%weft sql returns a pandas DataFrame: pip install pandas") from None
        try:
            return self.engine.journal.select_frame(query)
        except JournalError as exc:
            raise UsageError(str(exc)) from None

    def _weft_timeline(self, rest: str) -> Any:
        """A Gantt-style matplotlib figure of the run's steps and attempts."""
        try:
            return plot_timeline(self.engine, self._known_run(rest))
        except ImportError as exc:
            raise UsageError(str(exc)) from None

    def _weft_complete(self, rest: str) -> None:
        """``%weft complete TOKEN JSON``: complete a parked activity with a JSON result."""
        token, _, text = rest.strip().partition(" ")
        if not token:
            raise UsageError("usage: %weft complete TOKEN JSON")
        token = self._token(token)
        try:
            result = json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise UsageError(
                f"the result is not JSON ({exc}); usage: %weft complete TOKEN JSON"
            ) from None
        try:
            self.engine.complete_async_activity(token, result)
        except WeftError as exc:
            raise UsageError(str(exc)) from None

    def _weft_fail(self, rest: str) -> None:
        """``%weft fail TOKEN MESSAGE``: fail a parked activity."""
        token, _, message = rest.strip().partition(" ")
        if not token or not message.strip():
            raise UsageError("usage: %weft fail TOKEN MESSAGE")
        token = self._token(token)
        try:
            self.engine.fail_async_activity(token, message.strip())
        except WeftError as exc:
            raise UsageError(str(exc)) from None

    def _token(self, word: str) -> str:
        """A token given literally or as ``$variable``.

        IPython does not expand ``$variable`` itself when the line also holds JSON braces.
        """
        if not word.startswith("$"):
            return word
        value = self.shell.user_ns.get(word[1:])
        if not isinstance(value, str):
            raise UsageError(f"{word}: no string variable {word[1:]!r} in the notebook")
        return value

    def _weft_cancel(self, rest: str) -> bool:
        return self.engine.cancel(self._known_run(rest))
