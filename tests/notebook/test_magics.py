"""The magics, driven through a real in-process IPython shell."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import weft_magics
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from panel_html import read_rows

import weft_nb


@pytest.fixture
def ip(ip: InteractiveShell) -> InteractiveShell:
    """The shared shell (conftest.py), with a ``calls`` list the cells append to."""
    ip.user_ns["calls"] = []
    return ip


def define_pipeline(shell: InteractiveShell) -> None:
    """The cells of ``prepare`` (an activity) and ``pipeline`` (a workflow that runs it)."""
    cell(shell, "weft_activity prepare(n, scale=1)", PREPARE)
    cell(shell, "weft_workflow pipeline(n)", PIPELINE)


def cell(shell: InteractiveShell, line: str, body: str) -> None:
    name, _, rest = line.partition(" ")
    shell.run_cell_magic(name, rest, body)


PREPARE = """
calls.append("prepare")
[x * scale for x in range(n)]
"""
PIPELINE = """
data = ctx.run("prepare", {"n": n, "scale": 2})
sum(data)
"""


def test_loading_twice_is_harmless_and_the_journal_path_is_set(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    ip.run_line_magic("load_ext", "weft_nb")
    assert weft_magics(ip).session.journal_path() == str(tmp_path / "notebook.duckdb")
    assert ip.run_line_magic("weft", "journal") == str(tmp_path / "notebook.duckdb")


def test_activity_cell_registers_without_running_and_gives_an_inline_callable(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    cell(ip, "weft_activity prepare(n, scale=1) --retry 5 --timeout 2m", PREPARE)
    out = capsys.readouterr().out
    assert "registered activity 'prepare': prepare(n, scale=1), retry 5x, timeout 120s" in out
    assert ip.user_ns["calls"] == []  # registering does not run it
    definition = weft_magics(ip).session.engine.registry.activity("prepare")
    assert definition is not None
    assert (definition.retry.max_attempts, definition.timeout) == (5, 120.0)
    assert ip.user_ns["prepare"](3) == [0, 1, 2]  # the inline callable, with the default
    assert ip.user_ns["prepare"](2, scale=10) == [0, 10]
    assert ip.user_ns["calls"] == ["prepare", "prepare"]
    cell(ip, "weft_activity prepare(n, scale=1)", PREPARE + "\n# edited\n")
    assert "replaced earlier definition" in capsys.readouterr().out


def test_activity_cell_takes_a_circuit_breaker(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    cell(ip, "weft_activity prepare(n, scale=1) --circuit-breaker 3/1m", PREPARE)
    assert "circuit breaker 3/60s" in capsys.readouterr().out
    definition = weft_magics(ip).session.engine.registry.activity("prepare")
    assert definition is not None
    assert definition.circuit_breaker == weft_nb.CircuitBreaker(3, "1m", 1)


def test_workflow_cell_and_weft_run_replay_the_recorded_run(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    define_pipeline(ip)
    capsys.readouterr()
    assert ip.run_line_magic("weft", "run pipeline n=4") == 12
    assert "completed: replayed from journal: 0 steps, 1 executed" in capsys.readouterr().out
    # Restart & Run All: the same notebook, workflow and input give the same run id
    assert ip.run_line_magic("weft", "run pipeline n=4 --as result") == 12
    assert "replayed from journal" in capsys.readouterr().out
    assert ip.user_ns["result"] == 12
    assert ip.user_ns["calls"] == ["prepare"]
    # --new forces a fresh run; another input is another run
    assert ip.run_line_magic("weft", "run pipeline n=4 --new  # a trailing comment") == 12
    assert ip.run_line_magic("weft", "run pipeline n=2") == 2
    assert ip.user_ns["calls"] == ["prepare"] * 3
    runs = ip.run_line_magic("weft", "runs")
    assert [r.status for r in runs] == ["completed"] * 3


def test_weft_run_values_from_the_namespace(ip: InteractiveShell) -> None:
    define_pipeline(ip)
    ip.user_ns["epochs"] = 3
    assert ip.run_line_magic("weft", "run pipeline n=$epochs --id mine") == 6
    assert ip.run_line_magic("weft", "run pipeline n={epochs + 2}") == 20
    assert weft_magics(ip).session.engine.runs()[0].run_id == "mine"


def test_magic_activities_serve_python_workflows_and_vice_versa(ip: InteractiveShell) -> None:
    cell(ip, "weft_activity prepare(n, scale=1)", PREPARE)

    @weft_nb.workflow
    def python_side(ctx: weft_nb.WorkflowContext, n: int) -> int:
        return sum(ctx.run("prepare", {"n": n}))

    assert weft_magics(ip).session.engine.run(python_side, 3) == 3
    cell(ip, "weft_workflow pipeline(n)", "ctx.run(prepare, {'n': n, 'scale': 3})")
    assert ip.run_line_magic("weft", "run pipeline n=2") == [0, 3]


def test_activity_context_is_in_scope_with_heartbeats_and_checkpoints(
    ip: InteractiveShell,
) -> None:
    cell(
        ip,
        "weft_activity train(epochs)",
        """
