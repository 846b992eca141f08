"""The notebook's session: its engine, where its journal lives, and what the next engine runs on.

One `NotebookSession` per IPython shell (built by ``%load_ext weft_nb``). The magics and
every ``%weft`` subcommand work through it; none of them holds the engine itself. The settings
(journal path, heartbeat interval, replay policy, development mode, queue limits) stay where
``%config WeftMagics.<name>`` reaches them, behind the `NotebookSettings` protocol; the
session reads them when it opens an engine, and writes them when ``%weft journal`` or
``%weft queue`` changes one, so ``%config`` always shows what is in use.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Protocol

from IPython.core.error import UsageError

from weft_nb.base.definitions import ActivityDefinition, Registry, WorkflowDefinition
from weft_nb.base.payloads import encode
from weft_nb.engine.engine import Engine
from weft_nb.errors import (
    JournalLockedError,
    NotebookJournalLockedError,
    UndecidedNotebookError,
    WeftError,
)
from weft_nb.executors.base import Executor
from weft_nb.executors.spec import executor_from_spec
from weft_nb.notebook.identity import (
    NotebookIdentity,
    Undecided,
    find_notebook,
    notebook_path,
    runner,
)

__all__ = ["NotebookSession", "NotebookSettings", "notebook_path"]

SHARED_JOURNAL = os.path.join(".weft", "journal.duckdb")


class NotebookSettings(Protocol):
    """The settings a session reads (the ``WeftMagics`` traits, set with ``%config``)."""

    journal: str
    heartbeat_interval: float
    on_change: str
    development: bool
    queue_limits: dict[str, int]
    checkpoint_storage: str
    storage_options: dict[str, Any]

    def describe_settings(self) -> dict[str, str]:
        """Each setting's name, with its help (for ``%weft help``)."""
        ...


