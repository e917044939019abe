"""``fhirbus project rebuild ehr`` while the live projection keeps consuming and the old
generation keeps answering queries: after the swap the read model equals a clean run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fhirbus.projections import app, ehr, queries, testing
from fhirbus.projections import positions as pos
from fhirbus.projections.migrations import prefix
from fhirbus.projections.rebuild import rebuild
from fhirbus.projections.store import open_store
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings
from tests.integration.test_projection_sigkill import publish

pytestmark = pytest.mark.slow
# Topics live as long as the module's stack: every test reads what earlier ones published.
PUBLISHED: set[tuple[str, str, int, str]] = set()


def _publish(settings: Settings, events: list) -> int:
    publish(settings, events)
    topics = set(ehr.build().topics)  # the EHR model holds only its own topics' events
    PUBLISHED.update((e.resource_type, e.resource_id, e.resource_version, e.event_id)
                     for e in events if canonical_topic(e.resource_type) in topics)
    return len(PUBLISHED)


def _state(dsn: str) -> tuple[int | None, int]:
    store = open_store(dsn)
    try:
        with store.transaction(lock=False) as tx:
            gen = pos.active(tx, "ehr")
            if gen is None:
                return None, 0
            return gen, tx.execute(f"SELECT count(*) FROM {prefix('ehr', gen)}history")[0][0]
    except Exception:
        return None, 0
    finally:
        store.close()


def _wait_rows(dsn: str, rows: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _state(dsn)[1] < rows and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(dsn)[1] == rows


@pytest.mark.parametrize("backend", testing.BACKENDS)
def test_rebuild_swaps_in_a_caught_up_generation_while_the_old_one_serves(
    settings: Settings, backend: str, tmp_path: Path, unique: str, repo_root: Path
) -> None:
    if backend == "postgresql" and (why := testing.pg_available()):
        pytest.skip(why)
    everything = testing.synthetic_history(160, seed=int(unique[:4], 16))
    cut = len(everything) * 2 // 3
    # Unique resources per test: the stack (and its topics) are shared in this module.
    before, after = everything[:cut], everything[cut:]
    with testing.backend_dsn(backend, tmp_path) as live_dsn, \
            testing.backend_dsn(backend, tmp_path) as ref_dsn:
        published_before = _publish(settings, before)
        env = {**os.environ, "FHIRBUS_PROJECTIONS__DSN": live_dsn}
        log = (tmp_path / "live.log").open("wb")
        live = subprocess.Popen(
            [sys.executable, "-m", "fhirbus.cli", "project", "ehr", "--group",
             f"ehr-live-{unique}"], cwd=repo_root, env=env, stderr=log)
        try:
            time.sleep(1)
            patient = before[0].resource_id
            serving: list[int] = []
            stop = threading.Event()

            def traffic() -> None:
                _publish(settings, after)  # new events arrive during the rebuild
                store = open_store(live_dsn)
                try:
                    while not stop.is_set():
                        chart = queries.patient_chart(store, patient)
                        serving.append(len(chart["results"]))
                        time.sleep(0.05)
                finally:
                    store.close()

            _wait_rows(live_dsn, published_before)
            worker = threading.Thread(target=traffic)
            worker.start()
            report = rebuild("ehr", load_settings(projections={"dsn": live_dsn}),
                             timeout_s=120, check_every_s=0.2)
            stop.set()
            worker.join(30)
            assert report.swapped and report.new_generation == 2, report.summary()
            assert serving and min(serving) > 0, "queries answered throughout"
            _wait_rows(live_dsn, len(PUBLISHED))
        finally:
            live.send_signal(signal.SIGTERM)
            live.wait(30)
        app.run("ehr", load_settings(projections={"dsn": ref_dsn}), group=f"ehr-ref-{unique}",
                idle_exit_s=5, install_signals=False)
        stores = [open_store(d) for d in (live_dsn, ref_dsn)]
        try:
            live_dump, ref_dump = (testing.dump(s, ehr.build()) for s in stores)
            with stores[0].transaction(lock=False) as tx:
                assert pos.active(tx, "ehr") == 2
                old = tx.execute("SELECT count(*) FROM fhirbus_schema_migrations "
                                 "WHERE projection = 'ehr' AND generation = 1")[0][0]
            assert old == 0, "the old generation is dropped after the swap"
        finally:
            for s in stores:
                s.close()
        assert live_dump == ref_dump


def test_the_rebuild_command_swaps_and_says_so(
    settings: Settings, tmp_path: Path, unique: str, repo_root: Path
) -> None:
    """`fhirbus project rebuild ehr` as an operator runs it: a new generation from the
    canonical topics, swapped in, the same rows as the one it replaced."""
    _publish(settings, testing.synthetic_history(40, seed=int(unique[:4], 16) + 1))
    dsn = f"sqlite://{tmp_path / 'ehr.sqlite'}"
    env = {**os.environ, "FHIRBUS_PROJECTIONS__DSN": dsn}
    cli = [sys.executable, "-m", "fhirbus.cli", "project"]
    first = subprocess.run([*cli, "ehr", "--group", f"ehr-cli-{unique}", "--idle-exit", "3"],
                           cwd=repo_root, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-2000:]
    store = open_store(dsn)
    try:
        before = testing.dump(store, ehr.build())
    finally:
        store.close()
    assert sum(map(len, before.values())) > 100, "the first run projected the history"
    done = subprocess.run([*cli, "rebuild", "ehr", "--timeout", "120"], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "generation 2 swapped in" in done.stdout and "generation 1 dropped" in done.stdout
    assert _state(dsn)[0] == 2
    store = open_store(dsn)
    try:
        assert testing.dump(store, ehr.build()) == before
    finally:
        store.close()
