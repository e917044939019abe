"""The per-table mapping file (YAML), validated with pydantic when it is loaded.

See README.md in this folder for the format. Every problem is reported as a ConfigError
naming the file and the key (``lab_results.yaml: elements.status.map: ...``), so a bad
mapping stops the canonicalizer at start instead of dead-lettering every row.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fhirbus.schemas.topics import CANONICAL_RESOURCES

_IDENT = r"^[a-z_][a-z0-9_]*$"
_QUALIFIED = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"
_URI = re.compile(r"^(urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+|https?://\S+)$")
ELEMENT_PATH = re.compile(r"^[a-z][A-Za-z0-9]*(\[\d{1,2}\])?(\.[a-z][A-Za-z0-9]*(\[\d{1,2}\])?)*$")
ValueType = Literal["string", "code", "integer", "decimal", "boolean", "date", "dateTime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(path: str) -> str:
    if not ELEMENT_PATH.match(path):
        raise ValueError(f"{path!r} is not an element path such as 'code.coding[0].code'")
    if path.split(".")[0].split("[")[0] in ("id", "resourceType", "meta"):
        raise ValueError(f"{path!r}: id, resourceType and meta are set by fhirbus")
    return path


class ElementRule(_Strict):
    """One FHIR element from a column (optionally through a code map) or a constant."""

    column: str | None = Field(None, pattern=_IDENT)
    const: Any = None
    type: ValueType = "string"
    map: dict[str, Any] | str | None = None  # inline code map, or the name of a code_maps entry
    when: str | tuple[str, ...] | None = None  # only if these columns are all not NULL
    unless: str | None = Field(None, pattern=_IDENT)  # only if this column is NULL
    times: str | None = Field(None, pattern=_IDENT)  # decimal: multiplied by this column

    @model_validator(mode="after")
    def _one_source(self) -> ElementRule:
        if (self.column is None) == (self.const is None):
            raise ValueError("set exactly one of 'column' or 'const'")
        if self.map is not None and self.column is None:
            raise ValueError("'map' needs a 'column'")
        for column in (self.when,) if isinstance(self.when, str) else self.when or ():
            if not re.match(_IDENT, column):
                raise ValueError(f"when: {column!r} is not a column name")
        if self.times is not None and (self.column is None or self.type != "decimal"):
            raise ValueError("'times' needs a 'column' of type decimal")
        return self


class IdentifierRule(_Strict):
    column: str = Field(pattern=_IDENT)
    system: str
    type: str | None = None  # an HL7 v2-0203 identifier type code (MR, AN, ...)
    use: Literal["usual", "official", "temp", "secondary", "old"] | None = None

    @field_validator("system")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not _URI.match(value):
            raise ValueError("expected an absolute URI (http(s)://... or urn:...)")
        return value


class ReferenceRule(_Strict):
    """A reference to the resource another mapped table's row became."""

    column: str = Field(pattern=_IDENT)
    table: str = Field(pattern=_QUALIFIED)


class IdentifierId(_Strict):
    identifier: str = Field(pattern=_IDENT)


class DeleteRule(_Strict):
    event_type: str = Field(pattern=r"^[a-z]+\.[a-z-]+$")
    set: dict[str, Any] = Field(min_length=1)  # element path -> constant (the retirement)
    # Stand-ins for required elements when the delete carries only the key
    # (REPLICA IDENTITY DEFAULT): the row's other columns are gone.
    key_only: dict[str, Any] = Field(default_factory=dict)

    @field_validator("set", "key_only")
    @classmethod
    def _paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            _check_path(path)
        return value


class TableMappingFile(_Strict):
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    table: str = Field(pattern=_QUALIFIED)
    resource: str
    key: tuple[str, ...] = Field(min_length=1)
    id: Literal["key"] | IdentifierId = "key"
    business_version: str | Literal["$lsn"] = Field(pattern=r"^(\$lsn|[a-z_][a-z0-9_]*)$")
    occurred_at: str | None = Field(None, pattern=_IDENT)
    event_type: str = Field(pattern=r"^[a-z]+\.([a-z-]+|\{status\})$")
    identifiers: tuple[IdentifierRule, ...] = ()
    references: dict[str, ReferenceRule] = Field(default_factory=dict)
    elements: dict[str, ElementRule | str] = Field(default_factory=dict)
    code_maps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    on_delete: DeleteRule

    @field_validator("resource")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CANONICAL_RESOURCES:
            raise ValueError(f"expected one of {', '.join(CANONICAL_RESOURCES)}")
        return value

    @field_validator("key")
    @classmethod
    def _key_columns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for column in value:
            if not re.match(_IDENT, column):
                raise ValueError(f"{column!r} is not a column name")
        return value

    @field_validator("elements", "references")
    @classmethod
    def _element_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            _check_path(path)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TableMappingFile:
        for path, rule in self.elements.items():
            if isinstance(rule, ElementRule) and isinstance(rule.map, str) \
                    and rule.map not in self.code_maps:
                raise ValueError(f"elements.{path}.map: no code_maps entry {rule.map!r}")
        if isinstance(self.id, IdentifierId) and self.id.identifier not in {
                i.column for i in self.identifiers}:
            raise ValueError(f"id.identifier: {self.id.identifier!r} is not in identifiers")
        return self
