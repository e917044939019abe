"""``fhirbus project rebuild NAME``: build a new generation of a read model from the start of
the canonical topics, beside the live one, and swap it in when it has caught up.

The live generation keeps serving queries and its consumer keeps writing throughout. The
swap is one transaction that takes the generation row's lock (PostgreSQL ``FOR UPDATE``
against the live sinks' ``FOR SHARE``; SQLite's write lock) and flips the pointer only if
the new generation has reached every position the live one stored. After it, the live
consumer writes into the new generation from its next batch: what it redelivers there is a
duplicate (a no-op) and positions never move back, so nothing is lost or applied twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTP

from fhirbus.kafka.config import client_config
from fhirbus.settings import Settings

from . import positions as pos
from .app import build_projection, group_id, open_for, runtime_for
from .migrations import drop_generation, prefix
from .store import Store

log = logging.getLogger(__name__)
TopicPartition = tuple[str, int]


@dataclass
class RebuildReport:
    projection: str
    old_generation: int
    new_generation: int
    swapped: bool = False
    events: int = 0
    seconds: float = 0.0
    dropped_old: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        state = "swapped in" if self.swapped else "NOT swapped (kept for a resumed rebuild)"
        return (f"{self.projection}: generation {self.new_generation} {state} after "
                f"{self.events} event(s) in {self.seconds:.1f}s; generation "
                f"{self.old_generation} {'dropped' if self.dropped_old else 'kept'}")


def watermarks(settings: Settings, topics: list[str]) -> dict[TopicPartition, tuple[int, int]]:
    """(low, high) offsets of every partition of ``topics``; a missing topic has none."""
    conf = {**client_config(settings), "group.id": "fhirbus-watermarks",
            "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(timeout=10)
        out: dict[TopicPartition, tuple[int, int]] = {}
        for topic in topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            for part in tmeta.partitions:
                low, high = consumer.get_watermark_offsets(KafkaTP(topic, part), timeout=10)
                out[(topic, part)] = (low, high)
        return out
    finally:
        consumer.close()


def caught_up(stored: dict[TopicPartition, int],
              marks: dict[TopicPartition, tuple[int, int]]) -> bool:
    return all(stored.get(tp, low) >= high for tp, (low, high) in marks.items())


def try_swap(store: Store, name: str, new_gen: int) -> bool:
    with store.transaction() as tx:
        current = pos.lock_for_swap(tx, name)
        if current == new_gen:
            return True
        live = pos.load(tx, prefix(name, current)) if current is not None else {}
        built = pos.load(tx, prefix(name, new_gen))
        if any(built.get(tp, -1) < offset for tp, offset in live.items()):
            return False
        pos.set_active(tx, name, new_gen)
        return True


def _generations(store: Store, name: str) -> tuple[int, int]:
    """(live, to build): resume an unfinished newer generation, else start the next one."""
    live = pos.ensure_active(store, name)
    with store.transaction(lock=False) as tx:
        newest = pos.max_generation(tx, name)
    return live, (newest if newest > live else live + 1)


def rebuild(
    name: str, settings: Settings, *, timeout_s: float = 3600.0, keep_old: bool = False,
    check_every_s: float = 0.5,
) -> RebuildReport:
    store = open_for(name, settings)
    try:
        live, new_gen = _generations(store, name)
        report = RebuildReport(name, live, new_gen)
        runtime, _ = runtime_for(name, settings, store, generation=new_gen,
                                 group=f"{group_id(name)}-rebuild-g{new_gen}")
        runtime.install_signal_handlers()
        projection = build_projection(name, settings)
        watcher = threading.Thread(
            target=_watch, args=(store, settings, name, new_gen, list(projection.topics),
                                 runtime, report, timeout_s, check_every_s), daemon=True)
        started = time.monotonic()
        watcher.start()
        report.events = runtime.run()
        watcher.join(timeout=5)
        report.seconds = time.monotonic() - started
        if report.swapped and not keep_old:
            drop_generation(store, name, live, projection.all_tables)
            report.dropped_old = True
        return report
    finally:
        store.close()


def _watch(store: Store, settings: Settings, name: str, new_gen: int, topics: list[str],
           runtime: object, report: RebuildReport, timeout_s: float, every_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(every_s)
        with store.transaction(lock=False) as tx:
            built = pos.load(tx, prefix(name, new_gen))
        if caught_up(built, watermarks(settings, topics)) and try_swap(store, name, new_gen):
            report.swapped = True
            log.info("rebuild swapped", extra={"projection": name, "generation": new_gen})
            break
    else:
        report.notes.append(f"not caught up within {timeout_s:.0f}s")
    runtime.stop()  # type: ignore[attr-defined]
