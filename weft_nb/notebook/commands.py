"""The ``%weft`` subcommands: one function each, of the notebook's session and the rest of the line.

``%weft runs``, ``show``, ``sql``, ``timeline``, ``complete``, ``fail``, ``cancel`` and ``help``
are here; ``run`` and ``resume`` are in `weft_nb.notebook.launch`; ``journal``, ``executor``,
``checkpoints`` and ``queue`` in `weft_nb.notebook.setup_commands`. Each has a parser
(``<name>_parser``) that declares its arguments; `SUBCOMMANDS` holds every `Subcommand`, in the
order the help and the error for an unknown subcommand list them. Mistakes raise ``UsageError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from weft_nb.errors import JournalError, WeftError
from weft_nb.journal.duckdb_journal import DuckDBJournal
from weft_nb.journal.protocol import CANCELLED, COMPLETED, FAILED, INTERRUPTED, RUNNING
from weft_nb.notebook import launch, setup_commands
from weft_nb.notebook.help import Subcommand, weft_help
from weft_nb.notebook.run_table import RunTable
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.timeline import plot_timeline
from weft_nb.notebook.usage import HELP_WORDS, UsageParser, asks_for_help, unquote

if TYPE_CHECKING:
    from weft_nb.notebook.panel import RunPanel

RUN_STATUSES = (RUNNING, INTERRUPTED, COMPLETED, FAILED, CANCELLED)


def runs_parser() -> UsageParser:
    """``%weft runs [STATUS]``."""
    parser = UsageParser(
        "%weft runs",
        description="The journal's runs, oldest first: a table in the notebook, a list of "
        "RunInfo in code.",
    )
    parser.add_argument(
        "status",
        metavar="STATUS",
        nargs="?",
        choices=RUN_STATUSES,
        help=f"only runs with this status: {', '.join(RUN_STATUSES)}",
    )
    return parser


def runs(session: NotebookSession, rest: str) -> RunTable:
    """``%weft runs [STATUS]``: the journal's runs."""
    options = runs_parser().parse_line(rest)
    waiting = session.undecided()
    if waiting is not None:  # listing runs must not choose the journal from too few cells
        print(f"no journal chosen yet, so no runs to list. {waiting}")
        return RunTable([])
    return RunTable(session.engine.runs(options.status))


def run_parser_of(prog: str, description: str) -> Callable[[], UsageParser]:
    """The parser of a subcommand that takes one run id."""

    def build() -> UsageParser:
        parser = UsageParser(prog, description=description)
        parser.add_argument("run", metavar="RUN", help="the run id (%%weft runs lists them)")
        return parser

    return build


show_parser = run_parser_of(
    "%weft show",
    "The run's panel, rebuilt from the journal; live while the run executes in this kernel.",
)
timeline_parser = run_parser_of(
    "%weft timeline",
    "A Gantt-style chart of the run (matplotlib): one row per step, one bar per attempt, "
    "coloured by outcome.",
)
cancel_parser = run_parser_of("%weft cancel", "Cancel a run (True if it was live here).")


def show(session: NotebookSession, rest: str) -> RunPanel:
    """The run's panel, rebuilt from the journal; live while the run executes in this kernel.

    A run the journal calls running that no thread of this engine runs (its process stopped
    mid-run) would never settle: its panel is static at once, with a hint to resume it.
    """
    run_id = session.known_run(show_parser().parse_line(rest).run)
    engine = session.engine
    from weft_nb.notebook.panel import RunPanel  # ipywidgets: on first use

    panel = RunPanel(engine, run_id)
    if engine.is_active(run_id) or engine.live_attempts(run_id):
        panel.follow()
    elif panel.snapshot.status == RUNNING:
        panel.freeze()
        print(
            f"run {run_id!r} is running in the journal but not live in this kernel (the "
            f"process that ran it stopped): %weft resume {run_id} continues it"
        )
    return panel


def sql_parser() -> UsageParser:
    """``%weft sql QUERY``."""
    parser = UsageParser(
        "%weft sql",
        description="A read-only query over the journal (SELECT, WITH ... SELECT, EXPLAIN), as a "
        "pandas DataFrame. Tables: runs, steps, attempts, heartbeats, checkpoints, events (see "
        "docs/journal-schema.md).",
    )
    parser.add_argument("query", metavar="QUERY", help='the query, e.g. "SELECT * FROM runs"')
    return parser


