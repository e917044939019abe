"""Test support shared by the projection test suites: a store per backend (SQLite file, or
a fresh PostgreSQL schema), realistic event histories from the HL7 corpus, and a dump of a
read model for equality checks. Not used by the running platform."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhirbus.schemas.envelope import CanonicalEvent

from . import positions as pos
from .core import Projection
from .migrations import prefix
from .store import PostgresStore, SqliteStore, Store, open_store

PG_BASE_DSN = os.environ.get("FHIRBUS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


def pg_available() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_BASE_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_BASE_DSN} unreachable: {type(exc).__name__}"
    return None


@contextlib.contextmanager
def pg_schema_dsn() -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"fb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_BASE_DSN else "?"
    try:
        yield f"{PG_BASE_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextlib.contextmanager
def backend_dsn(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite://{tmp_path / f'rm-{uuid.uuid4().hex[:8]}.sqlite'}"
    else:
        with pg_schema_dsn() as dsn:
            yield dsn


@contextlib.contextmanager
def open_test_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    with backend_dsn(backend, tmp_path) as dsn:
        store: Store = (
            SqliteStore(dsn[len("sqlite://"):]) if backend == "sqlite" else PostgresStore(dsn)
        )
        try:
            yield store
        finally:
            store.close()


def dump(store: Store, projection: Projection, skip: Sequence[str] = ()) -> dict[str, list]:
    """Every read-model row of the active generation (not positions or counters), sorted."""
    out: dict[str, list[Any]] = {}
    with store.transaction(lock=False) as tx:
        gen = pos.active(tx, projection.name)
        assert gen is not None, "projection not prepared"
        p = prefix(projection.name, gen)
        for table in projection.all_tables:
            if table in ("positions", "stats", *skip):
                continue
            rows = tx.execute(f"SELECT * FROM {p}{table}")
            out[table] = sorted(tuple(_norm(v) for v in row) for row in rows)
    return out


def _norm(value: Any) -> Any:
    return "" if value is None else value


def corpus_events(corpus_dir: Path, families: Sequence[str] = ()) -> list[CanonicalEvent]:
    """Map every mappable corpus message (optionally only some folders) to events."""
    from fhirbus.consumers.canonicalizer import load_site_config
    from fhirbus.consumers.canonicalizer.context import RawRef
    from fhirbus.consumers.canonicalizer.errors import MappingError
    from fhirbus.consumers.canonicalizer.mapper import map_message

    site = load_site_config(None)
    events: list[CanonicalEvent] = []
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file())
    for offset, path in enumerate(files):
        if families and path.parent.name not in families:
            continue
        ref = RawRef("hl7.raw.v1", 0, offset, "default", datetime(2026, 3, 1, tzinfo=UTC))
        try:
            events.extend(map_message(path.read_bytes(), ref, site))
        except MappingError:
            continue
    return events


def map_hl7(text: str, offset: int = 0) -> list[CanonicalEvent]:
    """Map one HL7 message written with newlines between segments."""
    from fhirbus.consumers.canonicalizer import load_site_config
    from fhirbus.consumers.canonicalizer.context import RawRef
    from fhirbus.consumers.canonicalizer.mapper import map_message

    raw = text.strip().replace("\n", "\r").encode()
    ref = RawRef("hl7.raw.v1", 0, offset, "default", datetime(2026, 3, 1, tzinfo=UTC))
    return map_message(raw, ref, load_site_config(None))


def apply_events(sink: Any, events: Sequence[CanonicalEvent], batch: int = 100,
                 topic_offsets: dict[tuple[str, int], int] | None = None) -> dict[str, int]:
    """Project and apply ``events`` in batches through the sink, as the runtime would."""
    from fhirbus.schemas.topics import canonical_topic

    totals = {"applied": 0, "duplicates": 0, "stale": 0}
    offsets = topic_offsets if topic_offsets is not None else {}
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        effects = [e for ev in chunk for e in sink.projection.project(ev)]
        positions = {}
        for ev in chunk:
            tp = (canonical_topic(ev.resource_type), 0)
            offsets[tp] = positions[tp] = offsets.get(tp, 0) + 1
        for k, v in sink.apply_effects(effects, positions, len(chunk)).items():
            totals[k] += v
    return totals


def reset(store: Store, projection: Projection) -> None:
    """Empty every table of the active generation (between hypothesis examples)."""
    with store.transaction() as tx:
        gen = pos.active(tx, projection.name)
        assert gen is not None
        for table in projection.all_tables:
            tx.execute(f"DELETE FROM {prefix(projection.name, gen)}{table}")


def synthetic_history(patients: int, results: int = 2, seed: int = 7) -> list[CanonicalEvent]:
    """A realistic, deterministic history: per patient a visit, results that go preliminary
    -> final (-> corrected), a charge (some corrected, some cancelled), and every tenth
    patient merged into its neighbour."""
    import random

    rnd = random.Random(seed)
    messages: list[str] = []
    for n in range(patients):
        mrn, base = f"SYN{n:06d}", 20260301000000 + (n % 20) * 10000
        messages.append(_adt(mrn, f"V{n}", base, f"A{n}"))
        for r in range(results):
            for step, status in enumerate("PFC"[: rnd.choice((2, 3))]):
                value = f"{rnd.uniform(2, 9):.1f}"
                messages.append(_oru(mrn, f"ORD{n}-{r}", status, base + 100 * (r + 1) + step,
                                     value, f"R{n}-{r}-{step}"))
        messages.append(_dft(mrn, f"TX{n}", base + 3000, f"{10 + n % 90}.50", "CG"))
        if n % 3 == 0:  # a corrected charge, and every sixth patient's is then cancelled
            messages.append(_dft(mrn, f"TX{n}", base + 4000, f"{5 + n % 40}.25", "CG"))
        if n % 6 == 0:
            messages.append(_dft(mrn, f"TX{n}", base + 4500, "0", "X"))
        if n % 10 == 9:
            messages.append(_a40(mrn, f"SYN{n - 1:06d}", base + 5000))
    return [e for i, m in enumerate(messages) for e in map_hl7(m, i)]


def _adt(mrn: str, visit: str, ts: int, ctl: str) -> str:
    return "\n".join([
        f"MSH|^~\\&|PAS|HOSP|EHR|HOSP|{ts}||ADT^A01^ADT_A01|{ctl}|P|2.5.1",
        f"EVN|A01|{ts}",
        f"PID|1||{mrn}^^^HOSP^MR||Doe{mrn[-3:]}^Pat||19800102|F",
        f"PV1|1|I|W^1^1||||||||||||||||{visit}",
    ])


def _oru(mrn: str, order: str, status: str, ts: int, value: str, ctl: str) -> str:
    return "\n".join([
        f"MSH|^~\\&|LIS|LAB|EHR|HOSP|{ts}||ORU^R01^ORU_R01|{ctl}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP^MR||Doe{mrn[-3:]}^Pat||19800102|F",
        f"OBR|1|P{order}|F{order}^LIS|24331-1^Lipid panel^LN|||{ts}|||||||||||||||{ts}|||"
        f"{status}",
        f"OBX|1|NM|2093-3^Cholesterol^LN||{value}|mmol/L^^UCUM|3.0-5.2|N|||{status}",
    ])


def _dft(mrn: str, txn: str, ts: int, amount: str, kind: str) -> str:
    return "\n".join([
        f"MSH|^~\\&|PAS|HOSP|BILL|HOSP|{ts}||DFT^P03|{txn}-{ts}|P|2.5.1",
        f"EVN|P03|{ts}",
        f"PID|1||{mrn}^^^HOSP^MR||Doe{mrn[-3:]}^Pat||19800102|F|||||||||ACC{mrn}",
        f"FT1|1|{txn}||{ts}||{kind}|71045^Xray chest^CPT|||1|{amount}&USD",
    ])


def _a40(survivor: str, retired: str, ts: int) -> str:
    return "\n".join([
        f"MSH|^~\\&|PAS|HOSP|EHR|HOSP|{ts}||ADT^A40^ADT_A39|M{survivor}|P|2.5.1",
        f"EVN|A40|{ts}",
        f"PID|1||{survivor}^^^HOSP^MR||Doe{survivor[-3:]}^Pat||19800102|F",
        f"MRG|{retired}^^^HOSP^MR",
    ])


def stored_stats(dsn: str, name: str, generation: int = 1) -> dict[str, int]:
    """The counters a projection commits with its read model; {} before it migrated."""
    store = open_store(dsn)
    try:
        with store.transaction(lock=False) as tx:
            return pos.load_stats(tx, prefix(name, generation))
    except Exception:
        return {}  # not migrated yet
    finally:
        store.close()


def stored_positions(dsn: str, name: str, generation: int = 1) -> dict[tuple[str, int], int]:
    """The next offsets a projection stored with its read model (what a restart resumes at)."""
    store = open_store(dsn)
    try:
        with store.transaction(lock=False) as tx:
            return pos.load(tx, prefix(name, generation))
    finally:
        store.close()
