"""Development mode: `DevelopmentWarning` for mistakes the engine can see.

On with ``development=True`` (engine option), or ``WEFT_NB_DEV=1`` in the environment (the notebook
magics: ``%config WeftMagics.development = True``). Off, none of this runs. Four checks, each
warned once per run, step and kind, as a ``DevelopmentWarning`` and a ``development_warning``
engine event (``check``, ``message``):

- ``heartbeat_details``: a retry (attempt > 1) reads ``last_heartbeat_details`` and finds None:
  the previous attempt never heartbeated with details (as in Weft, coarse: it cannot tell "never
  called heartbeat()" from "called it without details").
- ``heartbeat_timeout``: an activity with a ``heartbeat_timeout`` finished (or timed out) without
  ever calling ``heartbeat()``: the limit is then a timeout on the whole attempt.
- ``nondeterminism``: the workflow function itself (not an activity, not a ``ctx.memo``
  callback, not ``ctx.now()``) read the wall clock (``time.time``, ``time.time_ns``,
  ``datetime.now``/``utcnow``/``today``, ``date.today``) or random numbers (the ``random``
  module, ``os.urandom``, so ``uuid.uuid4`` too). Seen through a profile hook installed with
  ``sys.setprofile`` on the workflow's own thread only (other threads pay nothing); while engine
  code runs (a memo callback) the hook returns at once, and while an activity attempt runs inline
  on that thread the hook is lifted. C extensions that
  read the clock or their own generators (``numpy.random``) are not seen.
- ``input_hash``: a step's input holds an object hashed by pickling it (see ``_input_digest``)
  whose pickle changes when it is stored and loaded again, so a replay in another process would
  hash it differently.
"""

from __future__ import annotations

import datetime
import os
import pickle
import random
import sys
import sysconfig
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from weft_nb.errors import DevelopmentWarning

if TYPE_CHECKING:
    from weft_nb.activity.context import ActivityContext
    from weft_nb.base.definitions import ActivityDefinition
    from weft_nb.base.input_digest import InputDigest
    from weft_nb.engine.replay import StepCursor

ENV = "WEFT_NB_DEV"
_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_CLOCK_NAMES = {"time", "time_ns"}
_DATE_NAMES = {"now", "utcnow", "today"}
_RANDOM_NAMES = {"random", "getrandbits"}
# Functions of the engine that run the user's code as their own body (the %%weft_workflow cell's
# wrapper): the hook treats their frames as the user's.
_TRANSPARENT: set[CodeType] = set()


def transparent(fn: Callable[..., Any]) -> None:
    """Treat ``fn``'s frames as workflow code (it only forwards to the user's cell)."""
    _TRANSPARENT.add(fn.__code__)


def _is_engine(code: CodeType) -> bool:
    return code.co_filename.startswith(_ENGINE_DIR) and code not in _TRANSPARENT


