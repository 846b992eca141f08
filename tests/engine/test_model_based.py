"""A model-based test of the whole engine: random workflow programs, run with crashes, vs a model.

Hypothesis generates programs (``tests/model_programs.py``) over ``ctx.run``, ``ctx.submit`` +
``ctx.all``, ``ctx.race``, ``ctx.run_all``, ``ctx.memo`` with ``durable_activity`` inside,
``ctx.sleep``, ``ctx.wait_for_signal`` (signals buffered early, sent once parked, never sent, or a
cancel instead), ``complete_async`` (completed, failed or cancelled by token), flaky, timing-out,
non-retryable and cancelling activities, retries, and idempotency keys with and without
verifiers. Each program runs on the engine (``tests/model_engine.py``, driven by
``tests/model_driver.py``) and is compared with the reference model; then again with crashes
injected at points hypothesis chooses (an attempt starting, an attempt's work done, the run
parked), in process with ``simulate_restart()``, and for a sample in child processes killed with
SIGKILL.

Invariants: the final result or error equals the model's (and so the crash-free run's); no step
journaled as completed at a crash executes again after it; at most one completed row per step;
signals consumed once; tokens accepted once and only while parked; every run thread settles
within a hang guard. A failure prints the minimal program as Python that reproduces it.

A long campaign: ``WEFT_NB_MODEL_EXAMPLES=2000 WEFT_NB_MODEL_SEED=7 pytest
tests/test_model_based.py`` (the default is a few fixed-seed examples, for ``make test``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crash_process import DEADLINE, ChildProcess
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from model_driver import (
    CrashRecord,
    Execution,
    check,
    crashed_attempts,
    execute,
    journal_state,
    journal_violations,
    overrides_for,
)
from model_engine import HANG_GUARD, normalise
from model_generator import crash_points, programs
from model_programs import CrashPoint, Program, model

from weft_nb.journal.duckdb_journal import DuckDBJournal

EXAMPLES = int(os.environ.get("WEFT_NB_MODEL_EXAMPLES", "0"))
SEED = os.environ.get("WEFT_NB_MODEL_SEED")
STATS = os.environ.get("WEFT_NB_MODEL_STATS")  # a file: one JSON line per program run


def tally(test: str, program: Program, execution: Execution, problems: list[str]) -> None:
    """Append what one example did to the campaign's statistics file (when one is set)."""
    if STATS is None:
        return
    line = {
        "test": test,
        "ops": [type(op).__name__ for op in program.ops],
        "outcome": execution.outcome[0],
        "crashes": [c.hit for c in execution.crashes],
        "executions": sum(e["kind"] == "attempt" for e in execution.events),
        "violations": problems,
    }
    with open(STATS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def campaign(default: int) -> Callable[[Any], Any]:
    """Fixed seed and ``default`` examples, unless the environment asks for a campaign."""

    def apply(test: Any) -> Any:
        configured = settings(
            max_examples=EXAMPLES or default,
            deadline=None,
            database=None,
            derandomize=SEED is None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=False,
        )(test)
        return seed(int(SEED))(configured) if SEED is not None else configured

    return apply


def report(program: Program, crashes: tuple[CrashPoint, ...], problems: list[str]) -> str:
    return (
        "\n".join(problems)
        + "\nreproduce: cd tests && python (this program):\n"
        + program.snippet(crashes)
        + f"\nmodel: {model(program).outcome}"
    )


@campaign(default=12)
@given(programs())
def test_programs_match_the_model(program: Program) -> None:
    execution = execute(program)
    problems = check(program, execution, crash_free=True)
    tally("model", program, execution, problems)
    assert not problems, report(program, (), problems)


@campaign(default=12)
@given(programs(), crash_points())
def test_programs_survive_simulated_crashes(
    program: Program, crashes: tuple[CrashPoint, ...]
) -> None:
    execution = execute(program, crashes)
    problems = check(program, execution, crash_free=False)
    tally("crashes", program, execution, problems)
    assert not problems, report(program, crashes, problems)


def test_the_printed_program_is_the_program() -> None:
    """A failure's snippet is runnable Python that rebuilds the same program and crash points."""
    from model_programs import Act, Memo, Race, Run, Wait

    program = Program(
        (
            Run(catch=True, act=Act("a0", fail_first=2, key=True, verifier="not-completed")),
            Race(acts=(Act("a1", duration=2), Act("a2", duration=1))),
            Memo(key="m1", acts=(Act("a3", timeout_first=1),)),
            Wait(name="s3", delivery="late"),
        )
    )
    crashes = (CrashPoint("end", 2), CrashPoint("parked", 1))
    seen: list[Any] = []
    namespace: dict[str, Any] = {}
    code = program.snippet(crashes).replace("from model_driver import check, execute", "")
    fakes = {
        "execute": lambda p, crashes: seen.append((p, crashes)) or Execution("r", ["completed"]),
        "check": lambda p, e, crash_free: seen.append(crash_free) or [],
    }
    exec(code, fakes, namespace)
    assert seen == [(program, crashes), False]
    assert Program.from_json(program.to_json()) == program


CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "model_child.py"
KILL_POINTS = [
    "step.before_record",
    "journal.after_commit",
    "journal.before_commit",
    "steplog.appended",
    "steplog.before_apply_commit",
]


def _child(work: Path, name: str, config: dict[str, Any], kill_at: str | None) -> ChildProcess:
    return ChildProcess(work, name, CHILD, config, work / "evidence", kill_at=kill_at)


def _exit_code(child: ChildProcess) -> int:
    """Wait for the child (its own hang guard is HANG_GUARD); kill it and fail if it hangs."""
    try:
        return child.proc.wait(timeout=DEADLINE + HANG_GUARD)
    except subprocess.TimeoutExpired:
        child.kill_quietly()
        pytest.fail(f"{child.name} hung:\n{child.output()}")


def _executions(work: Path) -> list[dict[str, Any]]:
    path = work / "evidence" / "executions.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


def _read_journal(path: Path, run_id: str) -> tuple[set[int], set[int], list[str], dict[int, int]]:
    journal = DuckDBJournal(path, read_only=True)
    try:
        completed, markers = journal_state(journal.query, run_id)
        violations = journal_violations(journal.query, run_id)
        return completed, markers, violations, crashed_attempts(journal.query, run_id)
    finally:
        journal.close()


kills = st.one_of(
    crash_points(max_crashes=1).map(lambda points: ("hook", points)),
    st.tuples(st.sampled_from(KILL_POINTS), st.integers(1, 8)).map(
        lambda point: ("fault", f"{point[0]}:{point[1]}")
    ),
)


@pytest.mark.crash
@campaign(default=3)
@given(programs(max_ops=4), kills)
def test_programs_survive_sigkill(program: Program, kill: tuple[str, Any]) -> None:
    """A child runs the program and is SIGKILLed; a second child resumes it to the end."""
    work = Path(tempfile.mkdtemp(prefix="weft-model-kill-"))
    run_id = "model-run"
    config = {
        "journal": str(work / "journal.duckdb"),
        "evidence": str(work / "evidence"),
        "run_id": run_id,
        "program": program.to_json(),
        "crashes": [[p.kind, p.n] for p in kill[1]] if kill[0] == "hook" else [],
        "resume": False,
    }
    shown = f"kill {kill}"
    first = _child(work, "first", config, kill[1] if kill[0] == "fault" else None)
    code = _exit_code(first)
    problems: list[str] = []
    crashes: list[CrashRecord] = []
    if code == -signal.SIGKILL:
        completed, markers, _, _ = _read_journal(work / "journal.duckdb", run_id)
        crashes.append(CrashRecord(0, {"kill": kill[1]}, completed, markers))
        second = _child(work, "second", {**config, "crashes": [], "resume": True}, None)
        assert _exit_code(second) == 0, second.output()
        last = second
    else:
        assert code == 0, first.output()
        last = first
    result = json.loads((work / "evidence" / f"result-{last.pid}.json").read_text())
    problems += result["violations"]
    _, _, violations, crashed = _read_journal(work / "journal.duckdb", run_id)
    problems += violations
    expected = model(program, overrides_for(model(program), crashes, crashed))
    if result["outcome"] != normalise(expected.outcome):
        problems.append(f"outcome {result['outcome']} != model {expected.outcome}")
    for crash in crashes:
        again = sorted(
            {
                e["pos"]
                for e in _executions(work)
                if e["pid"] == last.pid and e["pos"] in crash.completed
            }
        )
        if again:
            problems.append(f"completed steps {again} executed again after the SIGKILL")
    if STATS is not None:
        with open(STATS, "a", encoding="utf-8") as handle:
            line = {
                "test": "sigkill",
                "kill": [kill[0], repr(kill[1])],
                "killed": bool(crashes),
                "outcome": result["outcome"][0],
                "violations": problems,
            }
            handle.write(json.dumps(line) + "\n")
    assert not problems, report(program, (), [shown, f"evidence kept in {work}", *problems])
    shutil.rmtree(work, ignore_errors=True)


def test_a_caught_memo_failure_stays_a_failure_after_a_crash() -> None:
    """The memo's activity failed for good (2 of 2 attempts) and the workflow caught it; a crash
    at the next step must not re-run the memo callback on resume (it used to: the activity ran
    as attempt 3, succeeded, and the run's result differed from the crash-free run's)."""
    from model_programs import Act, Memo, Run

    program = Program(
        (
            Memo(catch=True, key="m0", acts=(Act("a0", fail_first=2, max_attempts=2),)),
            Run(act=Act("a1")),
        )
    )
    crashes = (CrashPoint("start", 3),)  # a1's first attempt, after the memo failed
    execution = execute(program, crashes)
    assert [c.hit for c in execution.crashes] == [
        {"kind": "start", "pos": 1, "attempt": 1, "act": "a1"}
    ]
    problems = check(program, execution, crash_free=False)
    assert not problems, report(program, crashes, problems)
