"""Compatibility between Avro schema versions, by the Avro schema-resolution rules.

The rules themselves come from Apache Avro's ``ReaderWriterCompatibilityChecker`` (the Python
port of the checker Confluent Schema Registry runs); this module only decides which
reader/writer pairs a compatibility level asks for, and turns the result into messages.

Levels follow Confluent's meaning:

* ``BACKWARD``: the new schema can read data written with the previous one
  (consumers upgrade first).
* ``FORWARD``: readers on the previous schema can read data written with the new one
  (producers upgrade first).
* ``FULL``: both. ``*_TRANSITIVE``: against every earlier version, not just the latest.
* ``NONE``: no check.

Policy (:data:`POLICY_LEVEL`) is ``FULL_TRANSITIVE``, for two reasons that each rule out a
weaker level:

* Canonical topics are owned by fhirbus but read by other teams, who upgrade on their own
  schedule. Under plain ``BACKWARD``, removing a required field passes (the new reader simply
  ignores it), yet every consumer still on the old schema fails on the first new record,
  because it has no default to fill in. Only a level that includes ``FORWARD`` rejects that,
  so the policy must be ``FULL``-something. ``FORWARD`` alone would instead let a producer add
  a field without a default, which breaks projections rebuilding from older records.
* Canonical topics are replayed from the beginning (projection rebuilds, reconciliation), and
  a lagging consumer may be several versions behind, so each new version must work with every
  earlier one, not just its predecessor: ``_TRANSITIVE``.

Under this policy a change may add or remove a field only if the field has a default, which is
exactly the acceptance rule (removing a required field is rejected; adding an optional field
with a default passes). The offline ``fhirbus schemas check`` and the embedded registry's
compatibility endpoint both call :func:`check_compatibility`, so they cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import avro.errors
import avro.schema
import fastavro
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

POLICY_LEVEL = "FULL_TRANSITIVE"
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

SchemaInput = str | dict[str, Any]

# A hint per (incompatibility, direction): the raw checker output names a field, not the fix.
_T = SchemaIncompatibilityType
_HINTS = {
    (_T.reader_field_missing_default_value, "BACKWARD"): "a field was added without a default",
    (_T.reader_field_missing_default_value, "FORWARD"): (
        "a field these readers require (no default) was removed"
    ),
    (_T.missing_enum_symbols, "BACKWARD"): "enum symbols were removed",
    (_T.missing_enum_symbols, "FORWARD"): "enum symbols were added and the enum has no default",
    (_T.missing_union_branch, "BACKWARD"): "union branches were removed",
    (_T.missing_union_branch, "FORWARD"): "union branches were added",
    (_T.type_mismatch, "BACKWARD"): "a type was narrowed or changed",
    (_T.type_mismatch, "FORWARD"): "a type was widened or changed",
    (_T.name_mismatch, "BACKWARD"): "a named type was renamed (keep the old name as an alias)",
    (_T.name_mismatch, "FORWARD"): "a named type was renamed",
    (_T.fixed_size_mismatch, "BACKWARD"): "a fixed size changed",
    (_T.fixed_size_mismatch, "FORWARD"): "a fixed size changed",
}


class InvalidSchemaError(ValueError):
    """The text is not a valid Avro schema."""


@dataclass
class CompatResult:
    is_compatible: bool
    messages: list[str] = field(default_factory=list)


def normalize_level(level: str) -> str:
    """Upper-case and validate a compatibility level name."""
    upper = level.strip().upper()
    if upper not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {LEVELS}")
    return upper


def parse_avro(schema: SchemaInput) -> avro.schema.Schema:
    """Parse with both fastavro (stricter: validates defaults) and Apache avro (the checker)."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        fastavro.parse_schema(json.loads(text))
        return avro.schema.parse(text)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(f"not JSON: {exc}") from exc
    except (avro.errors.AvroException, fastavro.schema.SchemaParseException) as exc:
        raise InvalidSchemaError(str(exc)) from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # fastavro reports some malformed schemas (e.g. a field without "type") this way
        raise InvalidSchemaError(f"{type(exc).__name__}: {exc}") from exc


def canonical_form(schema: SchemaInput) -> str:
    """A stable JSON identity for a schema: whitespace, key order and name spelling don't count.

    Unlike Avro's Parsing Canonical Form this keeps defaults, docs and aliases, because two
    schemas that differ in a default resolve differently and must not share a registry id.
    """
    parse_avro(schema)
    obj = json.loads(schema) if isinstance(schema, str) else schema
    parsed = fastavro.parse_schema(obj)
    if isinstance(parsed, dict):
        # fastavro adds bookkeeping keys (__fastavro_parsed, __named_schemas) at the top level
        parsed = {k: v for k, v in parsed.items() if not k.startswith("__")}
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_compatibility(
    new: SchemaInput,
    previous: Sequence[SchemaInput],
    level: str = POLICY_LEVEL,
    *,
    labels: Sequence[str] | None = None,
) -> CompatResult:
    """Check ``new`` against ``previous`` (oldest first) under a Confluent compatibility level.

    Non-transitive levels compare with the last element of ``previous`` only. ``labels`` name
    the previous schemas in messages (default ``previous[i]``). Raises
    :class:`InvalidSchemaError` for an unparseable schema and ``ValueError`` for an unknown level.
    """
    level = normalize_level(level)
    if labels is None:
        labels = [f"previous[{i}]" for i in range(len(previous))]
    if len(labels) != len(previous):
        raise ValueError("labels must match previous one to one")
    new_schema = parse_avro(new)
    if level == "NONE" or not previous:
        return CompatResult(True, [])
    pairs = list(zip(previous, labels, strict=True))
    if not level.endswith("_TRANSITIVE"):
        pairs = pairs[-1:]
    directions = {"BACKWARD": ("BACKWARD",), "FORWARD": ("FORWARD",)}.get(
        level.removesuffix("_TRANSITIVE"), ("BACKWARD", "FORWARD")
    )
    messages: list[str] = []
    for old, label in reversed(pairs):
        old_schema = parse_avro(old)
        for direction in directions:
            messages.extend(_check_pair(new_schema, old_schema, direction, label))
    return CompatResult(not messages, messages)


def _check_pair(
    new: avro.schema.Schema, old: avro.schema.Schema, direction: str, label: str
) -> list[str]:
    if direction == "BACKWARD":
        reader, writer = new, old
        who = f"the new schema cannot read data written with {label}"
    else:
        reader, writer = old, new
        who = f"readers on {label} cannot read data written with the new schema"
    # A fresh checker per pair: it memoizes by object id, which is only safe while both live.
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader=reader, writer=writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    kinds = sorted({kind.name.upper() for kind in result.incompatibilities})
    hints = sorted(
        {_HINTS[(k, direction)] for k in result.incompatibilities if (k, direction) in _HINTS}
    )
    detail = ", ".join(sorted(result.messages))
    where = ", ".join(sorted(result.locations))
    return [f"{direction}: {who}: {'/'.join(kinds)} at {where}: {'; '.join([detail, *hints])}"]
