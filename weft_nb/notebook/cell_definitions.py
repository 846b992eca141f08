"""``%%weft_activity`` and ``%%weft_workflow``: a cell becomes a registered definition.

The cell is compiled (`weft_nb.notebook.cells`) into a function and goes through
``make_activity``/``make_workflow``, the same builders the decorators use, then into the
session's engine. An activity cell also becomes a plain function in the notebook, which runs the
body once, here, for quick testing; a workflow cell's name holds the workflow itself.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError

from weft_nb.activity.context import ActivityContext, AttemptIdentity
from weft_nb.base.clock import RealClock
from weft_nb.base.definitions import DEFINITION_ATTR, make_activity, make_workflow
from weft_nb.engine.development import transparent
from weft_nb.errors import CellDefinitionError
from weft_nb.notebook.cells import (
    CellSignature,
    compile_body,
    parse_signature,
    split_magic_line,
)
from weft_nb.notebook.session import NotebookSession
from weft_nb.notebook.usage import (
    UsageParser,
    asks_for_help,
    split_words,
    warn_if_shadows_builtin,
)

SIGNATURE = "NAME(param, param=default)"


def activity_parser() -> UsageParser:
    """The options of ``%%weft_activity`` (the help of ``%%weft_activity?`` comes from here)."""
    parser = UsageParser(
        f"%%weft_activity {SIGNATURE}",
        description="Register the cell as an activity (running the cell does not run the "
        "activity). The parameters are bound from the activity's input, `activity` (the "
        "ActivityContext) is in scope, the notebook's globals are visible, and the value of the "
        "last expression is the result. The cell also defines NAME(...) in the notebook: calling "
        "it runs the body once, here, for quick testing.",
        epilog="Example: %%weft_activity train(epochs, lr=0.1) --retry 5 --timeout 2h. The body "
        "runs as a function: `global`, `nonlocal`, `yield`, top-level `await` and "
        "`from module import *` are refused. Docs: docs/magics.md.",
    )
    parser.add_argument(
        "--retry", type=int, metavar="N", help="attempts in all, the first included (default 3)"
    )
    parser.add_argument(
        "--timeout", metavar="DUR", help="per-attempt timeout: 30s, 5m, 1.5h, ... (default none)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        metavar="DUR",
        help="fail an attempt that sends no heartbeat for this long",
    )
    parser.add_argument(
        "--non-retryable",
        default="",
        metavar="ExcName,...",
        help="exception class names (or exact messages) that fail at once, without a retry",
    )
    parser.add_argument(
        "--queue",
        metavar="Q",
        help="the activity's queue, limited by %%weft queue Q N or WeftMagics.queue_limits",
    )
    parser.add_argument(
        "--circuit-breaker",
        metavar="N/DUR[/K]",
        help="open the activity's circuit breaker after N consecutive failed attempts, for DUR; "
        "then K trial attempts (default 1): 5/30s",
    )
    parser.add_argument(
        "--compensate",
        metavar="UNDO",
        help="the activity that undoes this one (ctx.compensate(); docs/guides/compensation.md)",
    )
    return parser


def workflow_parser() -> UsageParser:
    """The options of ``%%weft_workflow`` (the help of ``%%weft_workflow?`` comes from here)."""
    parser = UsageParser(
        f"%%weft_workflow {SIGNATURE}",
        description="Register the cell as a workflow. The parameters are bound from the run's "
        "input, `ctx` (the WorkflowContext: ctx.run, ctx.all, ctx.sleep, ...) is in scope, and "
        "the value of the last expression is the result. Start it with %weft run NAME.",
        epilog="Example: %%weft_workflow pipeline(epochs). Docs: docs/magics.md.",
    )
    parser.add_argument(
        "--version",
        default="1",
        metavar="V",
        help="the workflow's version, recorded with each run (default 1)",
    )
    parser.add_argument(
        "--compensate-on-failure",
        action="store_true",
        help="when the workflow fails, undo its completed steps (ctx.compensate()), then fail",
    )
    return parser


ACTIVITY_USAGE = activity_parser().usage_line()
WORKFLOW_USAGE = workflow_parser().usage_line()


class InlineCheckpoints:
    """Checkpoints of a quick inline call: kept in memory, never journaled."""

    def __init__(self) -> None:
        self.latest: Any = None

    def save(self, run_id: str, position: int, attempt: int, state: Any) -> None:
        """Keep ``state`` as the latest checkpoint."""
        self.latest = state

    def load_latest(self, run_id: str, position: int) -> Any:
        """The latest checkpoint saved by this call, or None."""
        return self.latest


def _compile(
    session: NotebookSession, line: str, cell: str, *, reserved: str, parser: UsageParser
) -> tuple[CellSignature, argparse.Namespace, Callable[..., Any]]:
    """The cell's signature, its magic line's options and its body as a function."""
    shell = session.shell
    try:
        signature_text, options_text = split_magic_line(line)
        signature = parse_signature(signature_text, session.user_ns, reserved=reserved)
        options = parser.parse_words(split_words(options_text, usage=parser.usage_line()))
        code = shell.transform_cell(cell)
        body = compile_body(
            code,
            signature,
            first=reserved,
            filename=f"<weft {signature.name}>",
            namespace=session.user_ns,
        )
    except CellDefinitionError as exc:
        raise UsageError(f"{exc}\nusage: {parser.usage_line()}") from None
    return signature, options, body


def register_activity(session: NotebookSession, line: str, cell: str) -> None:
    """Register the cell as an activity (it does not run it); ``--help`` prints the help."""
    parser = activity_parser()
    if asks_for_help(line.split()):
        print(parser.full_help())
        return
    signature, options, body = _compile(session, line, cell, reserved="activity", parser=parser)
    what = f"activity {signature.name!r}"

    def run_cell(value: Any, activity: ActivityContext) -> Any:
        return body(activity, **signature.bind(value, what=what))

    if inspect.iscoroutinefunction(body):  # the cell awaits: an async activity

        async def run_cell_async(value: Any, activity: ActivityContext) -> Any:
            return await body(activity, **signature.bind(value, what=what))

        run_cell = run_cell_async

    try:
        definition = make_activity(
            run_cell,
            name=signature.name,
            retry=None if options.retry is None else {"max_attempts": options.retry},
            timeout=options.timeout,
            heartbeat_timeout=options.heartbeat_timeout,
            non_retryable_errors=[n.strip() for n in options.non_retryable.split(",") if n.strip()],
            queue=options.queue,
            circuit_breaker=options.circuit_breaker,
            source=f"{line}\n{cell}",
            compensate=options.compensate,
        )
    except ValueError as exc:
        raise UsageError(f"{exc}\nusage: {ACTIVITY_USAGE}") from None
    replaced = session.register(definition)

    def inline(*args: Any, **kwargs: Any) -> Any:
        """Run the cell's body once, here, outside any workflow (for quick testing)."""
        bound = _python_signature(signature).bind(*args, **kwargs)
        bound.apply_defaults()
        ctx = ActivityContext(
            AttemptIdentity(run_id="(inline)", activity_name=signature.name, position=0, attempt=1),
            clock=RealClock(),
            checkpoints=InlineCheckpoints(),  # type: ignore[arg-type]
            last_heartbeat_loader=lambda: None,
        )
        return body(ctx, **bound.arguments)  # a coroutine for an awaiting cell: `await f(x)`

    if inspect.iscoroutinefunction(body):
        inline = _as_async(inline)
    inline.__name__ = signature.name
    setattr(inline, DEFINITION_ATTR, definition)
    warn_if_shadows_builtin(signature.name, set_by="activity")
    session.user_ns[signature.name] = inline
    note = ", replaced earlier definition" if replaced else ""
    policy = definition.summary()[len(what) + 2 :]
    print(f"registered {what}: {signature.describe()}, {policy}{note}")


