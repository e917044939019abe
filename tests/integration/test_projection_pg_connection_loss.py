"""PostgreSQL drops a running projection's connections (a restart, a failover, an admin's
``pg_terminate_backend``): ``fhirbus project ehr|billing`` reconnects and retries the batch,
on the embedded broker against the local PostgreSQL. It must neither exit nor dead-letter,
and its final read model equals an uninterrupted run's, positions at the high watermarks;
also when the connection drops after a COMMIT went through but before its acknowledgement
came back (a proxy swallows it), so the retried batch is one already in. And an unreachable
database at start is one line naming the host, exit 1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from fhirbus.projections import app, testing
from fhirbus.projections.rebuild import watermarks
from fhirbus.projections.store import open_store
from fhirbus.schemas.envelope import CanonicalEvent
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings
from tests.integration.test_projection_sigkill import publish

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
KILLS = 4
# (apply delay per record, batch size): each run lasts several seconds, many batches long.
PACE = {"ehr": (0.002, 200), "billing": (0.02, 20)}


_published: set[int] = set()


@pytest.fixture(scope="module")
def history() -> list[CanonicalEvent]:
    return testing.synthetic_history(250)


@pytest.fixture
def published(settings: Settings, history: list[CanonicalEvent]) -> list[CanonicalEvent]:
    """Published once per module (the stack is module-scoped); every test reads it all."""
    if id(history) not in _published:
        publish(settings, history)
        _published.add(id(history))
    return history


@pytest.fixture
def schemas() -> Iterator[tuple[str, str]]:
    """Two fresh schemas in the shared test database: the disrupted run's and the reference's."""
    if why := testing.pg_available():
        pytest.skip(why)
    with testing.pg_schema_dsn() as a, testing.pg_schema_dsn() as b:
        yield a, b


def _with_app_name(dsn: str, name: str) -> str:
    # Every test shares database "test": the application name is what scopes the kills.
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def _terminate(app_name: str, busy: bool) -> int:
    """Kill the server side of the projection's connections; how many. ``busy``: only
    while one is inside a transaction (mid-batch), polling for that moment."""
    import psycopg

    sql = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE datname = current_database() AND application_name = %s "
           "AND pid <> pg_backend_pid()" + (" AND xact_start IS NOT NULL" if busy else ""))
    deadline = time.monotonic() + 20
    with psycopg.connect(testing.PG_BASE_DSN, autocommit=True) as conn:
        while True:
            killed = sum(1 for (ok,) in conn.execute(sql, (app_name,)).fetchall() if ok)
            if killed or time.monotonic() > deadline:
                return killed
            time.sleep(0.002)


def _dump(dsn: str, name: str) -> dict[str, list]:
    store = open_store(dsn)
    try:
        return testing.dump(store, app.build_projection(name, load_settings(
            projections={"dsn": dsn})))
    finally:
        store.close()


def _spawn(name: str, dsn: str, group: str, repo: Path, log: Path) -> subprocess.Popen:
    delay, batch = PACE[name]
    cmd = [sys.executable, "-m", "fhirbus.cli", "project", name, "--group", group,
           "--apply-delay", str(delay), "--idle-exit", "5"]
    env = {**os.environ, "FHIRBUS_RUNTIME__BATCH_SIZE": str(batch),
           "FHIRBUS_PROJECTIONS__DSN": dsn, "FHIRBUS_LOG_LEVEL": "INFO"}
    with log.open("wb") as err:
        return subprocess.Popen(cmd, cwd=repo, env=env, stderr=err)


def _dead_letters(settings: Settings, name: str) -> int:
    marks = watermarks(settings, [f"dlq.{app.stage(name)}.v1"])
    return sum(high - low for low, high in marks.values())


def _disrupt(proc: subprocess.Popen, dsn: str, name: str, total: int,
             hit: Callable[[int], int]) -> int:
    """Call ``hit(k)`` KILLS times, spread over the projection's run, and after each wait
    until it has committed another batch. Returns the sum of what ``hit`` counted."""
    hits = 0
    for k in range(1, KILLS + 1):
        deadline = time.monotonic() + 90
        while testing.stored_stats(dsn, name).get("events", 0) < total * k // (KILLS + 1):
            assert proc.poll() is None, "the projection exited before the kill"
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.02)
        before = testing.stored_stats(dsn, name).get("events", 0)
        hits += hit(k)
        deadline = time.monotonic() + 60
        while testing.stored_stats(dsn, name).get("events", 0) <= before:
            assert proc.poll() is None, f"the projection exited after kill {k}"
            assert time.monotonic() < deadline, f"no batch committed after kill {k}"
            time.sleep(0.02)
    return hits


def _run_disrupted(proc: subprocess.Popen, dsn: str, name: str, total: int,
                   hit: Callable[[int], int]) -> int:
    try:
        hits = _disrupt(proc, dsn, name, total, hit)
        assert proc.wait(180) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return hits


def _assert_recovered_exactly(settings: Settings, name: str, schemas: tuple[str, str],
                              log: Path, dlq_before: int, group: str) -> None:
    """No traceback or row value logged, nothing dead-lettered, positions at the high
    watermarks, and the read model equal to an uninterrupted run's."""
    disrupted, reference = schemas
    stderr = log.read_text(errors="replace")
    assert "Traceback" not in stderr
    assert "SYN0" not in stderr and "Doe" not in stderr, "row values reached the log"
    assert "batch apply failed" in stderr, "the disruptions must have failed some batch"
    assert _dead_letters(settings, name) == dlq_before, "connection loss dead-lettered records"
    app.run(name, load_settings(projections={"dsn": reference}), group=group,
            idle_exit_s=5, install_signals=False)
    marks = watermarks(settings, sorted(app.build_projection(name, settings).topics))
    final = testing.stored_positions(disrupted, name)
    assert {tp: final.get(tp, low) for tp, (low, _) in marks.items()} == {
        tp: high for tp, (_, high) in marks.items()}
    assert _dump(disrupted, name) == _dump(reference, name)


