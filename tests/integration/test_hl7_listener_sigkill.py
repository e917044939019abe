"""`fhirbus hl7 listen` as a real process, killed with SIGKILL while its spool holds
messages: after a restart nothing acknowledged is lost, order holds, and a resend of a
message acknowledged before the crash is not published twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.topics import RAW_HL7
from fhirbus.settings import Settings

from .test_hl7_listener_support import MllpConnection, ack_code, make_message, topic_records


@contextmanager
def listener_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    fhirbus = Path(sys.executable).with_name("fhirbus")
    proc = subprocess.Popen(
        [str(fhirbus), "hl7", "listen"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"listener did not start: {line!r} {err.decode()[-2000:]}")
        yield proc, int(line.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_sigkill_with_a_full_spool_loses_nothing(
    settings: Settings, embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    listener_id = f"kill-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FHIRBUS_HL7__PORT": "0",
        "FHIRBUS_HL7__LISTENER_ID": listener_id,
        "FHIRBUS_HL7__FEED": listener_id,
        "FHIRBUS_HL7__SPOOL_PATH": str(tmp_path / "spool.sqlite"),
        "FHIRBUS_HL7__BROKER_CONFIRM_TIMEOUT_S": "0.5",
        "FHIRBUS_LOG_LEVEL": "WARNING",
    }
    first = [make_message(f"K1-{i}") for i in range(10)]
    second = [make_message(f"K2-{i}") for i in range(5)]
    embedded_stack.broker_down()
    try:
        with listener_process(env) as (proc, port):
            with MllpConnection(port) as conn:
                assert [ack_code(conn.send(m)) for m in first] == ["AA"] * 10
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with listener_process(env) as (proc, port):
            with MllpConnection(port) as conn:
                assert [ack_code(conn.send(m)) for m in second] == ["AA"] * 5
                assert ack_code(conn.send(first[3])) == "AA"  # resent after the crash
            embedded_stack.broker_up()
            records = topic_records(
                embedded_stack.bootstrap, RAW_HL7, listener_id, 15, timeout=60, quiet=2.0
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        embedded_stack.broker_up()
    assert [v for v, _ in records] == first + second
