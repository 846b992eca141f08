"""A run's fixed cost: `engine.run()` syncs its start with its first step; run threads are reused.

`engine.run()` hands its caller nothing before the outcome, so the run's start record is only
written, and the first step's ``fdatasync`` (or the outcome's) makes it durable with that record
(docs/guarantees.md). `engine.start()` returns a handle: its start is synced before it returns.
The syncs are observed on the real step log through a spy that calls the real ``os.fdatasync``.
Workflow functions run on reused threads (`weft_nb.engine.run_threads`): one thread per live run,
an idle one taken again, and none left behind by `engine.close()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_until

import weft_nb
from weft_nb import Engine
from weft_nb.engine.run_threads import RunThreads, recall
from weft_nb.journal.run_log import RUN_FINISH_FIELDS, RUN_START_FIELDS
from weft_nb.journal.step_log import STEP_TYPES, read_records

START, STEP, FINISH = RUN_START_FIELDS, len(STEP_TYPES), RUN_FINISH_FIELDS


@weft_nb.activity
def echo(value: int) -> int:
    return value


@weft_nb.workflow
def steps(ctx: weft_nb.WorkflowContext, n: int) -> int:
    return sum(ctx.run(echo, i) for i in range(n))


@weft_nb.workflow
def where(ctx: weft_nb.WorkflowContext) -> int:
    return threading.get_ident()


def spy_step_log_syncs(monkeypatch: pytest.MonkeyPatch, journal: Path) -> list[list[int]]:
    """For each ``fdatasync`` of the step log, the field counts of the records it covers."""
    log = str(journal) + ".steplog"
    real = os.fdatasync
    syncs: list[list[int]] = []

    def fdatasync(fd: int) -> None:
        if os.fstat(fd).st_ino == os.stat(log).st_ino:
            syncs.append([len(row) for _lsn, row in read_records(log)])
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return syncs


def test_engine_run_makes_its_start_durable_with_its_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.duckdb"
    with Engine(journal) as engine:
        syncs = spy_step_log_syncs(monkeypatch, journal)
        assert engine.run(steps, 2) == 1
    # The start record rides on step 0's sync; no sync covers a step without its run's start.
    assert [sync[-4:] for sync in syncs] == [
        [START, STEP],
        [START, STEP, STEP],
        [START, STEP, STEP, FINISH],
    ]


def test_engine_run_without_steps_is_durable_with_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.duckdb"
    with Engine(journal) as engine:
        syncs = spy_step_log_syncs(monkeypatch, journal)
        assert engine.run(steps, 0) == 0
    assert syncs == [[START, FINISH]]


def test_engine_start_syncs_its_start_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "j.duckdb"
    go = threading.Event()

    @weft_nb.workflow
    def gated(ctx: weft_nb.WorkflowContext) -> int:
        assert go.wait(30)
        return ctx.run(echo, 0)

    with Engine(journal) as engine:
        syncs = spy_step_log_syncs(monkeypatch, journal)
        handle = engine.start(gated)
        assert syncs == [[START]]  # the handle is an acknowledgement: durable before it exists
        go.set()
        assert handle.result(30) == 0
    assert syncs == [[START], [START, STEP], [START, STEP, FINISH]]


def test_runs_one_after_another_reuse_one_thread(tmp_path: Path) -> None:
    with Engine(tmp_path / "j.duckdb") as engine:
        first = engine.run(where)
        assert first != threading.get_ident()
        for _ in range(5):
            # the handle settles a moment before the thread goes back to wait for a run
            wait_until(lambda: engine.runtime.run_threads.idle, timeout=30, what="an idle thread")
            assert engine.run(where) == first


def test_live_runs_each_have_their_own_thread(tmp_path: Path) -> None:
    both_running = threading.Barrier(3, timeout=30)

    @weft_nb.workflow
    def meet(ctx: weft_nb.WorkflowContext) -> int:
        both_running.wait()  # breaks (and the runs fail) if one waits for the other's thread
        return threading.get_ident()

    with Engine(tmp_path / "j.duckdb") as engine:
        engine.run(where)  # leaves one idle thread to take
        handles = [engine.start(meet) for _ in range(2)]
        both_running.wait()
        idents = {handle.result(30) for handle in handles}
    assert len(idents) == 2


def test_close_ends_the_idle_run_threads(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "j.duckdb")
    ident = engine.run(where)
    (thread,) = [each for each in threading.enumerate() if each.ident == ident]
    engine.close()
    thread.join(RunThreads.IDLE_EXIT / 2)  # ended by close(), not by its idle timeout
    assert not thread.is_alive()


def test_a_recalled_run_never_runs_and_its_thread_serves_the_next(tmp_path: Path) -> None:
    pool = RunThreads()
    ran: list[str] = []
    done = threading.Event()

    def run(name: str) -> Callable[[], None]:
        return lambda: (ran.append(name), done.set())  # type: ignore[func-returns-value]

    worker = pool.take("weft-run-first")
    first = [run("first")]
    assert recall(first)  # a launch interrupted before its thread took the run takes it back
    worker.give("weft-run-first", first)
    assert not recall(first)  # gone: taken back once, by one side only
    worker = pool.take("weft-run-second")
    worker.give("weft-run-second", [run("second")])
    assert done.wait(30)
    assert ran == ["second"]
    pool.close()


def test_resume_waits_for_an_interrupted_execution_whose_thread_lives_on(tmp_path: Path) -> None:
    """The old execution's thread serves other runs later: resume waits for the run, not it."""
    entered, release = threading.Event(), threading.Event()
    events: list[str] = []

    @weft_nb.activity
    def stubborn(_: int) -> int:
        entered.set()
        assert release.wait(30)  # ignores `cancelled`
        events.append("activity returned")
        return 1

    @weft_nb.workflow
    def slow(ctx: weft_nb.WorkflowContext) -> int:
        events.append("workflow began")
        return ctx.run(stubborn, 0)

    with Engine(tmp_path / "j.duckdb") as engine:
        engine.start(slow, run_id="r")
        assert entered.wait(30)
        assert engine.interrupt("r")
        resumed: list[weft_nb.RunHandle[int]] = []
        resuming = threading.Thread(target=lambda: resumed.append(engine.resume("r")))
        resuming.start()
        release.set()
        resuming.join(30)
        (handle,) = resumed  # not "still stopping": the old execution left within the wait
        assert handle.result(30) == 1
    assert events[:2] == ["workflow began", "activity returned"]
