"""OpenTelemetry: spans for runs, steps and attempts, and the engine's metrics (the ``otel`` extra).

With ``opentelemetry-api`` installed the engine adds an `OpenTelemetryInterceptor` to its chain by
itself; it records only while the application has configured a tracer (or meter) provider, as
other instrumented libraries do, and imports OpenTelemetry only once the application has
(`OpenTelemetryInterceptor`). Without the extra this module is never imported.

Spans: ``weft.run`` (one per execution: a start, or a resume), ``weft.step`` (a step executed
live, all its attempts; a `durable_activity` call's too) and ``weft.attempt``, with the
attributes ``weft.run_id``, ``weft.workflow``, ``weft.activity``, ``weft.position`` and
``weft.attempt``. A span whose code raised records the exception and has an error status; a run
stopped by an interrupt or a closing engine is not an error (``weft.stopped`` is set). Parents are
explicit (run, then step, then attempt), so steps on ``ctx.submit``'s threads nest correctly.

Metrics: ``weft.attempt.duration`` (histogram, seconds), ``weft.attempt.failures`` and
``weft.attempt.retries`` (counters), ``weft.queue.wait`` (histogram, seconds: how long an attempt
of a step with a ``queue`` waited for a slot of its queue) and ``weft.heartbeat.age`` (a gauge:
seconds since each live attempt's latest heartbeat).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from weft_nb.activity.context import ActivityContext
from weft_nb.base.extras import import_extra
from weft_nb.base.release import __version__
from weft_nb.engine.interceptors import (
    InterceptedAttempt,
    InterceptedRun,
    InterceptedStep,
    Interceptor,
)

_LOG = logging.getLogger("weft_nb.engine")
_FEATURE = "OpenTelemetry tracing (weft_nb.OpenTelemetryInterceptor)"


def available() -> bool:
    """Whether ``opentelemetry-api`` is importable (checked without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


class OpenTelemetryInterceptor(Interceptor):
    """Spans and metrics for every run, live step and attempt (see the module).

    Args:
        tracer_provider: The provider to trace with; the global one (``trace.set_tracer_provider``)
            when omitted, and then only while one is configured.
        meter_provider: The provider of the metrics; the global one when omitted.

    Raises:
        MissingExtraError: ``opentelemetry-api`` is not installed (``weft-nb[otel]``).
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._providers = (tracer_provider, meter_provider)
        self._explicit = tracer_provider is not None or meter_provider is not None
        self._active, self._checked_until = self._explicit, 0.0
        self._ready = False
        self._lock = threading.Lock()
        self._run_spans: dict[str, Any] = {}  # run id -> its weft.run span
        self._step_spans: dict[tuple[str, int], Any] = {}  # (run id, position) -> weft.step
        self._live: dict[int, tuple[InterceptedAttempt, ActivityContext]] = {}
        # With the global providers, OpenTelemetry (20-40 ms to import on a slow VM) is imported
        # only once the application has: no provider can be configured before (`_in_use`).
        if self._explicit or _in_use():
            self._setup()
        elif not available():
            import_extra("opentelemetry.trace", extra="otel", feature=_FEATURE)  # raises

    def _setup(self) -> None:
        """Import OpenTelemetry and create the tracer and the instruments (once).

        With the global providers, on the first `active()` check once the application imported
        OpenTelemetry: a provider set later takes effect within 1 s, as before.
        """
        tracer_provider, meter_provider = self._providers
        trace = import_extra("opentelemetry.trace", extra="otel", feature=_FEATURE)
        metrics = import_extra("opentelemetry.metrics", extra="otel", feature=_FEATURE)
        self._trace = trace
        propagation = import_extra(
            "opentelemetry.trace.propagation.tracecontext", extra="otel", feature=_FEATURE
        )
        self._propagator = propagation.TraceContextTextMapPropagator()
        self._context = import_extra("opentelemetry.context", extra="otel", feature=_FEATURE)
        self._metrics = metrics
        self._tracer = trace.get_tracer("weft_nb", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("weft_nb", __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "weft.attempt.duration", unit="s", description="How long each attempt ran"
        )
        self._failures = meter.create_counter(
            "weft.attempt.failures", description="Attempts that failed (the activity raised)"
        )
        self._retries = meter.create_counter(
            "weft.attempt.retries", description="Attempts after the first of their step"
        )
        self._queue_wait = meter.create_histogram(
            "weft.queue.wait", unit="s", description="From an attempt's scheduling to its start"
        )
        meter.create_observable_gauge(
            "weft.heartbeat.age",
            callbacks=[self._heartbeat_ages],
            unit="s",
            description="Seconds since each live attempt's latest heartbeat",
        )
        self._ready = True

    def active(self) -> bool:
        """Tracing wraps calls only while a tracer or meter provider is configured (or given).

        The global providers are looked up at most once a second (asked per step, the lookups
        cost more than a step's own bookkeeping): a provider set later takes effect within 1 s.
        """
        if self._explicit:
            return True
        now = time.monotonic()
        if now >= self._checked_until:
            self._active, self._checked_until = self._configured(), now + 1.0
        return self._active

    def _configured(self) -> bool:
        if self._explicit:
            return True
        if not self._ready:
            if not _in_use():
                return False
            with self._lock:
                if not self._ready:
                    self._setup()
        trace, metrics = self._trace, self._metrics
        no_traces = isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
        )
        no_metrics = isinstance(metrics.get_meter_provider(), metrics.NoOpMeterProvider) or type(
            metrics.get_meter_provider()
        ).__name__.startswith("_Proxy")
        return not (no_traces and no_metrics)

    def _start(self, name: str, parent: Any, attributes: dict[str, Any]) -> Any:
        """A new span, or None: our own trouble never fails the run (it is logged)."""
        try:
            context = None if parent is None else self._trace.set_span_in_context(parent)
            return self._tracer.start_span(name, context=context, attributes=attributes)
        except Exception:
            _LOG.exception("weft_nb could not start an OpenTelemetry span %r", name)
            return None

    def _start_run(self, info: InterceptedRun, attributes: dict[str, Any]) -> Any:
        """The run's span: a resume continues the trace its first execution journaled."""
        try:
            first = info.trace_context(None)
            if first is None:
                span = self._start("weft.run", None, attributes)
                carrier: dict[str, str] = {}
                self._propagator.inject(carrier, self._trace.set_span_in_context(span))
                if "traceparent" in carrier:
                    info.trace_context(carrier["traceparent"])
                return span
            # A resume: the child of the first execution's run span, linked to the caller's span.
            caller = self._trace.get_current_span().get_span_context()
            links = [self._trace.Link(caller)] if caller.is_valid else []
            parent = self._propagator.extract({"traceparent": first})
            attributes = attributes | {"weft.resumed": True}
            return self._tracer.start_span(
                "weft.run", context=parent, attributes=attributes, links=links
            )
        except Exception:
            _LOG.exception("weft_nb could not start the OpenTelemetry span of run %s", info.run_id)
            return None

    def _fail(self, span: Any, exc: BaseException) -> None:
        try:  # observe only: an unprintable error must stay the activity's error, not ours
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, type(exc).__name__))
            span.record_exception(exc)
        except Exception:
            _LOG.exception("weft_nb could not record an error on an OpenTelemetry span")

    def _traced(self, span: Any, call_next: Callable[[], Any]) -> Any:
        try:
            return call_next()
        except Exception as exc:
            self._fail(span, exc)
            raise
        except BaseException:  # the engine stopped the run: resumable, not an error
            span.set_attribute("weft.stopped", True)
            raise
        finally:
            span.end()

    def intercept_run(self, info: InterceptedRun, call_next: Callable[[], Any]) -> Any:
        """A ``weft.run`` span around one execution of the workflow."""
        if not self._configured():
            return call_next()
        attributes = {"weft.run_id": info.run_id, "weft.workflow": info.workflow}
        span = self._start_run(info, attributes)
        if span is None:
            return call_next()
        self._run_spans[info.run_id] = span
        try:
            return self._traced(span, call_next)
        finally:
            self._run_spans.pop(info.run_id, None)

    def intercept_step(self, info: InterceptedStep, call_next: Callable[[], Any]) -> Any:
        """A ``weft.step`` span, the child of its run's."""
        parent = self._run_spans.get(info.run_id)
        if parent is None:
            return call_next()
        attributes: dict[str, Any] = {
            "weft.run_id": info.run_id,
            "weft.activity": info.activity,
            "weft.position": info.position,
        }
        if info.durable_activity:
            attributes["weft.durable_activity"] = True
        span = self._start("weft.step", parent, attributes)
        if span is None:
            return call_next()
        key = (info.run_id, info.position)
        self._step_spans[key] = span
        try:
            return self._traced(span, call_next)
        finally:
            self._step_spans.pop(key, None)

    def intercept_attempt(self, info: InterceptedAttempt, call_next: Callable[[], Any]) -> Any:
        """A ``weft.attempt`` span, the child of its step's, and the attempt's metrics."""
        parent = self._step_spans.get((info.run_id, info.position))
        if parent is None:
            return call_next()
        ctx = info.context
        labels = {"weft.activity": info.activity}
        if info.queue is not None:  # only a queue's attempts wait for a slot
            wait = max(0.0, ctx.started_at - ctx.scheduled_at)
            self._queue_wait.record(wait, labels | {"weft.queue": info.queue})
        if info.attempt > 1:
            self._retries.add(1, labels)
        attributes = {
            "weft.run_id": info.run_id,
            "weft.activity": info.activity,
            "weft.position": info.position,
            "weft.attempt": info.attempt,
        }
        span = self._start("weft.attempt", parent, attributes)
        if span is None:
            return call_next()
        # Current while the attempt runs here: spans the activity opens inline are its children.
        token = self._context.attach(self._trace.set_span_in_context(span))
        with self._lock:
            self._live[id(ctx)] = (info, ctx)
        started = time.perf_counter()
        outcome = "ok"
        try:
            return self._traced(span, call_next)
        except Exception:
            outcome = "error"
            self._failures.add(1, labels)
            raise
        finally:
            self._duration.record(time.perf_counter() - started, labels | {"outcome": outcome})
            with self._lock:
                self._live.pop(id(ctx), None)
            self._context.detach(token)

    def _heartbeat_ages(self, options: Any) -> Iterator[Any]:
        with self._lock:
            live: Iterable[tuple[InterceptedAttempt, ActivityContext]] = list(self._live.values())
        for info, ctx in live:
            yield self._metrics.Observation(
                ctx.heartbeat_age,
                {
                    "weft.activity": info.activity,
                    "weft.run_id": info.run_id,
                    "weft.position": info.position,
                },
            )


def _in_use() -> bool:
    """Whether the application may have configured OpenTelemetry.

    It imported the API that sets a provider (`available()` imports the bare ``opentelemetry``
    package, without it), or it names a provider in the environment, which OpenTelemetry loads on
    first use.
    """
    imported = ("opentelemetry.trace", "opentelemetry.metrics")
    return any(sys.modules.get(name) is not None for name in imported) or any(
        name in os.environ for name in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER")
    )


def with_tracing(interceptors: Iterable[Interceptor]) -> tuple[Interceptor, ...]:
    """The user's interceptors, then tracing when the ``otel`` extra is installed (unless given)."""
    chain = tuple(interceptors)
    if any(isinstance(each, OpenTelemetryInterceptor) for each in chain) or not available():
        return chain
    return (*chain, OpenTelemetryInterceptor())
