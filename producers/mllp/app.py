"""Wiring: settings -> producer, spool, listener and server, started and stopped in order.

Start: open the spool (it must be writable before the first ACK), resume its backlog and
seen window, then open the port. Stop: close the port, let in-flight messages finish, stop
the forwarder, flush the producer, close the spool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhirbus.kafka.config import producer_config
from fhirbus.kafka.producer import Producer
from fhirbus.settings import Hl7ListenerSettings, Settings

from .claimcheck import ClaimChecks
from .listener import MllpListener
from .server import MllpServer
from .spool import Spool
from .tickets import WorkerClaims

log = logging.getLogger(__name__)
# Kafka's default record limit is ~1 MB; an HL7 message at our limit plus headers must fit.
_RECORD_HEADROOM = 64 * 1024


def spool_path(settings: Settings) -> Path:
    conf = settings.hl7
    return conf.spool_path or settings.state_dir / "spool" / f"{conf.listener_id}.sqlite"


def oversize_dir(settings: Settings) -> Path:
    conf = settings.hl7
    return conf.oversize_dir or settings.state_dir / "rejected" / conf.listener_id


def claim_checks(settings: Settings) -> ClaimChecks | None:
    """Where oversize units go whole; None when ``max_oversize_bytes`` is 0 (head only)."""
    conf = settings.hl7
    if conf.max_oversize_bytes <= 0:
        return None
    return ClaimChecks(oversize_dir(settings), conf.listener_id, conf.max_oversize_bytes)


def listener_producer_config(settings: Settings) -> dict[str, Any]:
    """Durable producer settings tuned for ACK latency.

    The delivery timeout *is* the broker confirm timeout: a record the broker has not
    confirmed by then fails definitively and is spooled, instead of also arriving later
    from librdkafka's queue as a second copy.

    linger.ms is 0. librdkafka's broker thread sleeps in poll() with millisecond
    granularity, so a linger of 0.5 ms held every record about 1.1 ms before it was sent
    (measured), and an ACK waits for the broker: with senders that wait for each ACK, that
    was most of the round trip and capped throughput. Under load records still batch, in
    the queue behind the requests in flight. It is a tuning value, so an operator's
    FHIRBUS_KAFKA_EXTRA linger.ms wins over it, as over the other tuning defaults; the
    timeouts and the size limit carry the listener's own promises and always apply.
    """
    conf = settings.hl7
    timeout_ms = max(1, int(conf.broker_confirm_timeout_s * 1000))
    overrides: dict[str, Any] = {
        "delivery.timeout.ms": timeout_ms,
        "request.timeout.ms": timeout_ms,
        "message.max.bytes": max(1_000_000, conf.max_message_bytes + _RECORD_HEADROOM),
    }
    if "linger.ms" not in settings.kafka_extra:
        overrides["linger.ms"] = 0
    return producer_config(settings, **overrides)


class ListenerApp:
    def __init__(
        self,
        settings: Settings,
        *,
        spool: Spool | None = None,
        producer: Producer | None = None,
        claims: WorkerClaims | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.conf: Hl7ListenerSettings = settings.hl7
        self.spool = spool or Spool(spool_path(settings))
        self._own_producer = producer is None
        # background_poll=False: the listener's own poll thread serves the delivery
        # reports (delivery.py); a second poller would take half of them, each then
        # crossing back to the loop on its own.
        self.producer = producer or self._new_producer()
        self.listener = MllpListener(
            self.conf,
            self.producer,
            self.spool,
            new_producer=self._new_producer if self._own_producer else None,
            claims=claims,
        )
        # on_closed: a worker tells its parent, which balances connections by their count.
        self._claim_checks = claim_checks(settings)
        self.server = MllpServer(
            self.conf, self.listener.handle, on_closed=on_closed, spill=self._claim_checks
        )

    def _new_producer(self) -> Producer:
        return Producer(
            listener_producer_config(self.settings), trace_propagation=False, background_poll=False
        )

    async def start(self) -> tuple[str, int]:
        await asyncio.get_running_loop().run_in_executor(None, self._open_files)
        await self.listener.start()
        host, port = await self.server.start()
        log.info(
            "mllp listener started",
            extra={"listener_id": self.conf.listener_id, "host": host, "port": port},
        )
        return host, port

    async def start_worker(self, address: tuple[str, int]) -> None:
        """As start, in a worker process: the parent listens and passes connections over."""
        await asyncio.get_running_loop().run_in_executor(None, self._open_files)
        await self.listener.start()
        self.server.attach(address)

    def _open_files(self) -> None:
        self.spool.start()
        if self._claim_checks is not None:
            # Twice the idle timeout: a live unit's file is written to more often than that
            # (workers share the directory, so a younger one may be another's in progress).
            self._claim_checks.sweep(2 * self.conf.idle_timeout_s + 60)

    async def stop(self, grace_s: float = 10.0) -> None:
        await self.server.close(grace_s)
        await self.listener.stop()
        loop = asyncio.get_running_loop()
        if self._own_producer:
            # The producer in use now: a fatal error may have replaced the first one.
            producer = self.listener.delivery.producer
            await loop.run_in_executor(None, producer.close, grace_s)
        await loop.run_in_executor(None, self.spool.close)
        log.info("mllp listener stopped", extra=dict(self.listener.metrics.counts))
