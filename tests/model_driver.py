"""Driving a model program on the engine, crashing it, and checking what it did.

:class:`Driver` starts the run and plays the outside world: it buffers early signals, and each time
every engine thread waits without a deadline (the run is parked) it completes, fails or cancels a
parked activity by its task token, or sends the next late signal or cancel. At the program's
:class:`~model_programs.CrashPoint` s it crashes the engine (``simulate_restart()`` in process; in
a child process the hooks SIGKILL it), records the journal's completed positions and surviving
keyed dispatch markers, and resumes. :func:`check` compares what happened with
:func:`~model_programs.model` and checks the invariants.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from model_engine import (
    HANG_GUARD,
    RECORDER,
    model_act,
    model_act_v,
    model_workflow,
    normalise,
    outcome_of,
)
from model_programs import (
    CrashPoint,
    ErrSig,
    Expected,
    Program,
    Wait,
    model,
)

import weft_nb
from weft_nb.errors import AsyncTokenNotFoundError, RunFinishedError
from weft_nb.testing import TestEngine


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
    # position -> the highest attempt a crash interrupted (from the journal after the run)
    crashed_attempts: dict[int, int] = dataclasses.field(default_factory=dict)


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


def crashed_attempts(query: Query, run_id: str) -> dict[int, int]:
    """Position -> the highest attempt that was in flight when its process died."""
    rows = query(
        "SELECT position, max(attempt) FROM attempts WHERE run_id = ? "
        "AND error_type = 'ActivityCrashed' AND NOT superseded GROUP BY position",
        [run_id],
    )
    return {position: attempt for position, attempt in rows}


def journal_violations(query: Query, run_id: str) -> list[str]:
    """At most one completed row per step; signals consumed once."""
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

    def spent_tokens(self) -> None:
        """A finished run accepts no completion, whatever tokens it handed out (issue 13.1)."""
        for (token,) in self.engine.journal.query(
            "SELECT token FROM async_tokens WHERE run_id = ?", [self.run_id]
        ):
            try:
                self.engine.complete_async_activity(token, "after the end")
            except (AsyncTokenNotFoundError, RunFinishedError):
                continue
            self.execution.violations.append(f"the finished run accepted token {token}")

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
        self.execution.outcome = outcome
        if outcome[0] in ("completed", "failed", "cancelled"):
            self.spent_tokens()
        self.execution.violations += journal_violations(self.engine.journal.query, self.run_id)
        self.execution.crashed_attempts = crashed_attempts(self.engine.journal.query, self.run_id)
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


def overrides_for(
    expected: Expected, crashes: list[CrashRecord], crashed: dict[int, int] | None = None
) -> dict[int, ErrSig]:
    """The steps whose outcome a crash legitimately changed, read from the journal.

    Keyed steps a crash left ambiguous fail closed unless their verifier proves an outcome. A
    step whose last allowed attempt was in flight when the process died ends as a crash loop
    (docs/engine.md): crash points never interrupt a last attempt themselves, but a crash stops
    every attempt in flight (an ``all`` sibling, or any step at a SIGKILL fault point).
    """
    found: dict[int, ErrSig] = {}
    markers = {position for crash in crashes for position in crash.markers}
    for position, attempt in (crashed or {}).items():
        act = expected.acts.get(position)
        # A keyed step whose truthful verifier may adopt a result the attempt returned: the
        # model cannot tell whether it did, so that rare case keeps the model's outcome.
        adoptable = (
            position in markers and act is not None and act.verifier == "completed-with-result"
        )
        if act is not None and attempt >= act.max_attempts and not adoptable:
            found[position] = ("ActivityCrashLoopError", "ActivityCrashed")
    for position in markers:
        act = expected.acts.get(position)
        if act is not None and act.verifier in (None, "indeterminate"):
            found[position] = ("ActivityReconciliationIndeterminateError", None)
    return found


def check(program: Program, execution: Execution, *, crash_free: bool) -> list[str]:
    """Every violation of the model and of the invariants, one line each (empty: all good)."""
    expected = model(
        program,
        overrides_for(model(program), execution.crashes, execution.crashed_attempts),
    )
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
