"""``python -m weft_nb``: journal maintenance from the command line."""

from __future__ import annotations

import argparse
import sys

from ._salvage import salvage
from .errors import WeftError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m weft_nb")
    commands = parser.add_subparsers(dest="command", required=True)
    rescue = commands.add_parser(
        "salvage", help="copy every intact run of a damaged journal into a new journal"
    )
    rescue.add_argument("broken", help="the damaged journal (left untouched)")
    rescue.add_argument("target", help="the new journal to write (must not exist)")
    args = parser.parse_args(argv)
    try:
        report = salvage(args.broken, args.target)
    except WeftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.describe())
    return 0 if not report.damaged else 3


if __name__ == "__main__":
    raise SystemExit(main())
