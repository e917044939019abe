"""Consumer spans at a per-batch cost: one CONSUMER span per traced record, built lazily.

Every record that carries a trace context (W3C ``traceparent``) gets one ``<topic> process``
CONSUMER span whose parent is the producer's span, so both share one trace. Starting an SDK
span the usual way (``start_as_current_span`` + ``propagate.extract``) costs ~40 us per
record on the 2-core reference machine, dozens of times what the rest of the runtime spends
on a record (~0.5 us besides decode and handler). So spans cost only where they are needed:

* For the whole batch one object is the current span: :class:`_CurrentRecord` stands for
  the record being handled (``RecordSpans.msg``, a plain attribute the runtime sets per
  record). Nothing is parsed or built per record unless someone asks.
* Asked (``trace.get_current_span()`` for a trace id in a log line or a dead letter, a child
  span, a publish inside the handler injecting ``traceparent``), it builds the record's real
  span on the spot, started at the record's start, and forwards to it; the runtime ends it
  when the record is done. Ids seen during the handler are the exported span's ids.
* At the end of the batch, if anything records spans (an SDK provider with a span
  processor), the spans nobody asked for are built with the record's own start and end
  times. With no processor (``FHIRBUS_TELEMETRY__EXPORTER=none``) a built span would be
  dropped unseen, so they are not built.

Records without a trace context get no span, as before. Span durations run from one
record's start to the next's (the loop's per-record bookkeeping is in them). Recording every
span still costs what the SDK costs (~35 us per record: ~25k records/s per process with an
exporter); at that volume, sample (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Span, SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

from fhirbus import telemetry
from fhirbus.telemetry import spans_recorded


def _traced(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    return bool(headers) and any(k == "traceparent" for k, _ in headers)  # type: ignore[union-attr]


class RecordSpans:
    """The per-batch span bookkeeping of one runtime (single-threaded, like its loop).

    Per batch: ``token = start_batch()``; per record: set ``msg`` (and append a start time
    to ``stamps`` when it is not None), and when the record is done, if ``span`` is not
    None, ``record_done()``; then ``end_batch(token, processed)``."""

    # Slots: the runtime sets ``msg`` and reads ``span`` once per record.
    __slots__ = ("_built", "_current", "_tracer", "msg", "span", "stamps")

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._current = _CurrentRecord(self)
        self.msg: Any = None  # the record being handled; None between records
        self.span: Span | None = None  # its real span, once something asked for it
        self.stamps: list[int] | None = None  # start times (ns) when spans are recorded
        self._built: set[int] = set()  # indexes (into stamps) of spans built on demand

    def start_batch(self) -> object:
        self.stamps = [] if spans_recorded() else None
        self._built.clear()
        return otel_context.attach(trace.set_span_in_context(self._current))

    def record_done(self) -> None:
        span, self.span = self.span, None
        if span is not None:
            span.end()
            if self.stamps is not None:
                self._built.add(len(self.stamps) - 1)

    def end_batch(self, token: object, processed: Sequence[Any]) -> None:
        """Detach; build the spans nobody asked for, if spans are recorded."""
        self.record_done()  # a record interrupted by shutdown: end what it started
        self.msg = None
        otel_context.detach(token)  # type: ignore[arg-type]
        stamps, self.stamps = self.stamps, None
        if not stamps:
            return
        stamps.append(time.time_ns())
        for i, msg in enumerate(processed):
            if i in self._built:
                continue
            headers = msg.headers()
            if _traced(headers):
                self._start(msg, headers, stamps[i]).end(end_time=stamps[i + 1])

    def real(self) -> Span | None:
        """The current record's span, built now if nothing asked for it before."""
        if self.span is None and self.msg is not None:
            headers = self.msg.headers()
            if _traced(headers):
                start = self.stamps[-1] if self.stamps else None
                self.span = self._start(self.msg, headers, start)
        return self.span

    def _start(self, msg: Any, headers: Any, start_ns: int | None) -> Span:
        return self._tracer.start_span(
            f"{msg.topic()} process",
            context=telemetry.extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.kafka.partition": msg.partition(),
                "messaging.kafka.offset": msg.offset(),
            },
            start_time=start_ns,
        )


class _CurrentRecord(Span):
    """The current span during a batch: the span of whichever record is being handled.

    Code that keeps a reference to it past its record sees later records (the runtime's
    own code does not); ``end()`` is the runtime's job and ignored here."""

    def __init__(self, owner: RecordSpans) -> None:
        self._owner = owner

    def get_span_context(self) -> SpanContext:
        span = self._owner.real()
        return INVALID_SPAN_CONTEXT if span is None else span.get_span_context()

    def is_recording(self) -> bool:
        span = self._owner.real()
        return span is not None and span.is_recording()

    def end(self, end_time: int | None = None) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if (span := self._owner.real()) is not None:
            span.set_attributes(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if (span := self._owner.real()) is not None:
            span.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if (span := self._owner.real()) is not None:
            span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if (span := self._owner.real()) is not None:
            span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        if (span := self._owner.real()) is not None:
            span.update_name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if (span := self._owner.real()) is not None:
            span.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if (span := self._owner.real()) is not None:
            span.record_exception(exception, attributes, timestamp, escaped)

