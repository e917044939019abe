"""CDC test support: a private copy of the example lab/billing schema per test, a source
declared on it, and teardown that drops the slot (a leftover slot retains WAL forever)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import orjson
from confluent_kafka import Message

from fhirbus.connectors.sources import EXAMPLES_DIR, SourceDeclaration, TableDeclaration
from fhirbus.projections.testing import PG_BASE_DSN as PG_DSN
from fhirbus.projections.testing import pg_available

# None when the test PostgreSQL answers, else why not (the projections' probe, one place).
pg_unavailable = pg_available
TABLES = ("patients", "lab_results", "charges")


def example_schema_sql(schema: str) -> str:
    text = (EXAMPLES_DIR / "labbilling" / "schema.sql").read_text(encoding="utf-8")
    return text.replace("labbilling.", f"{schema}.").replace(
        "SCHEMA IF NOT EXISTS labbilling", f"SCHEMA IF NOT EXISTS {schema}")


@contextlib.contextmanager
def private_source(snapshot: str = "initial", tables: tuple[str, ...] = TABLES
                   ) -> Iterator[SourceDeclaration]:
    import psycopg

    tag = uuid.uuid4().hex[:10]
    schema, name = f"cdct_{tag}", f"t{tag}"
    source = SourceDeclaration(
        name=name, dsn=PG_DSN, slot=f"fhirbus_t{tag}", publication=f"fhirbus_t{tag}",
        snapshot=snapshot,  # type: ignore[arg-type]
        tables=tuple(TableDeclaration(schema=schema, table=t) for t in tables))  # type: ignore[call-arg]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(example_schema_sql(schema))  # type: ignore[arg-type]
    try:
        yield source
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for _ in range(50):  # a killed reader's backend may hold the slot a moment
                try:
                    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                 "pg_replication_slots WHERE slot_name = %s", (source.slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    import time

                    time.sleep(0.2)
            conn.execute(f"DROP PUBLICATION IF EXISTS {source.publication}")  # type: ignore[arg-type]
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]


def decoded(messages: list[Message]) -> list[tuple[dict, dict | None, Message]]:
    """(key, value or None for a tombstone, message) in the order read."""
    return [(orjson.loads(m.key()), None if m.value() is None else orjson.loads(m.value()), m)
            for m in messages]
