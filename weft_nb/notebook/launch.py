"""``%weft run`` and ``%weft resume``: start or resume a run, show its panel, wait for it.

A run started from a notebook without ``--id`` gets an id derived from the notebook, the
workflow and its input (`default_run_id()`), so
Restart & Run All resumes it instead of starting over.
"""

from __future__ import annotations

import ast
import keyword
import uuid
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from weft_nb.base.payloads import encode
from weft_nb.engine.runs import RunHandle
from weft_nb.errors import InvalidRunIdError, PayloadError, WeftError
from weft_nb.journal.paths import check_run_id
from weft_nb.notebook.cells import CellSignature
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.usage import (
    UsageParser,
    split_python_words,
    unquote,
    warn_if_shadows_builtin,
)


def run_parser() -> UsageParser:
    """``%weft run NAME [key=value ...] [--id RUN_ID] [--new] [--background] [--as VAR]``."""
    parser = UsageParser(
        "%weft run",
        description="Start a run of a registered workflow, show its panel and wait for it. The "
        "same notebook, workflow and input give the same run, so running the cell again resumes "
        "it, or returns its recorded result.",
        epilog="Values are Python literals (n=3, name='text'); $var takes a notebook variable and "
        "{expr} evaluates an expression in the notebook. A trailing # comment is ignored.",
    )
    parser.add_argument("workflow", metavar="NAME", help="a registered workflow")
    parser.add_argument(
        "inputs", metavar="key=value", nargs="*", help="the workflow's input, one argument each"
    )
    parser.add_argument(
        "--id",
        dest="run_id",
        metavar="RUN_ID",
        help="name the run (default: derived from the notebook, the workflow and its input)",
    )
    parser.add_argument(
        "--new", action="store_true", help="start a fresh run even if this input ran before"
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="return the RunHandle at once (with a Cancel button on the panel) instead of waiting",
    )
    parser.add_argument(
        "--as",
        dest="var",
        metavar="VAR",
        help="also store the result in the notebook variable VAR (waits: not with --background)",
    )
    return parser


RUN_USAGE = run_parser().usage_line()


def resume_parser() -> UsageParser:
    """``%weft resume RUN``."""
    parser = UsageParser(
        "%weft resume", description="Resume an unfinished run of this journal and wait for it."
    )
    parser.add_argument("run", metavar="RUN", help="the run id (%%weft runs lists them)")
    return parser


def resume(session: NotebookSession, rest: str) -> Any:
    """``%weft resume RUN``: resume a run of this journal and wait for it."""
    run_id = session.known_run(resume_parser().parse_line(rest).run)
    return _follow(session, run_id, lambda: session.engine.resume(run_id), background=False)


def run(session: NotebookSession, rest: str) -> Any:
    """``%weft run NAME key=value ...``: start (or resume) a run of a registered workflow."""
    parser = run_parser()
    tokens = split_python_words(rest, usage=RUN_USAGE)  # x='a b' is one word; no # comment
    if not tokens:
        raise UsageError(f"name a workflow\nusage: {RUN_USAGE}")
    options = parser.parse_words(tokens)
    name = options.workflow
    variable = unquote(options.var) if options.var is not None else None
    if variable is not None:
        _check_variable(variable, background=options.background)
    pairs: dict[str, Any] = {}
    given: dict[str, str] = {}  # key -> its key=value word, to quote a key given twice
    for token in options.inputs:
        if "=" not in token or token.startswith("="):
            raise UsageError(f"{token!r} is not key=value\nusage: {RUN_USAGE}")
        key, _, text = token.partition("=")
        if key in given:
            raise UsageError(
                f"{key} is given twice ({given[key]} and {token}); give each input once"
                f"\nusage: {RUN_USAGE}"
            )
        given[key] = token
        pairs[key] = _value(session.user_ns, key, text)
    workflows = session.engine.registry.workflows
    if name not in workflows:
        raise UsageError(
            f"no workflow {name!r}; registered: {sorted(workflows) or 'none'} (run the "
            "%%weft_workflow cell first)"
        )
    declared = getattr(workflows[name].fn, "__weft_signature__", None)
    if isinstance(declared, CellSignature) and set(pairs) - set(declared.params):
        raise UsageError(
            f"workflow {name!r} does not declare {sorted(set(pairs) - set(declared.params))}; "
            f"it takes {declared.describe()}\nusage: {RUN_USAGE}"
        )
    value = pairs or None
    try:
        encode(value, what=f"input of workflow {name!r}")  # stored before the run starts
        if options.run_id is not None:
            run_id = check_run_id(unquote(options.run_id))
        elif options.new:
            run_id = f"{name}-{uuid.uuid4().hex[:8]}"
        else:
            run_id = session.default_run_id(name, value)
    except (PayloadError, InvalidRunIdError) as exc:
        raise UsageError(f"{exc}\nusage: {RUN_USAGE}") from None
    result = _follow(
        session,
        run_id,
        lambda: session.engine.start(name, value, run_id=run_id),
        background=options.background,
    )
    if variable is not None:
        warn_if_shadows_builtin(variable, set_by="--as")
        session.user_ns[variable] = result
    return result


