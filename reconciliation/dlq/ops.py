"""The three actions over a scanned DLQ topic: select, replay, purge. Planning is pure
(records + audit state -> what to do); Kafka and the audit store are passed in."""

from __future__ import annotations

import getpass
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fhirbus.settings import Settings

from . import kafka_io
from .audit import Action, AuditStore, Position, Replayed
from .decode import AvroDecoder
from .filters import DlqFilter
from .records import H_CLAIM_CHECK_SHA256, DeadLetter, Headers


def actor_name(explicit: str | None = None) -> str:
    """Who acts: ``--actor``, else the OS user (a service account should pass --actor)."""
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def enrich(records: Iterable[DeadLetter], avro: AvroDecoder | None) -> Iterator[DeadLetter]:
    """Canonical-event values (projection and reconciler DLQs) carry their source system
    inside the Avro envelope; decode it when a registry is at hand, else leave it empty."""
    for record in records:
        value = record.value
        if avro is not None and value and value[:1] == b"\x00" and len(value) > 5:
            try:
                system = avro(value, record.original_topic or "").source.system
            except Exception:  # not an envelope after all: show it without a source
                system = ""
            record = replace(record, envelope_system=system or "")
        yield record


def select(
    records: Iterable[DeadLetter], filt: DlqFilter, purged: set[Position],
    include_purged: bool = False,
) -> list[DeadLetter]:
    return [r for r in records if filt.matches(r)
            and (include_purged or (r.partition, r.offset) not in purged)]


@dataclass
class ReplayPlan:
    send: list[tuple[DeadLetter, str]] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)
    no_target: list[DeadLetter] = field(default_factory=list)


class ClaimCheckError(kafka_io.DlqIoError):
    """A claim-check file to replay from is missing, unreadable or not what was stored."""


def with_claim_check(record: DeadLetter) -> DeadLetter:
    """The record with its full original bytes when its value is only the head of an
    oversize listener reject. Never the head instead: a replay must not send a cut message
    as if whole, so an unusable file stops the replay before anything is sent."""
    if record.header("fhirbus.truncated") == "true":
        # Bytes were discarded (over the claim-check cap, or no file could be written): what
        # is kept is a cut message. The sender was NAKed and still has the whole one.
        raise ClaimCheckError(
            f"{record.id}: only part of this {record.header('fhirbus.size', '?')}-byte message "
            "was kept, so it cannot be replayed whole: nothing was replayed; ask the sender "
            "to send it again")
    path = record.claim_check
    if path is None:
        return record
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ClaimCheckError(
            f"{record.id}: claim-check file {path} cannot be read ({exc.strerror}): run the "
            "replay on the listener's host, or copy the file to that path") from None
    if hashlib.sha256(data).hexdigest() != record.header(H_CLAIM_CHECK_SHA256):
        raise ClaimCheckError(f"{record.id}: claim-check file {path} does not match the "
                              "SHA-256 in the record: nothing was replayed")
    return replace(record, value=data)


def plan_replay(
    selected: Sequence[DeadLetter], replayed: set[Position], to: str | None, force: bool
) -> ReplayPlan:
    plan = ReplayPlan()
    for record in selected:
        if not force and (record.partition, record.offset) in replayed:
            plan.already.append(record)
            continue
        target = to or record.default_target
        if target is None:
            plan.no_target.append(record)
        else:
            plan.send.append((record, target))
    return plan


@dataclass
class ReplayReport:
    replay_id: str
    replayed: list[kafka_io.Sent]
    already: int
    no_target: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        text = (f"{len(self.replayed)} {verb}, {self.already} already replayed "
                f"(--force replays them again)")
        if self.no_target:
            text += (f", {self.no_target} without an original topic (listener rejects): "
                     "pass --to TOPIC")
        return text + ("" if self.dry_run else f"; replay id {self.replay_id}")