def register_workflow(session: NotebookSession, line: str, cell: str) -> None:
    """Register the cell as a workflow (``ctx`` in scope); ``--help`` prints the help."""
    parser = workflow_parser()
    if asks_for_help(line.split()):
        print(parser.full_help())
        return
    signature, options, body = _compile(session, line, cell, reserved="ctx", parser=parser)
    what = f"workflow {signature.name!r}"

    def run_cell(ctx: Any, value: Any) -> Any:
        return body(ctx, **signature.bind(value, what=what))

    if inspect.iscoroutinefunction(body):  # the cell awaits: an async workflow

        async def run_cell_async(ctx: Any, value: Any) -> Any:
            return await body(ctx, **signature.bind(value, what=what))

        run_cell = run_cell_async

    transparent(run_cell)  # development mode watches the cell's code, not this wrapper
    definition = make_workflow(
        run_cell,
        name=signature.name,
        version=options.version,
        source=f"{line}\n{cell}",
        compensate_on_failure=options.compensate_on_failure,
    )
    replaced = session.register(definition)
    setattr(run_cell, DEFINITION_ATTR, definition)
    run_cell.__weft_signature__ = signature  # type: ignore[attr-defined]
    warn_if_shadows_builtin(signature.name, set_by="workflow")
    session.user_ns[signature.name] = run_cell
    note = ", replaced earlier definition" if replaced else ""
    print(
        f"registered {what}: {signature.describe()}, version {definition.version}, "
        f"source {definition.source_hash[:8]}{note}"
    )


def _as_async(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (which returns a coroutine) as an ``async def``, so it is seen as one."""

    async def awaited(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return awaited


def _python_signature(signature: CellSignature) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            inspect.Parameter(p, kind, default=signature.defaults.get(p, inspect.Parameter.empty))
            for p in signature.params
        ]
    )
