"""``fhirbus broker`` and ``fhirbus topics``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..settings import Settings


def register(sub: Any) -> None:
    broker = sub.add_parser("broker", help="host the embedded Kafka broker and schema registry")
    broker.add_argument("--brokers", type=int, default=1, help="number of mock brokers")
    broker.add_argument("--no-registry", action="store_true", help="do not start the registry")
    broker.add_argument("--registry-port", type=int, default=0, help="0 picks a free port")
    broker.set_defaults(func=_broker)

    topics = sub.add_parser("topics", help="the topic catalog")
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    tlist = tsub.add_parser("list", help="print the catalog")
    tlist.set_defaults(func=_topics_list)
    apply = tsub.add_parser("apply", help="create/update the catalog's topics on the cluster")
    apply.add_argument("--dry-run", action="store_true")
    apply.set_defaults(func=_topics_apply)


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from .. import telemetry
    from ..embedded.broker import serve

    telemetry.configure_logging(settings.log_level, settings.log_format)
    return serve(settings.state_dir, args.brokers, not args.no_registry, args.registry_port)


def _topics_list(args: argparse.Namespace, settings: Settings) -> int:
    from fhirbus.schemas.topics import CATALOG

    for spec in CATALOG:
        print(
            f"{spec.name:28} partitions={spec.partitions:<3} {spec.classification:12} "
            f"owner={spec.owner:14} retention_ms={spec.retention_ms} {spec.cleanup_policy}"
        )
    return 0


def _topics_apply(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from fhirbus.schemas.topics import CATALOG

    from ..kafka.admin import apply_catalog

    if settings.uses_embedded_broker:
        return _topics_check_embedded(settings)
    catalog = CATALOG
    if settings.kafka_topic_replication is not None:
        catalog = tuple(replace(s, replication=settings.kafka_topic_replication)
                        for s in CATALOG)
    report = apply_catalog(settings, dry_run=args.dry_run, catalog=catalog)
    for line in report.lines():
        print(line)
    if report.failed:
        print(f"{len(report.failed)} topic(s) failed; see above", file=sys.stderr)
        return 1
    return 0


def _topics_check_embedded(settings: Settings) -> int:
    """The mock cluster cannot create topics through the admin API (`fhirbus broker` creates
    them at start), so on it `apply` only checks and says what it found."""
    from confluent_kafka.admin import AdminClient

    from fhirbus.schemas.topics import CATALOG

    from ..kafka.config import client_config

    existing = AdminClient(client_config(settings)).list_topics(timeout=15).topics
    missing = [s.name for s in CATALOG if s.name not in existing]
    for spec in CATALOG:
        print(f"{'MISSING' if spec.name in missing else 'present':10} {spec.name}")
    if missing:
        print(f"embedded broker: {len(missing)} catalog topic(s) missing; the embedded broker "
              "creates them at start: restart `fhirbus broker`", file=sys.stderr)
        return 1
    print("embedded broker: every catalog topic exists (created when `fhirbus broker` started)")
    return 0
