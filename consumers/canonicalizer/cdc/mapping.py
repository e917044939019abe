"""Per-table mappings compiled once: parsed paths, resolved code maps, bound converters
(``load.load_mappings`` reads and checks a folder of them)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from ..validate import element_model
from . import convert, paths
from .spec import ElementRule, IdentifierRule, TableMappingFile


@dataclass(frozen=True, slots=True)
class Element:
    path: paths.Path
    column: str | None
    const: Any
    convert: convert.Converter
    codes: dict[str, Any] | None
    when: tuple[str, ...]  # every one must be non-NULL
    unless: str | None
    times: str | None


@dataclass(frozen=True, slots=True)
class Reference:
    path: paths.Path
    column: str
    table: str
    resource: str  # the referenced table's resource type (set when the folder is linked)


@dataclass(frozen=True)
class TableMapping:
    file: str
    table: str
    resource: str
    key: tuple[str, ...]
    id_identifier: IdentifierRule | None  # None: the id is the row's key
    version_column: str | None  # None: the LSN orders the versions
    occurred_at: str | None
    event_type: str
    identifiers: tuple[IdentifierRule, ...]
    references: tuple[Reference, ...]
    elements: tuple[Element, ...]
    delete_event_type: str
    delete_set: tuple[tuple[paths.Path, Any], ...]
    key_only_set: tuple[tuple[paths.Path, Any], ...]
    mapping_version: str

    @property
    def columns(self) -> frozenset[str]:
        """Every column the mapping reads."""
        cols = {c for e in self.elements for c in (e.column, *e.when, e.unless, e.times) if c}
        cols |= {i.column for i in self.identifiers} | {r.column for r in self.references}
        cols |= {c for c in (self.version_column, self.occurred_at) if c}
        return frozenset(cols | set(self.key))


def compile_mapping(file: str, spec: TableMappingFile) -> TableMapping:
    elements = []
    for path, rule in spec.elements.items():
        r = rule if isinstance(rule, ElementRule) else ElementRule(column=rule)
        codes = spec.code_maps[r.map] if isinstance(r.map, str) else r.map
        kind = "code" if r.type == "string" and _is_code(spec.resource, path) else r.type
        elements.append(Element(paths.parse(path), r.column, r.const,
                                convert.CONVERTERS[kind], codes,
                                (r.when,) if isinstance(r.when, str) else r.when or (),
                                r.unless,
                                r.times))
    return TableMapping(
        file=file,
        table=spec.table,
        resource=spec.resource,
        key=spec.key,
        id_identifier=None if spec.id == "key" else next(
            i for i in spec.identifiers if i.column == spec.id.identifier),  # type: ignore[union-attr]
        version_column=None if spec.business_version == "$lsn" else spec.business_version,
        occurred_at=spec.occurred_at,
        event_type=spec.event_type,
        identifiers=spec.identifiers,
        references=tuple(Reference(paths.parse(p), r.column, r.table, "")
                         for p, r in spec.references.items()),
        elements=tuple(elements),
        delete_event_type=spec.on_delete.event_type,
        delete_set=tuple((paths.parse(p), v) for p, v in spec.on_delete.set.items()),
        key_only_set=tuple((paths.parse(p), v) for p, v in spec.on_delete.key_only.items()),
        mapping_version=f"cdc-{spec.table}-{spec.version}",
    )


def _is_code(resource: str, path: str) -> bool:
    """Whether the element at ``path`` is a FHIR ``code``: a column written there as a plain
    string is read with the code's whitespace rules, so a padded column is not dead-lettered."""
    model: Any = get_fhir_model_class(resource)
    annotation: Any = None
    for step in paths.parse(path):
        if isinstance(step, int):
            continue
        if annotation is not None:
            model = element_model(annotation)
        fields = {f.alias or n: f for n, f in model.model_fields.items()} if model else {}
        if step not in fields:
            return False  # the loader's own check names a bad path
        annotation = fields[step].annotation
    return any(type(m).__name__ == "Code" for m in _metadata(annotation))


def _metadata(annotation: Any) -> list[Any]:
    found = list(getattr(annotation, "__metadata__", ()))
    for arg in typing.get_args(annotation):
        found += _metadata(arg)
    return found


class Mappings:
    """Every table mapping of one folder, by ``schema.table``."""

    def __init__(self, tables: dict[str, TableMapping], folder: object = None) -> None:
        self.tables = tables
        self.folder = folder

    def get(self, qualified: str) -> TableMapping | None:
        return self.tables.get(qualified)
