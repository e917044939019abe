"""One message, start to finish: classify, deduplicate, store durably, then build the ACK.

``MllpListener.handle`` is the only entry point the socket layer calls; it never raises
(a bug becomes a negative ACK, which makes the sender retry, never an AA; one in
classification also keeps the frame on the rejected topic) and returns the framed ACK
bytes, or None when an enhanced-mode sender asked not to get one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from opentelemetry import context, trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, Status, StatusCode

from fhirbus import telemetry
from fhirbus.kafka.producer import Producer
from fhirbus.schemas.topics import RAW_HL7, REJECTED_HL7
from fhirbus.settings import Hl7ListenerSettings

from . import framing
from .ack import AckError, AckHeader, build_ack, is_enhanced, wants_accept_ack
from .claimcheck import ClaimCheck
from .claims import WAIT
from .dedup import DedupWindow
from .delivery import AsyncDelivery
from .forwarder import Forwarder, SharedForwarder
from .intake import (
    Origin,
    Policy,
    Verdict,
    classify,
    dedup_key,
    raw_record,
    rejected_record,
    unclassified,
)
from .metrics import ListenerMetrics
from .sink import DurableSink, Stored, StoreFailed
from .spool import Spool, SpoolError
from .tickets import Ticket, WorkerClaims

log = logging.getLogger(__name__)
_IDS = RandomIdGenerator()
# As the SDK flags a new trace it samples, from a random id: sampled, random trace id.
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID)
_CANNOT_STORE = AckError("207", "message could not be stored now; send it again later")
_INTERNAL = AckError("207", "internal error; send it again later")
# The gauge gives up rather than hold the metric reader behind a long spool commit.
_DEPTH_TIMEOUT_S = 5.0
Outcome = tuple[str, AckError | None]


class MllpListener:
    def __init__(
        self,
        conf: Hl7ListenerSettings,
        producer: Producer,
        spool: Spool,
        *,
        new_producer: Callable[[], Producer] | None = None,
        claims: WorkerClaims | None = None,
    ) -> None:
        self.conf = conf
        self._spool = spool
        self._policy = Policy(frozenset(conf.supported_versions))
        self.metrics = ListenerMetrics(conf.listener_id, conf.feed, self._spool_depth)
        # new_producer: how to replace the producer after a fatal error (delivery.py).
        self.delivery = AsyncDelivery(
            producer, recreate=new_producer, on_recreate=self.metrics.producer_recreated
        )
        self.sink = DurableSink(self.delivery, spool)
        self.dedup = DedupWindow(conf.duplicate_window_s)
        # One of several worker processes (workers.py): retransmissions and spool mode are
        # decided on a table they share (claims.py); worker 0 alone forwards the spool.
        self._claims = claims
        self._ack_prefix = format(int(time.time()), "x")
        self._forwarder: Forwarder | None
        if claims is None:
            self._store = self._store_local
            self._forwarder = Forwarder(self.sink, spool, self.metrics)
        else:
            self._store = self._store_shared
            self._forwarder = None
            if claims.index == 0:
                self._forwarder = SharedForwarder(self.sink, spool, self.metrics, claims.table)
            # ACK control ids stay unique across workers started in the same second.
            self._ack_prefix += f".{claims.index}."
        self._tasks: list[asyncio.Task[None]] = []
        self._ack_ids = itertools.count(1)
        self._tracer = telemetry.tracer("fhirbus.hl7.listener")
        self._span_attributes = {"fhirbus.feed": conf.feed}

    def _spool_depth(self) -> int | None:
        """Rows waiting in the spool, for the depth gauge (read on the metric reader's thread).

        One process: the sink's backlog. Workers share one spool and no worker counts all
        of its rows, so worker 0 (its forwarder) counts them in the file and the others
        report nothing, so that a sum over processes is not N times the depth.
        """
        if self._claims is None:
            return self.sink.backlog
        if self._claims.index != 0:
            return None
        try:
            return self._spool.depth().result(timeout=_DEPTH_TIMEOUT_S)
        except (SpoolError, TimeoutError):
            return None

    async def start(self) -> None:
        """Resume from the spool: its backlog (spool mode until drained) and the seen window."""
        if self._claims is not None:
            self._start_shared()
            return
        now = time.time()
        self.sink.backlog = await asyncio.wrap_future(self._spool.depth())
        seen = await asyncio.wrap_future(self._spool.seen_since(now - self.conf.duplicate_window_s))
        self.dedup.load(seen)
        if self.sink.backlog:
            self.sink.spooled_wakeup.set()
        log.info(
            "listener resumed from spool",
            extra={"backlog": self.sink.backlog, "seen": len(self.dedup)},
        )
        self.delivery.start()
        assert self._forwarder is not None
        self._tasks = [
            asyncio.create_task(self._forwarder.run(), name="mllp-forwarder"),
            asyncio.create_task(self._expire_loop(), name="mllp-dedup-expiry"),
        ]

    def _start_shared(self) -> None:
        """A worker: the parent loaded the window into the shared table; worker 0 forwards
        the shared spool and prunes its seen window."""
        self.delivery.start()
        if self._forwarder is not None:
            self._tasks = [
                asyncio.create_task(self._forwarder.run(), name="mllp-forwarder"),
                asyncio.create_task(self._prune_loop(), name="mllp-seen-prune"),
            ]

    async def stop(self) -> None:
        self.sink.flush_seen()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.delivery.stop()
        if self._claims is not None:
            self._claims.flush()

    async def handle(self, frame: framing.Frame, peer: str) -> bytes | None:
        started = time.perf_counter()
        self.metrics.received()
        received_at = datetime.now(UTC)
        origin = Origin(self.conf.listener_id, self.conf.feed, peer, received_at)
        with _MessageSpan(self._tracer, self._span_attributes) as span:
            try:
                verdict = classify(frame, self._policy)
            except Exception as exc:
                # A bug must not drop the connection unanswered: NAK the frame and keep it.
                verdict = _unclassified(frame, exc, span)
            span.set_attribute("hl7.msh9", verdict.msh9)
            try:
                code, error = await self._store(frame, verdict, origin)
            except Exception as exc:
                # Never an AA for something we failed to handle: AE makes the sender retry.
                # The type only at ERROR: an exception's text or traceback may quote content.
                log.error("message handling failed", extra={"error_type": type(exc).__name__})
                log.debug("message handling failed", exc_info=True)
                code, error = "AE", _INTERNAL
            span.set_attribute("hl7.ack_code", code)
            ack = self._ack(verdict.header, code, error, received_at)
        self.metrics.ack_latency(time.perf_counter() - started)
        return ack

    async def _store_local(
        self, frame: framing.Frame, verdict: Verdict, origin: Origin
    ) -> Outcome:
        if not verdict.accepted:
            return await self._keep_rejected(frame, verdict, origin)
        assert verdict.header is not None
        key = dedup_key(verdict.header, frame.payload)
        if key is None:
            return await self._accept(frame, verdict, origin, None)
        if self.dedup.seen(key, time.time()):
            self.metrics.duplicate()
            return "AA", None
        earlier = self.dedup.in_flight(key)
        if earlier is not None:
            # The same message is being stored for another connection: answer as it is answered.
            self.metrics.duplicate()
            code, error = await asyncio.shield(earlier)
            return code, error  # type: ignore[return-value]
        self.dedup.begin(key)
        outcome: Outcome = ("AE", _INTERNAL)
        try:
            outcome = await self._accept(frame, verdict, origin, key)
        finally:
            self.dedup.end(key, outcome)
        return outcome

    async def _store_shared(
        self, frame: framing.Frame, verdict: Verdict, origin: Origin
    ) -> Outcome:
        """As ``_store_local``, with the claim and the route taken on the shared table."""
        claims = self._claims
        assert claims is not None
        key = None
        if verdict.accepted:
            assert verdict.header is not None
            key = dedup_key(verdict.header, frame.payload)
        ticket = claims.claim(key)
        if ticket == WAIT:
            # The same message is being stored for another connection, maybe by another
            # worker: its outcome decides.
            assert key is not None
            ticket = await claims.wait(key)
        if not isinstance(ticket, Ticket):
            self.metrics.duplicate()
            return "AA", None
        outcome: Outcome = ("AE", _INTERNAL)
        try:
            if verdict.accepted:
                outcome = await self._accept(frame, verdict, origin, key, ticket)
            else:
                outcome = await self._keep_rejected(frame, verdict, origin, ticket)
        finally:
            ticket.done(stored=outcome[0] == "AA")
        return outcome

    async def _accept(
        self,
        frame: framing.Frame,
        verdict: Verdict,
        origin: Origin,
        key: str | None,
        ticket: Ticket | None = None,
    ) -> Outcome:
        record = raw_record(RAW_HL7, frame, verdict, origin, telemetry.inject())
        try:
            if ticket is None:
                stored = await self.sink.store(record, "raw", key)
            else:
                stored = await self.sink.store_routed(record, "raw", ticket)
        except StoreFailed:
            self.metrics.store_failed()
            log.error("message not stored: broker and spool both failed; NAK sent")
            return "AE", _CANNOT_STORE
        if key is not None and ticket is None:
            self.dedup.add(key, time.time())
        self.metrics.accepted(spooled=stored is Stored.SPOOL)
        return "AA", None

    async def _keep_rejected(
        self, frame: framing.Frame, verdict: Verdict, origin: Origin, ticket: Ticket | None = None
    ) -> Outcome:
        reason = verdict.reason or "unknown"
        self.metrics.rejected(reason, verdict.code)
        if isinstance(frame, framing.SpilledFrame) and isinstance(frame.spill, ClaimCheck):
            # The claim check is named in the record: durable before the record and the NAK.
            await asyncio.get_running_loop().run_in_executor(None, frame.spill.seal)
        record = rejected_record(REJECTED_HL7, frame, verdict, origin, telemetry.inject())
        try:
            if ticket is None:
                await self.sink.store(record, "rejected")
            else:
                await self.sink.store_routed(record, "rejected", ticket)
        except StoreFailed:
            # The NAK still goes out, so the sender keeps the message; say so loudly.
            self.metrics.store_failed()
            log.error("rejected message could not be kept anywhere", extra={"reason": reason})
        log.info("message rejected", extra={"reason": reason, "code": verdict.code})
        return verdict.code, verdict.error

    def _ack(
        self, header: AckHeader | None, code: str, error: AckError | None, now: datetime
    ) -> bytes | None:
        enhanced = self.conf.ack_mode == "auto" and is_enhanced(header)
        if enhanced and not wants_accept_ack(header, code):
            return None
        payload = build_ack(
            header,
            code,
            ack_control_id=f"{self._ack_prefix}{next(self._ack_ids):x}",
            now=now,
            own_app=self.conf.listener_id,
            enhanced=enhanced,
            error=error,
        )
        return framing.encode_frame(payload)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval())
            self.dedup.expire(time.time())
            await self._prune_seen()

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval())
            await self._prune_seen()

    def _prune_interval(self) -> float:
        return min(60.0, max(1.0, self.conf.duplicate_window_s / 10))

    async def _prune_seen(self) -> None:
        now = time.time()
        try:
            await asyncio.wrap_future(self._spool.prune_seen(now - self.conf.duplicate_window_s))
        except Exception:
            log.warning("could not prune the seen window", exc_info=True)


def _unclassified(frame: framing.Frame, exc: Exception, span: Span) -> Verdict:
    # The type only at ERROR: an exception's text or traceback may quote content.
    log.error("message classification failed", extra={"error_type": type(exc).__name__})
    log.debug("message classification failed", exc_info=True)
    span.set_attribute("error.type", type(exc).__name__)
    return unclassified(frame)


class _MessageSpan:
    """The message's span, current while the message is handled.

    Current, so that the raw record's traceparent (``telemetry.inject``) and any log line
    written meanwhile carry it. Same behaviour as ``start_as_current_span`` (an escaping
    Exception, not a cancellation, is recorded and sets the status) without its two nested
    generator-based context managers, which added about a quarter to the span's cost.

    When nothing records spans (``FHIRBUS_TELEMETRY__EXPORTER=none``: the SDK would build,
    end and drop each one unseen, ~40 us a message, a sixth of the event loop's work) the
    message gets what the span is needed for and no more: a fresh sampled trace and span id,
    so its log lines and the raw record's traceparent are the same as with a span, and the
    later stages continue that trace as before (consumers/spans.py does the same).
    """

    __slots__ = ("_attributes", "_span", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, attributes: dict[str, str]) -> None:
        self._tracer = tracer
        self._attributes = attributes

    def __enter__(self) -> Span:
        if telemetry.spans_recorded():
            self._span = self._tracer.start_span("hl7.mllp.message", attributes=self._attributes)
        else:
            self._span = trace.NonRecordingSpan(
                trace.SpanContext(
                    _IDS.generate_trace_id(), _IDS.generate_span_id(), False, _SAMPLED
                )
            )
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        span = self._span
        try:
            if isinstance(exc, Exception) and span.is_recording():
                # The type only: an exception's text (and a recorded exception event's
                # message and stack) may quote message content, and spans are exported.
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        finally:
            context.detach(self._token)
            span.end()