class NotebookSession:
    """The current engine of one notebook, opened on first use and closed on a switch or unload.

    Args:
        shell: The IPython shell (its ``user_ns`` is the notebook's namespace).
        settings: Where the settings live (``WeftMagics``).
    """

    def __init__(self, shell: Any, settings: NotebookSettings) -> None:
        self.shell: Any = shell
        self.settings = settings
        self.executor_spec = "thread"  # see %weft executor
        self._engine: Engine | None = None
        self._next_executor: Executor | None = None  # built (and checked) by %weft executor
        self._identity: tuple[NotebookIdentity | None] | None = None  # found once, then kept
        self._pending = Registry()  # cells defined while no journal can be chosen yet

    @property
    def user_ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    # -- the engine ----------------------------------------------------------------------------

    def notebook(self) -> NotebookIdentity | None:
        """The notebook this kernel runs, found once (see `weft_nb.notebook.identity`).

        Kept for the kernel's life once found, so the journal and the run ids never change
        under it. An undecided answer (the cells run so far fit several notebooks) is never
        kept: it raises `UndecidedNotebookError`, and the next call looks again, with more
        cells run.
        """
        if self._identity is None:
            history = getattr(self.shell, "history_manager", None)
            executed = list(getattr(history, "input_hist_raw", [])[1:])
            found = find_notebook(self.user_ns, executed, os.getcwd(), runner())
            if isinstance(found, Undecided):
                raise UndecidedNotebookError(found.candidates)
            self._identity = (found,)
        return self._identity[0]

    def undecided(self) -> UndecidedNotebookError | None:
        """Why no journal can be chosen yet, or None when one can (or an engine is open).

        Commands that only read ask this first, so that they never make the choice too early.
        """
        if self._engine is not None or self.settings.journal:
            return None
        try:
            self.notebook()
        except UndecidedNotebookError as exc:
            return exc
        return None

    def _notebook_if_known(self) -> NotebookIdentity | None:
        """The notebook, or None when not known yet (a journal named by the user needs none)."""
        try:
            return self.notebook()
        except UndecidedNotebookError:
            return None

    def forget_notebook(self) -> None:
        """Find the notebook again on next use (a shell reused for another notebook: tests)."""
        self._identity = None

    def journal_path(self) -> str:
        """Where this notebook's journal lives (see the ``journal`` setting).

        Raises `UndecidedNotebookError` when none is named and the notebook is not known yet.
        """
        if self.settings.journal:
            return str(self.settings.journal)
        notebook = self.notebook()
        if notebook is None:
            return SHARED_JOURNAL
        stem = os.path.splitext(os.path.basename(notebook.path))[0]
        return os.path.join(os.path.dirname(notebook.path), ".weft", f"{stem}.duckdb")

    @property
    def engine(self) -> Engine:
        """The notebook's engine, opened on first use.

        A ``UsageError`` says to name the journal when the notebook is not known yet.
        """
        if self._engine is None:
            try:
                engine = self._open_engine()
            except UndecidedNotebookError as exc:
                raise UsageError(str(exc)) from None
            pending, self._pending = self._pending, Registry()
            engine.register(*pending.activities.values(), *pending.workflows.values())
            self._engine = engine
        return self._engine

    def register(self, definition: ActivityDefinition | WorkflowDefinition) -> bool:
        """Register a cell's definition; returns whether it replaced one of the same name.

        It goes into the engine, opened now if the journal can be chosen. While the cells run
        so far fit several notebooks it is kept here, and the engine that opens once they tell
        the notebooks apart (or the journal is named) gets it.
        """
        engine = self.engine if self.undecided() is None else None
        known = engine.registry if engine is not None else self._pending
        table: dict[str, Any] = (
            known.activities if isinstance(definition, ActivityDefinition) else known.workflows
        )
        replaced = definition.name in table
        if engine is not None:
            engine.register(definition)
        else:
            known.add(definition)
        return replaced

    def _open_engine(self) -> Engine:
        """A new engine on this notebook's journal; a path that cannot be one is a UsageError."""
        path = self.journal_path()  # raises while the notebook is not known and none is named
        notebook = self._notebook_if_known()
        try:
            return Engine(
                path,
                heartbeat_interval=self.settings.heartbeat_interval,
                on_change=self.settings.on_change,
                queue_limits=dict(self.settings.queue_limits),
                program=notebook.path if notebook is not None else "IPython kernel",
                executor=self._take_executor(),
                development=True if self.settings.development else None,
                **self._checkpoint_settings(),
            )
        except JournalLockedError as exc:
            chosen = self._why_this_journal()
            if chosen is None:  # named by the user or the front end: the error says enough
                raise
            raise NotebookJournalLockedError(exc, chosen=chosen) from exc
        except WeftError:
            raise  # a damaged or newer journal says so itself
        except (OSError, ValueError) as exc:  # a path or setting from %weft journal or %config
            raise UsageError(
                f"cannot open the journal {path}: {exc}; choose another with %weft journal PATH "
                "(or %config WeftMagics.journal)"
            ) from None

    def _checkpoint_settings(self) -> dict[str, Any]:
        url = self.settings.checkpoint_storage
        if not url:
            return {}
        return {"checkpoint_storage": url, "storage_options": dict(self.settings.storage_options)}

    def _why_this_journal(self) -> str | None:
        """Why weft_nb chose the journal in use, when it guessed; None when it was named."""
        if self.settings.journal:
            return None
        notebook = self.notebook()
        if notebook is None:
            return (
                "nothing told it which notebook this kernel runs (a headless runner that names "
                "none, and no notebook in the working folder holds the cells run so far), so it "
                "fell back to the folder's shared journal"
            )
        if notebook.found_by == "its cells":
            return (
                f"it took this kernel's notebook to be {notebook.path}, a notebook whose code "
                "cells include every cell run so far (another kernel may run the same notebook)"
            )
        return None

    @property
    def open_engine(self) -> Engine | None:
        """The engine if one is open now (never opens one)."""
        return self._engine

    def _take_executor(self) -> Executor:
        executor, self._next_executor = self._next_executor, None
        return executor or executor_from_spec(self.executor_spec)

    def close(self) -> None:
        """Flush heartbeats and release the journal (kernel shutdown, unload, switch)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        executor, self._next_executor = self._next_executor, None
        if executor is not None:  # chosen by %weft executor, never used by an engine
            executor.close()

    def switch_journal(self, path: str) -> None:
        """Close the engine; the next one opens the journal at ``path``."""
        self.close()
        self.settings.journal = path

    def switch_executor(self, spec: str, executor: Executor) -> None:
        """Close the engine; the next one runs on ``executor`` and knows the same definitions."""
        registry = self._engine.registry if self._engine is not None else None
        self.close()  # the old engine, and an executor chosen before but never used
        self.executor_spec, self._next_executor = spec, executor  # the next engine uses it
        if registry is not None:  # the next engine knows what this one knew
            self.engine.register(*registry.activities.values(), *registry.workflows.values())

    def switch_checkpoints(self, url: str) -> None:
        """Close the engine; the next keeps checkpoints at ``url`` (``""``: beside the journal)."""
        registry = self._engine.registry if self._engine is not None else None
        self.close()
        self.settings.checkpoint_storage = url
        if registry is not None:  # the next engine knows what this one knew
            self.engine.register(*registry.activities.values(), *registry.workflows.values())

    def apply_queue_limits(self, limits: dict[str, int]) -> None:
        """A live engine takes new queue limits at once (else it takes them when it opens)."""
        if self._engine is not None:
            self._engine.queue_limits.replace(limits)

    # -- runs ----------------------------------------------------------------------------------

    def known_run(self, run_id: str) -> str:
        """``run_id``, or a ``UsageError`` listing the runs of this journal."""
        known = [r.run_id for r in self.engine.runs()]
        if run_id not in known:
            raise UsageError(f"no run {run_id!r}; runs in this journal: {known or 'none'}")
        return run_id

    def default_run_id(self, name: str, value: Any) -> str:
        """Same notebook, workflow and input: same run, so Restart & Run All resumes it."""
        codec, data = encode(value, what=f"input of workflow {name!r}")
        found = self._notebook_if_known()
        notebook = found.path if found is not None else self.journal_path()
        digest = hashlib.sha256(f"{notebook}\0{name}\0{codec}\0".encode() + data).hexdigest()
        return f"{name}-{digest[:12]}"
