"""The magics' help (issue 18.8): every subcommand and every option, however it is asked for.

Driven through the real in-process IPython shell: ``%weft?`` is what IPython's inspector shows
(``object_inspect_text``, the text of the ``?`` pager), the rest is what the magic prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from weft_nb.notebook.cell_definitions import activity_parser, workflow_parser
from weft_nb.notebook.commands import SUBCOMMANDS
from weft_nb.notebook.help import Subcommand
from weft_nb.notebook.usage import UsageParser, help_sentence, option_text

SUBCOMMAND_NAMES = sorted(SUBCOMMANDS)


def inspected(shell: InteractiveShell, name: str) -> str:
    """What ``name?`` shows in the notebook."""
    text: str = shell.object_inspect_text(name)
    return text


def printed(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str], line: str
) -> tuple[object, str]:
    capsys.readouterr()
    result = shell.run_line_magic("weft", line)
    return result, capsys.readouterr().out


def assert_describes(text: str, parser: UsageParser) -> None:
    """Every argument of the parser is in ``text``: its usage line and each option."""
    assert parser.usage_line() in " ".join(text.split()), (parser.prog, text)
    assert parser.arguments, parser.prog
    for action in parser.options:
        assert option_text(action) in text, (parser.prog, option_text(action))


def assert_lists_every_subcommand(text: str) -> None:
    flat = " ".join(text.split())
    for subcommand in SUBCOMMANDS.values():
        parser = subcommand.parser()
        assert_describes(text, parser)
        assert f"%weft {subcommand.name}" in text
        assert " ".join(subcommand.summary.split()) in flat
        for action in parser.options:  # with what each option does
            assert " ".join(help_sentence(action).split()) in flat, option_text(action)


def test_weft_help_in_every_form_lists_every_subcommand_and_option(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_lists_every_subcommand(inspected(ip, "%weft"))
    for line in ("--help", "-h", "help"):
        result, out = printed(ip, capsys, line)
        assert result is None
        assert_lists_every_subcommand(out)
    # the settings, from the traits themselves
    for name in ("journal", "heartbeat_interval", "on_change", "development", "queue_limits"):
        assert f"{name}: " in out


def test_the_docs_describe_every_subcommand() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "magics.md").read_text()
    for name, subcommand in SUBCOMMANDS.items():
        assert isinstance(subcommand, Subcommand)
        assert subcommand.name == name
        assert f"`%weft {name}" in docs, name


@pytest.mark.parametrize("name", SUBCOMMAND_NAMES)
def test_each_subcommand_has_its_full_help(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    parser = SUBCOMMANDS[name].parser()
    for line in (f"help {name}", f"{name} --help", f"{name} -h"):
        result, out = printed(ip, capsys, line)
        assert result is None, line
        assert_describes(out, parser)
        assert " ".join((parser.description or "").split()) in " ".join(out.split())
        for action in parser.arguments:  # positionals too, with what they mean
            assert action.help, (name, action.dest)
            assert " ".join(action.help.replace("%%", "%").split()) in " ".join(out.split())


def test_help_after_arguments_still_helps_and_runs_nothing(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    # without --help this line is a UsageError: no workflow 'pipeline' is registered
    result, out = printed(ip, capsys, "run pipeline n=1 --help")
    assert result is None
    assert "--background" in out


def test_help_for_an_unknown_subcommand_is_a_usage_error(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"unknown %weft subcommand 'nope'.*%weft help"):
        ip.run_line_magic("weft", "help nope")


@pytest.mark.parametrize(
    ("magic", "parser"),
    [("weft_activity", activity_parser()), ("weft_workflow", workflow_parser())],
    ids=["activity", "workflow"],
)
def test_cell_magic_help_lists_every_option(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], magic: str, parser: UsageParser
) -> None:
    shown = inspected(ip, f"%%{magic}")
    assert "ACTIVITY_USAGE" not in shown
    assert "WORKFLOW_USAGE" not in shown
    assert_describes(shown, parser)
    assert "NAME(param, param=default)" in shown
    for line in ("--help", "-h", "train(epochs) --help"):
        capsys.readouterr()
        ip.run_cell_magic(magic, line, "1")
        out = capsys.readouterr().out
        assert_describes(out, parser)
        assert "registered activity" not in out
        assert "registered workflow" not in out
    assert "train" not in ip.user_ns  # help registers nothing
