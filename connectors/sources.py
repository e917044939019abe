"""CDC source declarations: one YAML file read by both CDC paths.

The in-process slot reader (``fhirbus cdc run``) and the Debezium connector configs
(``fhirbus connectors apply``) are generated from the same declaration, so both publish the
same topics with the same event shape. ``${VAR}`` in any string expands from the
environment at load time: DSNs carry passwords, and the file must be safe to commit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fhirbus.settings import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENT = r"^[a-z_][a-z0-9_]*$"
EXAMPLES_DIR = Path(__file__).parent / "examples"
EXAMPLE_SOURCES = EXAMPLES_DIR / "labbilling" / "sources.yaml"


class TableDeclaration(BaseModel):
    """One captured table. ``key_columns`` is needed only for a table without a primary key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_name: str = Field(alias="schema", pattern=_IDENT)
    table: str = Field(pattern=_IDENT)
    key_columns: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.table}"


class SourceDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_IDENT)
    dsn: str
    slot: str = Field("", pattern=r"^$|^[a-z0-9_]{1,63}$")
    # Debezium's pgoutput plugin needs a publication; the wal2json path filters by table.
    publication: str = Field("", pattern=r"^$|^[a-z0-9_]{1,63}$")
    snapshot: Literal["initial", "never"] = "initial"
    tables: tuple[TableDeclaration, ...] = Field(min_length=1)

    def model_post_init(self, _context: object) -> None:
        if not self.slot:
            object.__setattr__(self, "slot", f"fhirbus_{self.name}")
        if not self.publication:
            object.__setattr__(self, "publication", f"fhirbus_{self.name}")

    def topic(self, table: TableDeclaration) -> str:
        from fhirbus.schemas.topics import cdc_topic

        return cdc_topic(self.name, table.schema_name, table.table)

    def find_table(self, qualified: str) -> TableDeclaration | None:
        return next((t for t in self.tables if t.qualified == qualified), None)


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[SourceDeclaration, ...]


def load_sources(path: Path) -> list[SourceDeclaration]:
    """Read and validate a sources file, or raise ConfigError saying what is wrong where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read CDC sources file {path}: {exc.strerror}") from None
    try:
        data = _expand(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"CDC sources file {path} is not valid YAML: {exc}") from None
    try:
        declared = SourcesFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"CDC sources file {path}: {problems}") from None
    names = [s.name for s in declared.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"CDC sources file {path}: source names must be unique")
    return list(declared.sources)


def find_source(sources: list[SourceDeclaration], name: str) -> SourceDeclaration:
    for source in sources:
        if source.name == name:
            return source
    known = ", ".join(s.name for s in sources) or "(none)"
    raise ConfigError(f"no CDC source named {name!r}; declared sources: {known}")


def _expand(value: object) -> object:
    if isinstance(value, str):
        return _VAR.sub(_env_value, value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _env_value(match: re.Match[str]) -> str:
    name = match.group(1)
    if name not in os.environ:
        raise ConfigError(f"CDC sources file refers to ${{{name}}}, which is not set")
    return os.environ[name]
