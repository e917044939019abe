"""The three checks of a run, each turning differences into Drift handed to the Actor."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fhirbus.connectors.sources import load_sources
from fhirbus.consumers.canonicalizer.cdc import load_mappings
from fhirbus.kafka.config import resolve_registry_url
from fhirbus.projections import app as papp
from fhirbus.projections import positions as pos
from fhirbus.projections.migrations import prefix
from fhirbus.schemas.serde import EnvelopeSerde, registry_client
from fhirbus.settings import ConfigError, Settings

from . import cdc, rangehash
from .canonical import CanonicalIndex, compare_projection, unaccounted_raw
from .diff import KeyDiff
from .model import CheckResult, Drift
from .runner import Actor

# Projection table -> the resource type its rows hold (for risk and reports).
TABLE_TYPES = {"patients": "Patient", "encounters": "Encounter", "orders": "ServiceRequest",
               "results": "Observation", "immunizations": "Immunization",
               "appointments": "Appointment", "documents": "DocumentReference",
               "charges": "ChargeItem", "result_facts": "Observation",
               "encounter_facts": "Encounter"}


def _drift(check: str, d: KeyDiff, resource_type: str, **prov: object) -> Drift:
    return Drift(check, d.drift_class, resource_type, d.key,
                 d.expected[0] if d.expected else None, d.actual[0] if d.actual else None,
                 d.expected[1] if d.expected else None, d.actual[1] if d.actual else None,
                 dict(prov))


def load_index(settings: Settings, topics: Sequence[str]) -> CanonicalIndex:
    index = CanonicalIndex(settings, EnvelopeSerde(registry_client(resolve_registry_url(settings))))
    index.load(topics)
    return index


def canonical_checks(settings: Settings, actor: Actor, index: CanonicalIndex,
                     names: Sequence[str] | None) -> list[CheckResult]:
    out = []
    for name in names or papp.NAMES:
        result = CheckResult(f"canonical:{name}")
        started = time.monotonic()
        try:
            projection = papp.build_projection(name, settings)
        except ConfigError as exc:
            result.notes.append(f"skipped: {exc}")
            out.append(result)
            continue
        store = papp.open_for(name, settings)
        try:
            diffs = compare_projection(projection, store, index)
        finally:
            store.close()
        result.compared = index.resources(projection.topics)
        for table, d, at in diffs:
            rtype = at.event.resource_type if at else TABLE_TYPES.get(table, table)
            rid = at.event.resource_id if at else d.key
            prov = {"projection": name, "table": table, "row_key": d.key,
                    **(at.provenance() if at else {})}
            drift = _drift(result.name, d, rtype, **prov)
            drift.resource_id = rid
            ahead = d.actual and d.expected and d.actual[0] > d.expected[0]
            if d.drift_class == "extra" or ahead:
                drift.note = "the read model holds what no canonical event states; review it"
                actor.handle(drift)
            else:
                actor.handle(drift, [at.event] if at else [])
            result.drift.append(drift)
        result.seconds = time.monotonic() - started
        out.append(result)
    return out


def raw_check(settings: Settings, actor: Actor, index: CanonicalIndex,
              group: str) -> CheckResult:
    result = CheckResult("raw-hl7")
    started = time.monotonic()
    missing, result.compared = unaccounted_raw(settings, index, group)
    for msg in missing:
        d = KeyDiff(f"{msg.topic()}:{msg.partition()}:{msg.offset()}", "missing", None, None)
        drift = _drift(result.name, d, "raw-hl7", topic=msg.topic(), partition=msg.partition(),
                       offset=msg.offset())
        drift.note = "accepted HL7 message with no canonical event and no dead-letter record"
        result.drift.append(actor.handle(drift, raw=msg))
    result.seconds = time.monotonic() - started
    return result


def cdc_checks(settings: Settings, actor: Actor) -> list[CheckResult]:
    if settings.cdc.sources_file is None:
        return [CheckResult("cdc", notes=["skipped: no CDC sources file "
                                          "(FHIRBUS_CDC__SOURCES_FILE)"])]
    mappings = load_mappings(settings.cdc.mappings_dir)
    out = []
    for source in load_sources(settings.cdc.sources_file):
        tables = {f"{t.schema_name}.{t.table}" for t in source.tables}
        for check in cdc.LABBILLING:
            m = mappings.get(check.table)
            if m is None or check.table not in tables:
                continue
            out.append(_cdc_table(settings, actor, source.name, source.dsn, m, mappings, check))
    return out


def _attributable(check: cdc.TableCheck, diffs: list[KeyDiff],
                  result: CheckResult) -> list[KeyDiff]:
    """Without a row's source in the read model, its rows this table lacks may be another
    feed's (HL7 DFT charges): counted in a note, not reported as drift."""
    if check.attributable:
        return diffs
    others = sum(d.drift_class == "extra" for d in diffs)
    result.notes.append(f"{others} {check.projection}.{check.projection_table} row(s) not "
                        "from this table (the read model keeps no source): not checked")
    return [d for d in diffs if d.drift_class != "extra"]


def _deleted_at_source(check: cdc.TableCheck, reader: rangehash.Reader,
                       side: rangehash.Side, diffs: list[KeyDiff],
                       result: CheckResult) -> list[KeyDiff]:
    """A row the source no longer has, retired in the read model, is a DELETE applied."""
    extra = [d.key for d in diffs if d.drift_class == "extra"]
    retired = cdc.retired_keys(reader, side, check, extra)
    if retired:
        result.notes.append(f"{len(retired)} row(s) deleted at the source and retired in "
                            f"{check.projection}.{check.projection_table}: consistent")
    return [d for d in diffs if not (d.drift_class == "extra" and d.key in retired)]


def _cdc_table(settings: Settings, actor: Actor, source: str, dsn: str, m: object,
               mappings: object, check: cdc.TableCheck) -> CheckResult:
    result = CheckResult(check.name(source))
    started = time.monotonic()
    store = papp.open_for(check.projection, settings)
    try:
        with store.transaction(lock=False) as tx:
            gen = pos.active(tx, check.projection)
    finally:
        store.close()
    if gen is None:
        result.notes.append(f"skipped: projection {check.projection} has no tables yet")
        return result
    src_reader = rangehash.PgReader(dsn)
    dst_reader = rangehash.open_reader(papp.dsn_for(check.projection, settings))
    try:
        src = cdc.source_side(source, m, check)  # type: ignore[arg-type]
        dst = cdc.projection_side(source, check, prefix(check.projection, gen))
        diffs, stats = rangehash.compare(src_reader, src, dst_reader, dst,
                                         settings.reconcile.range_buckets)
        result.compared = stats.source_rows
        result.stats = {k: v for k, v in vars(stats).items() if k != "source_keys"}
        rows = cdc.rows_by_key(src_reader, src, list(stats.source_keys.values()))
        diffs = _deleted_at_source(check, dst_reader, dst, diffs, result)
        for d in _attributable(check, diffs, result):
            drift = _drift(result.name, d, m.resource, source=source,  # type: ignore[attr-defined]
                           table=check.table, projection=check.projection)
            row = rows.get(d.key)
            events = cdc.remap(source, m, mappings, row, actor.run_id) if row else []  # type: ignore[arg-type]
            if d.drift_class == "extra":
                drift.note = "the read model holds a row its source no longer has; review it"
            result.drift.append(actor.handle(drift, events))
    finally:
        src_reader.close()
        dst_reader.close()
    result.seconds = time.monotonic() - started
    return result
