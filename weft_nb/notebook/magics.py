"""IPython magics: ``%%weft_activity``, ``%%weft_workflow`` and ``%weft``; a thin router.

`WeftMagics` holds the settings (traits, for ``%config WeftMagics.<name>``) and the
notebook's `NotebookSession`, and hands each magic to the module
that does the work: `cell_definitions` for the cell magics,
`commands` for ``%weft``. A magic builds the same definitions as the
decorators (``make_activity``/``make_workflow``). Mistakes in a magic line or cell raise
``UsageError`` (shown without a traceback from weft_nb's internals).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, Dict, Float, Unicode, observe

from weft_nb.notebook import cell_definitions, commands
from weft_nb.notebook.session import NotebookSession


@magics_class
class WeftMagics(Magics):
    """The weft_nb magics. Settings are traits: ``%config WeftMagics.journal = "path"``."""

    journal = Unicode(
        "", help="Journal path; empty means .weft/<notebook>.duckdb beside the notebook."
    ).tag(config=True)
    heartbeat_interval = Float(1.0, help="Seconds between heartbeat journal writes.").tag(
        config=True
    )
    on_change = Unicode("rerun", help="Replay policy for changed steps: rerun or error.").tag(
        config=True
    )
    development = Bool(
        False, help="Development mode (DevelopmentWarning); off follows WEFT_NB_DEV=1."
    ).tag(config=True)

    queue_limits = Dict(
        {}, help='Attempts of a queue running at once, e.g. {"gpu": 1}; see also %weft queue.'
    ).tag(config=True)

    checkpoint_storage = Unicode(
        "",
        help="Where checkpoints go: empty for the folder beside the journal, or a URL such "
        "as s3://bucket/prefix (the s3 extra); see %weft checkpoints.",
    ).tag(config=True)
    storage_options = Dict(
        {}, help="fsspec options of checkpoint_storage: endpoint, credentials, timeouts."
    ).tag(config=True)

    @observe("queue_limits")
    def _queue_limits_changed(self, change: dict[str, Any]) -> None:
        self.session.apply_queue_limits(change["new"])

    def __init__(self, shell: Any) -> None:
        # First: settings from a config file arrive during Magics.__init__, and their observer
        # hands them to the session.
        self.session = NotebookSession(shell, settings=self)
        super().__init__(shell)

    def close(self) -> None:
        """Flush heartbeats and release the journal (kernel shutdown, unload)."""
        self.session.close()

    @classmethod
    def describe_settings(cls) -> dict[str, str]:
        """Each ``%config WeftMagics.<name>`` setting, with its help."""
        return {name: trait.help for name, trait in cls.class_traits(config=True).items()}

    # The docstrings of the three magics (what `%weft?` and `%%weft_activity?` show) are
    # generated from their parsers below the class, so they list every subcommand and option.

    @cell_magic
    def weft_activity(self, line: str, cell: str) -> None:  # noqa: D102 - generated below
        cell_definitions.register_activity(self.session, line, cell)

    @cell_magic
    def weft_workflow(self, line: str, cell: str) -> None:  # noqa: D102 - generated below
        cell_definitions.register_workflow(self.session, line, cell)

    @line_magic
    def weft(self, line: str) -> Any:  # noqa: D102 - generated below
        return commands.dispatch(self.session, line)


WeftMagics.weft_activity.__doc__ = cell_definitions.activity_parser().full_help()
WeftMagics.weft_workflow.__doc__ = cell_definitions.workflow_parser().full_help()
WeftMagics.weft.__doc__ = commands.overview(WeftMagics.describe_settings())


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext weft_nb``: register the magics once per shell; loading again is harmless."""
    if any(isinstance(m, WeftMagics) for m in ipython.magics_manager.registry.values()):
        return
    magics = WeftMagics(ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)  # so `%config WeftMagics.<name> = ...` reaches it
    _close_on_sigterm(magics)
    # Kernel shutdown needs no hook: an engine still open at interpreter exit flushes its
    # heartbeats and releases the journal itself (see Engine).


def _close_on_sigterm(magics: WeftMagics) -> None:
    """Make SIGTERM a clean shutdown: flush heartbeats and release the journal, then exit.

    Python's default SIGTERM ends the process without running exit hooks, and ipykernel sets no
    handler of its own. A handler someone else installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            magics.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext weft_nb``: close the engine (flushing heartbeats)."""
    for magics in list(ipython.magics_manager.registry.values()):
        if isinstance(magics, WeftMagics):
            magics.close()
