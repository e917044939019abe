"""The SQLite spool, the publish-or-spool state machine and the forwarder, with a fake
producer whose deliveries the test resolves by hand."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import Future
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from fhirbus.kafka.producer import DeliveryError
from fhirbus.producers.mllp.dedup import DedupWindow
from fhirbus.producers.mllp.forwarder import Forwarder
from fhirbus.producers.mllp.intake import Record
from fhirbus.producers.mllp.metrics import ListenerMetrics
from fhirbus.producers.mllp.sink import DurableSink, Stored, StoreFailed
from fhirbus.producers.mllp.spool import Spool, SpoolError


def rec(n: int, topic: str = "hl7.raw.v1") -> Record:
    return Record(topic, b"feed", f"MSH|{n}".encode(), [("h", bytes([n % 256, 0, 255]))])


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool.sqlite")
    s.start()
    yield s
    s.close()


def test_append_read_delete_in_order(spool: Spool) -> None:
    futures = [spool.append("raw", rec(i), f"k{i}") for i in range(5)]
    seqs = [f.result(5) for f in futures]
    assert seqs == sorted(seqs)
    rows = spool.read(10).result(5)
    assert [r.record for r in rows] == [rec(i) for i in range(5)]
    spool.delete([r.seq for r in rows[:2]]).result(5)
    assert [r.record.value for r in spool.read(10).result(5)] == [b"MSH|2", b"MSH|3", b"MSH|4"]
    assert spool.depth().result(5) == 3


def test_spool_and_seen_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    first = Spool(path)
    first.start()
    first.append("rejected", rec(1, "hl7.rejected.v1"), "k1").result(5)
    first.remember(["k2", "k3"]).result(5)
    first.close()
    second = Spool(path)
    second.start()
    try:
        rows = second.read(10).result(5)
        assert [(r.kind, r.record) for r in rows] == [("rejected", rec(1, "hl7.rejected.v1"))]
        assert {k for k, _ in second.seen_since(0).result(5)} == {"k1", "k2", "k3"}
        assert second.prune_seen(1e12).result(5) == 3
        # WAL mode and FULL sync are what make an ACK from the spool safe.
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        second.close()


def test_disk_full_fails_the_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "full.sqlite", max_pages=8)
    spool.start()
    try:
        big = Record("t", b"k", b"x" * 100_000)
        with pytest.raises(SpoolError):
            spool.append("raw", big, None).result(5)
        assert spool.depth().result(5) == 0  # nothing half-written
    finally:
        spool.close()


def test_closed_spool_refuses(spool: Spool) -> None:
    spool.close()
    with pytest.raises(SpoolError):
        spool.append("raw", rec(1), None).result(1)


class FakeProducer:
    """publish() waits on a Future the test resolves with resolve_all(ok) (or auto_ok)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Future[None]]] = []
        self.auto_ok = False  # healthy broker: confirm every send at once

    async def publish(self, record: Record) -> None:
        future: Future[None] = Future()
        self.sent.append((record.value, future))
        if self.auto_ok:
            future.set_result(None)
        await asyncio.wrap_future(future)

    def resolve_all(self, ok: bool) -> None:
        for _, future in self.sent:
            if not future.done():
                if ok:
                    future.set_result(None)
                else:
                    future.set_exception(DeliveryError(KafkaError(KafkaError._MSG_TIMED_OUT)))


async def settle(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_state_machine_spools_behind_the_backlog_and_returns_to_direct(spool: Spool) -> None:
    async def run() -> None:
        producer = FakeProducer()
        sink = DurableSink(producer, spool)  # type: ignore[arg-type]
        # DIRECT: confirmed by the broker.
        first = asyncio.create_task(sink.store(rec(0), "raw", "k0"))
        await settle(lambda: len(producer.sent) == 1)
        producer.resolve_all(ok=True)
        assert await first is Stored.BROKER and not sink.spooling
        # Broker fails: spooled, and the listener is now SPOOLING.
        second = asyncio.create_task(sink.store(rec(1), "raw", "k1"))
        await settle(lambda: len(producer.sent) == 2)
        producer.resolve_all(ok=False)
        assert await second is Stored.SPOOL and sink.backlog == 1
        # While SPOOLING, even a healthy broker is not used: order would break.
        assert await sink.store(rec(2), "raw", None) is Stored.SPOOL
        assert len(producer.sent) == 2 and sink.backlog == 2
        # The forwarder drains in order; then DIRECT again.
        forwarder = Forwarder(sink, spool, ListenerMetrics("t", "f", lambda: sink.backlog))
        task = asyncio.create_task(forwarder.run())
        await settle(lambda: len(producer.sent) == 4)
        assert [v for v, _ in producer.sent[2:]] == [b"MSH|1", b"MSH|2"]
        producer.resolve_all(ok=True)
        await settle(lambda: not sink.spooling)
        assert spool.depth().result(5) == 0
        third = asyncio.create_task(sink.store(rec(3), "raw", None))
        await settle(lambda: len(producer.sent) == 5)
        producer.resolve_all(ok=True)
        assert await third is Stored.BROKER
        task.cancel()

    asyncio.run(run())


def test_forwarder_deletes_only_the_confirmed_prefix(spool: Spool) -> None:
    async def run() -> None:
        producer = FakeProducer()
        sink = DurableSink(producer, spool, backlog=3)  # type: ignore[arg-type]
        for i in range(3):
            spool.append("raw", rec(i), None).result(5)
        forwarder = Forwarder(sink, spool, ListenerMetrics("t", "f", lambda: 0), backoff_min_s=0.01)
        task = asyncio.create_task(forwarder.run())
        await settle(lambda: len(producer.sent) == 3)
        producer.sent[0][1].set_result(None)
        producer.sent[1][1].set_exception(DeliveryError(KafkaError(KafkaError._MSG_TIMED_OUT)))
        producer.sent[2][1].set_result(None)  # confirmed, but after a failure: sent again
        await settle(lambda: len(producer.sent) >= 4)
        assert [r.record.value for r in spool.read(10).result(5)] == [b"MSH|1", b"MSH|2"]
        assert producer.sent[3][0] == b"MSH|1"  # a single probe row while failing
        producer.auto_ok = True
        producer.resolve_all(ok=True)
        await settle(lambda: not sink.spooling)
        task.cancel()

    asyncio.run(run())


def test_store_fails_when_spool_fails_too(tmp_path: Path) -> None:
    async def run() -> None:
        spool = Spool(tmp_path / "f.sqlite", max_pages=8)
        spool.start()
        producer = FakeProducer()
        sink = DurableSink(producer, spool)  # type: ignore[arg-type]
        big = Record("t", b"k", b"x" * 100_000)
        task = asyncio.create_task(sink.store(big, "raw", "k"))
        await settle(lambda: len(producer.sent) == 1)
        producer.resolve_all(ok=False)
        with pytest.raises(StoreFailed):
            await task
        assert sink.backlog == 0 and not sink.spooling
        spool.close()

    asyncio.run(run())


def test_dedup_window() -> None:
    window = DedupWindow(window_s=10)
    window.load([("a", 100.0)])
    assert window.seen("a", 105.0) and not window.seen("a", 111.0) and not window.seen("b", 105.0)
    window.add("b", 106.0)
    assert window.expire(112.0) == 1 and len(window) == 1
    bounded = DedupWindow(window_s=10, max_entries=2)
    for i, key in enumerate("xyz"):
        bounded.add(key, float(i))
    assert not bounded.seen("x", 2.0) and bounded.seen("z", 2.0)


def too_large() -> DeliveryError:
    return DeliveryError(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))