def _check_variable(variable: str, *, background: bool) -> None:
    """``--as VAR``: a Python name that is no keyword, and a result to wait for."""
    if not variable.isidentifier():
        raise UsageError(f"--as {variable}: not a Python name\nusage: {RUN_USAGE}")
    if keyword.iskeyword(variable):
        raise UsageError(
            f"--as {variable}: {variable!r} is a Python keyword, so no variable can have that "
            f"name; choose another (--as {variable}_result)\nusage: {RUN_USAGE}"
        )
    if background:
        raise UsageError(
            f"--as {variable} stores the result, which --background does not wait for; write "
            f"`handle = %weft run ... --background` and `{variable} = handle.result()` once it "
            f"finished\nusage: {RUN_USAGE}"
        )


def _follow(
    session: NotebookSession, run_id: str, launch: Callable[[], RunHandle[Any]], *, background: bool
) -> Any:
    """Launch a run, show its panel, and wait unless ``background``.

    Interrupt Kernel can land anywhere in here (even while the run is being launched); the
    run is then stopped and recorded as interrupted, and re-running the cell resumes it.
    """
    try:
        handle = launch()
        from weft_nb.notebook.panel import RunPanel  # ipywidgets: on first use

        panel = RunPanel(session.engine, run_id, cancel_button=background)
        shown = display(panel, display_id=True)  # type: ignore[no-untyped-call]
        # When the run settles, the display becomes the panel's static table and its widgets
        # close: a saved notebook (nbconvert, nbval, GitHub, VS Code) keeps the final state, in
        # HTML that needs no kernel, instead of the widget models. A run still going when its
        # cell ends (--background, or an interrupted one still stopping) keeps its live widgets
        # until then.
        panel.follow(on_done=lambda: panel.finish(shown.update))
        if background:
            return handle
        try:
            return _wait(handle)
        finally:
            panel.finish(shown.update)
    except KeyboardInterrupt:
        session.engine.interrupt(run_id)
        print(
            f"interrupted run {run_id!r}: its activities were asked to stop and it is "
            "recorded as interrupted. Re-run this cell to resume it."
        )
        return None


def _value(user_ns: dict[str, Any], key: str, text: str) -> Any:
    """The value of ``key=text``: ``$name``, ``{expression}`` or a Python literal."""
    if text.startswith("$"):
        if text[1:] not in user_ns:
            raise UsageError(f"{key}={text}: no variable {text[1:]!r} in the notebook")
        return user_ns[text[1:]]
    if text.startswith("{") and text.endswith("}"):
        try:
            return eval(text[1:-1], user_ns)
        except Exception as exc:
            raise UsageError(f"{key}={text}: {type(exc).__name__}: {exc}") from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise UsageError(
            f"{key}={text} is not a Python literal; quote strings ({key}='text'), or use "
            f"${key} / {{expression}} for notebook values"
        ) from None


def _wait(handle: RunHandle[Any]) -> Any:
    if handle.replayed_from_journal:
        print(f"run {handle.run_id!r} finished earlier ({handle.status}); replayed from journal")
        return handle.result()
    try:
        result = handle.result()
    except WeftError:
        _report(handle)
        raise
    _report(handle)
    return result


def _report(handle: RunHandle[Any]) -> None:
    print(
        f"run {handle.run_id!r} {handle.status}: replayed from journal: "
        f"{handle.replayed_steps} steps, {handle.executed_steps} executed"
    )
