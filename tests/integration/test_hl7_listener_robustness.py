"""Bad input over real sockets: never a crash, never an AA, always kept with its reason.
Plus enhanced-mode acknowledgments."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.producers.mllp import framing, intake
from fhirbus.producers.mllp import listener as listener_module
from fhirbus.schemas.topics import RAW_HL7, REJECTED_HL7
from fhirbus.settings import Settings

from .test_hl7_listener_support import (
    MllpConnection,
    RunningListener,
    ack_code,
    listener_settings,
    make_message,
    msa_control_id,
    running_listener,
    topic_records,
)


@pytest.fixture(scope="module")
def shared_listener(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningListener]:
    from fhirbus.settings import load_settings

    base = load_settings(kafka_bootstrap=embedded_stack.bootstrap)
    conf = listener_settings(base, tmp_path_factory.mktemp("robust"), max_message_bytes=4096)
    with running_listener(conf) as listener:
        yield listener


def exchange(port: int, data: bytes) -> list[bytes]:
    """Send bytes, half-close, collect every ACK until the listener closes."""
    with MllpConnection(port, timeout=20) as conn:
        conn.send_raw(data)
        conn.sock.shutdown(socket.SHUT_WR)
        return conn.read_all_acks()


CASES = {
    "garbage": (b"hello there, not mllp", ["AR"], "missing_start_block"),
    "truncated": (b"\x0b" + make_message("T-1")[:30], ["AR"], "truncated_frame"),
    "oversize": (
        b"\x0b" + make_message("O-1", "NTE|1||" + "x" * 9000) + b"\x1c\r",
        ["AE"],
        "too_large",
    ),
    "encoding chars": (
        b"\x0bMSH|^~|A|B|C|D|||ADT^A01|E-1|P|2.5\rPID|1\x1c\r",
        ["AR"],
        "bad_encoding_characters",
    ),
    "no msh": (b"\x0bPID|1||123\rPV1|1|I\x1c\r", ["AR"], "no_msh"),
    "empty frame": (b"\x0b\x1c\r", ["AR"], "empty"),
    "charset": (
        b"\x0b" + make_message("C-1").replace(b"|2.5\r", b"|2.5||||||ISO IR87\r") + b"\x1c\r",
        ["AE"],
        "unsupported_charset",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_the_right_nak_and_is_kept(
    case: str, shared_listener: RunningListener, embedded_stack: EmbeddedStack
) -> None:
    data, codes, reason = CASES[case]
    before = shared_listener.counts.get(f"rejected.{reason}", 0)
    acks = exchange(shared_listener.port, data)
    assert [ack_code(a) for a in acks] == codes
    assert b"\rERR" in acks[0]
    assert shared_listener.counts[f"rejected.{reason}"] == before + 1
    # The listener is still serving, on a new connection.
    with MllpConnection(shared_listener.port) as conn:
        assert ack_code(conn.send(make_message(f"alive-{case}"))) == "AA"


def test_rejected_topic_holds_each_bad_input_with_reason(
    shared_listener: RunningListener, embedded_stack: EmbeddedStack
) -> None:
    marker = make_message("O-marker", "NTE|1||" + "y" * 9000)
    exchange(shared_listener.port, b"\x0b" + marker + b"\x1c\r")
    total = shared_listener.counts["rejected"]
    found = topic_records(
        embedded_stack.bootstrap, REJECTED_HL7, shared_listener.listener_id, total, quiet=0.5
    )
    assert len(found) == total
    by_reason: dict[bytes, list[bytes]] = {}
    for value, headers in found:
        by_reason.setdefault(headers["fhirbus.reject_reason"], []).append(value)
    for data, _, reason in CASES.values():
        payload = data.removeprefix(b"\x0b").removesuffix(b"\x1c\r")[:4096]
        assert payload in by_reason[reason.encode()], reason
    (value, headers), *_ = [(v, h) for v, h in found if h.get("hl7.msh10") == b"O-marker"]
    # The head on the topic, every byte in the claim check: nothing was discarded.
    assert value == marker[:4096] and "fhirbus.truncated" not in headers
    assert Path(headers["fhirbus.claim_check"].decode()).read_bytes() == marker
    assert headers["fhirbus.size"] == str(len(marker)).encode()
    assert headers["fhirbus.reject_code"] == b"AE"
    assert b"y" not in headers["fhirbus.error_detail"]


def test_frames_after_bad_input_on_the_same_connection_still_work(
    shared_listener: RunningListener,
) -> None:
    data = b"junk" + b"\x0b" + make_message("N-1") + b"\x1c\r" + b"\x0bPID\x1c\r"
    acks = exchange(shared_listener.port, data + b"\x0b" + make_message("N-2") + b"\x1c\r")
    assert [ack_code(a) for a in acks] == ["AR", "AA", "AR", "AA"]
    assert [msa_control_id(a) for a in acks[1::2]] == [b"N-1", b"N-2"]


def units_to_answer(data: bytes) -> int:
    """How many NAKs a connection that sends ``data`` and half-closes must get.

    From the framing rules (framing.py), not from its decoder: the listener discards only
    padding (CR, LF, space, tab) between frames. Every other byte belongs to a unit that is
    answered and kept: a frame from VT to FS (a VT inside it is content; oversize is still
    one unit), or garbage outside a start block, which runs to the next VT (not consumed)
    or FS (consumed); at end of stream, whatever is left is one more (truncated) unit.
    """
    n, i, size = 0, 0, len(data)
    while True:
        while i < size and data[i] in b"\r\n \t":
            i += 1
        if i == size:
            return n
        n += 1
        if data[i] == 0x0B:
            end = data.find(b"\x1c", i + 1)
        else:
            stops = [p for p in (data.find(b"\x0b", i), data.find(b"\x1c", i)) if p >= 0]
            end = min(stops, default=-1)
        if end < 0:
            return n
        i = end + 1 if data[end] == 0x1C else end


# Random bytes with the framing bytes mixed in often enough that complete frames, garbage
# between frames and padding all occur, not just one unframed run.
FUZZ = st.lists(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from([b"\x0b", b"\x1c", b"\x1c\r", b"\r\n", b" "]),
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=FUZZ.filter(lambda b: b"MSH" not in b))
def test_fuzz_random_bytes_never_get_an_aa(shared_listener: RunningListener, data: bytes) -> None:
    before = shared_listener.counts.get("rejected", 0)
    acks = exchange(shared_listener.port, data)
    # Not just "no AA": silence would pass that. Every unit gets its NAK, and is kept.
    assert len(acks) == units_to_answer(data)
    assert all(ack_code(a) in ("AR", "AE") for a in acks)
    assert shared_listener.counts.get("rejected", 0) - before == len(acks)
    assert shared_listener.counts.get("store_failed", 0) == 0


def test_units_to_answer_follows_the_framing_rules() -> None:
    assert units_to_answer(b"\r\n \t") == 0
    assert units_to_answer(b"junk") == 1
    assert units_to_answer(b"junk\x0bframe\x1c\r\n") == 2
    assert units_to_answer(b"\x0ba\x0bb\x1c\x1c") == 2  # inner VT is content; bare FS
    assert units_to_answer(b"\x0bpartial") == 1


def test_listener_alive_after_fuzz(
    shared_listener: RunningListener, embedded_stack: EmbeddedStack
) -> None:
    with MllpConnection(shared_listener.port) as conn:
        assert ack_code(conn.send(make_message("after-fuzz"))) == "AA"
    # Everything NAKed so far, the fuzz run's units included, is on the rejected topic.
    total = shared_listener.counts["rejected"]
    found = topic_records(
        embedded_stack.bootstrap, REJECTED_HL7, shared_listener.listener_id, total, quiet=0.5
    )
    assert len(found) == total


def test_a_classification_bug_gets_a_nak_and_is_kept(
    settings: Settings,
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: an exception in classify escaped handle(), and the connection was
    dropped with no NAK and nothing on the rejected topic."""
    bad, good = make_message("BUG-1"), make_message("BUG-2")

    def classify(frame: framing.Frame, policy: intake.Policy) -> intake.Verdict:
        if b"BUG-1" in frame.payload:
            raise RuntimeError("bug that quotes the message: DOE^JANE")
        return intake.classify(frame, policy)

    monkeypatch.setattr(listener_module, "classify", classify)
    caplog.set_level(logging.DEBUG)
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        with MllpConnection(listener.port) as conn:
            nak = conn.send(bad)
            assert ack_code(conn.send(good)) == "AA"  # same connection, still served
        rejected = topic_records(embedded_stack.bootstrap, REJECTED_HL7, listener.listener_id, 1)
        counts = listener.counts
    assert (ack_code(nak), msa_control_id(nak)) == ("AR", b"BUG-1")
    assert b"\rERR|" in nak and b"207" in nak
    assert [(v, h["fhirbus.reject_reason"]) for v, h in rejected] == [(bad, b"internal_error")]
    assert counts["rejected.internal_error"] == 1 and counts["accepted"] == 1
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any(r.getMessage() == "message classification failed" for r in loud)
    assert not any("DOE" in str(r.__dict__) for r in loud)


def test_enhanced_mode_follows_msh15(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    def enhanced(control_id: str, accept: str) -> bytes:
        return make_message(control_id).replace(b"|P|2.5\r", f"|P|2.5|||{accept}|NE\r".encode())

    conf = listener_settings(settings, tmp_path, ack_mode="auto")
    with running_listener(conf) as listener, MllpConnection(listener.port) as conn:
        assert ack_code(conn.send(enhanced("E-1", "AL"))) == "CA"
        assert ack_code(conn.send(make_message("E-2"))) == "AA"  # original mode
        # NE: stored, but no accept ACK; the next reply belongs to the next message.
        conn.send_raw(b"\x0b" + enhanced("E-3", "NE") + b"\x1c\r")
        ack = conn.send(enhanced("E-4", "ER").replace(b"|2.5|", b"|1.0|"))
        assert (ack_code(ack), msa_control_id(ack)) == ("CE", b"E-4")
        records = topic_records(embedded_stack.bootstrap, RAW_HL7, listener.listener_id, 3)
    assert [h["hl7.msh10"] for _, h in records] == [b"E-1", b"E-2", b"E-3"]
