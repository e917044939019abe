"""``fhirbus hl7 listen --workers N``: one port, N worker processes, this parent between.

Why processes: every message costs the listener ~150-250 us of Python on its event loop
thread, so one process tops out at one core. Each worker (worker.py) has its own loop,
producer and spool writer; what they must agree on (retransmissions, spool mode) is on a
table in shared memory that this parent creates and every worker locks (claims.py).

The parent listens and accepts; each connection goes to the ready worker serving the
fewest (its descriptor passed over a Unix socket), so load is balanced by connection, and
``max_connections`` holds for the listener as a whole. A connection stays with its worker
for its life: a sender's messages keep their order. The parent does no per-message work.
It loads the retransmission window from the spool at start, restarts a worker that dies
(with backoff; what the dead one had claimed is released first), and on SIGTERM stops
accepting and lets every worker drain. All workers share the one spool file, so
``fhirbus status``, a restart with a different N, or going back to one process all find
every spooled message.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from fhirbus.settings import ConfigError, Settings

from .app import spool_path
from .claims import MAX_WORKERS, ClaimTable
from .server import tls_context
from .spool import Spool

log = logging.getLogger(__name__)
_READY_TIMEOUT_S = 120.0
_RESTART_MIN_S, _RESTART_MAX_S = 0.5, 10.0
_STABLE_S = 30.0  # a worker that ran this long starts its restart backoff afresh
_STOP_EXTRA_S = 20.0  # beyond the workers' own grace, before they are killed
_ACCEPT_PAUSE_S = 1.0  # out of descriptors: accept again after this


class WorkerFailed(RuntimeError):
    """A worker could not start."""


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None  # connections out; "r" and "c" back
        self.ready = asyncio.Event()
        self.connections = 0
        self.started_at = 0.0
        self.failures = 0


class WorkerPool:
    def __init__(self, settings: Settings, sock: socket.socket, table: ClaimTable) -> None:
        self.settings = settings
        self.table = table
        self.refused = 0
        self._sock = sock
        self._address: tuple[str, int] = sock.getsockname()[:2]
        self._workers = [_Worker(i) for i in range(settings.hl7.workers)]
        self._loop = asyncio.get_running_loop()
        self._accepting = False
        self._stopping = False
        self._startup: asyncio.Future[None] = self._loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, settings: Settings) -> WorkerPool:
        """Bind the port; load the spool's backlog and window into a new claim table."""
        conf = settings.hl7
        if conf.workers > MAX_WORKERS:
            raise ConfigError(f"FHIRBUS_HL7__WORKERS: at most {MAX_WORKERS}")
        tls_context(conf)  # a bad TLS setting fails here, said plainly, not as dead workers
        sock = _bind(conf.host, conf.port)
        try:
            table = await asyncio.get_running_loop().run_in_executor(
                None, _load_table, spool_path(settings), conf.duplicate_window_s
            )
        except Exception:
            sock.close()
            raise
        return cls(settings, sock, table)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    async def start(self) -> tuple[str, int]:
        """Start every worker; return once all are ready (raise WorkerFailed if one is not)."""
        ready = asyncio.gather(*(w.ready.wait() for w in self._workers))
        try:
            for worker in self._workers:
                await self._spawn(worker)
            await asyncio.wait_for(_first(ready, self._startup), _READY_TIMEOUT_S)
        except BaseException:
            ready.cancel()
            await self.stop(grace_s=5.0)
            raise
        self._startup.set_result(None)
        self._set_accepting(True)
        return self._address

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, then SIGTERM: each worker finishes its messages and flushes."""
        self._stopping = True
        self._set_accepting(False)
        self._sock.close()
        procs = [w.proc for w in self._workers if w.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            await asyncio.wait(waits, timeout=grace_s + _STOP_EXTRA_S)
            for proc in procs:
                if proc.returncode is None:
                    log.error("listener worker did not stop in time; killed")
                    proc.kill()
            await asyncio.gather(*waits, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("mllp listener stopped", extra={"refused": self.refused})

    # Workers.
    async def _spawn(self, worker: _Worker) -> None:
        generation = self.table.new_generation(worker.index)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = (theirs.fileno(), self.table.fd)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fhirbus.producers.mllp.worker",
                str(worker.index), str(generation), *map(str, fds),
                stdin=asyncio.subprocess.PIPE, pass_fds=fds,
            )  # fmt: skip
        finally:
            theirs.close()
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps((self.settings, self._address)))
        proc.stdin.close()
        ours.setblocking(False)
        worker.proc, worker.sock, worker.started_at = proc, ours, time.monotonic()
        self._loop.add_reader(ours.fileno(), self._on_packet, worker)
        self._keep(self._reap(worker, proc))

    async def _reap(self, worker: _Worker, proc: asyncio.subprocess.Process) -> None:
        """Once the process has ended (nothing of it can still commit): release what it
        had claimed, and start it again unless the listener is stopping."""
        code = await proc.wait()
        self.table.new_generation(worker.index)
        self._down(worker)
        if self._stopping:
            return
        if not self._startup.done():
            self._startup.set_exception(WorkerFailed(f"worker {worker.index} exited ({code})"))
            return
        ran = time.monotonic() - worker.started_at
        worker.failures = 0 if ran >= _STABLE_S else worker.failures + 1
        delay = min(_RESTART_MAX_S, _RESTART_MIN_S * 2 ** max(0, worker.failures - 1))
        log.error(
            "listener worker exited; restarting",
            extra={"worker": worker.index, "returncode": code, "restart_in_s": delay},
        )
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._spawn(worker)

    def _down(self, worker: _Worker) -> None:
        worker.ready.clear()
        worker.connections = 0
        if worker.sock is not None:
            self._loop.remove_reader(worker.sock.fileno())
            worker.sock.close()
            worker.sock = None
        self._set_accepting(self._any_ready())

    def _on_packet(self, worker: _Worker) -> None:
        assert worker.sock is not None
        try:
            data = worker.sock.recv(16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data == b"c":
            worker.connections = max(0, worker.connections - 1)
        elif data == b"r":
            worker.ready.set()
            log.info("listener worker ready", extra={"worker": worker.index})
            if self._startup.done():  # at start, start() opens the door once all are ready
                self._set_accepting(True)
        elif not data:  # the worker is ending; _reap cleans up once it has
            self._loop.remove_reader(worker.sock.fileno())
            worker.ready.clear()
            self._set_accepting(self._any_ready())

    def _any_ready(self) -> bool:
        return any(w.ready.is_set() for w in self._workers)

    # Accepting.
    def _set_accepting(self, on: bool) -> None:
        on = on and not self._stopping
        if on == self._accepting:
            return
        self._accepting = on
        if on:
            self._loop.add_reader(self._sock.fileno(), self._accept)
        else:
            self._loop.remove_reader(self._sock.fileno())

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of descriptors or memory: let some close first
            log.error("accept failed; pausing", extra={"error": type(exc).__name__})
            self._set_accepting(False)
            self._loop.call_later(_ACCEPT_PAUSE_S, lambda: self._set_accepting(self._any_ready()))
            return
        with conn:  # the worker has its own copy once passed
            self._dispatch(conn)

    def _dispatch(self, conn: socket.socket) -> None:
        limit = self.settings.hl7.max_connections
        if sum(w.connections for w in self._workers) >= limit:
            self.refused += 1
            log.warning("connection refused: limit reached", extra={"limit": limit})
            return
        ready = [w for w in self._workers if w.ready.is_set() and w.sock is not None]
        if not ready:
            return
        worker = min(ready, key=lambda w: (w.connections, w.index))
        assert worker.sock is not None
        try:
            socket.send_fds(worker.sock, [b"c"], [conn.fileno()])
        except OSError as exc:
            log.warning(
                "could not pass a connection to a worker; closed",
                extra={"worker": worker.index, "error": type(exc).__name__},
            )
            return
        worker.connections += 1

    def _keep(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _bind(host: str, port: int) -> socket.socket:
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(address[:2], family=family, backlog=100)
    sock.setblocking(False)
    return sock


def _load_table(path: Path, window_s: float) -> ClaimTable:
    """A claim table with the spool's retransmission window, in spool mode if the spool
    holds messages (worker 0 forwards them before anyone publishes directly)."""
    spool = Spool(path)
    spool.start()
    try:
        backlog = int(spool.depth().result())
        seen = spool.seen_since(time.time() - window_s).result()
    finally:
        spool.close()
    table = ClaimTable.create(window_s)
    table.load(seen)
    table.set_spooling(backlog > 0)
    log.info("listener resumed from spool", extra={"backlog": backlog, "seen": len(seen)})
    return table


async def _first(ready: asyncio.Future[object], failed: asyncio.Future[None]) -> None:
    """Wait for ``ready``; raise ``failed``'s error if that comes first."""
    done, _ = await asyncio.wait([ready, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed in done:
        failed.result()
