"""Mistakes in magic input are ``UsageError``s that say what to write (issue 18.9).

IPython shows a ``UsageError`` as one line; any other exception from a magic is a traceback
through weft_nb's internals. The parametrized cases are the ones the issue found; the fuzz
throws generated lines and cells at the real magics and accepts only success or ``UsageError``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from weft_nb.errors import ShadowedBuiltinWarning
from weft_nb.notebook.commands import SUBCOMMANDS


@pytest.fixture
def ip(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> InteractiveShell:
    """The shared shell (conftest.py) with a workflow ``wf(x=1)`` and a finished run ``r1``."""
    ip.run_cell_magic("weft_activity", "double(x)", "2 * x")
    ip.run_cell_magic("weft_workflow", "wf(x=1)", "ctx.run(double, x)")
    assert ip.run_line_magic("weft", "run wf x=2 --id r1") == 4
    capsys.readouterr()
    return ip


@pytest.mark.parametrize(
    ("magic", "line", "body", "message"),
    [
        ("weft_activity", "dup(x, x)", "x", "parameter 'x' appears twice; give each"),
        ("weft_workflow", "dup(a, b, a)", "a", "parameter 'a' appears twice"),
        ("weft_activity", "f(x)", "nonlocal y\nx", "line 1: `nonlocal y` has no enclosing"),
        ("weft_activity", "f(x)", "y = 1\nglobal y\nx", "line 2: `global y`.*--as VAR"),
        ("weft_workflow", "w(x)", "global seen\nseen = x", "`global seen`"),
        ("weft_activity", "f(x)", "from os import *\nx", "`from os import \\*`.*import the names"),
        ("weft_activity", "f(x)", "yield x", "`yield` would make the activity a generator"),
        ("weft_activity", "f(x)", "for i in x:\n    pass\nbreak", "line 3: 'break' outside loop"),
        ("weft_activity", "f(x) --queue 'gpu", "x", "no closing quotation.*close the quote"),
        ("weft_activity", "f(x) --retry", "x", "argument --retry: expected one argument"),
        ("weft_activity", "f(x) --retry many", "x", "invalid int value: 'many'"),
        ("weft_workflow", "w(x) --version", "x", "argument --version: expected one argument"),
        ("weft_activity", "for(x)", "x", "'for' is a Python keyword.*choose another name"),
        ("weft_workflow", "None(x)", "x", "'None' is a Python keyword.*\\(None_step\\)"),
    ],
)
def test_bad_cells_are_usage_errors_that_say_what_to_write(
    ip: InteractiveShell, magic: str, line: str, body: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as info:
        ip.run_cell_magic(magic, line, body)
    assert f"usage: %%{magic} NAME(param, param=default)" in str(info.value)


def test_nested_functions_keep_nonlocal_global_yield_and_await(ip: InteractiveShell) -> None:
    body = """
def counter():
    total = 0
    def add(n):
        nonlocal total
        total += n
        return total
    return add
async def later():
    await other()
def numbers():
    yield from range(x)
