"""The pure core of the CDC path: ``map_change(change, mappings, ref) -> [CanonicalEvent]``.

One row change becomes one canonical event: the mapped resource (validated with
fhir.resources like the HL7 path), its deterministic id, its version from the declared
business-version column, and provenance back to the source (table, LSN, txId) and to the
Kafka record. Nothing here reads a clock: the same change always yields the same event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from fhirbus.consumers.canonicalizer import identity
from fhirbus.consumers.canonicalizer.context import MAPPING_TAG_SYSTEM
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.schemas.envelope import CanonicalEvent, Source

from . import convert, paths
from .debezium import Change, Row
from .errors import BadColumnValue, MissingIdentity, UnmappedCode, UnmappedTable
from .mapping import Element, Mappings, TableMapping

_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# Version of a delete whose image holds only the key: later than any live version, so the
# retirement wins in every read model (a re-inserted key stays retired: use a new key).
RETIRED_VERSION = 2**62


def row_id(source: str, table: str, *key: object) -> str:
    """Resource id of a row: the source, its table and its primary key, nothing else."""
    return identity.fast_stable_id("cdc", source, table, *key)


def map_change(change: Change, mappings: Mappings, ref: Any) -> list[CanonicalEvent]:
    """``ref``: the Kafka record (topic/partition/offset/timestamp_ms) for provenance."""
    m = mappings.get(change.qualified)
    if m is None:
        raise UnmappedTable(change.qualified, "no mapping file declares this table")
    delete = change.op == "d"
    row = _image(change, m)
    # REPLICA IDENTITY DEFAULT: the before image has the key and nothing else (the other
    # columns absent, or null as Debezium writes them).
    key_only = delete and all(row.get(c) is None for c in m.columns - set(m.key))
    required = not key_only
    rid = _resource_id(change, m, row, required)
    body: dict[str, Any] = {
        "resourceType": m.resource,
        "id": rid,
        "meta": {"source": f"cdc://{change.source_name}/{m.table}",
                 "tag": [{"system": MAPPING_TAG_SYSTEM, "code": m.mapping_version}]},
    }
    subject = _fill(body, change, m, row, required)
    for path, value in (*(m.delete_set if delete else ()), *(m.key_only_set if key_only else ())):
        paths.put(body, path, value)
    resource = paths.prune(body)
    validate(resource)
    event_type = m.delete_event_type if delete else m.event_type.replace(
        "{status}", str(resource.get("status", "unknown")))
    version = _version(change, m, row, key_only)
    return [CanonicalEvent(
        event_id=identity.event_id(m.resource, rid, version, event_type),
        event_type=event_type,
        resource_type=m.resource,
        resource_id=rid,
        resource_version=version,
        occurred_at=_occurred_at(change, m, row, ref),
        recorded_at=_ms(change.seen_ms or change.commit_ms or ref.timestamp_ms),
        source=Source(
            kind="cdc", system=change.source_name, feed=change.source_name,
            lsn=None if change.lsn is None else str(change.lsn), tx_id=change.tx_id,
            table=m.table, raw_topic=ref.topic, raw_partition=ref.partition,
            raw_offset=ref.offset,
        ),
        mapping_version=m.mapping_version,
        resource=orjson.dumps(resource),
        subject_key=rid if m.resource == "Patient" else subject,
        correlation_id=None if change.tx_id is None else identity.fast_stable_id(
            "cdc-tx", change.source_name, change.tx_id),
    )]


def _image(change: Change, m: TableMapping) -> Row:
    """The row to map; a delete without a before image still has its Kafka key."""
    row = change.row
    if row is not None:
        return row
    if change.key:
        return dict(change.key)
    raise MissingIdentity(m.table, f"op {change.op} carries no row image and no key")


def _key_values(change: Change, m: TableMapping, row: Row) -> list[str]:
    values = []
    for column in m.key:
        value = row.get(column)
        if value is None and change.key:
            value = change.key.get(column)
        if value is None or value == convert.UNAVAILABLE:
            raise MissingIdentity(f"{m.table}.{column}", "key column missing from the change")
        values.append(value if isinstance(value, str) else str(value))
    return values


def _resource_id(change: Change, m: TableMapping, row: Row, required: bool) -> str:
    ident = m.id_identifier
    if ident is None:
        return row_id(change.source_name, m.table, *_key_values(change, m, row))
    value = convert.read(row, ident.column, m.table, convert.to_string, required)
    if value is None:
        raise MissingIdentity(f"{m.table}.{ident.column}", "the identifier the id comes from is "
                              "NULL or absent (a key-only delete needs REPLICA IDENTITY FULL)")
    # The HL7 path's patient id for the same identifier system and value (identity.py).
    return identity.resource_id(m.resource, ident.system, value)


def _fill(body: dict[str, Any], change: Change, m: TableMapping, row: Row,
          required: bool) -> str | None:
    """Identifiers, references and elements; returns the referenced Patient id, if any."""
    table, idents = m.table, []
    for i in m.identifiers:
        value = convert.read(row, i.column, table, convert.to_string, required)
        if value is not None:
            ident: dict[str, Any] = {"system": i.system, "value": value}
            if i.type:
                ident["type"] = {"coding": [{"system": _V2_0203, "code": i.type}]}
            if i.use:
                ident["use"] = i.use
            idents.append(ident)
    if idents:
        body["identifier"] = idents
    patient = None
    for r in m.references:
        value = convert.read(row, r.column, table, convert.to_string, required)
        if value is not None:
            target = row_id(change.source_name, r.table, value)
            paths.put(body, r.path, {"reference": f"{r.resource}/{target}"})
            if r.resource == "Patient" and patient is None:
                patient = target
    for e in m.elements:
        if e.column is None and not required:
            continue  # a key-only image: constants would dress up a row that is not there
        if e.when and any(row.get(c) is None for c in e.when):
            continue
        if e.unless is not None and row.get(e.unless) is not None:
            continue
        value = e.const if e.column is None else _column_value(e, row, table, required)
        if value is not None:
            paths.put(body, e.path, value)
    return patient


def _column_value(e: Element, row: Row, table: str, required: bool) -> Any:
    if e.times is not None:
        return _product(e, row, table, required)
    if e.codes is None:
        return convert.read(row, e.column, table, e.convert, required)
    code = convert.read(row, e.column, table, convert.to_string, required)
    if code is None:
        return None
    if code not in e.codes:
        raise UnmappedCode(f"{table}.{e.column}", "value not in the mapping's code map")
    return e.codes[code]


def _product(e: Element, row: Row, table: str, required: bool) -> Any:
    """column x times-column, exact in Decimal (a unit price times a quantity)."""
    assert e.column is not None and e.times is not None  # checked by the spec
    factors = [convert.read(row, c, table, convert.to_exact, required) for c in (e.column, e.times)]
    if factors[0] is None or factors[1] is None:
        return None
    return convert.to_decimal(factors[0] * factors[1])


def _version(change: Change, m: TableMapping, row: Row, key_only: bool) -> int:
    if m.version_column is None:
        if change.lsn is None:
            raise BadColumnValue("source.lsn", "business_version is $lsn but the event has none")
        return change.lsn
    if key_only:
        return RETIRED_VERSION
    value = convert.read(row, m.version_column, m.table, to_version)
    if value is None:
        raise BadColumnValue(f"{m.table}.{m.version_column}", "business version is NULL")
    # A delete removes the state it names: one step past it.
    return value + 1 if change.op == "d" else value


def to_version(value: Any) -> int:
    """An integer counter as is; a timestamp as the HL7 path encodes source times, so CDC
    and HL7 states of a shared resource order against each other."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("negative")
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    return identity.version(int(convert.to_datetime(text).timestamp() * 1000))


def _occurred_at(change: Change, m: TableMapping, row: Row, ref: Any) -> datetime:
    if change.op != "d" and m.occurred_at is not None:
        when = convert.read(row, m.occurred_at, m.table, convert.to_datetime)
        if when is not None:
            return when
    return _ms(change.commit_ms or change.seen_ms or ref.timestamp_ms)


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