def sql(session: NotebookSession, rest: str) -> Any:
    """A read-only query over the journal's tables, as a pandas DataFrame."""
    query = unquote(rest.strip())
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
    run_id = session.known_run(timeline_parser().parse_line(rest).run)
    try:
        return plot_timeline(session.engine, run_id)
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def complete_parser() -> UsageParser:
    """``%weft complete TOKEN [JSON]``."""
    parser = UsageParser(
        "%weft complete",
        description="Complete a parked activity (activity.complete_async()) with a JSON result.",
    )
    parser.add_argument(
        "token", metavar="TOKEN", help="the activity's task token, or $variable holding it"
    )
    parser.add_argument("result", metavar="JSON", nargs="?", help="its result (default null)")
    return parser


def complete(session: NotebookSession, rest: str) -> None:
    """``%weft complete TOKEN JSON``: complete a parked activity with a JSON result."""
    usage = complete_parser().usage_line()
    token, _, text = rest.strip().partition(" ")
    if not token:
        raise UsageError(f"name the task token\nusage: {usage}")
    token = _token(session, token)
    try:
        result = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise UsageError(f"the result is not JSON ({exc})\nusage: {usage}") from None
    try:
        session.engine.complete_async_activity(token, result)
    except WeftError as exc:
        raise UsageError(str(exc)) from None


def fail_parser() -> UsageParser:
    """``%weft fail TOKEN MESSAGE``."""
    parser = UsageParser("%weft fail", description="Fail a parked activity with a message.")
    parser.add_argument(
        "token", metavar="TOKEN", help="the activity's task token, or $variable holding it"
    )
    parser.add_argument("message", metavar="MESSAGE", help="why it failed (the rest of the line)")
    return parser


def fail(session: NotebookSession, rest: str) -> None:
    """``%weft fail TOKEN MESSAGE``: fail a parked activity."""
    token, _, message = rest.strip().partition(" ")
    if not token or not message.strip():
        raise UsageError(f"name the task token and say why\nusage: {fail_parser().usage_line()}")
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
    return session.engine.cancel(session.known_run(cancel_parser().parse_line(rest).run))


def help_parser() -> UsageParser:
    """``%weft help [SUBCOMMAND]``."""
    parser = UsageParser(
        "%weft help",
        description="This help, or one subcommand's in full (also %weft SUBCOMMAND --help).",
    )
    parser.add_argument("subcommand", metavar="SUBCOMMAND", nargs="?", help="e.g. run")
    return parser


def help_text(session: NotebookSession, rest: str) -> None:
    """``%weft help [SUBCOMMAND]``: print the help of ``%weft``, or of one subcommand."""
    name = help_parser().parse_line(rest).subcommand
    if name is None:
        print(overview(session.settings.describe_settings()))
    else:
        print(known_subcommand(name).full_help())


def overview(settings: Mapping[str, str]) -> str:
    """The help of ``%weft`` (``%weft?``, ``%weft help``): every subcommand, every option."""
    return weft_help(SUBCOMMANDS.values(), settings)


SUBCOMMANDS: dict[str, Subcommand] = {
    sub.name: sub
    for sub in (
        Subcommand("run", launch.run, launch.run_parser),
        Subcommand("runs", runs, runs_parser),
        Subcommand("show", show, show_parser),
        Subcommand("sql", sql, sql_parser, free_text=True),
        Subcommand("timeline", timeline, timeline_parser),
        Subcommand("cancel", cancel, cancel_parser),
        Subcommand("resume", launch.resume, launch.resume_parser),
        Subcommand("complete", complete, complete_parser, free_text=True),
        Subcommand("fail", fail, fail_parser, free_text=True),
        Subcommand(
            "journal", setup_commands.journal, setup_commands.journal_parser, free_text=True
        ),
        Subcommand("executor", setup_commands.executor, setup_commands.executor_parser),
        Subcommand("checkpoints", setup_commands.checkpoints, setup_commands.checkpoints_parser),
        Subcommand("queue", setup_commands.queue, setup_commands.queue_parser),
        Subcommand("help", help_text, help_parser),
    )
}


def known_subcommand(name: str) -> Subcommand:
    """The subcommand called ``name``, or a ``UsageError`` listing them."""
    if name not in SUBCOMMANDS:
        raise UsageError(
            f"unknown %weft subcommand {name!r}; use one of {', '.join(SUBCOMMANDS)} "
            "(%weft help describes them)"
        )
    return SUBCOMMANDS[name]


def dispatch(session: NotebookSession, line: str) -> Any:
    """Run ``%weft SUBCOMMAND REST``; ``-h``/``--help`` (alone or after a subcommand) print help."""
    words = line.strip().split(None, 1)
    name = words[0] if words else ""
    rest = words[1] if len(words) > 1 else ""
    if name in HELP_WORDS:
        name = "help"
    subcommand = known_subcommand(name)
    asked = rest.strip() in HELP_WORDS if subcommand.free_text else asks_for_help(rest.split())
    if asked:
        print(subcommand.full_help())
        return None
    return subcommand.handler(session, rest)
