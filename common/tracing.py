"""Trace context: OpenTelemetry set up once per process, and the W3C headers that carry it.

Each process (`python -m gateway`, `python -m consumers`) calls `configure_tracing` at start,
as it configures logging: an SDK TracerProvider becomes the global one, which is what mints
trace and span ids. It exports nothing unless `OTEL_TRACES_EXPORTER` asks (see
`parse_exporters`); the other standard variables (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_*`, ...) are the SDK's
and its exporters' own. Code that makes spans asks `trace.get_tracer(...)` as usual: until a
provider is set (in unit tests, say) the API's no-op tracer answers, and nothing is minted.

The context crosses processes as W3C Trace Context, always, whatever `OTEL_PROPAGATORS`
says: `traceparent` and `tracestate` in the HTTP request, then as AMQP headers of the same
names on the message (`inject`), read again by the consumer (`extract`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings

from common.process import StartupError

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACESTATE_MAX_LENGTH = 512
"""Characters of `tracestate` a message carries at most: W3C asks every hop to pass on at
least 512, and to drop whole entries, from the end, to make a longer one fit."""

Exporter = Literal["otlp", "console"]
OtlpProtocol = Literal["http/protobuf", "grpc"]

_EXPORTERS: frozenset[str] = frozenset({"otlp", "console", "none"})
_OTLP_MODULES: Mapping[OtlpProtocol, str] = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
}

_PROPAGATOR = TraceContextTextMapPropagator()


def parse_exporters(raw: str) -> tuple[Exporter, ...]:
    """`OTEL_TRACES_EXPORTER`: a comma-separated list of `otlp`, `console` or `none`, as the
    OpenTelemetry specification defines it; empty or `none` is no exporter (our default: the
    SDK's own default, `otlp`, would send spans to a collector nobody asked for)."""
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - _EXPORTERS)
    if unknown:
        raise ValueError(
            f"unsupported trace exporter(s) {', '.join(unknown)}: use otlp, console or none"
        )
    return tuple(dict.fromkeys(name for name in names if name != "none"))  # type: ignore[misc]


def configure_tracing(
    service_name: str, exporters: Iterable[Exporter], *, otlp_protocol: OtlpProtocol
) -> TracerProvider:
    """Make `tracer_provider(...)` the global provider, once per process."""
    provider = tracer_provider(service_name, exporters, otlp_protocol=otlp_protocol)
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(
    service_name: str, exporters: Iterable[Exporter], *, otlp_protocol: OtlpProtocol
) -> TracerProvider:
    """An SDK TracerProvider with a batching processor per exporter (none: it mints ids and
    exports nothing).

    `service_name` is the default of `service.name`; OTEL_SERVICE_NAME (or service.name in
    OTEL_RESOURCE_ATTRIBUTES) wins. Raises StartupError when an exporter asked for is not
    installed. The provider flushes and shuts down at interpreter exit.
    """
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(span_exporter(name, otlp_protocol)))
    return provider


def span_exporter(name: Exporter, otlp_protocol: OtlpProtocol) -> SpanExporter:
    """The exporter OTEL_TRACES_EXPORTER names; StartupError if it is not installed."""
    if name == "console":
        return ConsoleSpanExporter()
    module_name = _OTLP_MODULES[otlp_protocol]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise StartupError(
            f"OTEL_TRACES_EXPORTER=otlp over {otlp_protocol} needs the OTLP exporter, which is "
            f"not installed ({module_name}): install syncgate with the `otlp` extra, e.g. "
            "pip install 'syncgate[otlp]', or unset OTEL_TRACES_EXPORTER"
        ) from None
    exporter: SpanExporter = module.OTLPSpanExporter()
    return exporter


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a text header from HTTP headers (case-insensitive there) or AMQP headers (where a
    value may be of any type: only a string is read)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """The context that `traceparent`/`tracestate` in `headers` continue; without a valid
    `traceparent`, an empty one (a span started in it starts a new trace)."""
    return _PROPAGATOR.extract(headers, getter=_GETTER)


def inject() -> dict[str, str]:
    """The `traceparent` (and `tracestate`) of the current span, as message headers; empty
    when there is no valid span (no provider set, or OTEL_SDK_DISABLED)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    state = carrier.get(TRACESTATE)
    if state is not None and len(state) > TRACESTATE_MAX_LENGTH:
        bounded = bounded_tracestate(state)
        if bounded:
            carrier[TRACESTATE] = bounded
        else:
            del carrier[TRACESTATE]
    return carrier


def bounded_tracestate(state: str, limit: int = TRACESTATE_MAX_LENGTH) -> str:
    """`state` with whole entries dropped from its end until it is at most `limit` long."""
    entries = state.split(",")
    while entries and len(",".join(entries)) > limit:
        entries.pop()
    return ",".join(entries)


class TraceSettings(BaseSettings):
    """The standard variables this code reads itself, as fields of each process's settings
    (gateway/settings.py, consumers/settings.py). Neither takes the SYNCGATE_ prefix."""

    otel_traces_exporter: str = Field(default="none", validation_alias="OTEL_TRACES_EXPORTER")
    otel_exporter_otlp_protocol: OtlpProtocol = Field(
        default="http/protobuf",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ),
    )

    @field_validator("otel_traces_exporter")
    @classmethod
    def _known_exporters(cls, value: str) -> str:
        parse_exporters(value)
        return value

    @property
    def trace_exporters(self) -> tuple[Exporter, ...]:
        return parse_exporters(self.otel_traces_exporter)

    def configure_tracing(self, service_name: str) -> TracerProvider:
        return configure_tracing(
            service_name, self.trace_exporters, otlp_protocol=self.otel_exporter_otlp_protocol
        )
