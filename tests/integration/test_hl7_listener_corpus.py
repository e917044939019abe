"""Acceptance on the shared corpus, through clients we did not write (python-hl7).

How `mllp_send` is driven: it reads a stream, splits it at each <FS> (0x1C) and strips VT
and CR bytes from both ends of every piece before framing it again. So all messages go in
one file, each followed by <FS><CR>, in one run over one connection; what it puts on the
wire (and what the raw topic must hold) is each message with leading/trailing VT/CR
stripped. Because that strip drops the final CR of most messages, a second test sends the
files' exact bytes through python-hl7's MLLPClient (the class mllp_send uses) and checks the
raw topic holds them byte for byte, final terminators and stray bytes included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hl7.client import MLLPClient

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.hl7 import split_batch
from fhirbus.schemas.topics import RAW_HL7, REJECTED_HL7
from fhirbus.settings import Settings

from ..unit.test_mllp_intake import INVALID_OUTCOMES
from .test_hl7_listener_support import (
    ack_code,
    listener_settings,
    msa_control_id,
    running_listener,
    topic_records,
)


def valid_messages(corpus_dir: Path) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted((corpus_dir / "hl7v2").rglob("*.hl7")):
        if path.parent.name != "invalid":
            out += [(path.name, raw) for raw in split_batch(path.read_bytes())]
    return out


def parse_mllp_send_output(stdout: bytes) -> list[bytes]:
    return [a.split(b"\x1c")[0] for a in stdout.split(b"\x0b")[1:]]


def test_corpus_via_mllp_send_is_aa_and_on_the_raw_topic_once(
    settings: Settings, embedded_stack: EmbeddedStack, corpus_dir: Path, tmp_path: Path
) -> None:
    messages = valid_messages(corpus_dir)
    stream = tmp_path / "corpus.mllp"
    stream.write_bytes(b"".join(raw + b"\x1c\r" for _, raw in messages))
    on_wire = [raw.strip(b"\x0b\r") for _, raw in messages]
    mllp_send = Path(sys.executable).with_name("mllp_send")
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        run = subprocess.run(
            [str(mllp_send), "--port", str(listener.port), "--file", str(stream), "localhost"],
            capture_output=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
        acks = parse_mllp_send_output(run.stdout)
        records = topic_records(
            embedded_stack.bootstrap, RAW_HL7, listener.listener_id, len(set(on_wire))
        )
    assert len(acks) == len(messages)
    for (name, _), ack in zip(messages, acks, strict=True):
        assert ack_code(ack) == "AA", name
    # Identical bytes with the same control id are one message sent twice (the corpus has
    # one such pair, in a batch): stored once. Everything else exactly once, in order.
    expected = list(dict.fromkeys(on_wire))
    assert [value for value, _ in records] == expected


def test_exact_bytes_round_trip_through_mllpclient(
    settings: Settings, embedded_stack: EmbeddedStack, corpus_dir: Path, tmp_path: Path
) -> None:
    messages = valid_messages(corpus_dir)
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        with MLLPClient("127.0.0.1", listener.port) as client:
            acks = [client.send_message(raw) for _, raw in messages]
        records = topic_records(
            embedded_stack.bootstrap,
            RAW_HL7,
            listener.listener_id,
            len({raw for _, raw in messages}),
        )
    assert all(ack_code(a) == "AA" for a in acks)
    assert [v for v, _ in records] == list(dict.fromkeys(raw for _, raw in messages))
    headers = records[0][1]
    assert {
        "fhirbus.received_at",
        "fhirbus.peer",
        "hl7.msh9",
        "hl7.msh10",
        "hl7.msh12",
        "hl7.charset",
    } <= headers.keys()


def test_invalid_corpus_is_nakked_and_kept_with_its_reason(
    settings: Settings, embedded_stack: EmbeddedStack, corpus_dir: Path, tmp_path: Path
) -> None:
    files = sorted((corpus_dir / "hl7v2" / "invalid").glob("*.hl7"))
    with running_listener(listener_settings(settings, tmp_path)) as listener:
        with MLLPClient("127.0.0.1", listener.port) as client:
            acks = {p.name: client.send_message(p.read_bytes()) for p in files}
        nakked = [p for p in files if ack_code(acks[p.name]) != "AA"]
        rejected = topic_records(
            embedded_stack.bootstrap, REJECTED_HL7, listener.listener_id, len(nakked)
        )
    expected = INVALID_OUTCOMES
    for path in files:
        code = expected[path.name][0]
        ack = acks[path.name]
        assert ack_code(ack) == code, path.name
        if code != "AA":
            assert b"\rERR" in ack, path.name
    kept = {value: headers for value, headers in rejected}
    assert len(rejected) == len(nakked)
    for path in nakked:
        headers = kept[path.read_bytes()]
        assert headers["fhirbus.reject_reason"].decode() == expected[path.name][1]
        assert headers["fhirbus.reject_code"].decode() == expected[path.name][0]
    wrong_version = acks["rethink-invalid-wrong-version.hl7"]
    assert msa_control_id(wrong_version) == b"MSG001"