def replay(
    settings: Settings, store: AuditStore, topic: str, filt: DlqFilter, *, actor: str,
    to: str | None = None, force: bool = False, dry_run: bool = False,
    avro: AvroDecoder | None = None,
) -> ReplayReport:
    records = list(enrich(kafka_io.scan(settings, topic), avro))
    selected = select(records, filt, store.purged(topic))
    plan = plan_replay(selected, store.replayed(topic), to, force)
    plan.send = [(with_claim_check(r), t) for r, t in plan.send]
    replay_id = str(uuid.uuid4())
    report = ReplayReport(replay_id, [], len(plan.already), len(plan.no_target), dry_run)
    if dry_run:
        report.replayed = [kafka_io.Sent(r, t, -1, -1) for r, t in plan.send]
        return report
    items: list[tuple[DeadLetter, str, Headers]] = [
        (r, t, r.replay_headers(replay_id)) for r, t in plan.send]
    report.replayed = kafka_io.send(settings, items) if items else []
    action = Action(replay_id, "replay", actor, topic, filt.describe(), to, len(selected),
                    len(report.replayed), report.already + report.no_target,
                    "forced" if force else "")
    store.record_replay(action, [
        Replayed(s.record.partition, s.record.offset, s.topic, s.partition, s.offset)
        for s in report.replayed])
    return report


@dataclass
class PurgeReport:
    action_id: str
    purged: int
    truncated: dict[int, int]
    truncate_error: str | None
    notes: list[str]
    claim_checks_deleted: int = 0

    def summary(self) -> str:
        text = f"{self.purged} record(s) marked purged (hidden from list, never replayed)"
        if self.claim_checks_deleted:
            text += f"; {self.claim_checks_deleted} claim-check file(s) deleted"
        if self.truncated and self.truncate_error is None:
            cut = ", ".join(f"partition {p} before offset {o}" for p, o in self.truncated.items())
            text += f"; deleted from Kafka: {cut}"
        elif self.truncate_error is not None:
            text += (f"; Kafka DeleteRecords failed ({self.truncate_error}): the bytes stay "
                     "on the topic until retention removes them")
        return text


def truncation_cutoffs(
    records: Sequence[DeadLetter], gone: set[Position]
) -> dict[int, int]:
    """Per partition, the offset before which every record is purged: Kafka deletes only a
    prefix, so one record still wanted stops the cut there."""
    cutoffs: dict[int, int] = {}
    for partition in sorted({r.partition for r in records}):
        cut = None
        for record in sorted((r for r in records if r.partition == partition),
                             key=lambda r: r.offset):
            if (partition, record.offset) not in gone:
                break
            cut = record.offset + 1
        if cut is not None:
            cutoffs[partition] = cut
    return cutoffs


def purge(
    settings: Settings, store: AuditStore, topic: str, selected: Sequence[DeadLetter],
    records: Sequence[DeadLetter], filt: DlqFilter, *, actor: str, delete_records: bool,
) -> PurgeReport:
    action_id = str(uuid.uuid4())
    positions = [(r.partition, r.offset) for r in selected]
    report = PurgeReport(action_id, len(positions), {}, None, [])
    if delete_records:
        report.claim_checks_deleted, report.notes = delete_claim_checks(selected)
        gone = store.purged(topic) | set(positions)
        report.truncated = truncation_cutoffs(records, gone)
        if report.truncated:
            report.truncate_error = kafka_io.delete_before(settings, topic, report.truncated)
    note = "" if not delete_records else (
        f"delete-records {report.truncated} error={report.truncate_error}")
    action = Action(action_id, "purge", actor, topic, filt.describe(), None, len(positions),
                    len(positions), 0, note)
    store.record_purge(action, positions)
    return report


def delete_claim_checks(selected: Sequence[DeadLetter]) -> tuple[int, list[str]]:
    """With --delete-records the operator deletes the purged messages' bytes, and the
    full bytes of an oversize reject are in its claim-check file on the listener's disk,
    not on the topic. Returns how many files went, and a note per file that could not."""
    deleted, notes = 0, []
    for record in selected:
        if record.claim_check is None:
            continue
        try:
            Path(record.claim_check).unlink()
            deleted += 1
        except FileNotFoundError:
            notes.append(f"{record.id}: claim-check file not on this host: {record.claim_check}")
        except OSError as exc:
            notes.append(f"{record.id}: cannot delete {record.claim_check} ({exc.strerror})")
    return deleted, notes
