"""`fhirbus hl7 listen --workers 2` as real processes on the embedded cluster: connections
are shared out, a resend in flight on another worker is stored once, a killed worker is
restarted and nothing spooled is lost or reordered, and a restart with fewer workers
drains what all of them spooled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.topics import RAW_HL7
from fhirbus.settings import Settings
from fhirbus.supervisor import status

from .test_hl7_listener_sigkill import listener_process
from .test_hl7_listener_support import (
    MllpConnection,
    ack_code,
    listener_settings,
    make_message,
    topic_records,
    wait_for,
)
from .test_hl7_listener_tls import Issued, client_context, pki  # noqa: F401 (a fixture)

DEPTH = "hl7.mllp.spool_depth"


@pytest.fixture
def stack(embedded_stack: EmbeddedStack) -> Iterator[EmbeddedStack]:
    """The cluster, always brought back up after the test."""
    yield embedded_stack
    embedded_stack.broker_up()


def listener_env(
    tmp_path: Path, listener_id: str, workers: int, confirm_s: float
) -> dict[str, str]:
    return {
        **os.environ,
        "FHIRBUS_HL7__PORT": "0",
        "FHIRBUS_HL7__WORKERS": str(workers),
        "FHIRBUS_HL7__LISTENER_ID": listener_id,
        "FHIRBUS_HL7__FEED": listener_id,
        # As listener_settings names it, so status can be asked about the same file.
        "FHIRBUS_HL7__SPOOL_PATH": str(tmp_path / f"{listener_id}.sqlite"),
        "FHIRBUS_HL7__BROKER_CONFIRM_TIMEOUT_S": str(confirm_s),
        "FHIRBUS_LOG_LEVEL": "WARNING",
    }


def ack_worker(ack: bytes) -> str:
    """Which worker answered: the ACK's own control id (MSH-10) is <time>.<worker>.<n>."""
    msh = ack.split(b"\r", 1)[0].split(b"|")
    return msh[9].decode().split(".")[1]


def worker_pids(parent: int) -> dict[str, int]:
    """Worker index -> pid, from the parent's children and their command lines."""
    found = {}
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in children:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"fhirbus.producers.mllp.worker" in argv:
            found[argv[argv.index(b"fhirbus.producers.mllp.worker") + 1].decode()] = int(pid)
    return found


def thread_policies(pid: int) -> dict[int, int]:
    """Thread id -> scheduling policy, for every thread of a process."""
    policies = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # ended meanwhile
            policies[int(name)] = os.sched_getscheduler(int(name))
    return policies


