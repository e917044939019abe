"""Compatibility levels over the Avro resolution rules, and the policy that governs our subjects."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirbus.schemas.compat import (
    LEVELS,
    POLICY_LEVEL,
    InvalidSchemaError,
    canonical_form,
    check_compatibility,
    normalize_level,
)


def record(*fields: dict[str, Any], name: str = "Patient") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test.compat", "fields": list(fields)}


ID = {"name": "id", "type": "string"}
MRN = {"name": "mrn", "type": "string"}
NOTE = {"name": "note", "type": ["null", "string"], "default": None}
V1 = record(ID, MRN)
REMOVED_REQUIRED = record(ID)
ADDED_OPTIONAL = record(ID, MRN, NOTE)
ADDED_REQUIRED = record(ID, MRN, {"name": "ward", "type": "string"})


def compatible(new: dict[str, Any], old: dict[str, Any], level: str) -> bool:
    return check_compatibility(new, [old], level).is_compatible


def test_policy_is_full_transitive() -> None:
    assert POLICY_LEVEL == "FULL_TRANSITIVE"


@pytest.mark.parametrize(
    ("level", "expected"),
    [("BACKWARD", True), ("BACKWARD_TRANSITIVE", True), ("FORWARD", False),
     ("FORWARD_TRANSITIVE", False), ("FULL", False), ("FULL_TRANSITIVE", False), ("NONE", True)],
)  # fmt: skip
def test_removing_a_required_field_breaks_old_readers_only(level: str, expected: bool) -> None:
    assert compatible(REMOVED_REQUIRED, V1, level) is expected


@pytest.mark.parametrize("level", LEVELS)
def test_adding_an_optional_field_with_default_passes_every_level(level: str) -> None:
    assert compatible(ADDED_OPTIONAL, V1, level)


@pytest.mark.parametrize(
    ("level", "expected"), [("BACKWARD", False), ("FORWARD", True), ("FULL", False)]
)
def test_adding_a_field_without_default_breaks_new_readers(level: str, expected: bool) -> None:
    assert compatible(ADDED_REQUIRED, V1, level) is expected


def test_removing_a_field_that_has_a_default_passes_the_policy() -> None:
    assert compatible(V1, ADDED_OPTIONAL, POLICY_LEVEL)


def test_policy_rejection_names_the_field_the_direction_and_the_version() -> None:
    result = check_compatibility(REMOVED_REQUIRED, [V1], POLICY_LEVEL, labels=["v1"])
    assert not result.is_compatible
    assert len(result.messages) == 1
    message = result.messages[0]
    assert message.startswith("FORWARD: readers on v1 cannot read")
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in message
    assert "mrn" in message and "/fields/1" in message
    assert "was removed" in message


def test_added_required_field_message_says_backward_and_added() -> None:
    message = check_compatibility(ADDED_REQUIRED, [V1], "BACKWARD", labels=["v1"]).messages[0]
    assert message.startswith("BACKWARD: the new schema cannot read data written with v1")
    assert "ward" in message and "added without a default" in message


def test_nested_record_field_removal_is_found() -> None:
    def with_address(*fields: dict[str, Any]) -> dict[str, Any]:
        address = {"type": "record", "name": "Address", "fields": list(fields)}
        return record(ID, {"name": "address", "type": address})

    old = with_address({"name": "city", "type": "string"}, {"name": "zip", "type": "string"})
    new = with_address({"name": "city", "type": "string"})
    result = check_compatibility(new, [old], "FULL")
    assert not result.is_compatible
    assert "zip" in result.messages[0] and "/fields/1/type/fields/1" in result.messages[0]


def test_type_promotion_is_one_way() -> None:
    old = record({"name": "count", "type": "int"})
    new = record({"name": "count", "type": "long"})
    assert compatible(new, old, "BACKWARD")
    assert not compatible(new, old, "FORWARD")
    assert "TYPE_MISMATCH" in check_compatibility(new, [old], "FORWARD").messages[0]


def test_enum_symbol_added_needs_an_enum_default_for_old_readers() -> None:
    def status(symbols: list[str], **extra: Any) -> dict[str, Any]:
        enum = {"type": "enum", "name": "Status", "symbols": symbols, **extra}
        return record({"name": "status", "type": enum})

    assert compatible(status(["A", "B"]), status(["A"]), "BACKWARD")
    assert not compatible(status(["A", "B"]), status(["A"]), "FORWARD")
    assert compatible(status(["A", "B"], default="A"), status(["A"], default="A"), "FULL")


def test_union_branch_added_breaks_forward_only() -> None:
    old = record({"name": "value", "type": ["null", "string"], "default": None})
    new = record({"name": "value", "type": ["null", "string", "long"], "default": None})
    assert compatible(new, old, "BACKWARD")
    assert not compatible(new, old, "FORWARD")


def test_transitive_levels_compare_with_every_earlier_version() -> None:
    # v2 drops a field, v3 brings it back with another type and a default: each step is fine,
    # but v3 cannot read what v1 wrote.
    v1 = record(ID, {"name": "score", "type": "string"})
    v2 = record(ID)
    v3 = record(ID, {"name": "score", "type": "int", "default": 0})
    assert check_compatibility(v3, [v1, v2], "BACKWARD").is_compatible
    transitive = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE", labels=["v1", "v2"])
    assert not transitive.is_compatible
    assert all("v1" in m for m in transitive.messages)


def test_non_transitive_levels_use_the_last_previous_schema() -> None:
    assert check_compatibility(REMOVED_REQUIRED, [V1, REMOVED_REQUIRED], "FULL").is_compatible
    assert not check_compatibility(
        REMOVED_REQUIRED, [V1, REMOVED_REQUIRED], "FULL_TRANSITIVE"
    ).is_compatible


def test_renamed_record_is_incompatible_unless_aliased() -> None:
    renamed = record(ID, MRN, name="Person")
    assert not compatible(renamed, V1, "BACKWARD")
    aliased = {**renamed, "aliases": ["test.compat.Patient"]}
    assert compatible(aliased, V1, "BACKWARD")


def test_recursive_schemas_terminate() -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
    ]}  # fmt: skip
    assert check_compatibility(node, [node], "FULL_TRANSITIVE").is_compatible


def test_accepts_strings_and_dicts_and_no_previous() -> None:
    assert check_compatibility(json.dumps(ADDED_OPTIONAL), [V1], "full").is_compatible
    assert check_compatibility(REMOVED_REQUIRED, [], POLICY_LEVEL).is_compatible


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="unknown compatibility level"):
        check_compatibility(V1, [V1], "SIDEWAYS")
    with pytest.raises(InvalidSchemaError, match="not JSON"):
        check_compatibility("{not json", [V1], "FULL")
    with pytest.raises(InvalidSchemaError):
        check_compatibility(record({"name": "x", "type": "nosuchtype"}), [V1], "FULL")
    with pytest.raises(InvalidSchemaError):  # fastavro validates defaults, avro alone would not
        check_compatibility(record({"name": "x", "type": "string", "default": None}), [], "FULL")
    with pytest.raises(ValueError, match="labels"):
        check_compatibility(V1, [V1], "FULL", labels=["a", "b"])


def test_normalize_level() -> None:
    assert normalize_level(" backward_transitive ") == "BACKWARD_TRANSITIVE"


def test_canonical_form_ignores_layout_and_name_spelling_but_not_defaults() -> None:
    pretty = json.dumps(V1, indent=4)
    reordered = json.dumps(dict(reversed(list(V1.items()))))
    qualified = json.dumps({**V1, "name": "test.compat.Patient", "namespace": None})
    assert canonical_form(pretty) == canonical_form(reordered) == canonical_form(V1)
    assert canonical_form(qualified) == canonical_form(V1)
    with_default = record(ID, {**MRN, "default": ""})
    assert canonical_form(with_default) != canonical_form(V1)
    assert canonical_form(record(MRN, ID)) != canonical_form(V1)  # field order is identity
