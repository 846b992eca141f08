"""Running a model program (tests/model_programs.py) on the engine, with crashes, and checking it.

One generic workflow, ``model_workflow``, interprets a program given as its input (plain data),
so a program runs the same in this process and in a child process that is SIGKILLed
(``tests/crash_children/model_child.py``). The activities ``model_act`` / ``model_act_v`` behave
as their :class:`~model_programs.Act` spec says, keyed on the attempt number.

Evidence lives outside the journal, in :data:`RECORDER`: every attempt and memo callback that
starts, with its engine generation (0 for the first engine, +1 per restart), and, in a child
process, also appended and fsynced to a JSON-lines file, so it survives the SIGKILL.

:class:`Driver` starts the run and plays the outside world: it sends signals (buffered at start,
or once the run is parked), completes or fails parked activities by their task token, cancels,
and crashes the engine at the program's :class:`~model_programs.CrashPoint` s
(``simulate_restart()`` in process, SIGKILL in a child), then resumes. :func:`check` compares
what happened with :func:`~model_programs.model` and checks the invariants.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from model_programs import (
    KNOWN_DEFECTS,
    SUB_BASE,
    Act,
    All,
    CrashPoint,
    ErrSig,
    Expected,
    Memo,
    Program,
    Race,
    Run,
    RunAll,
    Sleep,
    Wait,
    act_input,
    act_value,
    model,
)

import weft_nb
from weft_nb.errors import (
    AsyncTokenNotFoundError,
    RunFinishedError,
    WeftError,
    WorkflowCancelledError,
)
from weft_nb.testing import TestEngine

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
    # A crash in a step's last attempt would end it as a crash loop once issue 13.6 is fixed
    # (the model does not predict ActivityCrashLoopError), so last attempts are never crashed.
    keyed_sub = spec.key and position >= SUB_BASE
    return attempt < spec.max_attempts and not (
        keyed_sub and "keyed_durable_activity_crash" in KNOWN_DEFECTS
    )


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
        if ctx._state.stopped or time.monotonic() > deadline:
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
        position = ctx._position  # the memo's, unless its key is cached in this execution

        def callback() -> Any:
            RECORDER.record(kind="memo", gen=gen, run=ctx.run_id, pos=position, attempt=1)
            RECORDER.point("start", gen, ctx.run_id, {"pos": position, "memo": op.key})
            if op.run_inside:
                ctx.run("model_act", act_input(Act("inside-memo"), prev))
            results = [
                weft_nb.durable_activity(*_call(a, prev)[:2], **a.options()) for a in op.acts
            ]
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
    gen = RECORDER.gen_of(ctx._engine.checkpoints)
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


@dataclasses.dataclass
class CrashRecord:
    """The journal right after a crash: completed positions and keyed dispatch markers."""

    gen: int
    hit: dict[str, Any] | None
    completed: set[int]
    markers: set[int]


@dataclasses.dataclass
class Execution:
    """What one execution of a program did."""

    run_id: str
    outcome: list[Any] = dataclasses.field(default_factory=list)
    crashes: list[CrashRecord] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)


Query = Callable[[str, list[Any]], list[tuple[Any, ...]]]


def journal_state(query: Query, run_id: str) -> tuple[set[int], set[int]]:
    completed = {
        row[0]
        for row in query(
            "SELECT position FROM steps WHERE run_id = ? AND status = 'completed' "
            "AND NOT superseded",
            [run_id],
        )
    }
    markers = {
        row[0]
        for row in query(
            "SELECT position FROM steps WHERE run_id = ? AND status = 'started' "
            "AND NOT superseded AND idempotency_key LIKE 'k-%'",
            [run_id],
        )
    }
    return completed, markers


def journal_violations(query: Query, run_id: str, terminal: bool) -> list[str]:
    """At most one completed row per step; signals consumed once; no token outlives its run."""
    found = []
    for position, count in query(
        "SELECT position, count(*) FROM steps WHERE run_id = ? AND status = 'completed' "
        "GROUP BY position HAVING count(*) > 1",
        [run_id],
    ):
        found.append(f"step {position} has {count} completed rows in the journal")
    ((consumed, distinct),) = query(
        "SELECT count(*), count(DISTINCT consumed_position) FROM signals WHERE run_id = ? "
        "AND consumed_at IS NOT NULL",
        [run_id],
    )
    ((received,),) = query(
        "SELECT count(*) FROM steps WHERE run_id = ? AND activity = '<signal>' "
        "AND status = 'completed' AND NOT superseded",
        [run_id],
    )
    if consumed != distinct or consumed != received:
        found.append(
            f"signals: {consumed} consumed at {distinct} positions, {received} signal steps"
        )
    if terminal and "token_outlives_attempt" not in KNOWN_DEFECTS:
        pending = query(
            "SELECT token FROM async_tokens WHERE run_id = ? AND consumed_at IS NULL", [run_id]
        )
        if pending:
            found.append(f"the finished run still has usable tokens {pending}")
    return found


def _quiescent(clock: Any) -> bool:
    with clock._cond:
        return bool(
            clock._participants > 0
            and clock._blocked >= clock._participants
            and not clock._deadlines
        )


class Driver:
    """Runs one program on a TestEngine, playing signals, completions, cancels and crashes."""

    def __init__(
        self,
        program: Program,
        journal: str,
        run_id: str,
        crashes: tuple[CrashPoint, ...] = (),
        expected: Expected | None = None,
    ) -> None:
        self.program = program
        self.journal = journal
        self.run_id = run_id
        self.expected = expected or model(program)
        self.execution = Execution(run_id)
        RECORDER.crashes = list(crashes)
        self.waits = [op for op in program.ops if isinstance(op, Wait)]
        self.late = [op for op in self.waits if op.delivery in ("late", "cancel")]
        self.tried: set[str] = set()
        self.engine = TestEngine(journal, max_parallel=32, heartbeat_interval=0.01)
        self.engine.register(model_act, model_act_v, model_workflow)
        RECORDER.adopt(self.engine)

    def start(self, resume: bool = False) -> weft_nb.RunHandle:
        """Start (or resume, in a new process) the run and buffer the early signals.

        Virtual time stands still until the early signals are buffered (this thread counts as
        a busy participant meanwhile), so a signal timeout cannot pass before they are sent. A
        resumed run gets them again (a repeated signal id is ignored): the process that started
        it may have died before it sent them.
        """
        if resume and self.engine.journal.get_run(self.run_id) is None:
            resume = False  # the first process died before the run was created
        self.engine.clock.reserve_participant()
        try:
            if resume:
                self.send_early()
                return self.engine.resume(self.run_id)
            handle = self.engine.start(model_workflow, self.program.to_json(), run_id=self.run_id)
            self.send_early()
            return handle
        finally:
            self.engine.clock.release_participant()

    def send_early(self) -> None:
        for op in self.waits:
            if op.delivery == "early":
                try:
                    self.engine.signal(
                        self.run_id, op.name, f"payload-{op.name}", signal_id=op.name
                    )
                except RunFinishedError:
                    return

    def drive(self, handle: weft_nb.RunHandle) -> list[Any]:
        """Play the outside world until the run settles; return its outcome."""
        deadline = time.monotonic() + HANG_GUARD
        pause = threading.Event()
        while not handle.done:
            if time.monotonic() > deadline:
                self.execution.violations.append(f"hang: the run did not settle in {HANG_GUARD}s")
                return ["hang"]
            if RECORDER.hit is not None:
                handle = self.crash(handle)
                continue
            if _quiescent(self.engine.clock) and not RECORDER.racing[(RECORDER.gen, self.run_id)]:
                pause.wait(0.01)
                if _quiescent(self.engine.clock) and not handle.done:
                    handle = self.parked(handle)
                    continue
            pause.wait(0.002)
        return outcome_of(handle)

    def parked(self, handle: weft_nb.RunHandle) -> weft_nb.RunHandle:
        """Every engine thread waits without a deadline: deliver what the run waits for."""
        engine, run_id = self.engine, self.run_id
        tokens = {
            p: t
            for p, t in engine.journal.pending_async_tokens(run_id).items()
            if t not in self.tried
        }
        late = None
        if not tokens and self.late:
            late = self.late[0]
            done = engine.journal.query(
                "SELECT count(*) FROM steps WHERE run_id = ? AND activity = '<signal>' "
                "AND status IN ('completed', 'failed') AND NOT superseded",
                [run_id],
            )[0][0]
            if late.delivery == "cancel" and done != self.waits.index(late):
                late = None  # not waiting for it yet
        if not tokens and late is None:
            return handle
        RECORDER.counts["parked"] += 1
        if RECORDER.crashes and RECORDER.crashes[0] == CrashPoint(
            "parked", RECORDER.counts["parked"]
        ):
            RECORDER.hit = {"kind": "parked"}
            if RECORDER.kill_self:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.crash(handle)
        for position, token in sorted(tokens.items()):
            self.tried.add(token)
            act = self.expected.acts.get(position)
            try:
                if act is None or act.async_mode is None:
                    engine.complete_async_activity(token, "stale")
                    self.execution.violations.append(
                        f"token {token} of step {position} (not parked) was accepted"
                    )
                elif act.async_mode == "complete":
                    engine.complete_async_activity(token, self.expected.async_results[position])
                elif act.async_mode == "fail":
                    engine.fail_async_activity(token, "rejected")
                else:
                    engine.cancel(run_id)
            except AsyncTokenNotFoundError:
                if act is not None and act.async_mode is not None:
                    self.execution.violations.append(f"parked token {token} was refused")
        if late is not None and not tokens:
            self.late.pop(0)
            if late.delivery == "cancel":
                engine.cancel(run_id)
            else:
                engine.signal(run_id, late.name, f"payload-{late.name}", signal_id=late.name)
        return handle

    def crash(self, handle: weft_nb.RunHandle) -> weft_nb.RunHandle:
        """simulate_restart() at the crash point, then resume the run in the new engine."""
        hit, old = RECORDER.hit, self.engine
        self.engine = old.simulate_restart()
        with RECORDER.lock:
            RECORDER.gen += 1
            RECORDER.crashes.pop(0)
            RECORDER.counts.clear()
            RECORDER.hit = None
            release, RECORDER.release = RECORDER.release, threading.Event()
        RECORDER.adopt(self.engine)
        release.set()
        completed, markers = journal_state(self.engine.journal.query, self.run_id)
        self.execution.crashes.append(CrashRecord(RECORDER.gen - 1, hit, completed, markers))
        self.tried.clear()
        if not handle._done.wait(HANG_GUARD):
            self.execution.violations.append("the crashed engine's run thread never settled")
        return self.engine.resume(self.run_id)

    def finish(self, outcome: list[Any]) -> Execution:
        terminal = outcome[0] in ("completed", "failed", "cancelled")
        self.execution.outcome = outcome
        self.execution.violations += journal_violations(
            self.engine.journal.query, self.run_id, terminal
        )
        self.engine.close()
        with RECORDER.lock:
            self.execution.events = [e for e in RECORDER.events if e["run"] == self.run_id]
        return self.execution


_RUNS = iter(range(10**9))


def execute(
    program: Program, crashes: tuple[CrashPoint, ...] = (), folder: str | None = None
) -> Execution:
    """Run ``program`` in this process on a fresh journal, crashing at ``crashes``."""
    RECORDER.reset()
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="weft-model-")
    run_id = f"p{os.getpid()}-{next(_RUNS)}"
    try:
        driver = Driver(program, os.path.join(folder, "journal.duckdb"), run_id, crashes)
        outcome = driver.drive(driver.start())
        return driver.finish(outcome)
    finally:
        if own:  # a campaign runs thousands of programs
            shutil.rmtree(folder, ignore_errors=True)


def overrides_for(expected: Expected, crashes: list[CrashRecord]) -> dict[int, ErrSig]:
    """Keyed steps a crash left ambiguous fail closed unless their verifier proves an outcome."""
    found: dict[int, ErrSig] = {}
    for crash in crashes:
        for position in crash.markers:
            act = expected.acts.get(position)
            if act is not None and act.verifier in (None, "indeterminate"):
                found[position] = ("ActivityReconciliationIndeterminateError", None)
    return found


def check(program: Program, execution: Execution, *, crash_free: bool) -> list[str]:
    """Every violation of the model and of the invariants, one line each (empty: all good)."""
    expected = model(program, overrides_for(model(program), execution.crashes))
    problems = list(execution.violations)
    if normalise(execution.outcome) != normalise(expected.outcome):
        problems.append(f"outcome {execution.outcome} != model {expected.outcome}")
    attempts = [e for e in execution.events if e["kind"] in ("attempt", "memo")]
    for crash in execution.crashes:
        again = sorted(
            {e["pos"] for e in attempts if e["gen"] > crash.gen and e["pos"] in crash.completed}
        )
        if again:
            problems.append(f"completed steps {again} executed again after crash {crash}")
    if crash_free and expected.exact:
        counts = collections.Counter(e["pos"] for e in attempts if e["kind"] == "attempt")
        for position, (low, high) in expected.executions.items():
            if not low <= counts[position] <= high:
                problems.append(
                    f"step {position} ran {counts[position]} time(s); model: {low}..{high}"
                )
        stray = set(counts) - set(expected.executions)
        if stray:
            problems.append(f"steps {sorted(stray)} ran but the model has no such step")
        memos = collections.Counter(e["pos"] for e in attempts if e["kind"] == "memo")
        if any(n != 1 for n in memos.values()) or set(memos) != expected.memo_positions:
            problems.append(f"memo callbacks ran {dict(memos)}; model: {expected.memo_positions}")
    return problems