def alive(pid: int) -> bool:
    """Running, not a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def frame(payload: bytes) -> bytes:
    return b"\x0b" + payload + b"\x1c\r"


def test_a_resend_in_flight_on_another_worker_is_acked_twice_and_published_once(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path
) -> None:
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    probes = [make_message(f"P-{i}") for i in range(4)]
    resent = make_message("INFLIGHT-1")
    with listener_process(listener_env(tmp_path, listener_id, 2, 1.0)) as (proc, port):
        conns = [MllpConnection(port) for _ in range(4)]
        try:
            answered = [ack_worker(c.send(p)) for c, p in zip(conns, probes, strict=True)]
            # Connections go to the worker serving the fewest: two each.
            assert sorted(answered) == ["0", "0", "1", "1"]
            first, second = conns[answered.index("0")], conns[answered.index("1")]
            stack.broker_down()
            started = time.monotonic()
            first.send_raw(frame(resent))  # worker 0 claims it, waits for the broker
            time.sleep(0.3)
            ack_second = second.send(resent)  # the sender gave up and resent elsewhere
            ack_first = first.read_ack()
            waited = time.monotonic() - started
        finally:
            for c in conns:
                c.close()
        stack.broker_up()
        records = topic_records(stack.bootstrap, RAW_HL7, listener_id, 5, timeout=60, quiet=2.0)
        policies = {pid: thread_policies(pid) for pid in worker_pids(proc.pid).values()}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert (ack_code(ack_first), ack_code(ack_second)) == ("AA", "AA")
    assert ack_worker(ack_second) == "1"
    assert waited >= 0.9  # the resend's answer waited for the first copy's (spooled) outcome
    values = [v for v, _ in records]
    assert sorted(values) == sorted([*probes, resent])
    # Helper threads do not preempt the event loop (worker.py, SCHED_BATCH).
    for pid, policy in policies.items():
        assert policy.pop(pid) == os.SCHED_OTHER
        assert set(policy.values()) == {os.SCHED_BATCH}


def test_sigkill_of_workers_with_a_full_spool_loses_and_reorders_nothing(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path
) -> None:
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    sent: list[bytes] = []

    def send_all(conns: list[MllpConnection], prefix: str, count: int) -> None:
        for i in range(count):  # alternating workers, each after the previous ACK
            sent.append(make_message(f"{prefix}-{i}"))
            assert ack_code(conns[i % len(conns)].send(sent[-1])) == "AA"

    stack.broker_down()
    with listener_process(listener_env(tmp_path, listener_id, 2, 0.5)) as (proc, port):
        for victim in ("1", "0"):  # worker 0 also forwards the spool
            conns = [MllpConnection(port) for _ in range(2)]
            send_all(conns, f"before-kill-{victim}", 6)
            killed = worker_pids(proc.pid)[victim]
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda v=victim, k=killed: worker_pids(proc.pid).get(v, k) != k, 30)
            for c in conns:
                c.close()
            time.sleep(1.5)  # the new worker gets ready
        conns = [MllpConnection(port) for _ in range(2)]
        send_all(conns, "after", 4)
        assert ack_code(conns[0].send(sent[3])) == "AA"  # resent after the crashes
        stack.broker_up()
        # The broker is back but the spool is not drained: both workers still spool, so
        # these do not overtake what was acknowledged before them.
        send_all(conns, "after-up", 4)
        records = topic_records(
            stack.bootstrap, RAW_HL7, listener_id, len(sent), timeout=60, quiet=2.0
        )
        for c in conns:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    # Every ACKed message once, in the order the ACKs came back, across both workers.
    assert [v for v, _ in records] == sent


def test_a_restart_with_fewer_workers_drains_what_all_of_them_spooled(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path
) -> None:
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    sent = [make_message(f"S-{i}") for i in range(8)]
    stack.broker_down()
    with listener_process(listener_env(tmp_path, listener_id, 2, 0.5)) as (proc, port):
        conns = [MllpConnection(port) for _ in range(2)]
        assert sorted(ack_worker(c.send(m)) for c, m in zip(conns, sent[:2], strict=True)) == [
            "0",
            "1",
        ]
        for i, msg in enumerate(sent[2:]):
            assert ack_code(conns[i % 2].send(msg)) == "AA"
        for c in conns:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    stack.broker_up()
    # `fhirbus status` reads the one spool file every worker wrote to.
    conf = listener_settings(settings, tmp_path, listener_id=listener_id)
    assert status.collect(conf)["spool"]["depth"] == len(sent)
    with listener_process(listener_env(tmp_path, listener_id, 1, 0.5)) as (proc, port):
        with MllpConnection(port) as conn:
            assert ack_code(conn.send(sent[5])) == "AA"  # a resend: in the loaded window
        records = topic_records(
            stack.bootstrap, RAW_HL7, listener_id, len(sent), timeout=60, quiet=2.0
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert [v for v, _ in records] == sent


def test_workers_stop_when_their_parent_is_killed(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path
) -> None:
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    with listener_process(listener_env(tmp_path, listener_id, 2, 1.0)) as (proc, _):
        pids = list(worker_pids(proc.pid).values())
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # No worker serves on without the parent that owns the port and the claim table.
        wait_for(lambda: not any(alive(p) for p in pids), 30)


def test_mutual_tls_holds_on_every_worker(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path, pki: dict[str, Issued]  # noqa: F811
) -> None:
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    env = {
        **listener_env(tmp_path, listener_id, 2, 1.0),
        "FHIRBUS_HL7__TLS_CERT": str(pki["server"].cert),
        "FHIRBUS_HL7__TLS_KEY": str(pki["server"].key),
        "FHIRBUS_HL7__TLS_CLIENT_CA": str(pki["ca"].cert),
    }
    with listener_process(env) as (proc, port):
        for n in range(2):  # refused in the worker's handshake, and reported closed
            with (
                pytest.raises((ssl.SSLError, ConnectionError, OSError)),
                MllpConnection(port, tls=client_context(pki, "rogue")) as conn,
            ):
                conn.send(make_message(f"MTLS-BAD-{n}"))
        good = [MllpConnection(port, tls=client_context(pki, "client")) for _ in range(2)]
        answered = sorted(ack_worker(c.send(make_message(f"MTLS-{i}"))) for i, c in enumerate(good))
        for c in good:
            c.close()
        records = topic_records(stack.bootstrap, RAW_HL7, listener_id, 2, timeout=30, quiet=1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert answered == ["0", "1"]  # so the parent's connection counts came back to 0
    assert sorted(v for v, _ in records) == [make_message("MTLS-0"), make_message("MTLS-1")]


def test_a_bad_tls_setting_stops_the_parent_with_a_plain_error(
    settings: Settings, tmp_path: Path, pki: dict[str, Issued]  # noqa: F811
) -> None:
    env = {
        **listener_env(tmp_path, "wk-bad-tls", 2, 1.0),
        "FHIRBUS_HL7__TLS_CERT": str(pki["server"].cert),
    }
    fhirbus = Path(sys.executable).with_name("fhirbus")
    done = subprocess.run(
        [str(fhirbus), "hl7", "listen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "FHIRBUS_HL7__TLS_CERT and FHIRBUS_HL7__TLS_KEY must be set together" in done.stderr


def exported_values(text: str, metric: str) -> list[tuple[str, float]]:
    """(process, value) of every data point of ``metric`` in console-exported metrics."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        try:
            doc, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        for rm in doc.get("resource_metrics", []) if isinstance(doc, dict) else []:
            process = str(rm["resource"]["attributes"].get("process.pid", "?"))
            for sm in rm["scope_metrics"]:
                for m in sm["metrics"]:
                    if m["name"] == metric:
                        found += [(process, dp["value"]) for dp in m["data"]["data_points"]]
    return found


