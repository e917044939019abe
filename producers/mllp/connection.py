"""One MLLP connection as an ``asyncio.Protocol``: bytes in, frames out, ACKs back.

This replaces a StreamReader/StreamWriter pair plus ``FrameReader``. The streams layer is
general (readuntil, limits, a fresh future and a copy of the bytes per read, drain in a
coroutine chain), and at thousands of messages per second its bookkeeping showed up next
to the real work. Here bytes go straight from the transport into the MLLP decoder, and the
connection's task is woken only when the frame it waits for can be complete.

Flow control is the same as before. The task takes the next frame only after the ACK for
the previous one was written; while it is busy, bytes that keep arriving are buffered up
to ``_HIGH_WATER`` and then the transport stops reading, so TCP holds the sender back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from .framing import Frame, MllpDecoder, Spill

# Stop reading from the socket when this much is buffered beyond what is being handled
# (the old StreamReader paused at twice its 64 KiB limit).
_HIGH_WATER = 128 * 1024


class MllpConnection(asyncio.Protocol):
    def __init__(
        self,
        max_bytes: int,
        on_open: Callable[[MllpConnection], None],
        spill: Callable[[], Spill] | None = None,
    ) -> None:
        self._decoder = MllpDecoder(max_bytes, spill)
        self._on_open = on_open
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None  # the task waiting for bytes
        self._drain: asyncio.Future[None] | None = None  # the task waiting to write
        self._closed = self._loop.create_future()
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._paused_reading = False
        self._paused_writing = False

    # asyncio.Protocol callbacks.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server hands a read/write transport; uvloop's is one without subclassing
        # asyncio.Transport, so this is a cast, not an isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif decoder.buffered > _HIGH_WATER and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake(None)
        # Keep the socket open for the ACK of a last frame sent before the sender's FIN.
        # Over TLS that is not possible (and asyncio warns), as with StreamReaderProtocol.
        assert self.transport is not None
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake(exc)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(exc or ConnectionResetError("Connection lost"))
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # Used by the connection's task.
    async def next_frame(self) -> Frame | None:
        """The next frame; None at a clean end of stream; raises if the connection broke."""
        while True:
            if self._error is not None:
                raise self._error
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            if self._eof:
                return self._decoder.finish()
            if self._paused_reading:
                self._paused_reading = False
                assert self.transport is not None
                self.transport.resume_reading()
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def abandon(self) -> Frame | None:
        """The partial frame left when the connection is given up (idle timeout)."""
        return self._decoder.finish()

    def release(self) -> None:
        """Served: a unit cut off by a broken connection is never reported; drop its file."""
        self._decoder.close()

    async def write(self, data: bytes) -> None:
        """Write and wait until the transport's buffer is below its high-water mark."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        transport.write(data)
        if self._lost:
            raise self._error or ConnectionResetError("Connection lost")
        if self._paused_writing:
            drain = self._drain = self._loop.create_future()
            await drain

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        await self._closed

    def _wake(self, exc: BaseException | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)