start = (activity.last_checkpoint or {"epoch": 0})["epoch"]
for epoch in range(start, epochs):
    activity.heartbeat({"epoch": epoch})
    activity.checkpoint({"epoch": epoch + 1})
{"trained": epochs - start, "attempt": activity.attempt}
""",
    )
    cell(ip, "weft_workflow pipeline(epochs)", "ctx.run(train, epochs)")
    assert ip.run_line_magic("weft", "run pipeline epochs=3") == {"trained": 3, "attempt": 1}
    assert ip.user_ns["train"](2) == {"trained": 2, "attempt": 1}  # inline: fresh state


@pytest.mark.parametrize(
    ("magic", "line", "body", "message"),
    [
        ("weft_activity", "", "1", "needs a name"),
        ("weft_activity", "f(x", "1", "not a signature"),
        ("weft_activity", "f(x) --retry many", "1", "invalid int value"),
        ("weft_activity", "f(x) --colour red", "1", "unrecognized arguments"),
        ("weft_activity", "f(x) --timeout soon", "1", "not a duration"),
        ("weft_activity", "f(x) --circuit-breaker 5", "1", "expected 'FAILURES/RESET_TIMEOUT'"),
        ("weft_activity", "f(x) --circuit-breaker 0/30s", "1", "failure_threshold must be"),
        ("weft_activity", "f(x) --circuit-breaker 5/soon", "1", "not a duration"),
        ("weft_activity", "f(activity)", "1", "'activity' is provided by weft_nb"),
        ("weft_activity", "f(*args)", "1", "only plain parameters"),
        ("weft_activity", "f(x)", "y = (1,\nz = 2", "syntax error in the cell, line 1"),
        ("weft_workflow", "w(ctx)", "1", "'ctx' is provided by weft_nb"),
    ],
)
def test_bad_magic_lines_and_cells_are_usage_errors(
    ip: InteractiveShell, magic: str, line: str, body: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as info:
        ip.run_cell_magic(magic, line, body)
    assert "usage: %%weft_" in str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "unknown %weft subcommand ''"),
        ("launch pipeline", "use one of run, runs"),
        ("run", "name a workflow"),
        ("run nothing", "no workflow 'nothing'; registered: \\['pipeline'\\]"),
        ("run pipeline n", "'n' is not key=value"),
        ("run pipeline n=four", "not a Python literal"),
        ("run pipeline n=$missing", "no variable 'missing'"),
        ("run pipeline n={1/0}", "ZeroDivisionError"),
        ("run pipeline m=1", "does not declare \\['m'\\]; it takes pipeline\\(n\\)"),
        ("run pipeline n=1 --later", "unrecognized arguments"),
        ("cancel nope", "no run 'nope'"),
        ("show nope", "no run 'nope'"),
        ("sql", "tables: runs, steps"),
        ('sql "DELETE FROM runs"', "only read-only queries.*DELETE"),
        ("sql SELECT 1; DROP TABLE runs", "only read-only queries.*DROP"),
        ("sql SELEKT 1", "does not parse"),
        ("sql SELECT nope FROM runs", "the query failed"),
    ],
)
def test_bad_weft_commands_are_usage_errors(ip: InteractiveShell, line: str, message: str) -> None:
    define_pipeline(ip)
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("weft", line)


def test_interrupt_kernel_during_a_blocking_run_records_interrupted_and_resumes(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    started = threading.Event()
    ip.user_ns["started"] = started
    cell(
        ip,
        "weft_activity train(epochs)",
        """
calls.append(("train", activity.last_checkpoint))
activity.checkpoint({"epoch": 1})
started.set()
if len(calls) == 1:
    stopped = activity.cancelled.wait(60)
    activity.raise_if_cancelled()
