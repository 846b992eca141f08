"""OpenTelemetry: spans for runs, steps and attempts, errors on spans, and the engine's metrics.

Needs the ``otel`` extra and the SDK (in ``dev``): the SDK's in-memory exporter and reader.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

import weft_nb
from weft_nb.errors import ActivityFailedError
from weft_nb.testing import MemoryJournal, TestEngine

failures_left: list[int] = []
beating = threading.Event()
release = threading.Event()


@weft_nb.activity(retry={"max_attempts": 3, "initial_backoff": "1s"})
def fetch(x: int) -> int:
    if failures_left[0] > 0:
        failures_left[0] -= 1
        raise ConnectionError("service down")
    return x + 1


@weft_nb.activity(queue="gpu")
def train(x: int, activity: weft_nb.ActivityContext) -> int:
    activity.heartbeat({"epoch": 1})
    beating.set()
    assert release.wait(10)
    return x


@weft_nb.workflow
def pipeline(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(fetch, ctx.run(fetch, x))


@weft_nb.workflow
def training(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(train, x)


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader, Any]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    interceptor = weft_nb.OpenTelemetryInterceptor(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    failures_left[:] = [1]
    beating.clear()
    release.clear()
    yield exporter, reader, interceptor
    meter_provider.shutdown()


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_runs_steps_and_attempts_are_spans_with_their_attributes(telemetry: Any) -> None:
    exporter, reader, interceptor = telemetry
    with TestEngine(MemoryJournal(), interceptors=[interceptor]) as engine:
        handle = engine.start(pipeline, 1)
        assert handle.result() == 3
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert {name: len(each) for name, each in by_name.items()} == {
        "weft.run": 1,
        "weft.step": 2,
        "weft.attempt": 3,
    }
    (run,) = by_name["weft.run"]
    assert run.attributes["weft.run_id"] == handle.run_id
    assert run.attributes["weft.workflow"] == "pipeline"
    trace_ids = {span.context.trace_id for span in spans}
    assert trace_ids == {run.context.trace_id}  # one trace
    steps = sorted(by_name["weft.step"], key=lambda s: s.attributes["weft.position"])
    assert all(step.parent.span_id == run.context.span_id for step in steps)
    assert [s.attributes["weft.activity"] for s in steps] == ["fetch", "fetch"]
    attempts = by_name["weft.attempt"]
    first_step_attempts = [a for a in attempts if a.parent.span_id == steps[0].context.span_id]
    assert sorted(a.attributes["weft.attempt"] for a in first_step_attempts) == [1, 2]
    failed = next(a for a in first_step_attempts if a.attributes["weft.attempt"] == 1)
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.events[0].name == "exception"
    assert failed.events[0].attributes["exception.type"] == "ConnectionError"
    assert run.status.status_code != StatusCode.ERROR

    points = metric_points(reader)
    assert sum(p.count for p in points["weft.attempt.duration"]) == 3
    assert sum(p.value for p in points["weft.attempt.failures"]) == 1
    assert sum(p.value for p in points["weft.attempt.retries"]) == 1
    assert "weft.queue.wait" not in points  # no step here has a queue


def test_a_failed_run_records_the_error_on_its_spans(telemetry: Any) -> None:
    exporter, _, interceptor = telemetry
    failures_left[:] = [10]
    with TestEngine(MemoryJournal(), interceptors=[interceptor]) as engine:
        with pytest.raises(ActivityFailedError):
            engine.run(pipeline, 1)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["weft.run"].status.status_code == StatusCode.ERROR
    assert spans["weft.step"].status.status_code == StatusCode.ERROR
    assert spans["weft.run"].events[0].attributes["exception.type"].endswith("ActivityFailedError")


def test_heartbeat_age_is_observed_for_live_attempts(telemetry: Any) -> None:
    _, reader, interceptor = telemetry
    with TestEngine(MemoryJournal(), interceptors=[interceptor], queue_limits={"gpu": 1}) as engine:
        handle = engine.start(training, 1)
        assert beating.wait(10)
        engine.clock.advance(5)
        ages = metric_points(reader)["weft.heartbeat.age"]
        release.set()
        assert handle.result() == 1
    assert [p.attributes["weft.activity"] for p in ages] == ["train"]
    assert ages[0].value >= 5
    (wait,) = metric_points(reader)["weft.queue.wait"]
    assert wait.count == 1 and wait.attributes["weft.queue"] == "gpu"


def test_an_interrupted_run_is_not_an_error_span(telemetry: Any) -> None:
    exporter, _, interceptor = telemetry
    with TestEngine(MemoryJournal(), interceptors=[interceptor]) as engine:
        handle = engine.start(training, 1)
        assert beating.wait(10)
        engine.interrupt(handle.run_id)
        release.set()
        with pytest.raises(weft_nb.errors.RunInterruptedError):
            handle.result()
    run = next(s for s in exporter.get_finished_spans() if s.name == "weft.run")
    assert run.status.status_code != StatusCode.ERROR
    assert run.attributes["weft.stopped"] is True


def test_the_engine_adds_tracing_by_itself_when_the_extra_is_installed() -> None:
    with TestEngine(MemoryJournal()) as engine:
        chain = engine.runtime.quiet_interceptors
    assert [type(each).__name__ for each in chain] == ["OpenTelemetryInterceptor"]


def test_without_the_extra_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        # As an install without the extra: the installed opentelemetry cannot be imported.
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import weft_nb\n"
        "from weft_nb.testing import MemoryJournal, TestEngine\n"
        "@weft_nb.activity\n"
        "def one(x): return x\n"
        "@weft_nb.workflow\n"
        "def wf(ctx, x): return ctx.run(one, x)\n"
        "with TestEngine(MemoryJournal()) as e:\n"
        "    assert e.run(wf, 1) == 1\n"
        "    assert e.runtime.quiet_interceptors == ()\n"
        "loaded = [m for m, v in sys.modules.items() if m.startswith('opentelemetry') and v]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_resumed_run_continues_the_trace_its_first_execution_journaled(
    telemetry: Any, tmp_path: Any
) -> None:
    exporter, _, interceptor = telemetry
    engine = TestEngine(tmp_path / "journal.duckdb", interceptors=[interceptor])
    engine.register(training)
    handle = engine.start(training, 1)
    assert beating.wait(10)
    restarted = engine.simulate_restart()  # a crash while the attempt runs
    release.set()
    beating.clear()
    with restarted:
        assert restarted.resume(handle.run_id).result(10) == 1
    runs = [span for span in exporter.get_finished_spans() if span.name == "weft.run"]
    assert len(runs) == 2
    first = next(span for span in runs if "weft.resumed" not in span.attributes)
    resumed = next(span for span in runs if span.attributes.get("weft.resumed"))
    assert resumed.context.trace_id == first.context.trace_id  # one trace
    assert resumed.parent.span_id == first.context.span_id
    attempts = [s for s in exporter.get_finished_spans() if s.name == "weft.attempt"]
    assert {s.context.trace_id for s in attempts} == {first.context.trace_id}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


@weft_nb.activity(retry={"max_attempts": 1})
def breaks(x: int) -> int:
    raise Unprintable


@weft_nb.workflow
def breaking(ctx: weft_nb.WorkflowContext, x: int) -> int:
    return ctx.run(breaks, x)


def test_an_unprintable_error_stays_the_activity_s_error(telemetry: Any) -> None:
    exporter, _, interceptor = telemetry
    with TestEngine(MemoryJournal(), interceptors=[interceptor]) as engine:
        handle = engine.start(breaking, 1)
        with pytest.raises(ActivityFailedError):
            handle.result()
        (attempt,) = engine.journal.attempts_of_run(handle.run_id)
    assert attempt.error_type == "Unprintable"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["weft.attempt"].status.status_code == StatusCode.ERROR
