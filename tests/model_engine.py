"""The engine side of a model program (tests/model_programs.py): its workflow and activities.

One generic workflow, ``model_workflow``, interprets a program given as its input (plain data),
so a program runs the same in this process and in a child process that is SIGKILLed
(``tests/crash_children/model_child.py``). The activities ``model_act`` / ``model_act_v`` behave
as their :class:`~model_programs.Act` spec says, keyed on the attempt number.

Evidence lives outside the journal, in :data:`RECORDER`: every attempt and memo callback that
starts, with its engine generation (0 for the first engine, +1 per restart), and, in a child
process, also appended and fsynced to a JSON-lines file, so it survives the SIGKILL.

:data:`RECORDER` also holds the crash hooks: an attempt reaching the planned crash point blocks
(in process) until ``tests/model_driver.py`` has restarted the engine, or SIGKILLs its process.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
from typing import Any

from model_programs import (
    Act,
    All,
    CrashPoint,
    ErrSig,
    Memo,
    Program,
    Race,
    Run,
    RunAll,
    Sleep,
    Wait,
    act_input,
    act_value,
)

import weft_nb
from weft_nb.errors import (
    WeftError,
    WorkflowCancelledError,
)

HANG_GUARD = 60.0  # real seconds: a run (or a crashed run's thread) that takes longer hangs


class FlakyError(Exception):
    """A retryable failure of an attempt."""


class PermanentError(Exception):
    """A non-retryable failure (listed in every Act's non_retryable_errors)."""


class Recorder:
    """Evidence and crash hooks shared by the activities, the workflow and the driver."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, evidence_file: str | None = None, kill_self: bool = False) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.evidence_file = evidence_file
        self.kill_self = kill_self
        self.gen = 0
        self.gens: dict[int, int] = {}
        self.engines: dict[int, weft_nb.Engine] = {}
        self.crashes: list[CrashPoint] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.hit: dict[str, Any] | None = None
        self.release = threading.Event()
        self.started: dict[tuple[int, str], set[int]] = collections.defaultdict(set)
        self.racing: collections.Counter[tuple[int, str]] = collections.Counter()

    def adopt(self, engine: weft_nb.Engine) -> None:
        """``engine`` is the current generation's."""
        with self.lock:
            self.gens[id(engine.checkpoints)] = self.gen
            self.engines[self.gen] = engine

    def gen_of(self, checkpoints: object) -> int:
        return self.gens.get(id(checkpoints), -1)

    def record(self, **event: Any) -> None:
        event["pid"] = os.getpid()
        with self.lock:
            self.events.append(event)
            if event["kind"] in ("attempt", "memo"):
                self.started[(event["gen"], event["run"])].add(event["pos"])
        if self.evidence_file is not None:
            fd = os.open(self.evidence_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(event) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def returned(self, run_id: str, position: int) -> bool:
        """Did an attempt of this step return its value (in any process)?"""
        with self.lock:
            events = list(self.events)
        if self.evidence_file is not None and os.path.exists(self.evidence_file):
            with open(self.evidence_file, encoding="utf-8") as handle:
                events += [json.loads(line) for line in handle.read().split("\n")[:-1] if line]
        return any(
            e["kind"] == "returned" and e["run"] == run_id and e["pos"] == position for e in events
        )

    def point(self, kind: str, gen: int, run_id: str, where: dict[str, Any]) -> None:
        """A crash point: crash here when the plan says so (blocks until the restart)."""
        with self.lock:
            if gen != self.gen or not self.crashes or self.racing[(gen, run_id)]:
                return
            self.counts[kind] += 1
            if self.crashes[0] != CrashPoint(kind, self.counts[kind]):
                return
            self.hit = {"kind": kind, **where}
            release = self.release
        if self.kill_self:
            os.kill(os.getpid(), signal.SIGKILL)
        release.wait(HANG_GUARD)


RECORDER = Recorder()


def _crashable(spec: Act, attempt: int, position: int) -> bool:
    # A crash in a step's last attempt ends it as a crash loop (issue 13.6; the model does not
    # predict ActivityCrashLoopError), so last attempts are never crashed.
    return attempt < spec.max_attempts


def _behave(inp: dict[str, Any], actx: weft_nb.ActivityContext) -> Any:
    spec = Act(**inp["spec"])
    gen = RECORDER.gen_of(actx._checkpoints)
    attempt, run_id, position = actx.attempt, actx.run_id, actx.position
    RECORDER.record(kind="attempt", gen=gen, run=run_id, pos=position, attempt=attempt)
    where = {"pos": position, "attempt": attempt, "act": spec.name}
    crashable = _crashable(spec, attempt, position)
    if crashable:
        RECORDER.point("start", gen, run_id, where)
    if attempt <= spec.timeout_first:
        actx.sleep(3600)  # until the per-attempt timeout sets `cancelled`
        raise FlakyError(f"attempt {attempt} overran its timeout")
    if spec.duration:
        actx.sleep(spec.duration)
    if spec.token_then_fail and attempt == 1:
        assert actx.task_token  # journaled when read; then this attempt fails
    if crashable:
        RECORDER.point("end", gen, run_id, where)
    if spec.permanent:
        raise PermanentError(f"{spec.name} always fails")
    if attempt <= spec.fail_first or (spec.token_then_fail and attempt == 1):
        raise FlakyError(f"{spec.name} attempt {attempt} fails")
    if spec.cancels:
        RECORDER.engines[gen].cancel(run_id)
    if spec.async_mode is not None:
        assert actx.task_token
        actx.complete_async()
    RECORDER.record(kind="returned", gen=gen, run=run_id, pos=position, attempt=attempt)
    return act_value(inp)


@weft_nb.activity
def model_act(inp: dict[str, Any], actx: weft_nb.ActivityContext) -> Any:
    """The activity every Act without a verifier calls."""
    return _behave(inp, actx)


def _verify(result: Any, context: weft_nb.VerificationContext) -> Any:
    if context.phase != "pre-dispatch-reconciliation":
        return True
    verdict = context.input["spec"]["verifier"]
    if verdict == "completed-with-result":  # a truthful verifier: it checks the side effect
        if RECORDER.returned(context.run_id, context.position):
            return {"status": verdict, "result": act_value(context.input)}
        return "not-completed"
    return verdict


@weft_nb.activity(name="model_act_v", verify=_verify)
def model_act_v(inp: dict[str, Any], actx: weft_nb.ActivityContext) -> Any:
    """The activity every Act with a verifier calls."""
    return _behave(inp, actx)


def _call(act: Act, prev: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return act.activity(), act_input(act, prev), act.options()


def _wait_started(ctx: weft_nb.WorkflowContext, gen: int, positions: list[int]) -> None:
    """Hold virtual time until every branch's first attempt started (a race is then decided by
    the branches' virtual durations alone, not by when the thread pool got to them)."""
    deadline = time.monotonic() + HANG_GUARD
    pause = threading.Event()
    while not set(positions) <= RECORDER.started[(gen, ctx.run_id)]:
        if ctx.cursor.state.stopped or time.monotonic() > deadline:
            return
        pause.wait(0.002)


def _op(ctx: weft_nb.WorkflowContext, op: Any, prev: Any, gen: int) -> Any:
    if isinstance(op, Run):
        name, inp, opts = _call(op.act, prev)
        return ctx.run(name, inp, **opts)
    if isinstance(op, All):
        futures = [ctx.submit(*_call(a, prev)[:2], **a.options()) for a in op.acts]
        return ctx.all(futures)
    if isinstance(op, RunAll):
        return ctx.run_all({a.name: (a.activity(), act_input(a, prev)) for a in op.acts})
    if isinstance(op, Race):
        RECORDER.racing[(gen, ctx.run_id)] += 1
        try:
            futures = [ctx.submit(*_call(a, prev)[:2], **a.options()) for a in op.acts]
            _wait_started(ctx, gen, [f.position for f in futures if not f.done()])
            index, value = ctx.race(futures)
        finally:
            RECORDER.racing[(gen, ctx.run_id)] -= 1
        return [index, value]
    if isinstance(op, Memo):
        # The memo's position, unless its key is cached in this execution.
        position = ctx.cursor.positions_taken

        def callback() -> Any:
            RECORDER.record(kind="memo", gen=gen, run=ctx.run_id, pos=position, attempt=1)
            RECORDER.point("start", gen, ctx.run_id, {"pos": position, "memo": op.key})
            if op.run_inside:
                ctx.run("model_act", act_input(Act("inside-memo"), prev))
            results = []
            for a in op.acts:
                try:
                    results.append(weft_nb.durable_activity(*_call(a, prev)[:2], **a.options()))
                except WeftError as exc:
                    if not op.inner_catch or isinstance(exc, WorkflowCancelledError):
                        raise
                    results.append(["error", *error_sig(exc)])
            return ["memo", op.key, results]

        return ctx.memo(op.key, callback)
    if isinstance(op, Sleep):
        ctx.sleep(op.seconds)
        return ["slept", op.seconds]
    if isinstance(op, Wait):
        return ["signal", ctx.wait_for_signal(op.name, timeout=op.timeout)]
    raise AssertionError(op)


def error_sig(exc: BaseException) -> ErrSig:
    return type(exc).__name__, getattr(exc, "cause_type", None)


@weft_nb.workflow
def model_workflow(ctx: weft_nb.WorkflowContext, data: dict[str, Any]) -> list[Any]:
    """Interpret a program (``Program.to_json()``) step by step."""
    program = Program.from_json(data)
    gen = RECORDER.gen_of(ctx.runtime.checkpoints)
    trace: list[Any] = []
    for op in program.ops:
        prev = trace[-1] if trace else None
        try:
            value = _op(ctx, op, prev, gen)
        except WeftError as exc:
            if not op.catch or isinstance(exc, WorkflowCancelledError):
                raise
            value = ["error", *error_sig(exc)]
        trace.append(value)
    return trace


def normalise(value: Any) -> Any:
    """JSON's view of a value (tuples are lists)."""
    return json.loads(json.dumps(value))


def outcome_of(handle: weft_nb.RunHandle) -> list[Any]:
    try:
        return ["completed", normalise(handle.result(HANG_GUARD))]
    except WorkflowCancelledError:
        return ["cancelled"]
    except TimeoutError:
        return ["hang"]
    except Exception as exc:
        return ["failed", *error_sig(exc)]