def test_the_spool_depth_gauge_counts_the_shared_spool_once(
    settings: Settings, stack: EmbeddedStack, tmp_path: Path
) -> None:
    # Regression: with workers, no sink counted the shared spool and the gauge read 0.
    listener_id = f"wk-{uuid.uuid4().hex[:8]}"
    env = {
        **listener_env(tmp_path, listener_id, 2, 0.5),
        "FHIRBUS_TELEMETRY__EXPORTER": "console",
        "FHIRBUS_TELEMETRY__METRICS_INTERVAL_S": "0.2",
    }
    sent = [make_message(f"DEPTH-{i}") for i in range(6)]
    stack.broker_down()
    err = tmp_path / "stderr.log"
    fhirbus = Path(sys.executable).with_name("fhirbus")
    with err.open("wb") as sink:  # a file, not a pipe: console export never blocks on it
        proc = subprocess.Popen(
            [str(fhirbus), "hl7", "listen"], env=env, stdout=subprocess.PIPE, stderr=sink
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
            conns = [MllpConnection(port) for _ in range(2)]
            for i, msg in enumerate(sent):
                assert ack_code(conns[i % 2].send(msg)) == "AA"
            wait_for(lambda: (6.0 in [v for _, v in exported_values(err.read_text(), DEPTH)]), 30)
            stack.broker_up()
            topic_records(stack.bootstrap, RAW_HL7, listener_id, len(sent), timeout=60, quiet=1.0)
            seen = len(exported_values(err.read_text(), DEPTH))
            wait_for(lambda: len(exported_values(err.read_text(), DEPTH)) > seen + 1, 30)
            for c in conns:
                c.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
    points = exported_values(err.read_text(), DEPTH)
    assert len({process for process, _ in points}) == 1  # worker 0 alone reports it
    values = [v for _, v in points]
    assert max(values) == len(sent) and values[-1] == 0
