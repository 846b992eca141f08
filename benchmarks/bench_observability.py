"""Per-step overhead of interception, logging and tracing, measured in one process, interleaved.

``python benchmarks/bench_observability.py [--steps 200] [--rounds 7]``. Four engines on their own
DuckDB journals run the same workflow of trivial activities, round after round in alternating
order, so a burst of load hits each alike. Per step = the run's time / steps; medians, and each
configuration's ratio to ``off``:

- ``off``: the default when the application configured no logging handler: no interceptor runs,
  the tuple check only;
- ``logging``: a handler at WARNING: the built-in logging interceptor runs on every step and
  attempt (a successful step writes no record);
- ``logging+debug``: a handler at DEBUG writing to a string (every record formatted);
- ``tracing``: no handler, ``OpenTelemetryInterceptor`` with the SDK's in-memory exporter
  (``SimpleSpanProcessor``) and metric reader (needs ``opentelemetry-sdk``; skipped without it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import weft_nb


@weft_nb.activity
def noop(x: Any) -> Any:
    return x


@weft_nb.workflow
def steps_wf(ctx: weft_nb.WorkflowContext, n: int) -> int:
    for i in range(n):
        ctx.run(noop, i)
    return n


LOGGER = logging.getLogger("weft_nb")


@contextlib.contextmanager
def handler_at(level: int) -> Iterator[None]:
    handler = logging.StreamHandler(io.StringIO())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(logging.NOTSET)


def tracing_interceptor() -> weft_nb.Interceptor | None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return weft_nb.OpenTelemetryInterceptor(tracer_provider=provider, meter_provider=meters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="weft-bench-obs-")
    configs: dict[str, tuple[list[weft_nb.Interceptor], Callable[[], Any]]] = {
        "off": ([], contextlib.nullcontext),
        "logging": ([], lambda: handler_at(logging.WARNING)),
        "logging+debug": ([], lambda: handler_at(logging.DEBUG)),
    }
    tracer = tracing_interceptor()
    if tracer is not None:
        configs["tracing"] = ([tracer], contextlib.nullcontext)
    engines = {}
    for name, (interceptors, _) in configs.items():
        path = os.path.join(tmp, name, "journal.duckdb")
        engine = weft_nb.Engine(path, interceptors=interceptors)
        engine.register(noop, steps_wf)
        engine.run(steps_wf, 10)  # warm-up
        engines[name] = engine
    per_step: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(args.rounds):
        order = list(configs) if round_index % 2 == 0 else list(reversed(configs))
        for name in order:
            with configs[name][1]():
                t = time.perf_counter()
                engines[name].run(steps_wf, args.steps)
                per_step[name].append((time.perf_counter() - t) / args.steps * 1e6)
    for engine in engines.values():
        engine.close()
    base = statistics.median(per_step["off"])
    print(f"per-step overhead, {args.steps}-step workflow, {args.rounds} rounds interleaved")
    print(f"{'config':<15}{'median us':>11}{'min':>9}{'max':>9}{'x off':>8}")
    for name, values in per_step.items():
        median = statistics.median(values)
        print(
            f"{name:<15}{median:>11.0f}{min(values):>9.0f}{max(values):>9.0f}{median / base:>8.2f}"
        )


if __name__ == "__main__":
    main()
