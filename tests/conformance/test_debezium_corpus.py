"""Real Debezium PostgreSQL change events (shared corpus, ``debezium/``) through the CDC
decoder and mapper.

Every strict-JSON sample and every line of the two Flink streams (Debezium 1.2.1, server
``fullfillment``, table ``inventory.products``) is decoded; the streams are mapped with a
test-only mapping (``inventory.products`` -> Observation: a product is not clinical, but
Observation is a canonical resource whose required elements a product row can fill, and
the table has no version column, so it exercises ``business_version: $lsn``). The
``.snippet.txt`` files are documentation excerpts, not strict JSON, and are not decoded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbus.consumers.canonicalizer.cdc import load_mappings, map_change
from fhirbus.consumers.canonicalizer.cdc.debezium import Change, Skip, decode
from fhirbus.consumers.canonicalizer.cdc.errors import MissingIdentity, NotAChangeEvent
from fhirbus.consumers.canonicalizer.cdc.mapping import Mappings
from fhirbus.consumers.canonicalizer.validate import validate
from fhirbus.consumers.records import Record
from fhirbus.schemas.envelope import CanonicalEvent
from tests.corpus import CORPUS_ROOT

DEBEZIUM = CORPUS_ROOT / "debezium"
FULL = DEBEZIUM / "flink-debezium-postgres-data-schema-exclude.jsonl"
DEFAULT_IDENTITY = DEBEZIUM / "flink-debezium-postgres-data-replica-identity.jsonl"
OPS = ["r"] * 9 + ["u", "u", "c", "c", "u", "u", "d"]

pytestmark = pytest.mark.skipif(
    not DEBEZIUM.is_dir(), reason=f"Debezium corpus not found at {DEBEZIUM} (set FHIRBUS_CORPUS)")

PRODUCTS = """\
version: test-1
table: inventory.products
resource: Observation
key: [id]
business_version: $lsn          # no version column: the WAL position orders the states
event_type: observation.upserted
identifiers:
  - {column: id, system: "urn:fhirbus:test:product"}
elements:
  status: {const: final}
  code.text: name
  valueQuantity.value: {column: weight, type: decimal}
  valueQuantity.unit: {const: kg, when: weight}
  note[0].text: description
on_delete:
  event_type: observation.deleted
  set: {status: entered-in-error}
  key_only: {code.text: deleted product}
"""


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Mappings:
    folder = tmp_path_factory.mktemp("mappings")
    (folder / "products.yaml").write_text(PRODUCTS)
    return load_mappings(folder)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def as_record(raw: bytes, offset: int, key: dict[str, Any] | None = None) -> Record:
    return Record.detached("cdc.fullfillment.inventory.products", 0, offset, raw,
                           None if key is None else orjson.dumps(key), timestamp_ms=1)


@pytest.mark.parametrize("path", [FULL, DEFAULT_IDENTITY], ids=["full", "default-identity"])
def test_jsonl_streams_decode_with_ops_images_and_snapshot_strings(path: Path) -> None:
    changes = [decode(raw) for raw in lines(path)]
    assert all(isinstance(c, Change) for c in changes)
    assert [c.op for c in changes] == OPS  # type: ignore[union-attr]
    for c in changes:
        assert isinstance(c, Change)
        assert c.snapshot is (c.op == "r")  # "true" / "false" strings
        assert c.qualified == "inventory.products" and c.source_name == "fullfillment"
        assert isinstance(c.lsn, int) and isinstance(c.tx_id, int)
        assert (c.after is None) is (c.op == "d")
        if c.op in ("c", "r"):
            assert c.before is None
    full_image = path == FULL
    updates = [c for c in changes if isinstance(c, Change) and c.op == "u"]
    assert all((c.before is not None) is full_image for c in updates)
    delete = changes[-1]
    assert isinstance(delete, Change) and (delete.before is not None) is full_image


def test_every_strict_json_sample_decodes_or_is_refused_with_a_reason() -> None:
    created = decode((DEBEZIUM / "dbz-doc-pg-value-create-c-schema-payload.json").read_bytes())
    assert isinstance(created, Change)  # the schema+payload envelope, unwrapped
    assert (created.op, created.qualified, created.snapshot) == ("c", "public.customers", True)
    assert created.after is not None and created.after["id"] == 1
    message = decode((DEBEZIUM / "dbz-doc-pg-value-message-m-logical-decoding.json").read_bytes())
    assert message == Skip("message")
    # After the DecodeLogicalDecodingMessageContent SMT: op c with an empty source table.
    with pytest.raises(NotAChangeEvent, match="path=source"):
        decode((DEBEZIUM / "dbz-doc-pg-value-message-decoded-to-c.json").read_bytes())
    strict = sorted(p.name for p in DEBEZIUM.glob("*.json"))
    assert strict == ["dbz-doc-pg-value-create-c-schema-payload.json",
                      "dbz-doc-pg-value-message-decoded-to-c.json",
                      "dbz-doc-pg-value-message-m-logical-decoding.json"]


def _map(mappings: Mappings, raw: bytes, offset: int, key: dict[str, Any] | None = None
         ) -> CanonicalEvent:
    change = decode(raw, None if key is None else orjson.dumps(key))
    assert isinstance(change, Change)
    (event,) = map_change(change, mappings, as_record(raw, offset, key))
    validate(orjson.loads(event.resource))
    return event


def test_full_image_stream_maps_to_valid_versioned_resources(products: Mappings) -> None:
    events = [_map(products, raw, i) for i, raw in enumerate(lines(FULL))]
    assert Counter(e.event_type for e in events) == {"observation.upserted": 15,
                                                     "observation.deleted": 1}
    by_row: dict[str, list[CanonicalEvent]] = {}
    for e in events:
        by_row.setdefault(e.resource_id, []).append(e)
    assert len(by_row) == 11  # products 101..111
    for history in by_row.values():
        versions = [e.resource_version for e in history]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
    gone = events[-1]
    assert orjson.loads(gone.resource)["status"] == "entered-in-error"
    assert orjson.loads(gone.resource)["valueQuantity"]["value"] == 5.17  # full before image
    assert gone.source.lsn == "34133800" and gone.source.tx_id == 608
    assert len({e.event_id for e in events}) == 16


def test_default_identity_delete_needs_the_kafka_key(products: Mappings) -> None:
    raws = lines(DEFAULT_IDENTITY)
    with pytest.raises(MissingIdentity):
        _map(products, raws[-1], 15)
    gone = _map(products, raws[-1], 15, key={"id": 111})
    live = _map(products, lines(FULL)[-2], 14)
    assert gone.resource_id == live.resource_id
    assert gone.resource_version > live.resource_version  # LSN order
    assert orjson.loads(gone.resource)["code"]["text"] == "deleted product"
    updates = [_map(products, raw, i, key={"id": orjson.loads(raw)["after"]["id"]})
               for i, raw in enumerate(raws[:-1])]
    assert [e.event_id for e in updates] == [
        _map(products, raw, i).event_id for i, raw in enumerate(lines(FULL)[:-1])]
