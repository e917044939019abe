"""Oversize units over real sockets: the head on hl7.rejected.v1, every byte (up to the cap)
in a claim-check file that is complete and fsynced before the NAK; when the file cannot be
written, the NAK and the head-only record still go out."""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import pytest

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.reconciliation.dlq import kafka_io, ops
from fhirbus.reconciliation.dlq.audit import AuditStore
from fhirbus.reconciliation.dlq.filters import DlqFilter
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
)

MIB = 1_048_576


def send_chunked(conn: MllpConnection, data: bytes, chunk: int = 256 * 1024) -> None:
    for i in range(0, len(data), chunk):
        conn.send_raw(data[i : i + chunk])


def test_oversize_message_is_kept_whole_in_a_claim_check(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    big = make_message("BIG-1", "OBX|1|ED|PDF||" + "A" * (3 * MIB))
    conf = listener_settings(settings, tmp_path)  # default 1 MiB limit
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        send_chunked(conn, b"\x0b" + big + b"\x1c\r")
        ack = conn.read_ack()
        # The NAK came only after the file was complete: it is, before the topic is read.
        files = list((tmp_path / "rejected" / listener.listener_id).iterdir())
        assert [f.read_bytes() == big for f in files] == [True]
        assert ack_code(conn.send(make_message("AFTER-1"))) == "AA"
        (value, headers), = topic_records(
            embedded_stack.bootstrap, REJECTED_HL7, listener.listener_id, 1
        )
    assert (ack_code(ack), msa_control_id(ack)) == ("AE", b"BIG-1")
    assert value == big[:MIB]
    assert headers["fhirbus.claim_check"] == str(files[0]).encode()
    assert headers["fhirbus.claim_check_sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert headers["fhirbus.size"] == str(len(big)).encode()
    assert headers["fhirbus.reject_reason"] == b"too_large"
    assert "fhirbus.truncated" not in headers
    assert files[0].name.startswith(listener.listener_id + "-")
    replay_whole(conf, files[0], tmp_path)
    raw = topic_records(embedded_stack.bootstrap, RAW_HL7, listener.listener_id, 2)
    assert [v for v, h in raw if h["hl7.msh10"] == b"BIG-1"] == [big]


def replay_whole(conf: Settings, claim: Path, tmp_path: Path) -> None:
    """``fhirbus dlq replay --to hl7.raw.v1`` of the reject that names ``claim``."""
    (record,) = [r for r in kafka_io.scan(conf, REJECTED_HL7) if r.claim_check == str(claim)]
    only = DlqFilter(ids=frozenset({(REJECTED_HL7, record.partition, record.offset)}))
    with AuditStore(tmp_path / "audit.sqlite") as store:
        report = ops.replay(conf, store, REJECTED_HL7, only, actor="test", to=RAW_HL7)
    assert len(report.replayed) == 1


def test_a_stream_beyond_the_cap_is_cut_and_says_so(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    cap = 64 * 1024
    conf = listener_settings(settings, tmp_path, max_message_bytes=4096, max_oversize_bytes=cap)
    garbage = bytes(range(33, 127)) * (2 * MIB // 94)  # no start block, over the cap
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        send_chunked(conn, garbage + b"\x1c")
        ack = conn.read_ack()
        (value, headers), = topic_records(
            embedded_stack.bootstrap, REJECTED_HL7, listener.listener_id, 1
        )
    assert ack_code(ack) == "AR"
    kept = Path(headers["fhirbus.claim_check"].decode()).read_bytes()
    assert kept == garbage[:cap] and value == garbage[:4096]
    assert headers["fhirbus.claim_check_sha256"] == hashlib.sha256(kept).hexdigest().encode()
    assert headers["fhirbus.claim_check_bytes"] == str(cap).encode()
    assert headers["fhirbus.size"] == str(len(garbage)).encode()
    assert headers["fhirbus.truncated"] == b"true"
    assert headers["fhirbus.reject_reason"] == b"missing_start_block"


def test_unwritable_claim_check_dir_still_naks_and_keeps_the_head(
    settings: Settings,
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A file where the directory should be: refused even to root, unlike a chmod.
    (tmp_path / "taken").write_bytes(b"")
    conf = listener_settings(
        settings, tmp_path, max_message_bytes=4096, oversize_dir=tmp_path / "taken" / "dir"
    )
    big = make_message("NODISK-1", "NTE|1||" + "DOE^JANE" * 4000)
    caplog.set_level(logging.INFO)
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        conn.send_raw(b"\x0b" + big + b"\x1c\r")
        ack = conn.read_ack()
        conn.sock.shutdown(socket.SHUT_WR)
        (value, headers), = topic_records(
            embedded_stack.bootstrap, REJECTED_HL7, listener.listener_id, 1
        )
    assert (ack_code(ack), msa_control_id(ack)) == ("AE", b"NODISK-1")
    assert value == big[:4096] and headers["fhirbus.truncated"] == b"true"
    assert headers["fhirbus.size"] == str(len(big)).encode()
    assert headers["fhirbus.claim_check_error"] in (b"ENOTDIR", b"EEXIST")
    assert "fhirbus.claim_check" not in headers
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("claim-check" in r.getMessage() for r in warned)
    assert "DOE" not in caplog.text
