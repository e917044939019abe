"""A consumer process for crash tests: each event credits an account in SQLite.

The sink writes the credit, an applied-event marker and the (topic, partition) position in
one transaction, the pattern every projection follows, so SIGKILL at any instant can only
cause redelivery, never a double credit or a lost one.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Sequence

import orjson

from fhirbus.consumers.records import Record
from fhirbus.consumers.runtime import ConsumerRuntime, ConsumerSpec
from fhirbus.settings import load_settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (event_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS balance (account TEXT PRIMARY KEY, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (topic TEXT, part INTEGER, next_offset INTEGER,
                                      PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS deliveries (n INTEGER);
"""


class LedgerSink:
    def __init__(self, path: str, slow_s: float) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.slow_s = slow_s

    def apply(self, records: Sequence[Record], positions: dict[tuple[str, int], int]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        for record in records:
            for event in record.effects:
                self._credit(event)
        time.sleep(self.slow_s)  # widen the window in which SIGKILL lands mid-batch
        self.db.executemany(
            "INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
            [(t, p, o) for (t, p), o in positions.items()],
        )
        self.db.execute("INSERT INTO deliveries VALUES (?)", (len(records),))
        self.db.execute("COMMIT")

    def _credit(self, event: dict) -> None:
        cur = self.db.execute("INSERT OR IGNORE INTO applied VALUES (?)", (event["id"],))
        if cur.rowcount:  # first time this event is seen: the effect happens once
            self.db.execute(
                "INSERT INTO balance VALUES (?, ?) ON CONFLICT(account) "
                "DO UPDATE SET amount = amount + excluded.amount",
                (event["account"], event["amount"]),
            )

    def stored_positions(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        rows = self.db.execute("SELECT topic, part, next_offset FROM positions").fetchall()
        wanted = set(partitions)
        return {(t, p): o for t, p, o in rows if (t, p) in wanted}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--idle-exit", type=float, default=None)
    args = parser.parse_args(argv)
    spec = ConsumerSpec(
        stage="ledger", group_id=args.group, topics=[args.topic],
        handler=lambda r: [r.value], decode=lambda raw, _t: orjson.loads(raw),
        dead_letter_topic=f"{args.topic}.dlq",
    )
    runtime = ConsumerRuntime(spec, load_settings(), sink=LedgerSink(args.db, args.slow))
    runtime.install_signal_handlers()
    runtime.run(idle_exit_s=args.idle_exit)
    return 0




if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