def enabled(flag: bool | None) -> bool:
    """``flag``, or (when None) whether ``WEFT_NB_DEV`` is set to a true value."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


class DevelopmentChecks:
    """One engine's development-mode checks; ``active`` is False when the mode is off."""

    def __init__(self, active: bool, emit: Callable[..., None]) -> None:
        self.active = active
        self._emit = emit
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str, int | None, str]] = set()
        # attempt -> (thread, its clock watch), lifted while the attempt runs on that thread
        self._paused: weakref.WeakKeyDictionary[ActivityContext, tuple[int, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def warn(
        self, check: str, run_id: str, position: int | None, message: str, detail: str = ""
    ) -> None:
        """Warn once per (check, run, step, detail)."""
        key = (check, run_id, position, detail)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        warnings.warn(message, DevelopmentWarning, stacklevel=3)
        self._emit("development_warning", run_id, position, check=check, message=message)

    # -- activities ------------------------------------------------------------------------

    def watch_attempt(self, definition: ActivityDefinition, ctx: ActivityContext) -> None:
        """Before an attempt runs: watch its reads of ``last_heartbeat_details``.

        Also lifts the workflow thread's clock watch while the attempt runs (inline, on this
        thread): activities may read the clock, and the hook would slow every call they make.
        """
        if not self.active:
            return
        hook = sys.getprofile()
        if getattr(hook, "weft_development", False):
            sys.setprofile(None)
            self._paused[ctx] = (threading.get_ident(), hook)
        if ctx.attempt < 2:
            return

        def on_read(details: Any) -> None:
            if details is None:
                self.warn(
                    "heartbeat_details",
                    ctx.run_id,
                    ctx.position,
                    f"activity {definition.name!r} (step {ctx.position}, run {ctx.run_id!r}, "
                    f"attempt {ctx.attempt}) read last_heartbeat_details, but the previous "
                    "attempt recorded none: it never called heartbeat(details), or called it "
                    "without details. Heartbeat progress (ctx.heartbeat({'batch': i})) so a "
                    "retry can resume, and handle None by starting from the beginning.",
                )

        ctx.set_heartbeat_read_hook(on_read)

    def after_attempt(
        self,
        definition: ActivityDefinition,
        ctx: ActivityContext,
        heartbeat_timeout: float | None,
        ok: bool,
        error: BaseException | None,
    ) -> None:
        """After an attempt: a ``heartbeat_timeout`` on an activity that never heartbeated."""
        if not self.active:
            return
        paused = self._paused.pop(ctx, None)
        if paused is not None and paused[0] == threading.get_ident():
            sys.setprofile(paused[1])
        if heartbeat_timeout is None or ctx.heartbeat_count:
            return
        from weft_nb.errors import ActivityHeartbeatTimeoutError

        if not ok and not isinstance(error, ActivityHeartbeatTimeoutError):
            return  # it failed before it got going: no evidence either way
        self.warn(
            "heartbeat_timeout",
            ctx.run_id,
            ctx.position,
            f"activity {definition.name!r} (step {ctx.position}, run {ctx.run_id!r}, attempt "
            f"{ctx.attempt}) has heartbeat_timeout={heartbeat_timeout:g}s but never called "
            "heartbeat(), so the limit only bounds the whole attempt. Call ctx.heartbeat() in "
            "its loop (or weft_nb.current_activity().heartbeat()), or use timeout= instead.",
        )

    # -- inputs ----------------------------------------------------------------------------

    def check_input(self, run_id: str, position: int, name: str, signature: InputDigest) -> None:
        """Warn when part of a step's input will not pickle the same way after a round trip."""
        if not self.active:
            return
        for part in signature.opaque:
            try:
                first = pickle.dumps(part, protocol=5)
                again = pickle.dumps(pickle.loads(first), protocol=5)
            except Exception:
                continue
            if first != again:
                kind = f"{type(part).__module__}.{type(part).__qualname__}"
                self.warn(
                    "input_hash",
                    run_id,
                    position,
                    f"the input of step {position} ({name!r}, run {run_id!r}) holds a "
                    f"{kind} that pickles to other bytes once it was stored and loaded again, "
                    "so after a restart its hash differs (the journaled step is then kept with "
                    "a StepChangedWarning, and a real change of it goes unseen). Return it from "
                    "an activity (results are hashed by their recorded encoding), or pass plain "
                    "data, a dataclass, a pydantic model or a numpy array instead.",
                    kind,
                )

    # -- the workflow's own code -----------------------------------------------------------

    def watch_workflow_thread(self, cursor: StepCursor) -> None:
        """Install the clock/random watch on the calling (workflow) thread, if the mode is on.

        A profiler already installed on the thread (cProfile, a debugger) is left alone.
        """
        if not self.active or sys.getprofile() is not None:
            return
        sys.setprofile(_profile_hook(self, cursor))

    @staticmethod
    def unwatch_workflow_thread() -> None:
        """Remove the watch from the calling thread when its run ends (run threads are reused)."""
        if getattr(sys.getprofile(), "weft_development", False):
            sys.setprofile(None)


def _profile_hook(checks: DevelopmentChecks, cursor: StepCursor) -> Callable[..., None]:
    inside: FrameType | None = None  # the engine frame the workflow's code called into
    # Interceptors call the workflow from engine frames: its own frame is watched again there.
    workflow_code = getattr(cursor.state.workflow.fn, "__code__", None)
    suspended: list[FrameType] = []

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal inside
        if inside is not None:
            if frame is inside and event == "return":
                inside = None
            elif event == "call" and frame.f_code is workflow_code:
                suspended.append(inside)
                inside = None
            return
        if event == "return" and suspended and frame.f_code is workflow_code:
            inside = suspended.pop()  # back in the interceptors' (engine) frames
            return
        if event == "call":
            if _is_engine(frame.f_code):
                inside = frame
        elif event == "c_call" and not _is_engine(frame.f_code):
            what = _watched(arg)
            if what is not None:
                _report(checks, cursor, what, frame)

    hook.weft_development = True  # type: ignore[attr-defined]  # marks it for watch_attempt
    return hook


def _watched(fn: Any) -> str | None:
    """``"time.time"`` etc. when ``fn`` reads the clock or shared random numbers, else None.

    A ``random.Random(seed)`` of the workflow's own is deterministic and not reported; the
    module-level functions (``random.random``, ``randint``, ``choice``, ...) share one unseeded
    generator and are.
    """
    name = getattr(fn, "__name__", None)
    owner = getattr(fn, "__self__", None)
    if name is None or owner is None:
        return None
    if owner is time and name in _CLOCK_NAMES:
        return f"time.{name}"
    if isinstance(owner, type) and issubclass(owner, datetime.date) and name in _DATE_NAMES:
        return f"{owner.__name__}.{name}"
    if name in _RANDOM_NAMES and owner is getattr(random, "_inst", None):
        return f"random.{name}"
    if name == "urandom" and getattr(owner, "__name__", "") in ("posix", "nt"):
        return "os.urandom"
    return None


def _report(checks: DevelopmentChecks, cursor: StepCursor, what: str, frame: FrameType) -> None:
    user = frame  # the first frame of the user's code: not the stdlib's random.py or uuid.py
    while user.f_back is not None and user.f_code.co_filename.startswith(_STDLIB_DIR):
        user = user.f_back
    where = f"{user.f_code.co_filename}:{user.f_lineno}"
    taken, run_id, workflow = cursor.positions_taken, cursor.run_id, cursor.state.workflow.name
    after = f"after step {taken - 1}" if taken else "before its first step"
    kind = "the clock" if what.startswith(("time.", "datetime.", "date.")) else "random numbers"
    checks.warn(
        "nondeterminism",
        run_id,
        None,
        f"workflow {workflow!r} (run {run_id!r}) read {kind} with {what}() in its "
        f"own code, at {where} ({after}). A replay after a restart gets another value, so the "
        "workflow can take another path and stop matching its journal. Use ctx.now() for the "
        "time, and compute random values inside ctx.memo(key, fn) (or an activity) so they are "
        "recorded.",
        what,
    )
