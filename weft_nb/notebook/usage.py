"""Argument parsing for the magics: argparse that reports mistakes as IPython's ``UsageError``.

IPython shows a ``UsageError`` as one line, without a traceback, and the kernel keeps running;
plain argparse would print its own usage and raise ``SystemExit`` (or, with
``exit_on_error=False``, let an ``ArgumentError`` escape as a traceback). A
`UsageParser` is also where a magic's help comes from: it keeps the arguments it was given,
so the help of ``%weft?``, ``%weft help`` and ``%%weft_activity?`` is generated from the very
parser that reads the line, and cannot drift from it.
"""

from __future__ import annotations

import argparse
import builtins
import shlex
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError

from weft_nb.errors import ShadowedBuiltinWarning

HELP_WORDS = ("-h", "--help")
HELP_WIDTH = 96  # help text does not depend on the terminal the kernel was started from


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter at a fixed width, so help reads the same in every front end."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=HELP_WIDTH, max_help_position=30)


class UsageParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (naming the magic's usage) instead of exiting.

    Args:
        prog: How the magic is written, e.g. ``%weft run`` or
            ``%%weft_activity NAME(param, param=default)``.
        description: One sentence: what the magic or subcommand does.
        epilog: More text for the full help (examples, where the docs are).
    """

    def __init__(self, prog: str, *, description: str = "", epilog: str = "") -> None:
        super().__init__(
            prog=prog,
            description=description,
            epilog=epilog,
            add_help=False,
            exit_on_error=False,
            formatter_class=HelpFormatter,
        )
        self.arguments: list[argparse.Action] = []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """``ArgumentParser.add_argument``, remembering the argument for the help."""
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    @property
    def options(self) -> list[argparse.Action]:
        """The ``--option`` arguments, in the order they were added."""
        return [a for a in self.arguments if a.option_strings]

    def usage_line(self) -> str:
        """The usage on one line, as the magic is written: ``%weft run NAME [key=value ...]``.

        Arguments come in the order they were added (argparse would put every option first).
        """
        return " ".join([self.prog, *(argument_text(a) for a in self.arguments)])

    def format_usage(self) -> str:
        """``usage: `` and `usage_line`."""
        return f"usage: {self.usage_line()}\n"

    def full_help(self) -> str:
        """The whole help: usage, description, positional arguments, options, epilog."""
        indent = " " * (len("usage: ") + len(self.prog) + 1)  # under the first argument
        usage = textwrap.fill(
            self.usage_line(),
            width=HELP_WIDTH,
            initial_indent="usage: ",
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        ).removeprefix("usage: ")
        self.usage = usage.replace("%", "%%")  # argparse %-formats the usage
        return self.format_help().rstrip()

    def error(self, message: str) -> Any:
        """Raise ``UsageError`` with the message and the usage line."""
        raise UsageError(f"{message}\nusage: {self.usage_line()}")

    def parse_words(self, words: Sequence[str]) -> argparse.Namespace:
        """Parse already split words; options may come between positionals."""
        try:
            return self.parse_intermixed_args(list(words))
        except argparse.ArgumentError as exc:  # e.g. "--id" with no value after it
            raise UsageError(f"{exc}\nusage: {self.usage_line()}") from None

    def parse_line(self, line: str) -> argparse.Namespace:
        """Split ``line`` as a shell would (quotes group words) and parse it."""
        return self.parse_words(split_words(line, usage=self.usage_line()))


def split_words(line: str, *, usage: str) -> list[str]:
    """Split a magic line into words as a shell would; an unclosed quote is a ``UsageError``."""
    try:
        return shlex.split(line)
    except ValueError as exc:  # shlex says "No closing quotation" or "No escaped character"
        raise UsageError(_quote_problem(str(exc), line, usage)) from None


def split_python_words(line: str, *, usage: str) -> list[str]:
    """Split at whitespace outside quotes and brackets, keeping both: words of Python values.

    ``x='a b' sizes=[1, 2] --id r1`` gives ``x='a b'``, ``sizes=[1, 2]``, ``--id``, ``r1``,
    so each ``key=value`` reaches ``ast.literal_eval`` whole. A word starting with ``#`` starts
    a comment, as in Python. An unclosed quote is a ``UsageError``; unbalanced brackets are left
    for the value's own check.
    """
    words: list[str] = []
    current: list[str] = []
    quote = ""
    depth = 0
    escaped = False
    for char in line:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char == "#" and not current and depth == 0:
            break  # a trailing comment
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char.isspace() and depth == 0:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
    if quote:
        raise UsageError(_quote_problem("No closing quotation", line, usage))
    if current:
        words.append("".join(current))
    return words


def _quote_problem(problem: str, line: str, usage: str) -> str:
    return (
        f"{problem.lower()} in {line.strip()!r}: close the quote, or escape it (\\' or \\\")"
        f"\nusage: {usage}"
    )


def asks_for_help(words: Sequence[str]) -> bool:
    """Whether the words hold ``-h`` or ``--help``."""
    return any(word in HELP_WORDS for word in words)


def argument_text(action: argparse.Action) -> str:
    """How an argument appears in a usage line: ``NAME``, ``[key=value ...]``, ``[--id RUN_ID]``."""
    if action.option_strings:
        return f"[{option_text(action)}]"
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if action.nargs == "?":
        return f"[{metavar}]"
    if action.nargs == "*":
        return f"[{metavar} ...]"
    if action.nargs == "+":
        return f"{metavar} [{metavar} ...]"
    return metavar


def option_text(action: argparse.Action) -> str:
    """``--id RUN_ID`` or ``--new``: how an option is written."""
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return flags
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return f"{flags} {metavar}"


def help_sentence(action: argparse.Action) -> str:
    """The option's help text, with argparse's ``%%`` written as ``%``."""
    return (action.help or "").replace("%%", "%")


def unquote(text: str) -> str:
    """``text`` without one pair of matching quotes around it (``"SELECT 1"``, ``'my dir/j'``)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def warn_if_shadows_builtin(name: str, *, set_by: str) -> None:
    """Warn (`ShadowedBuiltinWarning`) when a magic is about to set ``name`` over a builtin.

    A warning, not a refusal: ``eval``, ``compile``, ``filter`` or ``max`` are natural names for
    an activity or a result, and Python allows them. It shows every time the name is set again
    (a fresh registry, not once per line of weft_nb), and filters still apply: ``ignore``
    silences it, ``error`` raises it.
    """
    if name not in vars(builtins):
        return
    warnings.warn_explicit(
        ShadowedBuiltinWarning(name, set_by=set_by),
        ShadowedBuiltinWarning,
        filename=f"%weft run --as {name}" if set_by == "--as" else f"%%weft_{set_by} {name}",
        lineno=1,
        module="weft_nb.notebook",
        registry={},
    )
