"""Bring a real cluster's topics to the catalog's declared state, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from fhirbus.schemas.topics import CATALOG, TopicSpec

from ..settings import Settings
from .config import client_config


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    configured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"created    {t}" for t in self.created]
        out += [f"partitions {t}" for t in self.grown]
        out += [f"configured {t}" for t in self.configured]
        out += [f"unchanged  {t}" for t in self.unchanged]
        out += [f"FAILED     {t}: {why}" for t, why in self.failed.items()]
        return out


def apply_catalog(
    settings: Settings, dry_run: bool = False, catalog: tuple[TopicSpec, ...] = CATALOG
) -> ApplyReport:
    admin = AdminClient(client_config(settings))
    existing = admin.list_topics(timeout=15).topics
    report = ApplyReport()
    missing = [s for s in catalog if s.name not in existing]
    present = [s for s in catalog if s.name in existing]
    if not dry_run:
        _create(admin, missing, report)
        _reconcile(admin, present, {n: len(m.partitions) for n, m in existing.items()}, report)
    else:
        report.created = [s.name for s in missing]
        report.unchanged = [s.name for s in present]
    return report


def _create(admin: AdminClient, specs: list[TopicSpec], report: ApplyReport) -> None:
    if not specs:
        return
    new = [NewTopic(s.name, s.partitions, s.replication, config=s.kafka_config()) for s in specs]
    for name, fut in admin.create_topics(new, request_timeout=30).items():
        try:
            fut.result()
            report.created.append(name)
        except KafkaException as exc:
            report.failed[name] = exc.args[0].str()


def _reconcile(
    admin: AdminClient, specs: list[TopicSpec], partitions: dict[str, int], report: ApplyReport
) -> None:
    # Partitions only ever grow: shrinking would remap keys and break per-key order.
    grow = [NewPartitions(s.name, s.partitions) for s in specs if partitions[s.name] < s.partitions]
    grown = set()
    if grow:
        for name, fut in admin.create_partitions(grow, request_timeout=30).items():
            try:
                fut.result()
                grown.add(name)
            except KafkaException as exc:
                report.failed[name] = exc.args[0].str()
    resources = [ConfigResource("topic", s.name, set_config=s.kafka_config()) for s in specs]
    for res, fut in (admin.alter_configs(resources) if resources else {}).items():
        try:
            fut.result()
            (report.grown if res.name in grown else report.configured).append(res.name)
        except KafkaException as exc:
            report.failed[res.name] = exc.args[0].str()
