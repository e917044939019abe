"""Read a folder of per-table mapping files, link references between them, check each.

Every ``*.yaml`` file is validated (``spec``), compiled (``mapping``), its references to
other tables resolved, and a sample row mapped through it (``check``): a mapping that cannot
produce a valid FHIR resource stops the canonicalizer at start, naming the file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml
from pydantic import ValidationError

from fhirbus.settings import ConfigError

from .check import check_mapping
from .mapping import Mappings, Reference, TableMapping, compile_mapping
from .spec import TableMappingFile

EXAMPLE_MAPPINGS = (
    Path(__file__).resolve().parents[3] / "connectors" / "examples" / "labbilling" / "mappings"
)


def read_mapping_file(path: Path) -> TableMapping:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read CDC mapping {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"CDC mapping {path} is not valid YAML: {exc}") from None
    try:
        spec = TableMappingFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"CDC mapping {path}: {problems}") from None
    return compile_mapping(path.name, spec)


def load_mappings(folder: Path | None = None) -> Mappings:
    folder = folder or EXAMPLE_MAPPINGS
    if not folder.is_dir():
        raise ConfigError(f"CDC mappings folder {folder} does not exist "
                          "(FHIRBUS_CDC__MAPPINGS_DIR)")
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ConfigError(f"CDC mappings folder {folder} holds no *.yaml mapping")
    tables: dict[str, TableMapping] = {}
    for path in files:
        m = read_mapping_file(path)
        if m.table in tables:
            raise ConfigError(f"CDC mapping {path}: table {m.table} is already mapped by "
                              f"{tables[m.table].file}")
        tables[m.table] = m
    linked = {t: _link(m, tables) for t, m in tables.items()}
    for m in linked.values():
        check_mapping(m, linked)
    return Mappings(linked, folder)


def _link(m: TableMapping, tables: dict[str, TableMapping]) -> TableMapping:
    refs = []
    for r in m.references:
        target = tables.get(r.table)
        where = f"CDC mapping {m.file}: references.{'.'.join(map(str, r.path))}"
        if target is None:
            raise ConfigError(f"{where}: table {r.table} has no mapping in this folder")
        if target.id_identifier is not None or len(target.key) != 1:
            raise ConfigError(f"{where}: {r.table} must be identified by a one-column key "
                              "(id: key) to be referenced by a column")
        refs.append(Reference(r.path, r.column, r.table, target.resource))
    return replace(m, references=tuple(refs))
