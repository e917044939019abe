"""Tracing, metrics and structured logging.

Trace context crosses Kafka in W3C ``traceparent`` headers, so a producer span and the
consumer span of the same record share one trace. Logs are JSON lines; by rule they carry
ids and counts, never message content (PHI), at INFO and above.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from .settings import Settings, TelemetrySettings

Headers = list[tuple[str, bytes]]
_configured = False


def configure(settings: Settings, service: str | None = None) -> None:
    """Install providers and logging once per process, per the telemetry settings."""
    global _configured
    if _configured:
        return
    _configured = True
    tel = settings.telemetry
    # Several processes export the same instruments (listener workers, N canonicalizers):
    # an instance id per process keeps their series apart instead of overwriting each other.
    resource = Resource.create({
        "service.name": service or tel.service_name,
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
    })
    tracer_provider = TracerProvider(resource=resource)
    for processor in _span_processors(tel):
        tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=_readers(tel)))
    configure_logging(settings.log_level, settings.log_format)


def _span_processors(tel: TelemetrySettings) -> list[SpanProcessor]:
    if tel.exporter == "console":
        return [BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))]
    if tel.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = f"{tel.otlp_endpoint}/v1/traces" if tel.otlp_endpoint else None
        return [BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))]
    return []


def _readers(tel: TelemetrySettings) -> list[MetricReader]:
    interval = int(tel.metrics_interval_s * 1000)
    if tel.exporter == "console":
        exporter: Any = ConsoleMetricExporter(out=sys.stderr)
    elif tel.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        endpoint = f"{tel.otlp_endpoint}/v1/metrics" if tel.otlp_endpoint else None
        exporter = OTLPMetricExporter(endpoint=endpoint)
    else:
        return []
    return [PeriodicExportingMetricReader(exporter, export_interval_millis=interval)]


def tracer(name: str = "fhirbus") -> trace.Tracer:
    return trace.get_tracer(name)


def meter(name: str = "fhirbus") -> metrics.Meter:
    return metrics.get_meter(name)


def inject(headers: Headers | None = None) -> Headers:
    """Put the current trace context in Kafka headers (W3C traceparent/tracestate).

    A record carries one trace context: one copied from another record (a dead letter keeps
    its original's headers) is replaced, not repeated, when there is a current one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = list(headers or [])
    if carrier:
        out = [(k, v) for k, v in out if k not in carrier]
        out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract(headers: Sequence[tuple[str, bytes | None]] | None) -> Any:
    """Trace context from Kafka headers, for use as a span's parent context."""
    carrier = {
        k: v.decode("latin-1")
        for k, v in (headers or ())
        if k in ("traceparent", "tracestate") and v is not None
    }
    return propagate.extract(carrier)


def spans_recorded() -> bool:
    """Whether a span built now would go anywhere.

    The SDK has no public "is anything listening" query: its provider builds, ends and
    drops spans when no processor is attached. Read its processor list; for a provider we
    do not know, assume it records (correct, only slower)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False  # the API's no-op: every span is a NonRecordingSpan
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    return processors is None or len(processors) > 0


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed in ``extra=`` become keys."""

    _RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id:
            out["trace_id"] = trace_id
        out.update({k: v for k, v in record.__dict__.items() if k not in self._RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time, not at configure time: a process
    that swaps stderr (a test harness's capture, a daemonizing wrapper) must not leave the
    root logger writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # librdkafka's own log lines arrive through confluent-kafka's logger at INFO; keep them.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None
