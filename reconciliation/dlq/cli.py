"""``fhirbus dlq list|show|replay|purge|history``: inspect, replay and purge dead letters.

Nothing here prints a patient value unless ``show --show-phi`` asks for it; reasons are
shown only in the PHI-free form the stages write (see records.safe_reason).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from fhirbus.settings import Settings

DEFAULT_TOPIC = "dlq.canonicalizer.v1"


def register(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq", help="inspect, replay and purge dead-letter records",
        description="Reads dlq.<stage>.v1 (or hl7.rejected.v1) without joining a consumer "
        "group. Replays and purges are recorded in the audit store "
        "(<state dir>/dlq/audit.sqlite).",
    )
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    _register_reading(dsub)
    _register_changing(dsub)


def _register_reading(dsub: Any) -> None:
    ls = dsub.add_parser("list", help="list dead letters matching a filter (no PHI)")
    _filters(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--include-purged", action="store_true", help="also show purged records")
    ls.set_defaults(func=_list)

    show = dsub.add_parser("show", help="decode one dead letter and its error context")
    show.add_argument("record", metavar="ID", help="PARTITION:OFFSET or TOPIC:PARTITION:OFFSET")
    show.add_argument("--topic", default=DEFAULT_TOPIC, help="DLQ topic or stage name")
    show.add_argument("--show-phi", action="store_true",
                      help="show patient values (authorized users only; default: masked)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--audit-db", type=Path, help=argparse.SUPPRESS)
    show.set_defaults(func=_show)

    hist = dsub.add_parser("history", help="the audit trail of replays and purges")
    hist.add_argument("--topic", help="only actions on this DLQ topic or stage")
    hist.add_argument("--limit", type=int, default=50)
    hist.add_argument("--audit-db", type=Path, help=argparse.SUPPRESS)
    hist.set_defaults(func=_history)


def _register_changing(dsub: Any) -> None:
    rp = dsub.add_parser("replay", help="send selected dead letters back to their topic")
    _filters(rp)
    rp.add_argument("--to", help="send to this topic instead of each record's original topic")
    rp.add_argument("--force", action="store_true", help="replay records already replayed")
    rp.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    rp.add_argument("--actor", help="who replays, for the audit record (default: OS user)")
    rp.set_defaults(func=_replay)

    pg = dsub.add_parser("purge", help="mark selected dead letters purged (audited)",
                         description="Kafka cannot delete single records: purged records are "
                         "hidden from list and never replayed; --delete-records also asks the "
                         "broker to delete the purged prefix of each partition.")
    _filters(pg)
    pg.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    pg.add_argument("--delete-records", action="store_true",
                    help="also DeleteRecords up to the first record that is not purged")
    pg.add_argument("--actor", help="who purges, for the audit record (default: OS user)")
    pg.set_defaults(func=_purge)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", default=DEFAULT_TOPIC,
                        help=f"DLQ topic or stage name (default {DEFAULT_TOPIC})")
    parser.add_argument("--group", help="consumer group that dead-lettered the record")
    parser.add_argument("--error-class", help="permanent, exhausted, deserialization, rejected")
    parser.add_argument("--error-type", help="exception type, e.g. InvalidFhirResource")
    parser.add_argument("--original-topic", help="topic the record was first read from")
    parser.add_argument("--source-system", help="HL7 MSH-3 (or MSH-3/MSH-4); CDC source name")
    parser.add_argument("--message-type", help="ORU, ORU^R01, an event type, a CDC table")
    parser.add_argument("--since", help="ISO-8601 time or an age such as 2h, 7d")
    parser.add_argument("--until", help="ISO-8601 time or an age such as 30m")
    parser.add_argument("--id", dest="ids", action="append", default=[],
                        help="PARTITION:OFFSET (repeatable)")
    parser.add_argument("--audit-db", type=Path, help=argparse.SUPPRESS)


def _build_filter(args: argparse.Namespace) -> tuple[str, Any]:
    from .filters import DlqFilter, parse_id, parse_time, resolve_topic

    topic = resolve_topic(args.topic)
    filt = DlqFilter(
        consumer_group=args.group, error_class=args.error_class, error_type=args.error_type,
        original_topic=args.original_topic, source_system=args.source_system,
        message_type=args.message_type,
        since=parse_time(args.since, "--since") if args.since else None,
        until=parse_time(args.until, "--until") if args.until else None,
        ids=frozenset(parse_id(i, topic) for i in args.ids),
    )
    return topic, filt


def _store(args: argparse.Namespace, settings: Settings) -> Any:
    from .audit import AuditStore, default_path

    return AuditStore(args.audit_db or default_path(settings.state_dir))


def _guarded(func: Any) -> Any:
    """Filter and Kafka errors become one clear line and exit status 2/1, not a traceback."""
    def wrapper(args: argparse.Namespace, settings: Settings) -> int:
        from .filters import FilterError
        from .kafka_io import DlqIoError

        try:
            return int(func(args, settings))
        except FilterError as exc:
            print(f"fhirbus dlq: {exc}", file=sys.stderr)
            return 2
        except DlqIoError as exc:
            print(f"fhirbus dlq: {exc}", file=sys.stderr)
            return 1
    wrapper.__name__ = func.__name__
    return wrapper


@_guarded
def _list(args: argparse.Namespace, settings: Settings) -> int:
    from . import kafka_io, ops

    topic, filt = _build_filter(args)
    with _store(args, settings) as store:
        purged, replayed = store.purged(topic), store.replayed(topic)
        scanned = ops.enrich(kafka_io.scan(settings, topic), _avro_decoder(settings))
        records = ops.select(scanned, filt, purged, args.include_purged)
    rows = [_row(r, replayed, purged) for r in records]
    if args.json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
    else:
        print(_table(rows))
        print(f"{len(rows)} record(s) in {topic}", file=sys.stderr)
    return 0


def _row(record: Any, replayed: set[tuple[int, int]], purged: set[tuple[int, int]]) -> dict:
    position = (record.partition, record.offset)
    state = "purged" if position in purged else ("replayed" if position in replayed else "")
    return {"id": f"{record.partition}:{record.offset}", "topic": record.dlq_topic,
            "failed_at": record.failed_at.isoformat(timespec="seconds"), "stage": record.stage,
            "error_class": record.error_class, "message_type": record.message_type,
            "source_system": record.source_system, "original_topic": record.original_topic,
            "reason": record.reason, "replay_of": record.replay_of, "state": state}


def _table(rows: list[dict]) -> str:
    cols = ("id", "failed_at", "stage", "error_class", "message_type", "source_system",
            "state", "reason")
    widths = {c: max([len(c)] + [len(str(r[c] or "")) for r in rows]) for c in cols[:-1]}
    head = "  ".join(c.upper().ljust(widths[c]) for c in cols[:-1]) + "  REASON"
    lines = [head]
    for r in rows:
        lines.append("  ".join(str(r[c] or "").ljust(widths[c]) for c in cols[:-1])
                     + "  " + r["reason"])
    return "\n".join(lines)


@_guarded
def _show(args: argparse.Namespace, settings: Settings) -> int:
    from . import decode, kafka_io
    from .filters import parse_id, resolve_topic

    topic = resolve_topic(args.topic)
    _, partition, offset = parse_id(args.record, topic)
    found = next((r for r in kafka_io.scan(settings, topic)
                  if (r.partition, r.offset) == (partition, offset)), None)
    if found is None:
        print(f"fhirbus dlq: no record {partition}:{offset} in {topic} (deleted by retention, "
              "or a wrong id: `fhirbus dlq list` prints the ids)", file=sys.stderr)
        return 1
    shown = decode.show(found, show_phi=args.show_phi, avro=_avro_decoder(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(decode.render(shown))
    return 0


def _avro_decoder(settings: Settings) -> Any:
    """Canonical events need the schema registry; without one, show says it cannot decode."""
    from fhirbus.kafka.config import NoBrokerError, resolve_registry_url
    from fhirbus.schemas.serde import EnvelopeSerde, registry_client

    try:
        serde = EnvelopeSerde(registry_client(resolve_registry_url(settings)))
    except NoBrokerError:
        return None
    return serde.deserialize


@_guarded
def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from . import ops

    topic, filt = _build_filter(args)
    with _store(args, settings) as store:
        report = ops.replay(settings, store, topic, filt, actor=ops.actor_name(args.actor),
                            to=args.to, force=args.force, dry_run=args.dry_run,
                            avro=_avro_decoder(settings))
    for sent in report.replayed:
        where = sent.topic if report.dry_run else f"{sent.topic}:{sent.partition}:{sent.offset}"
        print(f"{sent.record.partition}:{sent.record.offset} -> {where}")
    print(report.summary())
    return 0


@_guarded
def _purge(args: argparse.Namespace, settings: Settings) -> int:
    from . import kafka_io, ops

    topic, filt = _build_filter(args)
    if filt.is_empty and not args.yes:
        print("fhirbus dlq: purge without a filter selects every record; give a filter, "
              "or --yes to purge them all", file=sys.stderr)
        return 2
    with _store(args, settings) as store:
        records = list(ops.enrich(kafka_io.scan(settings, topic), _avro_decoder(settings)))
        selected = ops.select(records, filt, store.purged(topic))
        if not selected:
            print("0 records match: nothing to purge")
            return 0
        if not args.yes and not _confirmed(len(selected), topic):
            print("purge cancelled: nothing changed", file=sys.stderr)
            return 1
        report = ops.purge(settings, store, topic, selected, records, filt,
                           actor=ops.actor_name(args.actor), delete_records=args.delete_records)
    print(report.summary())
    for note in report.notes:
        print(f"  {note}")
    return 0 if report.truncate_error is None else 1


def _confirmed(count: int, topic: str) -> bool:
    if not sys.stdin.isatty():
        print(f"fhirbus dlq: purge of {count} record(s) needs confirmation: run it in a "
              "terminal, or pass --yes", file=sys.stderr)
        return False
    answer = input(f"purge {count} record(s) from {topic}? type {count} to confirm: ")
    return answer.strip() == str(count)


def _history(args: argparse.Namespace, settings: Settings) -> int:
    from .filters import resolve_topic

    topic = resolve_topic(args.topic) if args.topic else None
    with _store(args, settings) as store:
        for a in store.actions(topic, args.limit):
            when = a.at.isoformat(timespec="seconds") if a.at else "?"
            target = f" to={a.target}" if a.target else ""
            print(f"{when}  {a.action:<6}  {a.actor}  {a.dlq_topic}  selected={a.selected} "
                  f"done={a.done} skipped={a.skipped}{target}  filter="
                  f"{orjson.dumps(a.filter).decode()}  id={a.action_id}"
                  + (f"  {a.note}" if a.note else ""))
    return 0
