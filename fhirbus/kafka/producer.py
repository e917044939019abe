"""The producer every fhirbus component publishes with: delivery futures, never fire-and-forget.

A record counts as written only when its future resolves; a failed delivery raises on
``result()`` for the caller that cares (the MLLP ACK, the offset commit), so no error is
swallowed in a callback.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _KafkaProducer
from opentelemetry import trace

from .. import telemetry
from ..telemetry import Headers


class DeliveryError(Exception):
    """The broker did not accept a record. ``retriable`` says whether trying again may help."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"delivery failed: {error.str()} ({error.name()})")
        self.error = error
        self.retriable = error.retriable() and not error.fatal()


class Producer:
    """Thin wrapper over confluent_kafka.Producer that returns a Future per record."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        trace_propagation: bool = True,
        background_poll: bool = True,
    ) -> None:
        self._producer = _KafkaProducer(config)
        self._trace = trace_propagation
        self._tracer = telemetry.tracer("fhirbus.kafka")
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        if background_poll:
            # Futures must resolve even when the caller only waits on them (result()).
            self.start_background_polling()

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> Future[Message]:
        future: Future[Message] = Future()
        if self._trace:
            headers = self._traced(topic, headers)
        kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": _resolver(future)}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room (backpressure).
                self._producer.poll(0.05)
            except KafkaException as exc:
                future.set_exception(DeliveryError(exc.args[0]))
                break
        self._producer.poll(0)
        return future

    def _traced(self, topic: str, headers: Headers | None) -> Headers:
        if not telemetry.spans_recorded() and trace.get_current_span().get_span_context().is_valid:
            # Nothing would record a PRODUCER span: building one costs ~40 us per record
            # (measured), several times the produce call, only to be dropped unseen. The
            # record carries the trace it was sent in, so a consumer that does record
            # spans still joins it.
            return telemetry.inject(headers)
        # One PRODUCER span per record; its context rides in the headers, so the
        # consumer's span joins the same trace. Outside any trace it starts one.
        with self._tracer.start_as_current_span(f"{topic} publish", kind=trace.SpanKind.PRODUCER):
            return telemetry.inject(headers)

    def poll(self, timeout: float = 0.0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        return self._producer.flush(timeout)

    def __len__(self) -> int:
        return len(self._producer)

    def start_background_polling(self, interval: float = 0.05) -> None:
        """Serve delivery callbacks from a thread, for callers that wait on futures."""
        if self._poller is not None:
            return
        self._poller = threading.Thread(
            target=_poll_loop, args=(weakref.ref(self), self._stop, interval), daemon=True
        )
        self._poller.start()

    def close(self, timeout: float = 30.0) -> int:
        """Flush, then destroy the client: a closed producer keeps no broker connections.
        Returns how many records were still undelivered (and so are lost) at close."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
            self._poller = None
        if self._closed:
            return 0
        remaining = self._producer.flush(timeout)
        self._closed = True
        self._producer.close()
        return remaining

    @property
    def raw(self) -> _KafkaProducer:
        return self._producer


def _poll_loop(owner: weakref.ref[Producer], stop: threading.Event, interval: float) -> None:
    # A weak reference: a producer its owner dropped without close() must still be
    # collected (and its librdkafka handle destroyed) instead of living on in this thread.
    while not stop.is_set():
        producer = owner()
        if producer is None:
            return
        producer._producer.poll(interval)
        del producer


def _resolver(future: Future[Message]) -> Any:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if future.done():
            return
        if err is not None:
            future.set_exception(DeliveryError(err))
        else:
            future.set_result(msg)

    return on_delivery