def _total(settings: Settings, name: str, published: list[CanonicalEvent]) -> int:
    topics = set(app.build_projection(name, settings).topics)
    return sum(1 for e in published if canonical_topic(e.resource_type) in topics)


@pytest.mark.parametrize("name", sorted(PACE))
def test_connections_killed_mid_run_reconnects_and_equals_an_uninterrupted_run(
    settings: Settings, published: list[CanonicalEvent], schemas: tuple[str, str],
    unique: str, repo_root: Path, tmp_path: Path, name: str,
) -> None:
    disrupted = schemas[0]
    app_name = f"fb_connloss_{name}_{unique}"
    total = _total(settings, name, published)
    dlq_before = _dead_letters(settings, name)
    log = tmp_path / "projection.log"
    proc = _spawn(name, _with_app_name(disrupted, app_name), f"{name}-connloss-{unique}",
                  repo_root, log)
    killed = _run_disrupted(proc, disrupted, name, total,
                            lambda k: _terminate(app_name, busy=k % 2 == 0))
    assert killed >= KILLS, "every kill must hit a live connection of the projection"
    _assert_recovered_exactly(settings, name, schemas, log, dlq_before, f"{name}-ref-{unique}")
    # Each event counted once: a killed batch rolled back whole and was applied once on
    # retry (a backend flushes COMMIT's acknowledgement before it acts on the kill).
    assert testing.stored_stats(disrupted, name)["events"] == total


def test_commit_acknowledgement_lost_retry_is_harmless(
    settings: Settings, published: list[CanonicalEvent], schemas: tuple[str, str],
    unique: str, repo_root: Path, tmp_path: Path,
) -> None:
    """The connection drops after the server committed a batch but before the projection
    heard so: it retries a batch that is already in. The read model must not change."""
    name, disrupted = "ehr", schemas[0]
    total = _total(settings, name, published)
    dlq_before = _dead_letters(settings, name)
    log = tmp_path / "projection.log"
    with _CommitAckDropper() as proxy:
        proc = _spawn(name, proxy.dsn(disrupted), f"{name}-ackloss-{unique}", repo_root, log)
        lost = _run_disrupted(proc, disrupted, name, total, lambda _: proxy.drop_next_ack())
    assert lost == KILLS
    _assert_recovered_exactly(settings, name, schemas, log, dlq_before, f"{name}-aref-{unique}")
    stats = testing.stored_stats(disrupted, name)
    # The committed batches really were delivered twice (counted as duplicates, not applied).
    reference = testing.stored_stats(schemas[1], name)
    assert stats.get("duplicates", 0) > 0 and stats["applied"] == reference["applied"]


class _CommitAckDropper:
    """A TCP proxy to the test PostgreSQL that, when armed, swallows the server's reply to
    the next COMMIT and closes both sides: the transaction is in, the client never knows."""

    COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete "COMMIT"

    def __init__(self) -> None:
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._armed = threading.Event()
        self._dropped = threading.Event()
        self._upstream = _pg_host_port()

    def __enter__(self) -> _CommitAckDropper:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listen.close()

    def dsn(self, dsn: str) -> str:
        host, port = self._upstream
        proxied = dsn.replace(f"{host}:{port}", f"127.0.0.1:{self._listen.getsockname()[1]}")
        assert proxied != dsn
        return f"{proxied}&sslmode=disable"  # plaintext, so the proxy sees the protocol

    def drop_next_ack(self) -> int:
        self._dropped.clear()
        self._armed.set()
        assert self._dropped.wait(30), "no COMMIT went through the proxy"
        return 1

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listen.accept()
                server = socket.create_connection(self._upstream)
                threading.Thread(target=self._pump, args=(client, server, False),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(server, client, True),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    if replies and self._armed.is_set() and self.COMMIT_DONE in chunk:
                        self._armed.clear()
                        self._dropped.set()
                        return  # the reply is dropped with the connection
                    dst.sendall(chunk)
        finally:
            # shutdown, not just close: it wakes the other pump's recv and sends the FIN
            # (a close while another thread is in recv leaves the connection open).
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _pg_host_port() -> tuple[str, int]:
    p = urlparse(testing.PG_BASE_DSN)
    return p.hostname or "127.0.0.1", p.port or 5432


def test_database_unreachable_at_start_exits_with_one_line_naming_the_host(
    settings: Settings, repo_root: Path,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FHIRBUS_PROJECTIONS__DSN":
           f"postgresql://fhirbus:hunter2-secret@127.0.0.1:{port}/readmodels"}
    run = subprocess.run([sys.executable, "-m", "fhirbus.cli", "project", "ehr"], cwd=repo_root,
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"cannot connect to PostgreSQL at postgresql://127.0.0.1:{port}/readmodels" in (
        run.stderr)
    assert "Traceback" not in run.stderr and "hunter2" not in run.stderr + run.stdout
