"""One worker process of ``fhirbus hl7 listen --workers N``; started by workers.py only.

The command line gives its index, generation and two inherited descriptors: the claim
table (claims.py) and a Unix packet socket to the parent, which carries accepted
connections in (one descriptor per packet) and ``r`` (ready) and ``c`` (a connection
closed) out. Settings and the listening address come on stdin. The worker serves until
SIGTERM or until the parent is gone (its socket closes): the parent owns the port and
restarts workers, so a worker without it stops.

The worker's helper threads (librdkafka's, the delivery poller, the spool writer) run
under SCHED_BATCH (``_yield_to_the_loop``). With N workers on N cores every core runs an
event loop, and each message wakes helper threads several times; under the default policy
each wake-up preempted a loop at once (measured: ~2.8 involuntary switches per message
with 2 workers, 0.07 with one process), and the switches and cold caches made every
message dearer. SCHED_BATCH only drops that wake-up preemption: the helpers keep their
fair share and run when a loop waits (each does, every iteration) or at the next tick.
On the 2-core machine that raised 2 workers from ~3,000 to ~3,800 msg/s, with the p99
ACK latency at 1,000 msg/s unchanged (~4 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading

from fhirbus import telemetry
from fhirbus.settings import Settings

from .app import ListenerApp
from .claims import ClaimTable
from .server import MllpServer
from .tickets import WorkerClaims

log = logging.getLogger("fhirbus.producers.mllp.worker")  # not __main__ under -m
# librdkafka starts threads as it meets brokers, and a replaced producer brings new ones:
# the helpers' policy is set shortly after start and again now and then.
_FIRST_YIELD_S, _YIELD_EVERY_S = 1.0, 15.0


def main(argv: list[str]) -> int:
    index, generation, parent_fd, table_fd = (int(a) for a in argv[:4])
    settings, address = pickle.load(sys.stdin.buffer)  # from our own parent only
    # Ctrl-C reaches the whole process group; the parent decides how the workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    telemetry.configure(settings, service="fhirbus-hl7-listener")
    table = ClaimTable(table_fd, settings.hl7.duplicate_window_s, index, generation)
    parent = socket.socket(fileno=parent_fd)
    return asyncio.run(_serve(settings, table, parent, address))


async def _serve(
    settings: Settings, table: ClaimTable, parent: socket.socket, address: tuple[str, int]
) -> int:
    loop = asyncio.get_running_loop()
    parent.setblocking(False)
    app = ListenerApp(
        settings, claims=WorkerClaims(table), on_closed=lambda: _tell(parent, b"c")
    )
    await app.start_worker(address)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(parent.fileno(), _receive, parent, app.server, stop)
    _tell(parent, b"r")
    loop.call_later(_FIRST_YIELD_S, _yield_to_the_loop, loop)
    log.info("mllp worker started", extra={"worker": table.worker})
    await stop.wait()
    loop.remove_reader(parent.fileno())
    await app.stop()
    parent.close()
    table.close()
    log.info("mllp worker stopped", extra={"worker": table.worker})
    return 0


def _receive(parent: socket.socket, server: MllpServer, stop: asyncio.Event) -> None:
    """Accepted connections from the parent; its end closing means it is gone."""
    try:
        data, fds, _, _ = socket.recv_fds(parent, 16, 4)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data, fds = b"", []
    for fd in fds:
        server.adopt(socket.socket(fileno=fd))
    if not data and not fds:
        if not stop.is_set():
            log.error("listener parent is gone; worker stopping")
        asyncio.get_running_loop().remove_reader(parent.fileno())
        stop.set()


def _yield_to_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Every thread but this one (the event loop's) under SCHED_BATCH (see above)."""
    me = threading.get_native_id()
    for name in os.listdir("/proc/self/task"):
        if int(name) != me:
            with contextlib.suppress(OSError):  # a thread that has just ended
                os.sched_setscheduler(int(name), os.SCHED_BATCH, os.sched_param(0))
    loop.call_later(_YIELD_EVERY_S, _yield_to_the_loop, loop)


def _tell(parent: socket.socket, what: bytes) -> None:
    # A few bytes on a socket the parent drains: a full buffer would only skew balancing.
    with contextlib.suppress(OSError):
        parent.send(what)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
