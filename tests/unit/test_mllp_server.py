"""The socket layer with a stand-in handler: order, one frame at a time, limits, EOF."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fhirbus.producers.mllp.framing import TRUNCATED, Frame, encode_frame
from fhirbus.producers.mllp.server import MllpServer
from fhirbus.settings import Hl7ListenerSettings


def conf(**kw: Any) -> Hl7ListenerSettings:
    return Hl7ListenerSettings(port=0, **kw)


async def with_server(
    settings: Hl7ListenerSettings,
    handler: Callable[[Frame, str], Awaitable[bytes | None]],
    body: Callable[[int], Awaitable[None]],
) -> None:
    server = MllpServer(settings, handler)
    _, port = await server.start()
    try:
        await asyncio.wait_for(body(port), 20)
    finally:
        await server.close(grace_s=1)


async def read_frames(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    return [(await reader.readuntil(b"\x1c\r"))[1:-2] for _ in range(n)]


def test_one_frame_at_a_time_in_order() -> None:
    seen: list[bytes] = []
    release = asyncio.Event

    async def run() -> None:
        gate = release()

        async def handler(frame: Frame, peer: str) -> bytes:
            seen.append(frame.payload)
            await gate.wait()
            return encode_frame(b"ACK:" + frame.payload)

        async def body(port: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"".join(encode_frame(b"m%d" % i) for i in range(3)))
            await writer.drain()
            await asyncio.sleep(0.2)
            # Pipelined frames wait: the next is read only after this ACK is written.
            assert seen == [b"m0"]
            gate.set()
            assert await read_frames(reader, 3) == [b"ACK:m0", b"ACK:m1", b"ACK:m2"]
            assert seen == [b"m0", b"m1", b"m2"]
            writer.close()

        await with_server(conf(), handler, body)

    asyncio.run(run())


def test_connection_limit_refuses_extra_connections() -> None:
    async def handler(frame: Frame, peer: str) -> bytes:
        return encode_frame(b"ok")

    async def body(port: int) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in held:  # both are served
            writer.write(encode_frame(b"x"))
            assert await read_frames(reader, 1) == [b"ok"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""  # closed at once
        for _, w in held:
            w.close()

    asyncio.run(with_server(conf(max_connections=2), handler, body))


def test_idle_timeout_nakks_the_partial_frame_and_closes() -> None:
    frames: list[Frame] = []

    async def handler(frame: Frame, peer: str) -> bytes:
        frames.append(frame)
        return encode_frame(b"nak")

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bMSH|half")
        await writer.drain()
        assert await read_frames(reader, 1) == [b"nak"]
        assert await reader.read() == b""
        assert frames == [Frame(b"MSH|half", TRUNCATED, 8)]

    asyncio.run(with_server(conf(idle_timeout_s=0.3), handler, body))


def test_no_reply_when_handler_returns_none_and_eof_ends_cleanly() -> None:
    async def handler(frame: Frame, peer: str) -> bytes | None:
        return None if frame.payload == b"quiet" else encode_frame(b"ack")

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_frame(b"quiet") + encode_frame(b"loud"))
        writer.write_eof()
        assert await read_frames(reader, 1) == [b"ack"]
        assert await reader.read() == b""

    asyncio.run(with_server(conf(), handler, body))