def test_a_record_the_broker_refuses_for_good_is_moved_aside_and_the_rest_flow(
    spool: Spool,
) -> None:
    """Regression: a permanently refused row used to stall the forwarder forever."""

    async def run() -> None:
        producer = FakeProducer()
        sink = DurableSink(producer, spool, backlog=3)  # type: ignore[arg-type]
        for i in range(3):
            spool.append("raw", rec(i), None).result(5)
        metrics = ListenerMetrics("t", "f", lambda: sink.backlog)
        forwarder = Forwarder(sink, spool, metrics, backoff_min_s=0.01)
        task = asyncio.create_task(forwarder.run())
        await settle(lambda: len(producer.sent) == 3)
        # In a batch a refusal is not trusted yet: the row is probed alone first.
        producer.sent[0][1].set_exception(too_large())
        producer.sent[1][1].set_result(None)
        producer.sent[2][1].set_result(None)
        await settle(lambda: len(producer.sent) == 4)
        assert producer.sent[3][0] == b"MSH|0" and spool.depth().result(5) == 3
        producer.sent[3][1].set_exception(too_large())  # alone, refused again: for good
        await settle(lambda: len(producer.sent) >= 5)
        producer.auto_ok = True
        producer.resolve_all(ok=True)
        await settle(lambda: not sink.spooling)
        task.cancel()
        assert [v for v, _ in producer.sent[4:]] == [b"MSH|1", b"MSH|2"]
        refused = spool.read_refused().result(5)
        assert [(r.record, r.reason) for r in refused] == [(rec(0), "MSG_SIZE_TOO_LARGE")]
        assert metrics.counts["refused"] == 1 and metrics.counts["forwarded"] == 2
        assert spool.depth().result(5) == 0

    asyncio.run(run())


def test_a_refusal_that_is_not_the_records_own_keeps_the_row(spool: Spool) -> None:
    """A timeout or a fatal producer error says nothing about the record: it stays."""

    async def run() -> None:
        producer = FakeProducer()
        sink = DurableSink(producer, spool, backlog=1)  # type: ignore[arg-type]
        spool.append("raw", rec(7), None).result(5)
        forwarder = Forwarder(sink, spool, ListenerMetrics("t", "f", lambda: 0), backoff_min_s=0.01)
        task = asyncio.create_task(forwarder.run())
        for n, code in enumerate((KafkaError._MSG_TIMED_OUT, KafkaError._FATAL), start=1):
            await settle(lambda n=n: len(producer.sent) == n)  # type: ignore[misc]
            producer.sent[-1][1].set_exception(DeliveryError(KafkaError(code)))
        await settle(lambda: len(producer.sent) == 3)
        assert spool.depth().result(5) == 1 and spool.read_refused().result(5) == []
        producer.auto_ok = True
        producer.resolve_all(ok=True)
        await settle(lambda: not sink.spooling)
        task.cancel()

    asyncio.run(run())


def test_seen_window_written_by_an_older_version_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE seen (k TEXT PRIMARY KEY, at REAL NOT NULL)")
    conn.execute("INSERT INTO seen VALUES ('old', 5.0)")
    conn.commit()
    conn.close()
    spool = Spool(path)
    spool.start()
    try:
        spool.remember(["new1", "new2"]).result(5)
        entries = spool.seen_since(0).result(5)
        assert [k for k, _ in entries] == ["old", "new1", "new2"]
        assert spool.prune_seen(1e12).result(5) == 3
        assert spool.seen_since(0).result(5) == []
    finally:
        spool.close()
