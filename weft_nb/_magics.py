"""IPython magics: ``%%weft_activity``, ``%%weft_workflow`` and ``%weft``.

A magic builds the same definitions as the decorators (``make_activity``/``make_workflow``) and
registers them with the notebook's engine. Mistakes in a magic line or cell raise ``UsageError``
(shown without a traceback from weft_nb's internals).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import inspect
import os
import shlex
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display
from traitlets import Bool, Dict, Float, Unicode, observe

from ._activity_context import ActivityContext
from ._cells import CellError, CellSignature, compile_body, parse_signature, split_magic_line
from ._clock import RealClock
from ._definitions import DEFINITION_ATTR, make_activity, make_workflow
from ._development import transparent
from ._engine import Engine
from ._executors import Executor, executor_from_spec
from ._magic_commands import WeftCommands
from ._payloads import encode
from ._run_handle import RunHandle
from ._widgets import RunPanel
from .errors import WeftError

ACTIVITY_USAGE = (
    "%%weft_activity NAME(param, param=default) [--retry N] [--timeout DUR] "
    "[--heartbeat-timeout DUR] [--non-retryable ExcName,...] [--queue Q]"
)
WORKFLOW_USAGE = "%%weft_workflow NAME(param, ...) [--version V]"
RUN_USAGE = "%weft run NAME key=value ... [--id RUN_ID] [--new] [--background] [--as VAR]"
SUBCOMMANDS = (
    "run", "runs", "show", "sql", "timeline", "cancel", "resume", "complete", "fail", "journal",
    "executor", "queue",
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of exiting the kernel."""

    def __init__(self, usage: str) -> None:
        super().__init__(prog="weft", usage=usage, add_help=False, exit_on_error=False)

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\nusage: {self.usage}")


def _activity_parser() -> _Parser:
    parser = _Parser(ACTIVITY_USAGE)
    parser.add_argument("--retry", type=int, metavar="N")
    parser.add_argument("--timeout")
    parser.add_argument("--heartbeat-timeout")
    parser.add_argument("--non-retryable", default="")
    parser.add_argument("--queue")
    return parser


def _workflow_parser() -> _Parser:
    parser = _Parser(WORKFLOW_USAGE)
    parser.add_argument("--version", default="1")
    return parser


def _run_parser() -> _Parser:
    parser = _Parser(RUN_USAGE)
    parser.add_argument("--id", dest="run_id")
    parser.add_argument("--new", action="store_true")
    parser.add_argument("--background", action="store_true")
    parser.add_argument("--as", dest="var")
    return parser


class _InlineCheckpoints:
    """Checkpoints of a quick inline call: kept in memory, never journaled."""

    def __init__(self) -> None:
        self.latest: Any = None

    def save(self, run_id: str, position: int, attempt: int, state: Any) -> None:
        self.latest = state

    def load_latest(self, run_id: str, position: int) -> Any:
        return self.latest


