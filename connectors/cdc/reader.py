"""``fhirbus cdc run``: read a logical replication slot, publish Debezium events, advance.

One batch is: peek whole transactions after the slot's confirmed LSN (peeking does not move
the slot), publish their events, wait until Kafka acknowledged every one, then advance the
slot to the end of the last transaction's commit record. A crash anywhere before the advance
means the batch is read again on restart: every committed change is published at least
once, in commit order, and the slot never moves past a change Kafka does not hold.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg

from fhirbus.connectors.sources import SourceDeclaration
from fhirbus.consumers.backoff import backoff_ms
from fhirbus.settings import ConfigError, Settings

from . import catalog, snapshot
from .changes import DecodeError, Transaction
from .decoders import PgoutputDecoder, Wal2JsonDecoder
from .events import Position, Record, SourceInfo, TableInfo, change_records
from .publish import Publisher, PublishError

log = logging.getLogger(__name__)


@dataclass
class Stats:
    transactions: int = 0
    changes: int = 0
    records: int = 0
    snapshot_rows: int = 0


class CdcReader:
    def __init__(self, source: SourceDeclaration, settings: Settings,
                 publisher: Publisher | None = None) -> None:
        self.source = source
        self.settings = settings
        self.publisher = publisher or Publisher(settings, source.name)
        self.stats = Stats()
        self.tables: dict[str, TableInfo] = {}
        self.plugin = ""
        self._conn: psycopg.Connection | None = None
        self._decoder: Wal2JsonDecoder | PgoutputDecoder = Wal2JsonDecoder()
        self._options: list[str] = []
        self._info = SourceInfo(source.name, "")
        self._prev_commit: int | None = None
        self._idle_mark: tuple[int, float] | None = None

    # -- start -------------------------------------------------------------------------
    def start(self) -> None:
        """Validate tables, pick the plugin, make sure a usable slot exists (snapshotting
        first if the source asks for it). Configuration problems raise ConfigError."""
        conn = self._connection()
        self.tables = {t.qualified: catalog.load_table(conn, t) for t in self.source.tables}
        db = conn.execute("SELECT current_database()").fetchone()
        self._info = SourceInfo(self.source.name, db[0] if db else "")
        existing = catalog.slot_state(conn, self.source.slot)
        self.plugin = self._choose_plugin(conn, existing)
        if self.plugin == "pgoutput":
            catalog.ensure_publication(conn, self.source)
        self._decoder = PgoutputDecoder() if self.plugin == "pgoutput" else Wal2JsonDecoder()
        self._options = catalog.peek_options(self.source, self.plugin)
        self._ensure_slot(conn, existing)
        state = catalog.slot_state(conn, self.source.slot)
        self._prev_commit = state.confirmed_lsn if state else None

    def _choose_plugin(self, conn: psycopg.Connection, existing: catalog.SlotState | None
                       ) -> str:
        wanted = self.settings.cdc.plugin
        if existing is not None:
            if existing.plugin not in ("wal2json", "pgoutput") or \
                    wanted not in ("auto", existing.plugin):
                raise ConfigError(
                    f"replication slot {self.source.slot} uses plugin {existing.plugin!r}, "
                    f"but FHIRBUS_CDC__PLUGIN is {wanted!r}: drop the slot (and let the "
                    "reader snapshot again) or set the plugin to match")
            return existing.plugin
        if wanted == "auto":
            if catalog.plugin_allowed(conn, "wal2json"):
                return "wal2json"
            log.warning("cdc: wal2json is not in this server's output_plugin_libraries; "
                        "using pgoutput", extra={"source": self.source.name})
            return "pgoutput"
        if not catalog.plugin_allowed(conn, wanted):
            raise ConfigError(
                f"the source database does not allow the {wanted} output plugin "
                "(output_plugin_libraries): ask its administrator to allow it, or set "
                "FHIRBUS_CDC__PLUGIN=auto")
        return wanted

    def _ensure_slot(self, conn: psycopg.Connection,
                     existing: catalog.SlotState | None) -> None:
        path = snapshot.state_path(self.settings.state_dir, self.source.name)
        state = snapshot.read_state(path)
        if existing is not None and self.source.snapshot == "initial":
            if state is not None and state.slot == self.source.slot and \
                    state.status in ("done", "skipped"):
                return
            if state is None or state.slot != self.source.slot:
                raise ConfigError(
                    f"replication slot {self.source.slot} exists but {path} has no record of "
                    "a completed snapshot for it: drop the slot to snapshot again "
                    f"(SELECT pg_drop_replication_slot('{self.source.slot}')), or declare "
                    "snapshot: never to stream from it as it is")
            log.warning("cdc: snapshot did not complete; dropping the slot and starting over",
                        extra={"source": self.source.name})
            catalog.drop_slot(conn, self.source.slot)
            existing = None
        if existing is not None:
            return
        if self.source.snapshot == "never":
            lsn = catalog.create_slot(conn, self.source.slot, self.plugin)
            snapshot.write_state(path, snapshot.SnapshotState(self.source.slot, "skipped", lsn))
            return
        done = snapshot.take_snapshot(self.source, list(self.tables.values()), self.plugin,
                                      self._info, self.publisher.publish, path)
        self.stats.snapshot_rows += done.rows

    # -- streaming ---------------------------------------------------------------------
    def step(self) -> int:
        """One batch: returns the number of row changes published (0 when idle)."""
        conn = self._connection()
        flushed = catalog.flush_lsn(conn)
        rows = catalog.peek(conn, self.source.slot, self.plugin, self._options,
                            self.settings.cdc.max_batch_changes)
        if not rows:
            self._idle(conn, flushed)
            return 0
        self._idle_mark = None
        transactions = self._decoder.decode(rows)
        if not transactions:
            return 0
        records = self._records(conn, transactions)
        self.publisher.publish(records)
        catalog.advance_slot(conn, self.source.slot, transactions[-1].end_lsn)
        changes = sum(len(t.changes) for t in transactions)
        self.stats.transactions += len(transactions)
        self.stats.changes += changes
        self.stats.records += len(records)
        return changes

    def _records(self, conn: psycopg.Connection, transactions: list[Transaction]
                 ) -> list[Record]:
        now_ms = int(time.time() * 1000)
        out: list[Record] = []
        for tx in transactions:
            for change in tx.changes:
                table = self._table(conn, change.qualified, change.new, change.old)
                if table is None:
                    continue  # a table of a shared publication that this source ignores
                pos = Position(change.lsn, tx.xid, tx.commit_ts_ms, "false", self._prev_commit)
                decl = self.source.find_table(table.qualified)
                out.extend(change_records(self._info, table, self.source.topic(decl),  # type: ignore[arg-type]
                                          change, pos, now_ms))
            self._prev_commit = tx.end_lsn
        return out

    def _table(self, conn: psycopg.Connection, qualified: str,
               new: dict[str, object] | None, old: dict[str, object] | None
               ) -> TableInfo | None:
        table = self.tables.get(qualified)
        if table is None:
            return None
        known = {c[0] for c in table.columns}
        if any(name not in known for name in (new or old or {})):
            # A column added since start: reload the definition rather than drop the value.
            decl = self.source.find_table(qualified)
            table = self.tables[qualified] = catalog.load_table(conn, decl)  # type: ignore[arg-type]
        return table

    def _idle(self, conn: psycopg.Connection, flushed: int) -> None:
        """Let the slot release WAL written by other tables while ours are quiet. Only a
        position that an earlier empty peek already covered, ``status_interval_s`` ago,
        is used, so any commit record that straddled it has long been flushed and read."""
        now = time.monotonic()
        if self._idle_mark is None:
            self._idle_mark = (flushed, now)
            return
        mark_lsn, since = self._idle_mark
        if now - since < self.settings.cdc.status_interval_s:
            return
        state = catalog.slot_state(conn, self.source.slot)
        if state is not None and (state.confirmed_lsn or 0) < mark_lsn:
            catalog.advance_slot(conn, self.source.slot, mark_lsn)
        self._idle_mark = (flushed, now)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = catalog.connect(self.source.dsn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.publisher.close()


def run(reader: CdcReader, stop: threading.Event, idle_exit_s: float | None = None) -> Stats:
    """Start, then stream until ``stop`` is set (SIGTERM: the batch in flight is published
    and the slot advanced first). Transient failures retry with capped backoff and jitter;
    a decode failure stops without advancing (exit non-zero, nothing lost)."""
    _retrying(reader, stop, reader.start)
    idle_since = time.monotonic()
    poll_s = reader.settings.cdc.poll_interval_ms / 1000
    while not stop.is_set():
        done = _retrying(reader, stop, reader.step)
        if done:
            idle_since = time.monotonic()
            continue
        if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
            break
        stop.wait(poll_s)
    return reader.stats


def _retrying(reader: CdcReader, stop: threading.Event, action: object) -> int:
    attempt = 0
    while True:
        try:
            result = action()  # type: ignore[operator]
            return int(result or 0)
        except (psycopg.OperationalError, PublishError) as exc:
            attempt += 1
            if isinstance(exc, psycopg.OperationalError):
                reader._conn = None  # reconnect on the next try
            delay = backoff_ms(attempt, reader.settings.runtime.backoff_initial_ms,
                               reader.settings.runtime.backoff_max_ms) / 1000
            # The exception type only: a database error message may quote row values.
            log.warning("cdc: transient failure, retrying", extra={
                "source": reader.source.name, "error_type": type(exc).__name__,
                "attempt": attempt, "retry_in_s": round(delay, 3)})
            if stop.wait(delay):
                return 0
        except DecodeError:
            log.error("cdc: slot output not understood; stopping without advancing the slot",
                      extra={"source": reader.source.name})
            raise
        except ConfigError:
            raise  # names settings and tables, never row values: shown as it is
        except Exception as exc:
            raise _stopped(reader, exc) from None


class ReaderStopped(Exception):
    """The reader stopped on an error whose text is withheld (it may quote a row value);
    the slot did not advance, so nothing is lost."""


def _stopped(reader: CdcReader, exc: Exception) -> ReaderStopped:
    """A conversion error ("invalid literal for int(): '<value>'", after a column changed
    type) or a database error can quote row values, and an uncaught exception's text ends
    up in the service's log: the type (and SQLSTATE) at ERROR, the detail at DEBUG only."""
    sqlstate = getattr(exc, "sqlstate", None)
    log.error("cdc: stopping without advancing the slot", extra={
        "source": reader.source.name, "error_type": type(exc).__name__, "sqlstate": sqlstate})
    log.debug("cdc: stopping without advancing the slot", exc_info=exc)
    state = f", SQLSTATE {sqlstate}" if sqlstate else ""
    return ReaderStopped(f"source {reader.source.name}: {type(exc).__name__}{state} "
                         "(detail withheld: may quote row values; FHIRBUS_LOG_LEVEL=DEBUG logs it)")
