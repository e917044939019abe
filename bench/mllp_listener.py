"""MLLP listener benchmark: sustained accepted msg/s and ACK latency at a steady rate.

Runs the real thing: `fhirbus hl7 listen` as its own process, the embedded 3-broker mock
cluster (acks=all, idempotent producer) in this process, and blocking MLLP senders (one
thread and one connection each; send, wait for the ACK, send the next) here too.

  .venv/bin/python bench/mllp_listener.py [--seconds 10] [--senders 8] [--rate 1000]

Targets (issue 3): >= 5,000 accepted msg/s with 8 senders; p99 ACK latency <= 20 ms at a
steady 1,000 msg/s. Parser speed against hl7apy/python-hl7: bench/hl7_parser.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.schemas.topics import RAW_HL7

CORPUS_MESSAGE = Path(__file__).resolve().parents[2] / "shared/corpus/hl7v2/oru/msft-LAB-ORU-1.hl7"
FALLBACK = (
    b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01^ORU_R01|CTRL|P|2.5.1\r"
    b"PID|1||12345^^^MRN||DOE^JOHN||19800101|M\r"
    b"OBR|1||555|CBC^Complete blood count\r"
    b"OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|12-16|N|||F\r"
)


def template() -> bytes:
    raw = CORPUS_MESSAGE.read_bytes() if CORPUS_MESSAGE.is_file() else FALLBACK
    return raw.replace(b"\n", b"\r")


def with_control_id(raw: bytes, control_id: str) -> bytes:
    msh, rest = raw.split(b"\r", 1)
    fields = msh.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + b"\r" + rest


class Sender:
    """One MLLP connection; send() returns (ack code, seconds)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, payload: bytes) -> tuple[bytes, float]:
        t0 = time.perf_counter()
        self.sock.sendall(b"\x0b" + payload + b"\x1c\r")
        while b"\x1c" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("listener closed the connection")
            self.buf += chunk
        ack, self.buf = self.buf.split(b"\x1c", 1)
        self.buf = self.buf.lstrip(b"\r")
        code = ack.split(b"MSA|", 1)[1][:2]
        return code, time.perf_counter() - t0


def start_listener(state_dir: Path, spool: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "FHIRBUS_STATE_DIR": str(state_dir), "FHIRBUS_LOG_LEVEL": "WARNING"}
    fhirbus = Path(sys.executable).with_name("fhirbus")
    cmd = [str(fhirbus), "hl7", "listen", "--port", "0", "--spool", str(spool)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise SystemExit(f"listener did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def throughput(port: int, senders: int, seconds: float, raw: bytes) -> tuple[int, int, float]:
    """Closed loop: every sender sends as fast as ACKs come back. Returns (AA, other, s)."""
    counts = [[0, 0] for _ in range(senders)]
    stop = time.perf_counter() + seconds

    def run(n: int) -> None:
        sender, i = Sender(port), 0
        while time.perf_counter() < stop:
            code, _ = sender.send(with_control_id(raw, f"T{n}-{i}"))
            counts[n][0 if code == b"AA" else 1] += 1
            i += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed


def steady(port: int, rate: float, seconds: float, raw: bytes, senders: int = 4) -> list[float]:
    """Open loop at a fixed total rate; latency counted from the scheduled send time, so a
    stall shows up in the figures instead of silently lowering the rate."""
    latencies: list[list[float]] = [[] for _ in range(senders)]
    per_sender = rate / senders

    def run(n: int) -> None:
        sender = Sender(port)
        t0 = time.perf_counter()
        for i in range(int(per_sender * seconds)):
            due = t0 + i / per_sender
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sender.send(with_control_id(raw, f"S{n}-{i}"))
            latencies[n].append(time.perf_counter() - due)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(x for lat in latencies for x in lat)


def raw_topic_count(bootstrap: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        meta = c.list_topics(RAW_HL7, timeout=10)
        parts = meta.topics[RAW_HL7].partitions
        return sum(c.get_watermark_offsets(TopicPartition(RAW_HL7, p), 10)[1] for p in parts)
    finally:
        c.close()


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--rate", type=float, default=1000.0)
    args = ap.parse_args()
    raw = template()
    with (
        EmbeddedStack(num_brokers=3, with_registry=False) as stack,
        tempfile.TemporaryDirectory() as tmp,
    ):
        stack.publish(Path(tmp))
        proc, port = start_listener(Path(tmp), Path(tmp) / "spool.sqlite")
        try:
            Sender(port).send(with_control_id(raw, "warmup"))
            before = raw_topic_count(stack.bootstrap)
            ok, bad, elapsed = throughput(port, args.senders, args.seconds, raw)
            published = raw_topic_count(stack.bootstrap) - before
            lat = steady(port, args.rate, args.seconds, raw)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"message: {len(raw)} bytes; broker: embedded mock, 3 brokers, acks=all, idempotent")
    print(
        f"throughput: {args.senders} senders, {elapsed:.1f}s: {ok / elapsed:,.0f} accepted msg/s "
        f"(AA={ok}, other={bad}; raw topic +{published})   target >= 5,000"
    )
    print(
        f"latency at {args.rate:,.0f} msg/s for {args.seconds:.0f}s ({len(lat)} msgs): "
        f"p50={pct(lat, 0.50):.2f} ms  p99={pct(lat, 0.99):.2f} ms  "
        f"max={lat[-1] * 1000:.1f} ms  mean={statistics.fmean(lat) * 1000:.2f} ms"
        "   target p99 <= 20 ms"
    )
    print("parser speed vs hl7apy / python-hl7: .venv/bin/python bench/hl7_parser.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
