"""Broker outages, the spool, retransmissions and a full disk, on the embedded cluster."""

from __future__ import annotations

import contextlib
import select
import socket
import time
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
    msa_control_id,
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


def send_until_stalled(sock: socket.socket, data: bytes, stall_s: float = 1.0) -> int:
    """Write ``data`` from a non-blocking socket until no byte went out for ``stall_s``;
    the number of bytes the kernel took."""
    sent = 0
    deadline = time.monotonic() + 15
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:  # EAGAIN: the send buffer is full
            _, writable, _ = select.select([], [sock], [], stall_s)
            if not writable:
                break
    return sent


def send_rest_and_read_acks(sock: socket.socket, data: bytes, sent: int, n: int) -> list[bytes]:
    """Send what is left of ``data`` while reading ACKs, until ``n`` ACKs arrived."""
    buf = b""
    deadline = time.monotonic() + 30
    while buf.count(b"\x1c") < n and time.monotonic() < deadline:
        want_write = [sock] if sent < len(data) else []
        readable, writable, _ = select.select([sock], want_write, [], 1.0)
        if writable:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(data[sent : sent + 65536])
        if readable:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    return [frame.lstrip(b"\r\x0b") for frame in buf.split(b"\x1c")[:-1]]


def test_a_silent_broker_stops_the_socket_reads_instead_of_buffering(
    settings: Settings, broker_outage: EmbeddedStack, tmp_path: Path
) -> None:
    """Backpressure (issue 3, part 1): while the first message waits for the broker, the
    listener buffers at most its high-water mark and then stops reading, so the sender's
    writes stall long before it sent everything; nothing is lost once the broker is back."""
    stack = broker_outage
    # Longer than the stall takes to show, so the message waits instead of being spooled.
    conf = listener_settings(settings, tmp_path, broker_confirm_timeout_s=25.0)
    messages = [make_message(f"BP-{i}", "NTE|1||" + "x" * 2000) for i in range(4000)]
    data = b"".join(b"\x0b" + m + b"\x1c\r" for m in messages)
    with running_listener(conf) as listener:
        stack.broker_down()
        with socket.socket() as sock:
            # A fixed send buffer: Linux autotunes it up to tcp_wmem's maximum (4 MiB here),
            # which would hide the listener's own bound behind the client's.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            sock.connect(("127.0.0.1", listener.port))
            sock.setblocking(False)
            sent = send_until_stalled(sock, data)
            # What can be in flight: the client's send buffer, the listener's receive
            # buffer, one read and the high-water mark (128 KiB); about 0.8 MiB here.
            # Without the pause the whole 8 MiB goes through.
            assert sent < min(2 << 20, len(data) // 4), sent
            assert listener.counts["received"] == 1  # still waiting on the first one
            stack.broker_up()
            acks = send_rest_and_read_acks(sock, data, sent, len(messages))
        records = topic_records(stack.bootstrap, RAW_HL7, listener.listener_id, len(messages))
        counts = listener.counts
    assert [ack_code(a) for a in acks] == ["AA"] * len(messages)
    assert [msa_control_id(a) for a in acks] == [f"BP-{i}".encode() for i in range(len(messages))]
    assert [v for v, _ in records] == messages
    assert counts["accepted"] == len(messages) and counts.get("spooled", 0) == 0
