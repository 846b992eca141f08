"""durable_activity(): helpers inside ctx.memo call activities durably, exactly as the seed says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import DurableActivityScopeError
from weft_nb.testing import TestEngine

calls: Counter[str] = Counter()
gate = threading.Event()

pytestmark = pytest.mark.usefixtures("workflow_kind")


@weft_nb.activity
def execute_tool(args: dict[str, int]) -> dict[str, int]:
    calls["execute_tool"] += 1
    return {"output": args["x"] * 2}


def shared_step(x: int, key: str | None) -> dict[str, object]:
    """A plain helper: no ctx, just durable_activity."""
    options = {} if key is None else {"idempotency_key": key}
    first = weft_nb.durable_activity("execute_tool", {"x": x}, **options)
    second = weft_nb.durable_activity(
        execute_tool, {"x": x + 1}, **options and {"idempotency_key": f"{key}-b"}
    )
    calls["helper_before_gate"] += 1
    assert gate.wait(10)  # the process may die here: after the activities, before the memo
    return {"tool": [first, second]}


@weft_nb.workflow
def agent(ctx: weft_nb.WorkflowContext, params: dict[str, object]) -> object:
    return ctx.memo("step-0", lambda: shared_step(params["x"], params["key"]))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def reset() -> None:
    calls.clear()
    gate.clear()


def test_durable_activity_outside_memo_is_refused() -> None:
    with pytest.raises(DurableActivityScopeError, match="only while a ctx.memo"):
        weft_nb.durable_activity(execute_tool, {"x": 1})


def test_calls_inside_memo_return_results_and_the_memo_records_the_value(
    engine: TestEngine,
) -> None:
    engine.register(execute_tool)
    gate.set()
    result = engine.run(agent, {"x": 3, "key": None}, run_id="m")
    assert result == {"tool": [{"output": 6}, {"output": 8}]}
    assert calls["execute_tool"] == 2
    # unkeyed calls journal nothing of their own; the memo's value is journaled
    rows = engine.journal.query("SELECT activity FROM steps WHERE run_id = 'm' ORDER BY position")
    assert rows == [("<memo>",)]


@pytest.mark.parametrize(("key", "runs_after_restart"), [("tool-1", 0), (None, 2)])
def test_keyed_calls_are_replayed_after_a_crash_unkeyed_ones_run_again(
    engine: TestEngine, key: str | None, runs_after_restart: int
) -> None:
    engine.register(execute_tool)
    engine.start(agent, {"x": 5, "key": key}, run_id="crash")
    wait_until(lambda: calls["helper_before_gate"] == 1)  # both activities returned
    restarted = engine.simulate_restart()
    before = calls["execute_tool"]
    gate.set()
    assert restarted.resume("crash").result(10) == {"tool": [{"output": 10}, {"output": 12}]}
    assert calls["execute_tool"] - before == runs_after_restart
    restarted.close()


def test_calls_from_another_thread_or_after_the_callback_are_refused(engine: TestEngine) -> None:
    import contextvars

    refusals: dict[str, str] = {}
    kept_context: list[contextvars.Context] = []

    def attempt(label: str) -> None:
        try:
            weft_nb.durable_activity(execute_tool, {"x": 1})
            refusals[label] = "accepted"
        except DurableActivityScopeError as exc:
            refusals[label] = str(exc)

    def helper() -> str:
        plain = threading.Thread(target=attempt, args=("plain thread",))
        inherited = threading.Thread(
            target=contextvars.copy_context().run, args=(attempt, "thread with the context")
        )
        for thread in (plain, inherited):
            thread.start()
            thread.join()
        kept_context.append(contextvars.copy_context())
        return "done"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return ctx.memo("k", helper)

    engine.register(execute_tool)
    assert engine.run(wf) == "done"
    kept_context[0].run(attempt, "after the callback returned")
    assert "only while a ctx.memo" in refusals["plain thread"]
    assert "sequential" in refusals["thread with the context"]
    assert "only while a ctx.memo" in refusals["after the callback returned"]
    assert calls["execute_tool"] == 0


def test_complete_async_is_not_supported_from_durable_activity(engine: TestEngine) -> None:
    @weft_nb.activity(retry={"max_attempts": 1})
    def parks(_: object, activity: weft_nb.ActivityContext) -> None:
        activity.complete_async()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.memo("k", lambda: weft_nb.durable_activity(parks))

    with pytest.raises(DurableActivityScopeError, match="complete_async"):
        engine.run(wf)


DURABLE_CHILD = Path(__file__).resolve().parents[1] / "crash_children" / "durable_child.py"


def run_durable_child(tmp_path: Path, verifier: str, kill_at: str | None) -> int:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "journal": str(tmp_path / "journal.duckdb"), "run_id": "pay",
        "evidence": str(tmp_path / "evidence.jsonl"), "verifier": verifier,
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "WEFT_NB_KILL_AT"}
    if kill_at is not None:
        env["WEFT_NB_KILL_AT"] = kill_at
    done = subprocess.run(
        [sys.executable, str(DURABLE_CHILD), str(config)],
        capture_output=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    if done.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"child exited with {done.returncode}: {done.stderr.decode()[-3000:]}")
    return done.returncode


@pytest.mark.parametrize(
    ("verifier", "outcome", "charges"),
    [
        ("none", {"error": "ActivityReconciliationIndeterminateError"}, 1),
        ("not-completed", {"result": {"receipt": "charged 7"}}, 2),
        ("completed", {"result": {"receipt": "from the provider"}}, 1),
    ],
)
def test_a_keyed_call_killed_between_dispatch_and_record_is_reconciled_not_rerun(
    tmp_path: Path, verifier: str, outcome: dict[str, object], charges: int
) -> None:
    # A real SIGKILL after `charge` returned and before its result was journaled: only the
    # dispatch marker survives.
    assert run_durable_child(tmp_path, verifier, "step.before_record") == -signal.SIGKILL
    assert run_durable_child(tmp_path, verifier, None) == 0
    lines = [json.loads(x) for x in (tmp_path / "evidence.jsonl").read_text().splitlines()]
    assert len([x for x in lines if "charged" in x]) == charges  # before the fix: always 2
    got = lines[-1]["outcome"]
    assert {k: got[k] for k in outcome} == outcome
    if verifier == "none":
        assert "'charge'" in got["message"] and "fails closed" in got["message"]
