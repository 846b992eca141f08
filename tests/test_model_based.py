"""A model-based test of the whole engine: random workflow programs, run with crashes, vs a model.

Hypothesis generates programs (``tests/model_programs.py``) over ``ctx.run``, ``ctx.submit`` +
``ctx.all``, ``ctx.race``, ``ctx.run_all``, ``ctx.memo`` with ``durable_activity`` inside,
``ctx.sleep``, ``ctx.wait_for_signal`` (signals buffered early, sent once parked, never sent, or a
cancel instead), ``complete_async`` (completed, failed or cancelled by token), flaky, timing-out,
non-retryable and cancelling activities, retries, and idempotency keys with and without
verifiers. Each program runs on the engine (``tests/model_engine.py``) and is compared with the
reference model; then again with crashes injected at points hypothesis chooses (an attempt
starting, an attempt's work done, the run parked), in process with ``simulate_restart()``, and
for a sample in child processes killed with SIGKILL.

Invariants: the final result or error equals the model's (and so the crash-free run's); no step
journaled as completed at a crash executes again after it; at most one completed row per step;
signals consumed once; tokens accepted once and only while parked; every run thread settles
within a hang guard. A failure prints the minimal program as Python that reproduces it.

A long campaign: ``WEFT_NB_MODEL_EXAMPLES=2000 WEFT_NB_MODEL_SEED=7 pytest
tests/test_model_based.py`` (the default is a few fixed-seed examples, for ``make test``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from model_engine import check, execute
from model_programs import CrashPoint, Program, crash_points, model, programs

EXAMPLES = int(os.environ.get("WEFT_NB_MODEL_EXAMPLES", "0"))
SEED = os.environ.get("WEFT_NB_MODEL_SEED")


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
        + "\nreproduce (in tests/):\n"
        + program.snippet(crashes)
        + f"\nmodel: {model(program).outcome}"
    )


@campaign(default=12)
@given(programs())
def test_programs_match_the_model(program: Program) -> None:
    execution = execute(program)
    problems = check(program, execution, crash_free=True)
    assert not problems, report(program, (), problems)


@campaign(default=12)
@given(programs(), crash_points())
def test_programs_survive_simulated_crashes(
    program: Program, crashes: tuple[CrashPoint, ...]
) -> None:
    execution = execute(program, crashes)
    problems = check(program, execution, crash_free=False)
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
    code = program.snippet(crashes).replace("from model_engine import execute", "")
    exec(code, {"execute": lambda p, crashes: seen.append((p, crashes))}, namespace)
    assert seen == [(program, crashes)]
    assert Program.from_json(program.to_json()) == program
