"""SIGKILL ``fhirbus cdc run`` while rows are being written, restart it: every committed
change is on Kafka at least once, and per key in LSN (commit) order."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
import yaml

from fhirbus.connectors.sources import SourceDeclaration
from fhirbus.kafka.config import resolve_bootstrap
from fhirbus.settings import Settings
from tests.cdc_helpers import PG_DSN, decoded, pg_unavailable, private_source
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
if (why := pg_unavailable()) is not None:
    pytestmark.append(pytest.mark.skip(reason=why))


def _sources_file(source: SourceDeclaration, path: Path) -> Path:
    data = {"sources": [source.model_dump(by_alias=True, mode="json")]}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _spawn(source: SourceDeclaration, sources: Path, repo: Path, idle_exit: float | None
           ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fhirbus.cli", "cdc", "run", "--source", source.name,
           "--sources", str(sources)]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    env = {**os.environ, "FHIRBUS_CDC__MAX_BATCH_CHANGES": "200"}
    return subprocess.Popen(cmd, cwd=repo, env=env, stderr=subprocess.DEVNULL)


def _confirmed(slot: str) -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SELECT coalesce((confirmed_flush_lsn - '0/0')::bigint, 0) FROM "
                           "pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return int(row[0]) if row else 0


def test_sigkill_while_writing_then_restart_loses_nothing(
    settings: Settings, tmp_path: Path, repo_root: Path
) -> None:
    with private_source(snapshot="never", tables=("patients",)) as source:
        s = source.tables[0].schema_name
        sources = _sources_file(source, tmp_path / "sources.yaml")
        first = _spawn(source, sources, repo_root, idle_exit=None)
        committed: list[tuple[int, int]] = []  # (id, row_version) in commit order
        stop = threading.Event()

        def writer() -> None:
            insert = f"INSERT INTO {s}.patients (id, mrn, family_name) VALUES (%s, %s, 'X')"
            update = f"UPDATE {s}.patients SET row_version = %s WHERE id = %s"
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    n += 1  # version n of ten keys, one transaction
                    with conn.transaction():
                        for i in range(10):
                            if n == 1:
                                conn.execute(insert, (i, f"M{i}"))  # type: ignore[arg-type]
                            else:
                                conn.execute(update, (n, i))  # type: ignore[arg-type]
                    committed.extend((i, n) for i in range(10))

        deadline = time.monotonic() + 30
        while _confirmed(source.slot) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the slot exists: from here every commit is captured
        thread = threading.Thread(target=writer)
        thread.start()
        while len(committed) < 3_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = _confirmed(source.slot)
        time.sleep(0.3)
        stop.set()
        thread.join()

        second = _spawn(source, sources, repo_root, idle_exit=2.0)
        assert second.wait(120) == 0
        assert _confirmed(source.slot) > killed_at, "the restart must resume from the slot"
        topic = source.topic(source.tables[0])
        got = decoded(read_all(resolve_bootstrap(settings), topic, len(committed), 30))
        versions: dict[int, list[int]] = defaultdict(list)
        lsns: dict[int, list[int]] = defaultdict(list)
        for key, value, _msg in sorted(got, key=lambda g: (g[2].partition(), g[2].offset())):
            versions[key["id"]].append(value["after"]["row_version"])
            lsns[key["id"]].append(value["source"]["lsn"])
        for i in range(10):
            expected = [n for k, n in committed if k == i]
            seen = versions[i]
            assert sorted(set(seen)) == expected, f"key {i}: a committed change is missing"
            # At least once, in order: each step is the next version, or a jump back to an
            # earlier one where the restarted reader re-published from the slot's position.
            replays = 0
            for before, after in itertools.pairwise(seen):
                assert after == before + 1 or after <= before, f"key {i}: out of order"
                replays += after <= before
            assert replays <= 1, f"key {i}: one crash, at most one replay point"
            assert seen[-1] == expected[-1]
            assert lsns[i][-1] == max(lsns[i])
