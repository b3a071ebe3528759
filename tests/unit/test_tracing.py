"""common/tracing.py: the exporters OTEL_* variables ask for, and the W3C headers.

Each test makes its own provider: none sets the global one, which a process sets once.
"""

from __future__ import annotations

import sys

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from common import tracing
from common.process import StartupError, load_settings
from consumers.settings import ConsumerSettings

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    ("raw", "exporters"),
    [
        ("", ()),
        ("none", ()),
        ("otlp", ("otlp",)),
        (" OTLP , console,otlp", ("otlp", "console")),
        ("none,console", ("console",)),
    ],
)
def test_the_exporters_variable(raw: str, exporters: tuple[str, ...]) -> None:
    assert tracing.parse_exporters(raw) == exporters


def test_no_exporter_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    settings = ConsumerSettings()
    assert settings.trace_exporters == ()
    assert settings.otel_exporter_otlp_protocol == "http/protobuf"


def test_an_unknown_exporter_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,jaeger")
    with pytest.raises(StartupError, match=r"OTEL_TRACES_EXPORTER: .*jaeger") as raised:
        load_settings(ConsumerSettings)
    assert raised.value.exit_code == 2


def test_the_traces_protocol_wins_over_the_general_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert ConsumerSettings().otel_exporter_otlp_protocol == "grpc"


def test_otlp_makes_the_otlp_exporter() -> None:
    assert isinstance(tracing.span_exporter("otlp", "http/protobuf"), OTLPSpanExporter)
    assert isinstance(tracing.span_exporter("console", "http/protobuf"), ConsoleSpanExporter)


def test_otlp_without_the_extra_installed_is_a_clear_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import raise ImportError, as an absent package does.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(StartupError, match=r"syncgate\[otlp\]"):
        tracing.tracer_provider("syncgate-test", ("otlp",), otlp_protocol="http/protobuf")


def test_the_service_name_defaults_to_the_process_and_yields_to_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracing.tracer_provider("syncgate-test", (), otlp_protocol="http/protobuf")
    assert provider.resource.attributes["service.name"] == "syncgate-test"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-sync")
    provider = tracing.tracer_provider("syncgate-test", (), otlp_protocol="http/protobuf")
    assert provider.resource.attributes["service.name"] == "billing-sync"


@pytest.fixture
def provider() -> TracerProvider:
    return tracing.tracer_provider("syncgate-test", (), otlp_protocol="http/protobuf")


def test_a_span_continues_an_incoming_traceparent_and_passes_on_its_own(
    provider: TracerProvider,
) -> None:
    tracer = provider.get_tracer("test")
    incoming = {"traceparent": INCOMING, "tracestate": "rojo=00f067aa0ba902b7"}
    with tracer.start_as_current_span("s", context=tracing.extract(incoming)) as span:
        headers = tracing.inject()
    context = span.get_span_context()
    assert format_trace_id(context.trace_id) == TRACE_ID
    assert headers == {
        "traceparent": f"00-{TRACE_ID}-{format_span_id(context.span_id)}-01",
        "tracestate": "rojo=00f067aa0ba902b7",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "not a traceparent"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": INCOMING.encode()},  # an AMQP header that is not a string
    ],
)
def test_without_a_valid_traceparent_a_new_trace_starts(
    provider: TracerProvider, headers: dict[str, object]
) -> None:
    with provider.get_tracer("test").start_as_current_span(
        "s", context=tracing.extract(headers)
    ) as span:
        sent = tracing.inject()
    trace_id = format_trace_id(span.get_span_context().trace_id)
    assert trace_id not in (TRACE_ID, "0" * 32)
    assert sent["traceparent"].split("-")[1] == trace_id
    assert "tracestate" not in sent


def test_no_span_no_headers() -> None:
    assert tracing.inject() == {}


def test_a_long_tracestate_loses_whole_entries_from_its_end(provider: TracerProvider) -> None:
    entries = [f"k{n:02d}={'v' * 60}" for n in range(20)]  # 64 characters each
    incoming = {"traceparent": INCOMING, "tracestate": ",".join(entries)}
    with provider.get_tracer("test").start_as_current_span("s", context=tracing.extract(incoming)):
        sent = tracing.inject()
    assert sent["tracestate"] == ",".join(entries[:7])  # 7 * 64 + 6 commas <= 512 < 8 * 64 + 7
    assert tracing.bounded_tracestate("a" * 600) == ""
