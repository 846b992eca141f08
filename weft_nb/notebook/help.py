"""The magics' help, generated from their parsers: ``%weft?``, ``%weft help``, ``%%weft_activity?``.

Every ``%weft`` subcommand is one `Subcommand`: its name, its handler and the
`weft_nb.notebook.usage.UsageParser` that declares its arguments. The usage line, the
summary and the option list all come from that parser, and the parsers of ``%weft run``,
``runs``, ``show`` and the rest are the ones that read the line, so the help cannot drift from
what the magic accepts.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from weft_nb.notebook.usage import UsageParser, help_sentence, option_text

if TYPE_CHECKING:
    from weft_nb.notebook.session import NotebookSession

INDENT = "    "
WIDTH = 96


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """One ``%weft`` subcommand: its name, what runs it, and the parser of its arguments.

    Attributes:
        name: The word after ``%weft``.
        handler: ``handler(session, rest)`` does the work; ``rest`` is the line after the name.
        parser: Builds the subcommand's `UsageParser` (its usage, summary and options).
        free_text: The handler reads the rest of the line as text (SQL, JSON, a message, a
            path), so only ``-h``/``--help`` on its own asks for help.
    """

    name: str
    handler: Callable[[NotebookSession, str], Any]
    parser: Callable[[], UsageParser]
    free_text: bool = False

    @property
    def usage(self) -> str:
        """The usage line, e.g. ``%weft show RUN``."""
        return self.parser().usage_line()

    @property
    def summary(self) -> str:
        """What the subcommand does, in one sentence (the parser's description)."""
        return self.parser().description or ""

    def full_help(self) -> str:
        """Everything about the subcommand: usage, arguments, options, notes."""
        return self.parser().full_help()


def wrap(text: str, indent: str) -> str:
    """``text`` wrapped to the help's width, every line indented by ``indent``."""
    return textwrap.fill(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def describe(parser: UsageParser) -> str:
    """A parser in a few lines: usage, what it does, one line per option."""
    lines = [parser.usage_line(), wrap(parser.description or "", INDENT)]
    column = max((len(option_text(a)) for a in parser.options), default=0) + 2
    for action in parser.options:
        head = f"{INDENT}{option_text(action):<{column}}"
        body = textwrap.fill(
            help_sentence(action),
            width=WIDTH,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.append(body)
    return "\n".join(lines)


def weft_help(subcommands: Iterable[Subcommand], settings: Mapping[str, str]) -> str:
    """The help of ``%weft``: every subcommand with its options, then the settings."""
    blocks = [
        "%weft SUBCOMMAND [ARGUMENTS]: runs, journals and executors of weft_nb, from the notebook.",
        "Subcommands (`%weft help SUBCOMMAND` or `%weft SUBCOMMAND --help` for one in full):",
        *(describe(sub.parser()) for sub in subcommands),
        "Settings (`%config WeftMagics.NAME = value`):",
        "\n".join(wrap(f"{name}: {text}", INDENT) for name, text in settings.items()),
        "The cell magics: `%%weft_activity?` and `%%weft_workflow?`. Docs: docs/magics.md.",
    ]
    return "\n\n".join(blocks)
