"""Load-time check: map a sample row through a mapping as an insert, a delete with the full
row and a delete with only the key. A mapping whose resource cannot validate (an unknown
element, a missing required one, a key-only delete without stand-ins) fails here, at start,
with the file named, instead of dead-lettering every row later."""

from __future__ import annotations

from typing import Any

from fhirbus.settings import ConfigError

from .debezium import Change, Row
from .errors import BadColumnValue
from .mapper import map_change
from .mapping import Mappings, TableMapping

_SAMPLES: dict[str, Any] = {
    "to_string": "x",
    "to_code": "x",
    "to_integer": 1,
    "to_decimal": "1.5",
    "to_boolean": True,
    "to_date": 0,
    "to_fhir_datetime": "2020-01-01T00:00:00Z",
}


class _Ref:
    topic, partition, offset, timestamp_ms = "check", 0, 0, 0


def sample_row(m: TableMapping) -> Row:
    row: Row = {c: "1" for c in m.columns}
    for e in m.elements:
        if e.column:
            row[e.column] = next(iter(e.codes)) if e.codes else _SAMPLES[e.convert.__name__]
    if m.version_column:
        row[m.version_column] = 1
    if m.occurred_at:
        row[m.occurred_at] = "2020-01-01T00:00:00Z"
    return row


def check_mapping(m: TableMapping, tables: dict[str, TableMapping]) -> None:
    row = sample_row(m)
    key = {c: row[c] for c in m.key}
    cases = [("insert", "c", None, row), ("delete", "d", row, None)]
    if m.id_identifier is None:
        cases.append(("key-only delete", "d", key, None))
    for label, op, before, after in cases:
        change = Change(op, before, after, key, "check", *m.table.split("."), 1, 1, 0, 0, False)
        try:
            map_change(change, Mappings(tables), _Ref())
        except BadColumnValue as exc:
            raise ConfigError(f"CDC mapping {m.file}: a sample {label} fails: {exc}") from None
        except Exception as exc:  # any failure here is a mapping error
            raise ConfigError(f"CDC mapping {m.file}: a sample {label} does not map to a "
                              f"valid {m.resource}: {exc}") from None
