"""CDC slot reader throughput and latency, against the local PostgreSQL and the embedded broker.

    .venv/bin/python bench/cdc.py [--rows 50000] [--lag-seconds 5]

1. Throughput: single-row inserts committed in transactions of 100 build a backlog in the
   slot; then ``fhirbus cdc run``'s reader drains it (decode, Debezium events, publish, wait
   for every ack, advance the slot). Printed beside the baseline measured on the same
   backlog in the same run: PostgreSQL's own decoding rate through
   ``pg_logical_slot_peek_(binary_)changes`` with no Python and no Kafka, and the ratio.
2. Latency: a steady 500 row changes/s (5-row transactions every 10 ms); per row, COMMIT
   returned -> its Debezium event readable on Kafka, and -> its canonical FHIR Patient
   event readable on ``fhir.patient.v1`` (the canonicalizer running beside it with the
   example mappings), p50/p99.

A private copy of the example schema and its own slot; both are dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhirbus.connectors.cdc import catalog
from fhirbus.connectors.cdc.reader import CdcReader, run
from fhirbus.consumers.canonicalizer import SiteConfig, app
from fhirbus.consumers.canonicalizer.cdc import EXAMPLE_MAPPINGS
from fhirbus.embedded.broker import EmbeddedStack
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.schemas.topics import canonical_topic
from fhirbus.settings import Settings, load_settings
from tests.cdc_helpers import PG_DSN, private_source

CANONICAL = canonical_topic("Patient")


def write_backlog(schema: str, rows: int, start: int = 0) -> None:
    insert = f"INSERT INTO {schema}.patients (id, mrn, family_name) VALUES (%s, %s, 'Doe')"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for base in range(start, start + rows, 100):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(insert, [(i, f"M{i}") for i in range(base, base + 100)])


def baseline_peek(reader: CdcReader) -> tuple[float, int]:
    with catalog.connect(reader.source.dsn) as conn:
        t0 = time.perf_counter()
        rows = catalog.peek(conn, reader.source.slot, reader.plugin, reader._options, 10**9)
        return time.perf_counter() - t0, len(rows)


def throughput(settings: object, rows: int) -> None:
    with private_source(snapshot="never", tables=("patients",)) as source:
        schema = source.tables[0].schema_name
        reader = CdcReader(source, settings)  # type: ignore[arg-type]
        reader.start()
        write_backlog(schema, rows)
        peek_s, peek_rows = baseline_peek(reader)
        t0 = time.perf_counter()
        stats = run(reader, threading.Event(), idle_exit_s=0.2)
        elapsed = time.perf_counter() - t0 - 0.2
        reader.close()
        assert stats.changes == rows, stats
        rate, base = rows / elapsed, rows / peek_s
        print(f"plugin: {reader.plugin}; {rows} single-row inserts in transactions of 100")
        print(f"  baseline, PostgreSQL decoding only (peek, {peek_rows} rows, no Kafka): "
              f"{base:,.0f} changes/s")
        print(f"  fhirbus cdc run (decode + Debezium JSON + publish + acks + advance): "
              f"{rate:,.0f} changes/s  (ratio {rate / base:.2f}; target >= 10,000/s: "
              f"{'met' if rate >= 10_000 else 'MISSED'})")


def latency(settings: Settings, bootstrap: str, seconds: float, mappings: Path) -> None:
    with private_source(snapshot="never", tables=("patients",)) as source:
        schema = source.tables[0].schema_name
        settings = _with_mappings(settings, schema, mappings)
        reader, stop = CdcReader(source, settings), threading.Event()
        reader.start()
        thread = threading.Thread(target=run, args=(reader, stop))
        thread.start()
        topic = source.topic(source.tables[0])
        canon = threading.Thread(target=app.run, args=(settings, SiteConfig()), kwargs={
            "topics": [topic], "group_id": f"bench-{uuid.uuid4().hex}",
            "idle_exit_s": 4.0, "install_signals": False})
        cdc, fhir = _consumer(bootstrap, topic), _consumer(bootstrap, CANONICAL)
        serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
        _warm_up(schema, cdc, canon)
        committed: dict[int, float] = {}
        writer = threading.Thread(target=_steady_writer, args=(schema, seconds, committed))
        writer.start()
        on_kafka: dict[int, float] = {}
        canonical: dict[int, float] = {}
        deadline = time.monotonic() + seconds + 15
        while time.monotonic() < deadline and (writer.is_alive() or
                                                len(canonical) < len(committed)):
            for msg in cdc.consume(500, 0.01):
                if msg.error() is None and msg.value() is not None:
                    on_kafka.setdefault(orjson.loads(msg.key())["id"], time.time())
            for msg in fhir.consume(500, 0.01):
                if msg.error() is None and msg.value() is not None:
                    event = serde.deserialize(msg.value(), CANONICAL)
                    mrn = orjson.loads(event.resource)["identifier"][0]["value"]
                    if mrn[1:].isdigit():  # not the warm-up row
                        canonical.setdefault(int(mrn[1:]), time.time())
        cdc.close()
        fhir.close()
        stop.set()
        thread.join()
        canon.join()
        reader.close()
        print(f"latency at a steady 500 changes/s for {seconds:.0f} s:")
        _print_lags("COMMIT -> Debezium event on Kafka", committed, on_kafka)
        _print_lags("COMMIT -> canonical FHIR event (fhir.patient.v1)", committed, canonical)


def _with_mappings(settings: Settings, schema: str, folder: Path) -> Settings:
    """The example mappings, pointed at the bench's private copy of the schema."""
    folder.mkdir(exist_ok=True)
    for path in EXAMPLE_MAPPINGS.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text().replace("labbilling.", f"{schema}."))
    return settings.model_copy(update={"cdc": settings.cdc.model_copy(
        update={"mappings_dir": folder})})