def _notebook_path(user_ns: dict[str, Any]) -> str | None:
    """The notebook's path when the front end tells the kernel (VS Code, Jupyter Server)."""
    for candidate in (user_ns.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return candidate
    return None


@magics_class
class WeftMagics(WeftCommands, Magics):
    """The weft_nb magics. Settings are traits: ``%config WeftMagics.journal = "path"``."""

    journal = Unicode(
        "", help="Journal path; empty means .weft/<notebook>.duckdb beside the notebook."
    ).tag(config=True)
    heartbeat_interval = Float(1.0, help="Seconds between heartbeat journal writes.").tag(
        config=True
    )
    on_change = Unicode("rerun", help="Replay policy for changed steps: rerun or error.").tag(
        config=True
    )
    development = Bool(
        False, help="Development mode (DevelopmentWarning); off follows WEFT_NB_DEV=1."
    ).tag(config=True)

    queue_limits = Dict(
        {}, help='Attempts of a queue running at once, e.g. {"gpu": 1}; see also %weft queue.'
    ).tag(config=True)

    @observe("queue_limits")
    def _queue_limits_changed(self, change: dict[str, Any]) -> None:
        if self._engine is not None:  # else the engine takes them when it opens
            self._engine.queue_limits.replace(change["new"])

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.shell: Any = shell
        self._engine: Engine | None = None
        self._executor_spec = "thread"  # see %weft executor
        self._next_executor: Executor | None = None  # built (and checked) by %weft executor

    # -- the engine ------------------------------------------------------------------------

    def journal_path(self) -> str:
        """Where this notebook's journal lives (see the ``journal`` trait)."""
        if self.journal:
            return str(self.journal)
        notebook = _notebook_path(self.shell.user_ns)
        if notebook is None:
            return os.path.join(".weft", "journal.duckdb")
        stem = os.path.splitext(os.path.basename(notebook))[0]
        return os.path.join(os.path.dirname(notebook), ".weft", f"{stem}.duckdb")

    @property
    def engine(self) -> Engine:
        """The notebook's engine, opened on first use."""
        if self._engine is None:
            self._engine = Engine(
                self.journal_path(),
                heartbeat_interval=self.heartbeat_interval,
                on_change=self.on_change,
                queue_limits=dict(self.queue_limits),
                program=_notebook_path(self.shell.user_ns) or "IPython kernel",
                executor=self._take_executor(),
                development=True if self.development else None,
            )
        return self._engine

    def _take_executor(self) -> Executor:
        executor, self._next_executor = self._next_executor, None
        return executor or executor_from_spec(self._executor_spec)

    def close(self) -> None:
        """Flush heartbeats and release the journal (kernel shutdown, unload, switch)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        executor, self._next_executor = self._next_executor, None
        if executor is not None:  # chosen by %weft executor, never used by an engine
            executor.close()

    # -- cell magics -----------------------------------------------------------------------

    def _compile(self, line: str, cell: str, *, reserved: str, usage: str, parser: _Parser
                 ) -> tuple[CellSignature, argparse.Namespace, Callable[..., Any]]:  # fmt: skip
        try:
            signature_text, options_text = split_magic_line(line)
            signature = parse_signature(signature_text, self.shell.user_ns, reserved=reserved)
            options = parser.parse_args(shlex.split(options_text))
            code = self.shell.transform_cell(cell)
            body = compile_body(
                code, signature, first=reserved, filename=f"<weft {signature.name}>",
                namespace=self.shell.user_ns,
            )  # fmt: skip
        except (CellError, argparse.ArgumentError) as exc:
            raise UsageError(f"{exc}\nusage: {usage}") from None
        return signature, options, body

    @cell_magic
    def weft_activity(self, line: str, cell: str) -> None:
        """Register the cell as an activity (it does not run it); see ACTIVITY_USAGE."""
        signature, options, body = self._compile(
            line, cell, reserved="activity", usage=ACTIVITY_USAGE, parser=_activity_parser()
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
                non_retryable_errors=[
                    n.strip() for n in options.non_retryable.split(",") if n.strip()
                ],
                queue=options.queue,
                source=f"{line}\n{cell}",
            )
        except ValueError as exc:
            raise UsageError(f"{exc}\nusage: {ACTIVITY_USAGE}") from None
        replaced = self.engine.registry.activity(signature.name) is not None
        self.engine.register(definition)

        def inline(*args: Any, **kwargs: Any) -> Any:
            """Run the cell's body once, here, outside any workflow (for quick testing)."""
            bound = _python_signature(signature).bind(*args, **kwargs)
            bound.apply_defaults()
            ctx = ActivityContext(
                run_id="(inline)", activity_name=signature.name, position=0, attempt=1,
                clock=RealClock(), checkpoints=_InlineCheckpoints(),  # type: ignore[arg-type]
                last_heartbeat_loader=lambda: None,
            )  # fmt: skip
            return body(ctx, **bound.arguments)

        inline.__name__ = signature.name
        setattr(inline, DEFINITION_ATTR, definition)
        self.shell.user_ns[signature.name] = inline
        note = ", replaced earlier definition" if replaced else ""
        policy = definition.summary()[len(what) + 2 :]
        print(f"registered {what}: {signature.describe()}, {policy}{note}")

    @cell_magic
    def weft_workflow(self, line: str, cell: str) -> None:
        """Register the cell as a workflow (``ctx`` in scope); see WORKFLOW_USAGE."""
        signature, options, body = self._compile(
            line, cell, reserved="ctx", usage=WORKFLOW_USAGE, parser=_workflow_parser()
        )
        what = f"workflow {signature.name!r}"

        def run_cell(ctx: Any, value: Any) -> Any:
            return body(ctx, **signature.bind(value, what=what))

        transparent(run_cell)  # development mode watches the cell's code, not this wrapper
        definition = make_workflow(
            run_cell, name=signature.name, version=options.version, source=f"{line}\n{cell}"
        )
        replaced = self.engine.registry.workflow(signature.name) is not None
        self.engine.register(definition)
        setattr(run_cell, DEFINITION_ATTR, definition)
        run_cell.__weft_signature__ = signature  # type: ignore[attr-defined]
        self.shell.user_ns[signature.name] = run_cell
        note = ", replaced earlier definition" if replaced else ""
        print(f"registered {what}: {signature.describe()}, version {definition.version}, "
              f"source {definition.source_hash[:8]}{note}")  # fmt: skip

    # -- %weft -----------------------------------------------------------------------------

    @line_magic
    def weft(self, line: str) -> Any:
        """``%weft run|runs|cancel|resume|journal ...``."""
        words = line.strip().split(None, 1)
        if not words or words[0] not in SUBCOMMANDS:
            raise UsageError(
                f"unknown %weft subcommand {words[0] if words else ''!r}; use one of "
                f"{', '.join(SUBCOMMANDS)}"
            )
        rest = words[1] if len(words) > 1 else ""
        return getattr(self, f"_weft_{words[0]}")(rest)

    def _weft_resume(self, rest: str) -> Any:
        run_id = self._known_run(rest)
        return self._follow(run_id, lambda: self.engine.resume(run_id), background=False)

    def _weft_run(self, rest: str) -> Any:
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
                pairs[key] = self._value(key, text)
            else:
                raise UsageError(f"{token!r} is not key=value\nusage: {RUN_USAGE}")
        options = _run_parser().parse_args(flags)
        workflows = self.engine.registry.workflows
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
        run_id = run_id or self._default_run_id(name, value)
        assert run_id is not None
        result = self._follow(
            run_id, lambda: self.engine.start(name, value, run_id=run_id), options.background
        )
        if options.var and not options.background:
            self.shell.user_ns[options.var] = result
        return result

    def _follow(self, run_id: str, launch: Callable[[], RunHandle], background: bool) -> Any:
        """Launch a run, show its panel, and wait unless ``background``.

        Interrupt Kernel can land anywhere in here (even while the run is being launched); the
        run is then stopped and recorded as interrupted, and re-running the cell resumes it.
        """
        try:
            handle = launch()
            panel = RunPanel(self.engine, run_id, cancel_button=background)
            shown = display(panel, display_id=True)  # type: ignore[no-untyped-call]
            # When the run ends, re-send the panel: saved notebooks (nbconvert, nbval, GitHub)
            # then keep its final state, not the one it had when it was first displayed.
            panel.follow(on_done=lambda: shown.update(panel))
            if background:
                return handle
            try:
                return self._wait(handle)
            finally:
                panel.refresh()
                shown.update(panel)
        except KeyboardInterrupt:
            self.engine.interrupt(run_id)
            print(
                f"interrupted run {run_id!r}: its activities were asked to stop and it is "
                "recorded as interrupted. Re-run this cell to resume it."
            )
            return None

    def _value(self, key: str, text: str) -> Any:
        if text.startswith("$"):
            if text[1:] not in self.shell.user_ns:
                raise UsageError(f"{key}={text}: no variable {text[1:]!r} in the notebook")
            return self.shell.user_ns[text[1:]]
        if text.startswith("{") and text.endswith("}"):
            try:
                return eval(text[1:-1], self.shell.user_ns)
            except Exception as exc:
                raise UsageError(f"{key}={text}: {type(exc).__name__}: {exc}") from None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UsageError(
                f"{key}={text} is not a Python literal; quote strings ({key}='text'), or use "
                f"${key} / {{expression}} for notebook values"
            ) from None

    def _default_run_id(self, name: str, value: Any) -> str:
        """Same notebook, workflow and input: same run, so Restart & Run All resumes it."""
        codec, data = encode(value, what=f"input of workflow {name!r}")
        notebook = _notebook_path(self.shell.user_ns) or self.journal_path()
        digest = hashlib.sha256(f"{notebook}\0{name}\0{codec}\0".encode() + data).hexdigest()
        return f"{name}-{digest[:12]}"

    def _wait(self, handle: RunHandle) -> Any:
        if handle.replayed_from_journal:
            print(
                f"run {handle.run_id!r} finished earlier ({handle.status}); replayed from journal"
            )
            return handle.result()
        try:
            result = handle.result()
        except WeftError:
            self._report(handle)
            raise
        self._report(handle)
        return result

    @staticmethod
    def _report(handle: RunHandle) -> None:
        print(
            f"run {handle.run_id!r} {handle.status}: replayed from journal: "
            f"{handle.replayed_steps} steps, {handle.executed_steps} executed"
        )


def _python_signature(signature: CellSignature) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            inspect.Parameter(p, kind, default=signature.defaults.get(p, inspect.Parameter.empty))
            for p in signature.params
        ]
    )


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext weft_nb``: register the magics once per shell; loading again is harmless."""
    if any(isinstance(m, WeftMagics) for m in ipython.magics_manager.registry.values()):
        return
    magics = WeftMagics(ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics)  # so `%config WeftMagics.<name> = ...` reaches it
    _close_on_sigterm(magics)
    # Kernel shutdown needs no hook: an engine still open at interpreter exit flushes its
    # heartbeats and releases the journal itself (see Engine).


def _close_on_sigterm(magics: WeftMagics) -> None:
    """Make SIGTERM a clean shutdown: flush heartbeats and release the journal, then exit.

    Python's default SIGTERM ends the process without running exit hooks, and ipykernel sets no
    handler of its own. A handler someone else installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            magics.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext weft_nb``: close the engine (flushing heartbeats)."""
    for magics in list(ipython.magics_manager.registry.values()):
        if isinstance(magics, WeftMagics):
            magics.close()
