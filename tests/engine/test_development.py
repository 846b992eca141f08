"""Development mode: each DevelopmentWarning fires for its mistake, and only then (issue 13.13)."""

from __future__ import annotations

import datetime
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import weft_nb
from tests.base.test_input_digest import Restorable
from weft_nb import DevelopmentWarning
from weft_nb.testing import TestEngine

RETRY_ONCE = {"max_attempts": 2, "initial_backoff": 0.01}

pytestmark = pytest.mark.usefixtures("workflow_kind")


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[TestEngine]:
    journal = tmp_path / "dev.duckdb"
    with TestEngine(journal, heartbeat_interval=0.01, development=True) as engine:
        yield engine


def _run(engine: TestEngine, wf: Any, value: Any = None) -> tuple[list[str], list[str]]:
    """Run ``wf``; the development warnings and ``development_warning`` events it caused."""
    events: list[str] = []
    engine.add_listener(
        lambda e: events.append(str(e.data["check"])) if e.kind == "development_warning" else None
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        engine.run(wf, value)
    messages = [str(w.message) for w in seen if issubclass(w.category, DevelopmentWarning)]
    return messages, events


def _retry_reader(heartbeat_first: bool) -> Callable[..., Any]:
    @weft_nb.activity(retry=RETRY_ONCE)
    def resumable(_: object, ctx: weft_nb.ActivityContext) -> object:
        if ctx.attempt == 1:
            if heartbeat_first:
                ctx.heartbeat({"batch": 7})
            raise RuntimeError("flaky")
        return ctx.last_heartbeat_details

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        return ctx.run(resumable)

    return wf


def test_a_retry_reading_heartbeat_details_that_were_never_recorded(
    dev: TestEngine, engine: TestEngine
) -> None:
    messages, events = _run(dev, _retry_reader(heartbeat_first=False))
    assert events == ["heartbeat_details"]
    assert "activity 'resumable' (step 0, run" in messages[0]
    assert "attempt 2) read last_heartbeat_details" in messages[0]
    assert "Heartbeat progress" in messages[0]
    assert _run(dev, _retry_reader(heartbeat_first=True)) == ([], [])  # details were recorded
    assert _run(engine, _retry_reader(heartbeat_first=False)) == ([], [])  # mode off


def _heartbeat_timeout_activity(beats: bool) -> Callable[..., Any]:
    @weft_nb.activity(heartbeat_timeout="1m")
    def train(_: object, ctx: weft_nb.ActivityContext) -> int:
        if beats:
            ctx.heartbeat()
        return 1

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(train)

    return wf


def test_a_heartbeat_timeout_on_an_activity_that_never_heartbeats(
    dev: TestEngine, engine: TestEngine
) -> None:
    messages, events = _run(dev, _heartbeat_timeout_activity(beats=False))
    assert events == ["heartbeat_timeout"]
    assert "activity 'train' (step 0, run" in messages[0]
    assert "heartbeat_timeout=60s but never called heartbeat()" in messages[0]
    assert _run(dev, _heartbeat_timeout_activity(beats=True)) == ([], [])
    assert _run(engine, _heartbeat_timeout_activity(beats=False)) == ([], [])


@pytest.mark.parametrize(
    ("read", "shown"),
    [
        (time.time, "time.time()"),
        (time.time_ns, "time.time_ns()"),
        (datetime.datetime.now, "datetime.now()"),
        (datetime.date.today, "date.today()"),
        (random.random, "random.random()"),
        (lambda: random.randint(1, 6), "random.getrandbits()"),
        (uuid.uuid4, "os.urandom()"),
    ],
)
def test_a_workflow_reading_the_clock_or_random_numbers_in_its_own_code(
    dev: TestEngine, read: Callable[[], Any], shown: str
) -> None:
    @weft_nb.activity
    def noop(x: object) -> object:
        return x

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> object:
        ctx.run(noop, 1)
        read()
        return ctx.run(noop, 2)

    messages, events = _run(dev, wf)
    assert events == ["nondeterminism"], messages
    assert f"read the clock with {shown}" in messages[0] or f"numbers with {shown}" in messages[0]
    assert "test_development.py:" in messages[0] and "after step 0" in messages[0]
    assert "ctx.now()" in messages[0]


def test_clock_and_random_reads_where_they_are_recorded_are_fine(
    dev: TestEngine, engine: TestEngine
) -> None:
    @weft_nb.activity
    def stamp(_: object) -> float:  # inline on the workflow's thread: an activity may
        return time.time() + random.random()

    @weft_nb.workflow
    def wf(ctx: weft_nb.WorkflowContext) -> list[float]:
        seeded = random.Random(42).random()  # the workflow's own seeded generator
        return [ctx.now(), ctx.memo("r", random.random), ctx.run(stamp), seeded]

    assert _run(dev, wf) == ([], [])

    @weft_nb.workflow
    def careless(ctx: weft_nb.WorkflowContext) -> float:
        return time.time()

    assert _run(engine, careless) == ([], [])  # mode off


def test_an_input_that_will_not_hash_the_same_way_twice(
    dev: TestEngine, engine: TestEngine
) -> None:
    @weft_nb.activity
    def make(_: object) -> Restorable:
        return Restorable()

    @weft_nb.activity
    def use(inputs: dict[str, Any]) -> int:
        return len(inputs)

    @weft_nb.workflow
    def fresh(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(use, {"model": Restorable()})

    messages, events = _run(dev, fresh)
    assert events == ["input_hash"]
    assert "the input of step 0 ('use', run" in messages[0]
    assert "tests.base.test_input_digest.Restorable that pickles to other bytes" in messages[0]

    @weft_nb.workflow
    def from_a_step(ctx: weft_nb.WorkflowContext) -> int:
        return ctx.run(use, {"model": ctx.run(make), "plain": (1, 2)})

    assert _run(dev, from_a_step) == ([], [])  # a result is hashed by its recorded encoding
    assert _run(engine, fresh) == ([], [])  # mode off


def test_development_mode_follows_the_environment(
    journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEFT_NB_DEV", "1")
    with TestEngine(journal_path) as on:
        assert on.development
    with TestEngine(journal_path, development=False) as off:
        assert not off.development
    monkeypatch.setenv("WEFT_NB_DEV", "0")
    with TestEngine(journal_path) as default:
        assert not default.development
