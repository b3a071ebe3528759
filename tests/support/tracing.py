"""The spans a test process makes, kept in memory: the global provider, set once per process
(OpenTelemetry allows no second), with the SDK's in-memory exporter."""

from __future__ import annotations

import functools

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id


@functools.cache
def recorded_spans() -> InMemorySpanExporter:
    """The exporter every span of this process ends in, from the first call on."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def spans_of(trace_id: str) -> list[ReadableSpan]:
    """The finished spans of one trace (32 hex digits), in the order they ended."""
    return [
        span
        for span in recorded_spans().get_finished_spans()
        if span.context is not None and format_trace_id(span.context.trace_id) == trace_id
    ]
