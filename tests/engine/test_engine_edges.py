"""Smaller engine edges (issue 13.12): failure sizes, Ctrl-C, redefinitions, interrupted runs."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from executor_workflows import with_defaults
from helpers import cancellable_run, parked_run

import weft_nb
from weft_nb import ActivityRedefinedWarning
from weft_nb.errors import ActivityFailedError, PayloadError, RunInterruptedError
from weft_nb.testing import TestEngine

GUARD = 30.0


# -- (a) an oversized failure is refused before its token is consumed --------------------------

pytestmark = pytest.mark.usefixtures("workflow_kind")


def test_an_oversized_failure_is_refused_and_its_token_stays_usable(journal_path: Path) -> None:
    with TestEngine(journal_path, max_payload_bytes=10_000) as engine:
        handle, tokens = parked_run(engine)
        with pytest.raises(PayloadError, match=r"over the journal's limit of 10000 bytes"):
            engine.fail_async_activity(tokens[0], "x" * 50_000)
        assert not handle.done
        engine.fail_async_activity(tokens[0], "too short to refuse")
        with pytest.raises(ActivityFailedError, match="too short to refuse"):
            handle.result(GUARD)


def test_an_oversized_failure_over_rest_is_a_400_and_the_token_stays_usable(
    journal_path: Path,
) -> None:
    with TestEngine(journal_path, max_payload_bytes=10_000) as engine:
        handle, tokens = parked_run(engine)
        server = engine.serve(port=0, allow_unauthenticated=True, max_body=1_000_000)

        def post(error: str) -> int:
            body = json.dumps({"token": tokens[0], "error": error}).encode()
            request = urllib.request.Request(
                server.url + "/api/v1/activities/fail", data=body, method="POST"
            )
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=GUARD) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error_response:
                return int(error_response.code)

        assert post("y" * 50_000) == 400
        assert not handle.done
        assert post("no") == 200
        with pytest.raises(ActivityFailedError, match="no"):
            handle.result(GUARD)


# -- (b) Ctrl-C on a blocking engine.run() interrupts the run ----------------------------------


def test_ctrl_c_on_a_blocking_engine_run_interrupts_the_run(tmp_path: Path) -> None:
    assert threading.current_thread() is threading.main_thread()  # where SIGINT lands
    started, stopped = threading.Event(), threading.Event()

    @weft_nb.activity
    def train(_: object, activity: weft_nb.ActivityContext) -> str:
        if activity.attempt == 1 and not started.is_set():
            started.set()
            if activity.cancelled.wait(GUARD):
                stopped.set()
            activity.raise_if_cancelled()
        return "trained"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> str:
        return str(ctx.run(train))

    def press_ctrl_c() -> None:
        assert started.wait(GUARD)
        os.kill(os.getpid(), signal.SIGINT)

    with weft_nb.Engine(tmp_path / "j.duckdb") as engine:
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            engine.run(wf, run_id="r")
        presser.join()
        assert stopped.wait(GUARD), "the run's activity was never asked to stop"
        assert [(r.run_id, r.status) for r in engine.runs()] == [("r", "interrupted")]
        assert engine.run(wf, run_id="r", timeout=GUARD) == "trained"  # it resumes


# -- (c) a run keeps the activity definitions it started with ---------------------------------


def test_redefining_an_activity_mid_run_does_not_mix_versions(engine: TestEngine) -> None:
    first_step_running, redefined = threading.Event(), threading.Event()

    def version_one(x: int) -> str:
        first_step_running.set()
        assert redefined.wait(GUARD)
        return f"v1({x})"

    def version_two(x: int) -> str:
        return f"v2({x})"

    engine.register(weft_nb.activity(name="tool")(version_one))

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[str]:
        return [str(ctx.run("tool", 1)), str(ctx.run("tool", 2))]

    handle = engine.start(wf)
    assert first_step_running.wait(GUARD)
    engine.register(weft_nb.activity(name="tool")(version_two))  # the cell is re-run
    redefined.set()
    assert handle.result(GUARD) == ["v1(1)", "v1(2)"]
    assert engine.run(wf) == ["v2(1)", "v2(2)"]  # a run started afterwards gets the new one


def test_a_redefined_function_reference_keeps_the_runs_version_and_warns(
    engine: TestEngine,
) -> None:
    namespace: dict[str, object] = {}
    first_step_running, redefined = threading.Event(), threading.Event()

    def define(tag: str) -> None:
        source = (
            f"def tool(x):\n    hook(x)\n    return '{tag}' + str(x)\n"  # as a re-run cell would
        )
        exec(compile(source, "cell", "exec"), namespace)  # what re-running a cell does
        namespace["tool"] = weft_nb.activity(namespace["tool"])  # type: ignore[arg-type]

    def hook(x: int) -> None:
        if x == 1:
            first_step_running.set()
            assert redefined.wait(GUARD)

    namespace["hook"] = hook
    define("v1:")

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[str]:
        return [str(ctx.run(namespace["tool"], 1)), str(ctx.run(namespace["tool"], 2))]

    handle = engine.start(wf)
    assert first_step_running.wait(GUARD)
    define("v2:")
    redefined.set()
    with pytest.warns(ActivityRedefinedWarning, match="keeps the definition it started with"):
        assert handle.result(GUARD) == ["v1:1", "v1:2"]


def test_different_functions_sharing_a_name_still_run_as_themselves(engine: TestEngine) -> None:
    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[object]:
        return [ctx.run(lambda: "first"), ctx.run(lambda: "second")]

    assert engine.run(wf) == ["first", "second"]


# -- (d) result() of an interrupted run raises RunInterruptedError ------------------------------


def test_result_of_an_interrupted_run_raises_run_interrupted_error(engine: TestEngine) -> None:
    handle = cancellable_run(engine, "i", GUARD)
    assert engine.interrupt("i")
    with pytest.raises(RunInterruptedError, match="run 'i' stopped before it finished") as caught:
        handle.result(GUARD)
    assert caught.value.run_id == "i"
    assert caught.value.reason == "the run was interrupted"  # what stopped it, not a default


def test_no_input_lets_the_parameters_default_apply_in_the_engines_process(
    engine: TestEngine,
) -> None:
    """``ctx.run(fn)`` / ``engine.run(wf)`` for a defaulted parameter get the default, not None;
    the run replays from the journal without running anything again."""

    @weft_nb.activity
    def positional_only(n: int = 9, activity: weft_nb.ActivityContext | None = None, /) -> int:
        assert activity is not None  # the default is passed itself, so the context still lands
        return n

    @weft_nb.workflow
    def bare(ctx: weft_nb.WorkflowContext, n: int = 2) -> list[int]:
        return [n, ctx.run(positional_only), ctx.run(positional_only, 1)]

    result = engine.run(with_defaults, run_id="d")
    assert (result["n"], result["values"]) == (3, [5, 5, 7, 6, 8])
    assert engine.run(with_defaults, run_id="d") == result  # replayed
    assert engine.run(bare) == [2, 9, 1]
    assert engine.run(bare, None) == [2, 9, 1]
    assert engine.run(bare, 4) == [4, 9, 1]
