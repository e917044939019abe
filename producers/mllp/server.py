"""The asyncio MLLP server: connections, limits, TLS and the per-connection loop.

Per connection, one frame at a time: the next frame is read only after the ACK for the
previous one was written and drained. That keeps a sender's messages in order and is the
backpressure: while the broker (or spool) is slow, this socket is not read and TCP flow
control holds the sender back, instead of frames piling up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from fhirbus.settings import ConfigError, Hl7ListenerSettings

from .connection import MllpConnection
from .framing import Frame, Spill

log = logging.getLogger(__name__)
Handler = Callable[[Frame, str], Awaitable[bytes | None]]


def tls_context(conf: Hl7ListenerSettings) -> ssl.SSLContext | None:
    """Server TLS context from settings; None for plain TCP. Mutual TLS with a client CA."""
    if conf.tls_cert is None and conf.tls_key is None:
        if conf.tls_client_ca is not None:
            raise ConfigError("FHIRBUS_HL7__TLS_CLIENT_CA needs FHIRBUS_HL7__TLS_CERT and _KEY")
        return None
    if conf.tls_cert is None or conf.tls_key is None:
        raise ConfigError("FHIRBUS_HL7__TLS_CERT and FHIRBUS_HL7__TLS_KEY must be set together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(conf.tls_cert, conf.tls_key)
        if conf.tls_client_ca is not None:
            ctx.load_verify_locations(cafile=conf.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the MLLP TLS certificate/key/CA: {exc}") from None
    return ctx


class MllpServer:
    """Serves connections it accepts itself (``start``) or, in a worker process, sockets the
    parent accepted and passed over (``attach`` then ``adopt``; workers.py)."""

    def __init__(
        self,
        conf: Hl7ListenerSettings,
        handler: Handler,
        *,
        on_closed: Callable[[], None] | None = None,
        spill: Callable[[], Spill] | None = None,
    ) -> None:
        self.conf = conf
        self._handler = handler
        self._spill = spill  # claim checks for oversize units (claimcheck.py)
        self._ssl = tls_context(conf)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], MllpConnection] = {}
        self._busy = 0
        self._idle_event = asyncio.Event()
        self.refused = 0
        # Adopted sockets: the parent's address, the tasks serving them, and who to tell
        # when one is closed (the parent balances connections by their count).
        self._attached: tuple[str, int] | None = None
        self._adopted: set[asyncio.Task[None]] = set()
        self._on_closed = on_closed
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        if self._attached is not None:
            return self._attached
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _new_connection(self) -> MllpConnection:
        return MllpConnection(self.conf.max_message_bytes, self._opened, self._spill)

    async def start(self) -> tuple[str, int]:
        self._closing = False
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection,
            self.conf.host,
            self.conf.port,
            ssl=self._ssl,
        )
        return self.address

    def attach(self, address: tuple[str, int]) -> None:
        """Serve sockets accepted elsewhere, on ``address``, instead of listening."""
        self._attached = address

    def adopt(self, sock: socket.socket) -> None:
        """Serve an accepted connection (TLS handshake here, if configured)."""
        task = asyncio.get_running_loop().create_task(self._adopt(sock))
        self._adopted.add(task)
        task.add_done_callback(self._adopted.discard)

    async def _adopt(self, sock: socket.socket) -> None:
        try:
            if self._attached is None or self._closing:
                raise ConnectionAbortedError("not serving")
            sock.setblocking(False)
            _, conn = await asyncio.get_running_loop().connect_accepted_socket(
                self._new_connection, sock, ssl=self._ssl
            )
            await conn.wait_closed()
        except (OSError, ssl.SSLError) as exc:
            log.info("connection not served", extra={"error": type(exc).__name__})
            sock.close()
        finally:
            if self._on_closed is not None:
                self._on_closed()

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let messages being handled finish (up to grace); drop the rest."""
        if self._attached is not None:
            if not self._closing:
                self._closing = True  # sockets passed from now on are closed at once
                await self._close_adopted(grace_s)
            return
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        await self._drain(grace_s)
        await self._server.wait_closed()
        self._server = None

    async def _close_adopted(self, grace_s: float) -> None:
        await self._drain(grace_s)
        if self._adopted:
            _, late = await asyncio.wait(list(self._adopted), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _drain(self, grace_s: float) -> None:
        if self._busy:
            self._idle_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_event.wait(), grace_s)
        # Closing the transport ends an idle read with EOF, so connections wind down normally.
        for conn in self._connections.values():
            conn.close()
        tasks = list(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _opened(self, conn: MllpConnection) -> None:
        """A new connection (after the TLS handshake, if any): serve it, or refuse it."""
        if self._closing:
            conn.close()  # its handshake finished after close() began
            return
        if len(self._connections) >= self.conf.max_connections:
            self.refused += 1
            log.warning(
                "connection refused: limit reached", extra={"limit": self.conf.max_connections}
            )
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(self._accept(conn))
        self._connections[task] = conn

    async def _accept(self, conn: MllpConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = _peer(conn.transport)
        log.info("connection opened", extra={"peer": peer})
        count = 0
        try:
            count = await self._serve(conn, peer)
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("connection lost", extra={"peer": peer, "error": type(exc).__name__})
        except asyncio.CancelledError:
            # Only close() cancels, after its grace period; end normally so nothing logs a
            # cancelled task's traceback.
            log.info("connection cancelled at shutdown", extra={"peer": peer})
        finally:
            self._connections.pop(task, None)
            conn.close()
            conn.release()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
            log.info("connection closed", extra={"peer": peer, "messages": count})

    async def _serve(self, conn: MllpConnection, peer: str) -> int:
        watch = _IdleWatch(self.conf.idle_timeout_s)
        count = 0
        while True:
            try:
                with watch:
                    frame = await conn.next_frame()
            except asyncio.CancelledError:
                if not watch.fired:
                    raise
                log.info("idle timeout", extra={"peer": peer})
                frame = conn.abandon()
                if frame is not None:
                    await self._answer(frame, peer, conn)
                return count
            if frame is None:
                return count
            await self._answer(frame, peer, conn)
            count += 1

    async def _answer(self, frame: Frame, peer: str, conn: MllpConnection) -> None:
        self._busy += 1
        try:
            ack = await self._handler(frame, peer)
            if ack is not None:
                await conn.write(ack)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle_event.set()


class _IdleWatch:
    """Idle timeout for the reads of one connection, with one timer per timeout period.

    A fresh ``asyncio.timeout`` per frame schedules and cancels a timer for every message,
    which showed up in the listener's profile at thousands of messages per second. Here a
    single timer checks when the current read started and re-arms itself until a read has
    really waited ``timeout_s``; then it cancels the task (``fired`` tells it apart from a
    shutdown).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.fired = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> None:
        self._waiting_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout_s, self._check)

    def __exit__(self, *exc: object) -> None:
        self._waiting_since = None
        if self.fired and self._task is not None:
            self._task.uncancel()

    def _check(self) -> None:
        self._timer = None
        since = self._waiting_since
        if since is None:
            return  # busy handling a frame; the next read arms a new timer
        due = since + self.timeout_s
        if self._loop.time() >= due:
            self.fired = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    info = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return "unknown"
