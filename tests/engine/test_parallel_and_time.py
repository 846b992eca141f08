"""Parallel steps, durable sleep and time, memo: live and across simulated restarts."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from helpers import wait_until

import weft_nb
from weft_nb.errors import ActivityFailedError, BranchTopologyChangedError
from weft_nb.testing import TestEngine

pytestmark = pytest.mark.usefixtures("workflow_kind")


def test_submit_and_all_run_concurrently_and_return_in_order(engine: TestEngine) -> None:
    a_started, b_started = threading.Event(), threading.Event()

    @weft_nb.activity
    def left(x: int) -> int:
        a_started.set()
        assert b_started.wait(10), "the siblings did not run at the same time"
        return x + 1

    @weft_nb.activity
    def right(x: int) -> int:
        b_started.set()
        assert a_started.wait(10), "the siblings did not run at the same time"
        return x * 10

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[int]:
        return ctx.all([ctx.submit(left, 1), ctx.submit(right, 2)])

    assert engine.run(wf) == [2, 20]


def test_a_failed_sibling_waits_for_the_others_and_completed_ones_are_durable(
    engine: TestEngine,
) -> None:
    calls: Counter[str] = Counter()
    release = threading.Event()

    @weft_nb.activity(retry={"max_attempts": 1})
    def fails(_: object) -> None:
        calls["fails"] += 1
        raise ValueError("bad shard")

    @weft_nb.activity
    def slow(_: object) -> str:
        calls["slow"] += 1
        assert release.wait(10)
        return "slow done"

    @weft_nb.activity
    def blocker(_: object) -> None:
        calls["blocker"] += 1
        threading.Event().wait()  # a crash happens here

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        failing, slow_one = ctx.submit(fails), ctx.submit(slow)
        release.set()
        try:
            ctx.all([failing, slow_one])
        except ActivityFailedError:
            assert slow_one.done()  # all() waited for the sibling before raising
        ctx.run(blocker)

    engine.start(wf, run_id="p")
    wait_until(lambda: calls["blocker"] == 1)  # then the process 'dies'
    assert engine.journal.query("SELECT position, status FROM steps ORDER BY position") == [
        (0, "failed"), (1, "completed"),
    ]  # fmt: skip
    restarted = engine.simulate_restart()
    restarted.resume("p")
    wait_until(lambda: calls["blocker"] == 2)  # the resumed run is past the group again
    assert (calls["fails"], calls["slow"]) == (1, 1)  # neither sibling ran again
    restarted.close()


def test_race_returns_and_records_the_first_and_losers_keep_running(
    engine: TestEngine,
) -> None:
    finish_slow = threading.Event()
    loser_saw_cancel: list[bool] = []

    @weft_nb.activity
    def fast(_: object) -> str:
        return "fast"

    @weft_nb.activity
    def slow(_: object, activity: weft_nb.ActivityContext) -> str:
        assert finish_slow.wait(10)
        loser_saw_cancel.append(activity.cancelled.is_set())
        return "slow"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> tuple[int, str]:
        slow_future, fast_future = ctx.submit(slow), ctx.submit(fast)
        winner = ctx.race([slow_future, fast_future])
        finish_slow.set()
        ctx.all([slow_future])  # the loser runs to completion
        return winner

    assert engine.run(wf, run_id="r") == (1, "fast")
    assert loser_saw_cancel == [False]
    rows = engine.journal.query("SELECT activity, result FROM steps WHERE activity = '<race>'")
    assert rows == [("<race>", b"1")]
    # a replay returns the recorded winner, whatever the timing now
    finish_slow.clear()
    replayed = engine.simulate_restart().start(wf, run_id="r")
    assert replayed.result(10) == (1, "fast")


def test_recorded_race_winner_survives_a_restart_mid_run(engine: TestEngine) -> None:
    gate = threading.Event()
    calls: Counter[str] = Counter()

    @weft_nb.activity
    def quick(_: object) -> str:
        calls["quick"] += 1
        return "quick"

    @weft_nb.activity
    def never(_: object, activity: weft_nb.ActivityContext) -> str:
        calls["never"] += 1
        activity.cancelled.wait()
        return "never"

    @weft_nb.activity
    def after(x: object) -> object:
        calls["after"] += 1
        assert gate.wait(10)
        return x

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        index, value = ctx.race([ctx.submit(never), ctx.submit(quick)])
        return ctx.run(after, [index, value])

    engine.start(wf, run_id="rr")
    wait_until(lambda: calls["after"] == 1)
    restarted = engine.simulate_restart()
    gate.set()
    assert restarted.resume("rr").result(10) == [1, "quick"]
    assert calls["quick"] == 1  # the winner was replayed, not re-run
    restarted.close()


def test_run_all_returns_named_results_and_refuses_a_changed_topology(
    engine: TestEngine,
) -> None:
    gate = threading.Event()

    @weft_nb.activity
    def double(x: int) -> int:
        return 2 * x

    @weft_nb.activity
    def wait(_: object) -> None:
        assert gate.wait(10)

    @weft_nb.workflow(name="group")
    def wf(ctx: weft_nb.WorkflowContext) -> dict[str, int]:
        results = ctx.run_all({"a": (double, 1), "b": (double, 2)})
        ctx.run(wait)
        return results

    engine.start(wf, run_id="g")
    wait_until(lambda: len(engine.journal.query("SELECT 1 FROM steps WHERE position = 2")) == 1)
    restarted = engine.simulate_restart()
    gate.set()

    @weft_nb.workflow(name="group")
    def reordered(ctx: weft_nb.WorkflowContext) -> dict[str, int]:
        return ctx.run_all({"b": (double, 2), "a": (double, 1)})

    restarted.register(reordered)
    with pytest.raises(BranchTopologyChangedError, match=r"\['a', 'b'\] and now has \['b', 'a'\]"):
        restarted.resume("g").result(10)
    restarted.close()
    with TestEngine() as fresh:
        assert fresh.run(wf) == {"a": 2, "b": 4}


@pytest.mark.parametrize(("max_parallel", "limits", "expect"), [(1, None, 1), (4, {"gpu": 1}, 1)])
def test_parallelism_is_bounded_by_the_engine_and_by_queues(
    journal_path: object, max_parallel: int, limits: dict[str, int] | None, expect: int
) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    @weft_nb.activity(queue="gpu")
    def train(x: int, activity: weft_nb.ActivityContext) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        activity.sleep(1)  # virtual time: overlapping runs would overlap here
        with lock:
            running[0] -= 1
        return x

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[int]:
        return ctx.all([ctx.submit(train, i) for i in range(4)])

    with TestEngine(journal_path, max_parallel=max_parallel, queue_limits=limits) as engine:  # type: ignore[arg-type]
        assert engine.run(wf) == [0, 1, 2, 3]
    assert peak[0] == expect


def test_durable_sleep_spanning_a_restart_ends_at_the_original_deadline(
    engine: TestEngine,
) -> None:
    engine.clock.auto_advance = False
    woke: list[float] = []

    @weft_nb.activity
    def stamp(_: object) -> None:
        woke.append(engine.clock.now())

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> None:
        ctx.sleep("1h")
        ctx.run(stamp)

    t0 = engine.clock.now()
    engine.start(wf, run_id="s")
    engine.clock.wait_for_sleepers(1)
    engine.clock.advance(1800)  # half way, then the process dies
    restarted = engine.simulate_restart()
    handle = restarted.resume("s")
    restarted.clock.wait_for_sleepers(1)
    assert restarted.clock.pending_deadlines() == [t0 + 3600]  # not 30 min later than planned
    restarted.clock.advance(1800)
    handle.result(10)
    assert woke == [t0 + 3600]
    restarted.close()


def test_now_and_memo_are_recorded_and_replayed(engine: TestEngine) -> None:
    calls: Counter[str] = Counter()
    gate = threading.Event()

    @weft_nb.activity
    def wait(_: object) -> None:
        assert gate.wait(10)

    def make_id() -> str:
        calls["make_id"] += 1
        return f"id-{calls['make_id']}"

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> tuple[float, str, str]:
        started = ctx.now()
        first = ctx.memo("batch-id", make_id)
        again = ctx.memo("batch-id", make_id)  # same key: the recorded value, fn not called
        ctx.run(wait)
        return started, first, again

    t0 = engine.clock.now()
    engine.start(wf, run_id="m")
    wait_until(lambda: len(engine.journal.query("SELECT 1 FROM steps WHERE position = 1")) == 1)
    restarted = engine.simulate_restart()
    restarted.clock.advance(500)
    gate.set()
    assert restarted.resume("m").result(10) == (t0, "id-1", "id-1")
    assert calls["make_id"] == 1
    restarted.close()


def test_a_wide_fan_out_reuses_at_most_max_parallel_threads(journal_path: object) -> None:
    threads: set[int] = set()
    guard = threading.Lock()

    @weft_nb.activity
    def where(i: int) -> int:
        with guard:
            threads.add(threading.get_ident())
        return i

    @weft_nb.workflow
    def wide(ctx: weft_nb.WorkflowContext, n: int) -> list[int]:
        return ctx.all([ctx.submit(where, i) for i in range(n)])

    with TestEngine(journal_path, max_parallel=3) as engine:  # type: ignore[arg-type]
        assert engine.run(wide, 60) == list(range(60))
        assert engine.journal.query("SELECT count(*) FROM steps")[0][0] == 60
    assert 1 <= len(threads) <= 3
