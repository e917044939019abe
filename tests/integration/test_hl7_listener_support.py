"""Helpers for the listener integration tests (no tests here): an in-process listener on
its own event loop thread, a minimal MLLP client, and a raw-topic reader."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from fhirbus.producers.mllp.app import ListenerApp
from fhirbus.producers.mllp.spool import Spool
from fhirbus.settings import Settings


def listener_settings(settings: Settings, tmp_path: Path, **hl7: Any) -> Settings:
    listener_id = hl7.pop("listener_id", f"t-{uuid.uuid4().hex[:8]}")
    conf = {
        **settings.hl7.model_dump(),
        "port": 0,
        "listener_id": listener_id,
        "feed": listener_id,
        "spool_path": tmp_path / f"{listener_id}.sqlite",
        "oversize_dir": tmp_path / "rejected" / listener_id,
        "broker_confirm_timeout_s": 1.0,
        **hl7,
    }
    return settings.model_copy(update={"hl7": type(settings.hl7).model_validate(conf)})


@dataclass
class RunningListener:
    app: ListenerApp
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def listener_id(self) -> str:
        return self.app.conf.listener_id

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.app.listener.metrics.counts)

    def call(self, fn: Any) -> Any:
        """Run fn() on the listener's loop thread and return its result."""
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(10)


async def _call(fn: Any) -> Any:
    return fn()


@contextmanager
def running_listener(settings: Settings, spool: Spool | None = None) -> Iterator[RunningListener]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make() -> tuple[ListenerApp, int]:
        app = ListenerApp(settings, spool=spool)
        _, port = await app.start()
        return app, port

    app, port = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
    try:
        yield RunningListener(app, port, loop)
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(grace_s=5), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class MllpConnection:
    """A blocking MLLP client: send a frame (or raw bytes), read one ACK."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 30) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> bytes:
        self.send_raw(b"\x0b" + payload + b"\x1c\r")
        return self.read_ack()

    def read_ack(self) -> bytes:
        while b"\x1c" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before an ACK arrived")
            self.buf += chunk
        frame, self.buf = self.buf.split(b"\x1c", 1)
        self.buf = self.buf.lstrip(b"\r")
        return frame.lstrip(b"\x0b")

    def read_all_acks(self) -> list[bytes]:
        """After a half-close: every ACK until the listener closes the connection."""
        acks = []
        while True:
            try:
                acks.append(self.read_ack())
            except ConnectionError:
                return acks

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ack_code(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment[:3] == b"MSA":
            return segment[4:6].decode()
    raise AssertionError("no MSA segment in the ACK")


def msa_control_id(ack: bytes) -> bytes:
    for segment in ack.split(b"\r"):
        if segment[:3] == b"MSA":
            return segment.split(segment[3:4])[2]
    raise AssertionError("no MSA segment in the ACK")


def make_message(control_id: str, body: str = "PID|1||123^^^MRN||DOE^JANE") -> bytes:
    return (
        f"MSH|^~\\&|APP|FAC|RCV|RFAC|20240101120000||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        f"EVN|A01|20240101120000\r{body}\r"
    ).encode()


def topic_records(
    bootstrap: str,
    topic: str,
    listener_id: str,
    expected: int,
    timeout: float = 30.0,
    quiet: float = 1.0,
) -> list[tuple[bytes, dict[str, bytes]]]:
    """Records of one listener on a topic, in offset order per partition (one key, one
    partition). Reads until ``expected`` arrived, then ``quiet`` more seconds so a
    duplicate would show up too; returns whatever it has at the deadline."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout
    quiet_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            headers = {k: v for k, v in (msg.headers() or []) if v is not None}
            if headers.get("fhirbus.listener_id") == listener_id.encode():
                found.append((msg.value(), headers))
                if len(found) >= expected and quiet_until is None:
                    quiet_until = time.monotonic() + quiet
    finally:
        consumer.close()
    return found


def wait_for(condition: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