add = counter()
add(1)
add(x) + sum(numbers())
"""
    ip.run_cell_magic("weft_activity", "nested(x)", body)
    assert ip.user_ns["nested"](3) == 7


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("run wf x=1 --id", "argument --id: expected one argument\nusage: %weft run NAME"),
        ("run wf x=1 --as", "argument --as: expected one argument"),
        ("run wf x=1 --as 1x", "--as 1x: not a Python name"),
        ("run wf x=1 --as for", "--as for: 'for' is a Python keyword.*--as for_result"),
        ("run wf --as r x=1 --background", "--as r stores the result, which --background does"),
        ("run wf x=1 x=2", "x is given twice \\(x=1 and x=2\\); give each input once"),
        ("run wf x=[1, 2] --new x=3", "x is given twice \\(x=\\[1, 2\\] and x=3\\)"),
        ("run wf x=1 --id 'a\tb'", "run id.*control character"),
        # the lone `{` keeps IPython from expanding the line: weft_nb evaluates {lock} itself
        ("run wf x={__import__('threading').Lock()}  # {", "input of workflow 'wf'"),
        ("run wf x=1 --id 'r", "no closing quotation"),
        ("runs bogus", "argument STATUS: invalid choice: 'bogus'"),
        ("show", "the following arguments are required: RUN"),
        ("timeline r1 r2", "unrecognized arguments: r2"),
        ("cancel 'r1", "no closing quotation"),
        ("queue gpu 0", "the limit of queue 'gpu' must be >= 1 or none"),
        ("queue a b c", "unrecognized arguments: c"),
        ("queue gpu=2", "'gpu=2': a queue name holds no '='.*: %weft queue gpu 2\n"),
        ("queue gpu=", "a queue name holds no '='.*: %weft queue gpu LIMIT\n"),
        ("journal a b c", "takes one path, got 'a b c'; quote .*: %weft journal 'a b c'\n"),
        ("journal 'my runs/j.duckdb", 'no closing quotation in "\'my runs/j.duckdb"'),
        ("journal 'a' 'b'", "%weft journal takes one path, got 'a' 'b'"),
        ("executor thread more", "unknown executor .thread more.; use one of: thread"),
        ("executor process 2 3", "unrecognized arguments: 3"),
        ("executor warp", "unknown executor 'warp'"),
        ("complete", "name the task token"),
        ("complete tok {", "the result is not JSON"),
        ("complete tok 1", "tok"),
        ("fail tok", "name the task token and say why"),
        ("help nope", "unknown %weft subcommand 'nope'"),
        ("", "unknown %weft subcommand ''.*%weft help"),
    ],
)
def test_bad_lines_are_usage_errors(ip: InteractiveShell, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("weft", line)


def test_a_journal_path_with_unquoted_spaces_keeps_the_journal_in_use(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    in_use = ip.run_line_magic("weft", "journal")
    with pytest.raises(UsageError, match="quote a path with spaces"):
        ip.run_line_magic("weft", "journal a b c")
    assert ip.run_line_magic("weft", "journal") == in_use
    assert not (tmp_path / "a b c").exists()


def test_a_queue_limit_written_as_key_value_sets_nothing(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="%weft queue gpu 2"):
        ip.run_line_magic("weft", "queue gpu=2")
    assert ip.run_line_magic("weft", "queue") == {}
    assert ip.run_line_magic("weft", "queue gpu 2") == {"gpu": 2}


@pytest.mark.parametrize("magic", ["weft_activity", "weft_workflow"])
def test_a_cell_named_after_a_builtin_warns_each_time_and_names_the_way_back(
    ip: InteractiveShell, magic: str
) -> None:
    """``eval``, ``compile``, ``filter`` are natural step names: allowed, but said loudly."""
    kind = magic.removeprefix("weft_")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per place, unless told apart
        ip.run_cell_magic(magic, "print(x)", "x")
        ip.run_cell_magic(magic, "print(x)", "x")  # a cell run again warns again
    assert len(caught) == 2
    for shown in caught:
        warning = shown.message
        assert isinstance(warning, ShadowedBuiltinWarning)
        assert (warning.name, warning.set_by) == ("print", kind)
        assert str(warning) == (
            f"{kind} 'print' hides Python's builtin `print`: print(...) in this notebook now "
            f"runs the {kind}, not the builtin. To keep the builtin, rename the {kind} "
            f"(%%weft_{kind} print_step(...)); `del print` brings it back (the {kind} stays "
            "registered as 'print')"
        )
    assert ip.user_ns["print"] is not print
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a name that hides nothing: no warning
        ip.run_cell_magic(magic, "printer(x)", "x")


def test_run_as_a_builtin_name_warns_and_stores(ip: InteractiveShell) -> None:
    with pytest.warns(ShadowedBuiltinWarning, match=r"--as max stores the result in `max`"):
        assert ip.run_line_magic("weft", "run wf x=3 --as max") == 6
    assert ip.user_ns["max"] == 6
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("ignore", ShadowedBuiltinWarning)  # a filter still applies
        ip.run_line_magic("weft", "run wf x=3 --as min")
    assert ip.user_ns["min"] == 6
    assert shown == []


def test_a_journal_path_that_cannot_be_created_keeps_the_journal_in_use(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    in_use = ip.run_line_magic("weft", "journal")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = {
        f"journal {a_file}/j.duckdb": f"{a_file} is a file, not a folder; choose another",
        f"journal {a_file}/deeper/j.duckdb": f"{a_file} is a file, not a folder",
        "journal bad\0name.duckdb": "holds a NUL character; choose another: %weft journal PATH",
        f"journal {tmp_path}": f"{tmp_path} is a folder; name a file in it",
    }
    for line, message in cases.items():
        with pytest.raises(UsageError, match=message):
            ip.run_line_magic("weft", line)
        assert ip.run_line_magic("weft", "journal") == in_use
        assert [r.run_id for r in ip.run_line_magic("weft", "runs")] == ["r1"]
    # a path quoted for spaces works
    spaced = tmp_path / "my journals" / "j.duckdb"
    assert ip.run_line_magic("weft", f"journal '{spaced}'") == str(spaced)


def test_a_journal_set_by_config_that_cannot_open_is_a_usage_error(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    ip.run_line_magic("weft", f"journal {tmp_path / 'elsewhere.duckdb'}")  # closes the engine
    ip.run_line_magic("config", f"WeftMagics.journal = {str(a_file / 'j.duckdb')!r}")
    with pytest.raises(
        UsageError, match=r"cannot open the journal .*a_file/j.duckdb.*%weft journal"
    ):
        ip.run_line_magic("weft", "runs")


# -- the fuzz ------------------------------------------------------------------------------------

WORDS = [
    *SUBCOMMANDS,
    "wf",
    "double",
    "r1",
    "x=1",
    "x=",
    "=",
    "x='a b'",
    "x=$x",
    "x=$nope",
    "x={1/0}",
    "x={",
    "--id",
    "--new",
    "--as",
    "--background",
    "--x",
    "-h",
    "--",
    "'",
    '"',
    "'gpu",
    "#",
    "\\",
    "\0",
    "\t",
    "none",
    "0",
    "-1",
    "thread",
    "{}",
    "[",
    "SELECT 1",
    "<script>",
    "日本",
]
SIGNATURES = ["f", "f(x)", "f(x, x)", "f(x=1)", "f(*a)", "f(activity)", "f(ctx)", "f(", "f(x=1/0)"]
SIGNATURES += ["1f", "", "f(x=y)", "f(x, y=2)", "日本(x)", "f(x) --retry 2", "f(x) --queue 'q"]
STATEMENTS = ["x", "global x", "nonlocal x", "await f()", "yield 1", "from os import *", "(", "'"]
STATEMENTS += ["return 1", "break", "import os", "def g():\n    nonlocal x", "async def h(): pass"]
STATEMENTS += ["lambda: (yield)", "x = 1", "activity.heartbeat({})", "ctx", "%time 1", "!true"]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same lines on every run: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
fragments = st.one_of(st.sampled_from(WORDS), st.text(alphabet="x=$'\"{}-#\0 日<", max_size=4))


@FUZZ
@given(
    subcommand=st.one_of(st.sampled_from(sorted(SUBCOMMANDS)), fragments),
    words=st.lists(fragments, max_size=6),
)
def test_fuzzed_weft_lines_succeed_or_are_usage_errors(
    ip: InteractiveShell, subcommand: str, words: list[str]
) -> None:
    with contextlib.suppress(UsageError):
        ip.run_line_magic("weft", " ".join([subcommand, *words]))


@FUZZ
@given(words=st.lists(fragments, max_size=6))
def test_fuzzed_run_lines_succeed_or_are_usage_errors(
    ip: InteractiveShell, words: list[str]
) -> None:
    """``%weft run wf ...``: the journal stays the same, so ``wf`` stays registered."""
    with contextlib.suppress(UsageError):
        ip.run_line_magic("weft", " ".join(["run", "wf", *words]))


@FUZZ
@given(
    magic=st.sampled_from(["weft_activity", "weft_workflow"]),
    signature=st.sampled_from(SIGNATURES),
    options=st.lists(fragments, max_size=3),
    statements=st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=4),
)
def test_fuzzed_cells_succeed_or_are_usage_errors(
    ip: InteractiveShell, magic: str, signature: str, options: list[str], statements: list[str]
) -> None:
    with contextlib.suppress(UsageError):
        ip.run_cell_magic(magic, " ".join([signature, *options]), "\n".join(statements))


def test_run_values_may_hold_spaces_inside_quotes_and_brackets(ip: InteractiveShell) -> None:
    assert ip.run_line_magic("weft", "run wf x='a b' --new") == "a ba b"
    assert ip.run_line_magic("weft", "run wf x=[1, 2] --new  # don't mind the quote") == [1, 2] * 2