"trained"
""",
    )
    cell(ip, "weft_workflow pipeline(epochs)", "ctx.run(train, epochs)")

    def press_interrupt() -> None:
        assert started.wait(30)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_interrupt)
    presser.start()
    assert ip.run_line_magic("weft", "run pipeline epochs=2") is None
    presser.join()
    assert "Re-run this cell to resume it" in capsys.readouterr().out
    engine = weft_magics(ip).session.engine
    assert [r.status for r in engine.runs()] == ["interrupted"]
    # re-running the cell resumes the same run from the checkpoint
    assert ip.run_line_magic("weft", "run pipeline epochs=2") == "trained"
    calls: list[Any] = ip.user_ns["calls"]
    assert calls == [("train", None), ("train", {"epoch": 1})]
    assert [r.status for r in engine.runs()] == ["completed"]
    ip.user_ns.pop("started")


def test_weft_run_shows_a_panel_and_weft_show_rebuilds_it(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    define_pipeline(ip)
    capsys.readouterr()
    ip.run_line_magic("weft", "run pipeline n=3 --id shown")
    shown = capsys.readouterr().out
    assert "pipeline run shown: " in shown  # the panel's text (running or already done)
    panel = ip.run_line_magic("weft", "show shown")
    assert "pipeline run shown: completed" in repr(panel)
    assert read_rows(panel.steps.value)[0]["status"] == "completed"


def test_background_run_returns_the_handle_with_a_cancel_button(ip: InteractiveShell) -> None:
    started = threading.Event()
    ip.user_ns["started"] = started
    cell(
        ip,
        "weft_activity train(epochs)",
        "started.set()\nactivity.cancelled.wait(60)\nactivity.raise_if_cancelled()",
    )
    cell(ip, "weft_workflow pipeline(epochs)", "ctx.run(train, epochs)")
    handle = ip.run_line_magic("weft", "run pipeline epochs=1 --background")
    assert isinstance(handle, weft_nb.RunHandle)
    assert started.wait(10)  # the cell returned while the run goes on
    assert ip.run_line_magic("weft", f"cancel {handle.run_id}") is True
    with pytest.raises(weft_nb.errors.WorkflowCancelledError):
        handle.result(10)
    ip.user_ns.pop("started")


def test_weft_sql_queries_the_journal_read_only(ip: InteractiveShell) -> None:
    define_pipeline(ip)
    ip.run_line_magic("weft", "run pipeline n=3 --id q1")
    frame = ip.run_line_magic(
        "weft",
        'sql "SELECT r.run_id, r.status, s.activity, s.attempts FROM runs r '
        'JOIN steps s USING (run_id) ORDER BY s.position"',
    )
    assert list(frame.columns) == ["run_id", "status", "activity", "attempts"]
    assert frame.to_dict("records") == [
        {"run_id": "q1", "status": "completed", "activity": "prepare", "attempts": 1}
    ]
    with pytest.raises(UsageError):
        ip.run_line_magic("weft", "sql UPDATE runs SET status = 'failed'")
    assert weft_magics(ip).session.engine.runs()[0].status == "completed"  # nothing changed


def test_weft_timeline_draws_steps_and_attempts(ip: InteractiveShell) -> None:
    cell(ip, "weft_activity prepare(n, scale=1)", PREPARE)
    cell(
        ip,
        "weft_activity flaky(n) --retry 3",
        "calls.append('flaky')\nif calls.count('flaky') == 1:\n    raise OSError('again')\nn",
    )
    cell(ip, "weft_workflow pipeline(n)", "ctx.run(flaky, ctx.run(prepare, {'n': n}))")
    ip.run_line_magic("weft", "run pipeline n=2 --id t1")  # one real 1 s backoff
    from weft_nb.notebook.timeline import timeline_bars

    bars = timeline_bars(weft_magics(ip).session.engine, "t1")
    assert [(b.position, b.kind) for b in bars] == [
        (0, "completed"),
        (1, "attempt"),
        (1, "completed"),
    ]
    assert all(b.end >= b.start >= 0 for b in bars)
    figure = ip.run_line_magic("weft", "timeline t1")
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["0. prepare", "1. flaky"]
    assert len(figure.axes[0].patches) == 3


def test_weft_complete_and_fail_finish_parked_activities(ip: InteractiveShell) -> None:
    cell(ip, "weft_activity ask(q)", "calls.append(activity.task_token)\nactivity.complete_async()")
    cell(ip, "weft_workflow review(q)", "ctx.run(ask, q)")
    first = ip.run_line_magic("weft", "run review q='one' --background")
    second = ip.run_line_magic("weft", "run review q='two' --background")
    end = threading.Event()
    for _ in range(3000):
        if len(ip.user_ns["calls"]) == 2:
            break
        end.wait(0.01)
    token_one, token_two = ip.user_ns["calls"]
    ip.user_ns["token_one"] = token_one
    ip.run_line_magic("weft", 'complete $token_one {"approved": true}')
    assert first.result(10) == {"approved": True}
    ip.run_line_magic("weft", f"fail {token_two} not this time")
    with pytest.raises(weft_nb.errors.ActivityFailedError, match="not this time"):
        second.result(10)
    with pytest.raises(UsageError, match="single-use"):
        ip.run_line_magic("weft", f"complete {token_one} 1")
    with pytest.raises(UsageError, match="not JSON"):
        ip.run_line_magic("weft", f"complete {token_one} {{oops")
    with pytest.raises(UsageError, match="usage: %weft fail TOKEN MESSAGE"):
        ip.run_line_magic("weft", f"fail {token_one}")


def test_weft_executor_moves_cell_activities_to_worker_processes(ip: InteractiveShell) -> None:
    assert ip.run_line_magic("weft", "executor") == "thread"
    with pytest.raises(UsageError, match=r"thread \| process \[N\] \| dask ADDRESS"):
        ip.run_line_magic("weft", "executor gpu-farm")
    with pytest.raises(UsageError, match="worker count >= 1"):
        ip.run_line_magic("weft", "executor process 0")
    ip.user_ns["offset"] = 1000
    cell(ip, "weft_activity whoami(x)", "(x + offset, __import__('os').getpid())")
    cell(ip, "weft_workflow where(x)", "ctx.run(whoami, x)")
    value, pid = ip.run_line_magic("weft", "run where x=1")
    assert (value, pid) == (1001, os.getpid())  # the default: in the kernel's own process

    # Registrations made before the switch carry over to the engine on the new executor.
    assert ip.run_line_magic("weft", "executor process 1") == "process 1"
    assert ip.run_line_magic("weft", "executor") == "process 1"
    value, pid = ip.run_line_magic("weft", "run where x=2")
    assert value == 1002  # `offset` travelled with the cell's code
    assert pid != os.getpid()
    assert ip.run_line_magic("weft", "executor thread") == "thread"
    assert ip.run_line_magic("weft", "run where x=3")[1] == os.getpid()
    for name in ("offset", "whoami", "where"):
        ip.user_ns.pop(name, None)


def test_development_mode_is_a_magics_setting(ip: InteractiveShell) -> None:
    assert not weft_magics(ip).session.engine.development  # off by default (see docs/engine.md)
    ip.run_line_magic("weft", "journal other.duckdb")  # a new journal: a new engine
    ip.run_line_magic("config", "WeftMagics.development = True")
    assert weft_magics(ip).session.engine.development
    ip.run_line_magic("config", "WeftMagics.development = False")


def test_development_mode_watches_a_workflow_cell_for_clock_reads(ip: InteractiveShell) -> None:
    ip.run_line_magic("config", "WeftMagics.development = True")
    try:
        cell(ip, "weft_activity prepare(n, scale)", PREPARE)
        cell(ip, "weft_workflow stamped(n)", "import time\nstarted = time.time()\n" + PIPELINE)
        with pytest.warns(weft_nb.DevelopmentWarning, match=r"time\.time\(\) in its own code"):
            assert ip.run_line_magic("weft", "run stamped n=3") == 6
        assert weft_magics(ip).session.engine.development
    finally:
        ip.run_line_magic("config", "WeftMagics.development = False")


def test_compensate_options_of_the_cell_magics(ip: InteractiveShell) -> None:
    ip.user_ns["undone"] = []
    cell(ip, "weft_activity release(undo)", "undone.append(undo)")
    cell(ip, "weft_activity book(room) --compensate release", "f'booking-{room}'")
    cell(ip, "weft_workflow trip(room) --compensate-on-failure", BOOK_THEN_FAIL)
    with pytest.raises(ValueError, match="sold out"):
        ip.run_line_magic("weft", "run trip room=12")
    assert ip.user_ns["undone"] == [{"input": {"room": 12}, "result": "booking-12"}]


BOOK_THEN_FAIL = """
ctx.run("book", {"room": room})
raise ValueError("sold out")
"""


def test_weft_checkpoints_moves_checkpoints_to_s3(ip: InteractiveShell, tmp_path: Path) -> None:
    """``%weft checkpoints s3://...``: a cell activity's checkpoints go to a real S3 server."""
    from s3_storage import running_s3

    cell(ip, "weft_activity saver(n)", "activity.checkpoint({'n': n})\nactivity.last_checkpoint")
    cell(ip, "weft_workflow saving(n)", "ctx.run(saver, n)")
    assert ip.run_line_magic("weft", "checkpoints").endswith(".checkpoints")  # the default
    with running_s3() as s3:
        magics = weft_magics(ip)
        magics.storage_options = s3.options()
        try:
            assert ip.run_line_magic("weft", f"checkpoints {s3.url()}") == s3.url()
            assert ip.run_line_magic("weft", "checkpoints") == s3.url()
            assert ip.run_line_magic("weft", "run saving n=5") == {"n": 5}  # carried over
            found = s3.fs().find(f"{s3.bucket}/ckpt")
            assert [p for p in found if p.endswith(".pkl")], found
        finally:
            assert ip.run_line_magic("weft", "checkpoints default") == "default"
            magics.storage_options = {}
    assert ip.run_line_magic("weft", "checkpoints").endswith(".checkpoints")