def _consumer(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "fetch.wait.max.ms": 5, "enable.auto.commit": False})
    # Canonical topics have the catalog's partition count; CDC topics auto-create with 4.
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions or range(4)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    return consumer


def _warm_up(schema: str, cdc: Consumer, canon: threading.Thread) -> None:
    # The first record creates the topics and the canonicalizer's group; not steady state.
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.patients (id, mrn, family_name) "  # type: ignore[arg-type]
                     "VALUES (-1, 'W', 'W')")
    while not any(m.error() is None for m in cdc.consume(10, 0.5)):
        pass
    canon.start()
    time.sleep(3.0)  # group join on the embedded broker takes seconds


def _print_lags(label: str, committed: dict[int, float], arrived: dict[int, float]) -> None:
    lags = sorted((arrived[i] - committed[i]) * 1000 for i in committed if i in arrived)
    if not lags:
        print(f"  {label}: nothing arrived")
        return
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)]
    print(f"  {label}: p50 {statistics.median(lags):.1f} ms, p99 {p99:.1f} ms "
          f"({len(lags)}/{len(committed)} rows)")


def _steady_writer(schema: str, seconds: float, committed: dict[int, float]) -> None:
    insert = f"INSERT INTO {schema}.patients (id, mrn, family_name) VALUES (%s, %s, 'Doe')"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(insert, [(i, f"M{i}") for i in range(n, n + 5)])
            now = time.time()
            for i in range(n, n + 5):
                committed[i] = now
            n += 5
            time.sleep(max(0.0, start + n / 500 - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--lag-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with EmbeddedStack(num_brokers=1, with_registry=True) as stack, \
            tempfile.TemporaryDirectory() as state:
        stack.publish(Path(state))
        settings = load_settings(state_dir=Path(state), log_level="WARNING")
        throughput(settings, args.rows)
        latency(settings, stack.bootstrap, args.lag_seconds, Path(state) / "mappings")


if __name__ == "__main__":
    main()
