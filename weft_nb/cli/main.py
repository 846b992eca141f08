"""``weft-nb`` (and ``python -m weft_nb``): a journal from the terminal.

Read commands (``runs``, ``show``, ``sql``, ``export``, ``check``) open the journal read-only, so
they work while the engine that owns it is idle (it lets go of the file about a second after its
runs stop; a reader waits up to 5 s). While that engine's runs keep the file open, they say who
holds it, and ``runs`` and ``show`` ask the engine's REST endpoint instead when it serves one.

Write commands (``complete``, ``fail``, ``signal``) open an [`Engine`][weft_nb.Engine] on the
journal when no process holds it. When a kernel holds it they go through the kernel's REST
endpoint (``engine.serve(...)`` records its URL and token in ``<journal>.endpoint.json``), since
only the holder may write the journal; without an endpoint they name the holder and what to do.

Exit status: 0 done, 1 an error (a message on stderr, never a traceback), 2 bad arguments (usage
on stderr, nothing read or written), 3 ``salvage`` left damaged runs out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from weft_nb.base.duckdb_engine import duckdb
from weft_nb.base.release import __version__
from weft_nb.cli.check import cmd_check
from weft_nb.cli.read import cmd_export, cmd_runs, cmd_sql
from weft_nb.cli.reading import DEFAULT_JOURNAL, RUN_STATUSES
from weft_nb.cli.show import cmd_show
from weft_nb.cli.text import print_error
from weft_nb.cli.write import cmd_complete, cmd_fail, cmd_salvage, cmd_signal
from weft_nb.errors import CliError, WeftError

# -- the command line ----------------------------------------------------------------------------


def _json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON ({exc}); quote it for the shell, e.g. '{{\"approved\": true}}' or "
            "'\"a string\"'"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``weft-nb`` argument parser."""
    journal_help = f"the journal file (default {DEFAULT_JOURNAL})"
    parser = argparse.ArgumentParser(
        prog="weft-nb",
        description="Inspect a weft_nb journal, and complete, fail or signal its runs.",
        epilog="See docs/cli.md for every command with examples.",
    )
    parser.add_argument("--journal", default=DEFAULT_JOURNAL, metavar="PATH", help=journal_help)
    parser.add_argument("--version", action="version", version=f"weft-nb {__version__}")
    # --journal is accepted after the command too (`weft-nb runs --journal x.duckdb`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--journal", default=argparse.SUPPRESS, metavar="PATH", help=journal_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    runs = command("runs", cmd_runs, "list the runs, oldest first")
    runs.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")

    show = command("show", cmd_show, "a run's steps, attempts, durations, errors, heartbeats")
    show.add_argument("run", metavar="RUN", help="the run id")

    sql = command("sql", cmd_sql, "run a read-only query (SELECT, WITH ... SELECT, EXPLAIN)")
    sql.add_argument("query", metavar="QUERY", help='e.g. "SELECT run_id, status FROM runs"')
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument(
        "--max-width",
        type=int,
        default=60,
        metavar="N",
        help="cut table cells to N columns, a CJK character taking two (0: never; default 60)",
    )

    export = command("export", cmd_export, "write a run's whole record as JSON")
    export.add_argument("run", metavar="RUN", help="the run id")
    export.add_argument("--to", required=True, metavar="FILE", help="the JSON file ('-': stdout)")

    command("check", cmd_check, "check the journal's integrity; exit 1 if anything is wrong")

    complete = command("complete", cmd_complete, "complete a parked activity with a JSON result")
    complete.add_argument("token", metavar="TOKEN", help="the activity's task token")
    complete.add_argument("result", metavar="JSON", type=_json_argument, help="its result")

    fail = command("fail", cmd_fail, "fail a parked activity")
    fail.add_argument("token", metavar="TOKEN", help="the activity's task token")
    fail.add_argument("message", metavar="MESSAGE", nargs="+", help="why it failed")

    signal = command("signal", cmd_signal, "send a signal to a run")
    signal.add_argument("run", metavar="RUN", help="the run id")
    signal.add_argument("name", metavar="NAME", help="the signal's name")
    signal.add_argument(
        "payload",
        metavar="JSON",
        type=_json_argument,
        nargs="?",
        default=None,
        help="its payload (default null)",
    )
    signal.add_argument(
        "--id",
        dest="signal_id",
        metavar="SIGNAL_ID",
        help="deliver once: a repeated id is ignored",
    )

    salvage = command(
        "salvage", cmd_salvage, "copy every intact run of a damaged journal into a new journal"
    )
    salvage.add_argument("broken", help="the damaged journal (left untouched)")
    salvage.add_argument("target", help="the new journal to write (must not exist)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.journal = os.path.abspath(args.journal)
    try:
        return int(args.handler(args))
    except (CliError, WeftError) as exc:
        print_error(str(exc))
    except duckdb.Error as exc:
        print_error(f"DuckDB: {exc}")
    except BrokenPipeError:  # `weft-nb runs | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print_error(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback; the message says what broke
        if os.environ.get("WEFT_NB_DEBUG"):
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {exc} (set WEFT_NB_DEBUG=1 for the traceback)"
        )
    return 1
