"""``%weft run`` and ``%weft resume``: start or resume a run, show its panel, wait for it.

A run started from a notebook without ``--id`` gets an id derived from the notebook, the
workflow and its input (`default_run_id()`), so
Restart & Run All resumes it instead of starting over.
"""

from __future__ import annotations

import ast
import shlex
import uuid
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from weft_nb.engine.runs import RunHandle
from weft_nb.errors import WeftError
from weft_nb.notebook.cells import CellSignature
from weft_nb.notebook.panel import RunPanel
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.usage import UsageParser

RUN_USAGE = "%weft run NAME key=value ... [--id RUN_ID] [--new] [--background] [--as VAR]"


def _run_parser() -> UsageParser:
    parser = UsageParser(RUN_USAGE)
    parser.add_argument("--id", dest="run_id")
    parser.add_argument("--new", action="store_true")
    parser.add_argument("--background", action="store_true")
    parser.add_argument("--as", dest="var")
    return parser


def resume(session: NotebookSession, rest: str) -> Any:
    """``%weft resume RUN``: resume a run of this journal and wait for it."""
    run_id = session.known_run(rest.strip())
    return _follow(session, run_id, lambda: session.engine.resume(run_id), background=False)


def run(session: NotebookSession, rest: str) -> Any:
    """``%weft run NAME key=value ...``: start (or resume) a run of a registered workflow."""
    tokens = shlex.split(rest, posix=False)
    comment = next((i for i, t in enumerate(tokens) if t.startswith("#")), None)
    tokens = tokens[:comment]  # a trailing `# comment`, as a Python line would allow
    if not tokens:
        raise UsageError(f"name a workflow\nusage: {RUN_USAGE}")
    name = tokens[0]
    pairs: dict[str, Any] = {}
    flags: list[str] = []
    for token in tokens[1:]:
        if token.startswith("--") or flags:
            flags.append(token.strip("'\""))
        elif "=" in token:
            key, _, text = token.partition("=")
            pairs[key] = _value(session.user_ns, key, text)
        else:
            raise UsageError(f"{token!r} is not key=value\nusage: {RUN_USAGE}")
    options = _run_parser().parse_args(flags)
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
    run_id = options.run_id or (f"{name}-{uuid.uuid4().hex[:8]}" if options.new else None)
    run_id = run_id or session.default_run_id(name, value)
    result = _follow(
        session,
        run_id,
        lambda: session.engine.start(name, value, run_id=run_id),
        background=options.background,
    )
    if options.var and not options.background:
        session.user_ns[options.var] = result
    return result


def _follow(
    session: NotebookSession, run_id: str, launch: Callable[[], RunHandle], *, background: bool
) -> Any:
    """Launch a run, show its panel, and wait unless ``background``.

    Interrupt Kernel can land anywhere in here (even while the run is being launched); the
    run is then stopped and recorded as interrupted, and re-running the cell resumes it.
    """
    try:
        handle = launch()
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


def _wait(handle: RunHandle) -> Any:
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


def _report(handle: RunHandle) -> None:
    print(
        f"run {handle.run_id!r} {handle.status}: replayed from journal: "
        f"{handle.replayed_steps} steps, {handle.executed_steps} executed"
    )
