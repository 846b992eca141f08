"""The ``%weft`` subcommands: one function each, of the notebook's session and the rest of the line.

``%weft journal``, ``executor``, ``queue``, ``runs``, ``show``, ``sql``, ``timeline``,
``complete``, ``fail`` and ``cancel`` are here; ``%weft run`` and ``resume`` are in
`weft_nb.notebook.launch`. `SUBCOMMANDS` maps each name to its function, in the order
the error for an unknown subcommand lists them. Mistakes raise ``UsageError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from weft_nb.errors import JournalError, WeftError
from weft_nb.executors.spec import executor_from_spec
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.notebook import launch
from weft_nb.notebook.panel import RunPanel
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.timeline import plot_timeline


def journal(session: NotebookSession, rest: str) -> str:
    """``%weft journal [PATH]``: the journal in use, or switch to another one."""
    if rest.strip():
        session.switch_journal(os.path.expanduser(rest.strip()))
    return session.journal_path()


def executor(session: NotebookSession, rest: str) -> str:
    """Where activities run: ``%weft executor [thread | process [N] | dask ADDRESS]``.

    Switching closes this notebook's engine (its registrations move to the next one) and
    opens the next one on the new executor, so no run may be live.
    """
    spec = " ".join(rest.split())
    if not spec:
        return session.executor_spec
    engine = session.open_engine
    if engine is not None:
        live = [r.run_id for r in engine.runs() if r.active]
        if live:
            raise UsageError(
                f"runs are live in this kernel ({', '.join(live)}); wait for them or "
                "cancel them before switching executors"
            )
    try:
        chosen = executor_from_spec(spec)  # a bad spec or an unreachable cluster: say so
    except ValueError as exc:
        raise UsageError(f"%weft executor: {exc}") from None
    session.switch_executor(spec, chosen)
    return spec


def queue(session: NotebookSession, rest: str) -> dict[str, int]:
    """Queue limits: ``%weft queue`` shows them, ``%weft queue gpu 1`` sets one.

    ``%weft queue gpu none`` removes it; ``%config WeftMagics.queue_limits = {...}`` sets
    them all. A live engine takes a change at once (for attempts not yet started).
    """
    words = rest.split()
    usage = "usage: %weft queue [NAME [LIMIT | none]]"
    settings = session.settings
    if len(words) == 2:
        name, text = words
        if text.lower() != "none" and not (text.isdigit() and int(text) >= 1):
            raise UsageError(f"the limit of queue {name!r} must be >= 1 or none\n{usage}")
        limits = dict(settings.queue_limits)
        if text.lower() == "none":
            limits.pop(name, None)
        else:
            limits[name] = int(text)
        settings.queue_limits = limits  # the trait's observer updates a live engine
    elif len(words) == 1:
        return {q: n for q, n in dict(settings.queue_limits).items() if q == words[0]}
    elif words:
        raise UsageError(usage)
    return dict(settings.queue_limits)


def runs(session: NotebookSession, rest: str) -> list[Any]:
    """``%weft runs [STATUS]``: the journal's runs."""
    return list(session.engine.runs(rest.strip() or None))


def show(session: NotebookSession, rest: str) -> RunPanel:
    """The run's panel, rebuilt from the journal (and live if the run is active here)."""
    panel = RunPanel(session.engine, session.known_run(rest.strip()))
    panel.follow()
    return panel


def sql(session: NotebookSession, rest: str) -> Any:
    """A read-only query over the journal's tables, as a pandas DataFrame."""
    query = rest.strip()
    if len(query) >= 2 and query[0] == query[-1] and query[0] in "\"'":
        query = query[1:-1]
    if not query:
        raise UsageError(
            '%weft sql "SELECT ..." (tables: runs, steps, attempts, heartbeats, '
            "checkpoints, events; see docs/journal-schema.md)"
        )
    try:
        import pandas  # noqa: F401 - DuckDB builds the frame; fail early with a clear message
    except ImportError:
        raise UsageError("%weft sql returns a pandas DataFrame: pip install pandas") from None
    journal = session.engine.journal
    if not isinstance(journal, DuckDBJournal):
        raise UsageError(f"%weft sql reads a journal file; this engine's journal is {journal.path}")
    try:
        return journal.select_frame(query)
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def timeline(session: NotebookSession, rest: str) -> Any:
    """A Gantt-style matplotlib figure of the run's steps and attempts."""
    try:
        return plot_timeline(session.engine, session.known_run(rest.strip()))
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def complete(session: NotebookSession, rest: str) -> None:
    """``%weft complete TOKEN JSON``: complete a parked activity with a JSON result."""
    token, _, text = rest.strip().partition(" ")
    if not token:
        raise UsageError("usage: %weft complete TOKEN JSON")
    token = _token(session, token)
    try:
        result = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise UsageError(
            f"the result is not JSON ({exc}); usage: %weft complete TOKEN JSON"
        ) from None
    try:
        session.engine.complete_async_activity(token, result)
    except WeftError as exc:
        raise UsageError(str(exc)) from None


def fail(session: NotebookSession, rest: str) -> None:
    """``%weft fail TOKEN MESSAGE``: fail a parked activity."""
    token, _, message = rest.strip().partition(" ")
    if not token or not message.strip():
        raise UsageError("usage: %weft fail TOKEN MESSAGE")
    token = _token(session, token)
    try:
        session.engine.fail_async_activity(token, message.strip())
    except WeftError as exc:
        raise UsageError(str(exc)) from None


def _token(session: NotebookSession, word: str) -> str:
    """A token given literally or as ``$variable``.

    IPython does not expand ``$variable`` itself when the line also holds JSON braces.
    """
    if not word.startswith("$"):
        return word
    value = session.user_ns.get(word[1:])
    if not isinstance(value, str):
        raise UsageError(f"{word}: no string variable {word[1:]!r} in the notebook")
    return value


def cancel(session: NotebookSession, rest: str) -> bool:
    """``%weft cancel RUN``: cancel a run (True if it was live here)."""
    return session.engine.cancel(session.known_run(rest.strip()))


Subcommand = Callable[[NotebookSession, str], Any]
SUBCOMMANDS: dict[str, Subcommand] = {
    "run": launch.run,
    "runs": runs,
    "show": show,
    "sql": sql,
    "timeline": timeline,
    "cancel": cancel,
    "resume": launch.resume,
    "complete": complete,
    "fail": fail,
    "journal": journal,
    "executor": executor,
    "queue": queue,
}


def dispatch(session: NotebookSession, line: str) -> Any:
    """Run ``%weft SUBCOMMAND REST``; an unknown subcommand is a ``UsageError`` listing them."""
    words = line.strip().split(None, 1)
    if not words or words[0] not in SUBCOMMANDS:
        raise UsageError(
            f"unknown %weft subcommand {words[0] if words else ''!r}; use one of "
            f"{', '.join(SUBCOMMANDS)}"
        )
    rest = words[1] if len(words) > 1 else ""
    return SUBCOMMANDS[words[0]](session, rest)
