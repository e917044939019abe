"""Broker outages, the spool, retransmissions and a full disk, on the embedded cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.embedded.mock_cluster import ApiKey
from fhirbus.producers.mllp.intake import Record
from fhirbus.producers.mllp.spool import Spool
from fhirbus.schemas.topics import RAW_HL7, REJECTED_HL7
from fhirbus.settings import Settings

from .test_hl7_listener_support import (
    MllpConnection,
    ack_code,
    listener_settings,
    make_message,
    running_listener,
    topic_records,
    wait_for,
)


@pytest.fixture
def broker_outage(embedded_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    """Take every broker down on demand; always bring them back."""
    yield embedded_stack
    embedded_stack.broker_up()


def test_outage_acks_from_spool_then_forwards_in_order_once(
    settings: Settings, broker_outage: EmbeddedStack, tmp_path: Path
) -> None:
    stack = broker_outage
    conf = listener_settings(settings, tmp_path, broker_confirm_timeout_s=0.5)
    sent: list[bytes] = []
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        for i in range(3):
            sent.append(make_message(f"before-{i}"))
            assert ack_code(conn.send(sent[-1])) == "AA"
        assert listener.counts.get("spooled", 0) == 0
        stack.broker_down()
        for i in range(20):
            sent.append(make_message(f"during-{i}"))
            assert ack_code(conn.send(sent[-1])) == "AA"
        # A NAKed message during the outage is kept too (spooled as a rejected record).
        assert ack_code(conn.send(b"not hl7 at all")) == "AR"
        # A retransmission of a message that is only in the spool: AA, no second copy.
        assert ack_code(conn.send(sent[5])) == "AA"
        counts = listener.counts
        assert counts["spooled"] == 20 and counts["duplicates"] == 1
        assert listener.call(lambda: listener.app.listener.sink.backlog) == 21
        stack.broker_up()
        for i in range(5):  # while draining: still behind the spooled ones
            sent.append(make_message(f"after-{i}"))
            assert ack_code(conn.send(sent[-1])) == "AA"
        wait_for(lambda: listener.call(lambda: listener.app.listener.sink.backlog) == 0, 60)
        records = topic_records(stack.bootstrap, RAW_HL7, listener.listener_id, len(sent))
        rejected = topic_records(stack.bootstrap, REJECTED_HL7, listener.listener_id, 1)
    assert [v for v, _ in records] == sent
    assert [(v, h["fhirbus.reject_reason"]) for v, h in rejected] == [
        (b"not hl7 at all", b"no_msh")
    ]


def test_retransmission_is_acked_twice_and_published_once(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    first, other = make_message("R-1"), make_message("R-2")
    same_id_other_content = make_message("R-1", body="PID|1||999^^^MRN||ROE^RICHARD")
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        with MllpConnection(listener.port) as conn:
            assert ack_code(conn.send(first)) == "AA"
            assert ack_code(conn.send(other)) == "AA"
        with MllpConnection(listener.port) as again:  # the sender reconnected and resent
            assert ack_code(again.send(first)) == "AA"
            assert ack_code(again.send(same_id_other_content)) == "AA"
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, listener.listener_id, 3)
        assert listener.counts["duplicates"] == 1
    # A reused control id with different content is a different message: kept, not dropped.
    assert [v for v, _ in records] == [first, other, same_id_other_content]


def test_duplicate_window_is_configurable(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    msg = make_message("W-1")
    with running_listener(listener_settings(settings, tmp_path, duplicate_window_s=0)) as lis:
        with MllpConnection(lis.port) as conn:
            assert ack_code(conn.send(msg)) == "AA"
            assert ack_code(conn.send(msg)) == "AA"
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, lis.listener_id, 2)
    assert len(records) == 2


def test_broker_down_and_disk_full_gives_a_negative_ack(
    settings: Settings, broker_outage: EmbeddedStack, tmp_path: Path
) -> None:
    conf = listener_settings(settings, tmp_path, broker_confirm_timeout_s=0.3)
    # A spool that can hold almost nothing stands in for a full disk.
    spool = Spool(conf.hl7.spool_path, max_pages=12)  # type: ignore[arg-type]
    big = make_message("F-1", body="NTE|1||" + "x" * 60_000)
    with running_listener(conf, spool=spool) as listener, MllpConnection(listener.port) as conn:
        broker_outage.broker_down()
        ack = conn.send(big)
        assert ack_code(ack) == "AE"
        assert b"could not be stored" in ack
        assert listener.counts["store_failed"] == 1 and listener.counts.get("accepted", 0) == 0
        broker_outage.broker_up()
        # The sender keeps the message and retries; once the broker is back it is accepted.
        wait_for(lambda: ack_code(conn.send(big)) == "AA", timeout=30, interval=0.2)
        records = topic_records(broker_outage.bootstrap, RAW_HL7, listener.listener_id, 1)
    assert [v for v, _ in records] == [big]


def test_a_spooled_record_the_broker_refuses_for_good_does_not_stall_the_spool(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Regression: the forwarder retried a record it could never publish (larger than the
    producer's message.max.bytes, refused as MSG_SIZE_TOO_LARGE) forever, and every row
    behind it, and every new message (spool mode), waited with it."""
    conf = listener_settings(settings, tmp_path)
    listener_id = conf.hl7.listener_id
    first, last, later = make_message("S-1"), make_message("S-3"), make_message("S-4")
    huge = make_message("S-2", body="NTE|1||" + "x" * 3_000_000)

    def raw(value: bytes) -> Record:
        headers = [("fhirbus.listener_id", listener_id.encode())]
        return Record(RAW_HL7, listener_id.encode(), value, headers)

    spool = Spool(conf.hl7.spool_path)  # type: ignore[arg-type]
    spool.start()
    for value in (first, huge, last):
        spool.append("raw", raw(value), None).result(10)
    spool.close()
    spool = Spool(conf.hl7.spool_path)  # type: ignore[arg-type]
    with running_listener(conf, spool=spool) as listener, MllpConnection(listener.port) as conn:
        assert ack_code(conn.send(later)) == "AA"  # spool mode: queued behind the backlog
        wait_for(lambda: listener.call(lambda: listener.app.listener.sink.backlog) == 0, 30)
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, listener_id, 3)
        refused = spool.read_refused().result(10)
        counts = listener.counts
    # The row after the refused one was confirmed in the first batch, but behind a failure,
    # so it is sent again (the forwarder's documented duplicate); first copies in order.
    values = [v for v, _ in records]
    assert list(dict.fromkeys(values)) == [first, last, later] and len(values) <= 4
    assert [(r.record.value, r.reason) for r in refused] == [(huge, "MSG_SIZE_TOO_LARGE")]
    assert counts["refused"] == 1 and counts["forwarded"] == 3


OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def test_a_fatal_producer_error_replaces_the_producer(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Regression: after a fatal idempotent-producer error every produce failed for good,
    so every message was spooled and the forwarder never drained the spool."""
    sent = [make_message(f"P-{i}") for i in range(4)]
    conf = listener_settings(settings, tmp_path)
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        first_producer = listener.app.listener.delivery.producer
        assert ack_code(conn.send(sent[0])) == "AA"
        # The broker answers the next produce with a sequence error: librdkafka's idempotent
        # producer treats that as fatal. The message is spooled (AA), not lost.
        embedded_stack.push_request_errors(ApiKey.PRODUCE, [OUT_OF_ORDER_SEQUENCE_NUMBER])
        assert ack_code(conn.send(sent[1])) == "AA"
        wait_for(lambda: listener.counts.get("producer_recreated", 0) == 1, 30)
        for message in sent[2:]:
            assert ack_code(conn.send(message)) == "AA"
        wait_for(lambda: listener.call(lambda: listener.app.listener.sink.backlog) == 0, 30)
        assert listener.app.listener.delivery.producer is not first_producer
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, listener.listener_id, 4)
        counts = listener.counts
    assert [v for v, _ in records] == sent
    assert counts["accepted"] == 4 and counts["producer_recreated"] == 1
