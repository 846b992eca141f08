"""``%%weft_activity`` and ``%%weft_workflow``: a cell becomes a registered definition.

The cell is compiled (`weft_nb.notebook.cells`) into a function and goes through
``make_activity``/``make_workflow``, the same builders the decorators use, then into the
session's engine. An activity cell also becomes a plain function in the notebook, which runs the
body once, here, for quick testing; a workflow cell's name holds the workflow itself.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
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
from weft_nb.notebook.usage import UsageParser

ACTIVITY_USAGE = (
    "%%weft_activity NAME(param, param=default) [--retry N] [--timeout DUR] "
    "[--heartbeat-timeout DUR] [--non-retryable ExcName,...] [--queue Q]"
)
WORKFLOW_USAGE = "%%weft_workflow NAME(param, ...) [--version V]"


def _activity_parser() -> UsageParser:
    parser = UsageParser(ACTIVITY_USAGE)
    parser.add_argument("--retry", type=int, metavar="N")
    parser.add_argument("--timeout")
    parser.add_argument("--heartbeat-timeout")
    parser.add_argument("--non-retryable", default="")
    parser.add_argument("--queue")
    return parser


def _workflow_parser() -> UsageParser:
    parser = UsageParser(WORKFLOW_USAGE)
    parser.add_argument("--version", default="1")
    return parser


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
        options = parser.parse_args(shlex.split(options_text))
        code = shell.transform_cell(cell)
        body = compile_body(
            code,
            signature,
            first=reserved,
            filename=f"<weft {signature.name}>",
            namespace=session.user_ns,
        )
    except (CellDefinitionError, argparse.ArgumentError) as exc:
        raise UsageError(f"{exc}\nusage: {parser.usage}") from None
    return signature, options, body


def register_activity(session: NotebookSession, line: str, cell: str) -> None:
    """Register the cell as an activity (it does not run it); see ACTIVITY_USAGE."""
    signature, options, body = _compile(
        session, line, cell, reserved="activity", parser=_activity_parser()
    )
    what = f"activity {signature.name!r}"

    def run_cell(value: Any, activity: ActivityContext) -> Any:
        return body(activity, **signature.bind(value, what=what))

    try:
        definition = make_activity(
            run_cell,
            name=signature.name,
            retry=None if options.retry is None else {"max_attempts": options.retry},
            timeout=options.timeout,
            heartbeat_timeout=options.heartbeat_timeout,
            non_retryable_errors=[n.strip() for n in options.non_retryable.split(",") if n.strip()],
            queue=options.queue,
            source=f"{line}\n{cell}",
        )
    except ValueError as exc:
        raise UsageError(f"{exc}\nusage: {ACTIVITY_USAGE}") from None
    engine = session.engine
    replaced = engine.registry.activity(signature.name) is not None
    engine.register(definition)

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
        return body(ctx, **bound.arguments)

    inline.__name__ = signature.name
    setattr(inline, DEFINITION_ATTR, definition)
    session.user_ns[signature.name] = inline
    note = ", replaced earlier definition" if replaced else ""
    policy = definition.summary()[len(what) + 2 :]
    print(f"registered {what}: {signature.describe()}, {policy}{note}")


def register_workflow(session: NotebookSession, line: str, cell: str) -> None:
    """Register the cell as a workflow (``ctx`` in scope); see WORKFLOW_USAGE."""
    signature, options, body = _compile(
        session, line, cell, reserved="ctx", parser=_workflow_parser()
    )
    what = f"workflow {signature.name!r}"

    def run_cell(ctx: Any, value: Any) -> Any:
        return body(ctx, **signature.bind(value, what=what))

    transparent(run_cell)  # development mode watches the cell's code, not this wrapper
    definition = make_workflow(
        run_cell, name=signature.name, version=options.version, source=f"{line}\n{cell}"
    )
    engine = session.engine
    replaced = engine.registry.workflow(signature.name) is not None
    engine.register(definition)
    setattr(run_cell, DEFINITION_ATTR, definition)
    run_cell.__weft_signature__ = signature  # type: ignore[attr-defined]
    session.user_ns[signature.name] = run_cell
    note = ", replaced earlier definition" if replaced else ""
    print(
        f"registered {what}: {signature.describe()}, version {definition.version}, "
        f"source {definition.source_hash[:8]}{note}"
    )


def _python_signature(signature: CellSignature) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            inspect.Parameter(p, kind, default=signature.defaults.get(p, inspect.Parameter.empty))
            for p in signature.params
        ]
    )
