"""Per-feed site configuration: TOML, parsed with tomllib, validated with pydantic at start.

```toml
[default]                       # applies to every feed
timezone = "UTC"

[feeds.lab]                     # overrides for raw records keyed "lab"
timezone = "America/Chicago"
identifier_systems = { MPI = "https://hospital.example/mrn" }
code_systems = { "99LAB" = "https://hospital.example/lab-codes" }
unit_map = { "cells/mcL" = "/uL" }

[[feeds.lab.code_maps]]
source_system = "99LAB"         # CWE-3 as the sender writes it
target_system = "http://loinc.org"
codes = { GLU = { code = "2345-7", display = "Glucose [Mass/volume] in Serum or Plasma" } }

[[feeds.lab.z_segments]]
segment = "ZPD"
field = 1
resource = "Patient"
extension_url = "https://hospital.example/fhir/StructureDefinition/preferred-pharmacy"

[[feeds.lab.field_overrides]]
resource = "Patient"
element = "language"
value = "en"
```

A feed's maps are merged over ``[default]`` key by key; its lists are appended. Any invalid
key stops the process with a message that names it (``feeds.lab.timezone: ...``).
"""

from __future__ import annotations

import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fhirbus.schemas.topics import CANONICAL_RESOURCES
from fhirbus.settings import ConfigError

_URI = re.compile(r"^(urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+|https?://\S+)$")
_HL7_PATH = re.compile(r"^[A-Z][A-Z0-9]{2}-\d+(\[\d+\])?(\.\d+){0,2}$")


class SiteConfigError(ConfigError):
    """The site configuration is invalid; the message names the key (values may be PHI-free
    but are still not echoed)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _uri(value: str) -> str:
    if not _URI.match(value):
        raise ValueError("expected an absolute URI (http(s)://... or urn:...)")
    return value


class CodeTarget(_Strict):
    code: str = Field(min_length=1)
    display: str | None = None


class CodeMap(_Strict):
    source_system: str = Field(min_length=1)
    target_system: str
    codes: dict[str, CodeTarget]

    _check_target = field_validator("target_system")(classmethod(lambda cls, v: _uri(v)))


class ZSegmentRule(_Strict):
    segment: str = Field(pattern=r"^Z[A-Z0-9]{2}$")
    field: int = Field(ge=1)
    component: int = Field(1, ge=1)
    resource: str
    extension_url: str
    value_type: Literal["string", "code", "integer", "decimal", "boolean", "dateTime"] = "string"

    _check_url = field_validator("extension_url")(classmethod(lambda cls, v: _uri(v)))

    @field_validator("resource")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CANONICAL_RESOURCES:
            raise ValueError(f"expected one of {', '.join(CANONICAL_RESOURCES)}")
        return value


class FieldOverride(_Strict):
    """Set a top-level element of a mapped resource from an HL7 path or a constant."""

    resource: str
    element: str = Field(pattern=r"^[a-z][A-Za-z0-9]*$")
    source: str | None = None
    value: Any = None
    only_if_absent: bool = False

    _known = field_validator("resource")(ZSegmentRule._known.__func__)  # type: ignore[attr-defined]

    @field_validator("source")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _HL7_PATH.match(value):
            raise ValueError("expected an HL7 path such as 'PID-19' or 'OBX-3.2'")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldOverride:
        if (self.source is None) == (self.value is None):
            raise ValueError("set exactly one of 'source' (an HL7 path) or 'value'")
        if self.element in ("id", "resourceType", "meta"):
            raise ValueError("'id', 'resourceType' and 'meta' carry identity and provenance")
        return self


class FeedConfig(_Strict):
    timezone: str = "UTC"
    emit_patient: bool = True
    identifier_systems: dict[str, str] = Field(default_factory=dict)
    code_systems: dict[str, str] = Field(default_factory=dict)
    unit_map: dict[str, str] = Field(default_factory=dict)
    code_maps: list[CodeMap] = Field(default_factory=list)
    z_segments: list[ZSegmentRule] = Field(default_factory=list)
    field_overrides: list[FieldOverride] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone (e.g. 'UTC', 'Europe/Berlin')") from None
        return value

    @field_validator("identifier_systems", "code_systems")
    @classmethod
    def _uris(cls, value: dict[str, str]) -> dict[str, str]:
        for uri in value.values():
            _uri(uri)
        return value

    def translate(self, system_name: str, code: str) -> dict[str, str] | None:
        """The standard coding a local (system name, code) maps to, if any."""
        table = self._translations.get(system_name)
        return table.get(code) if table else None

    @cached_property
    def _translations(self) -> dict[str, dict[str, dict[str, str]]]:
        """source system -> local code -> target coding (system, code, display)."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        for cmap in self.code_maps:
            table = out.setdefault(cmap.source_system, {})
            for local, target in cmap.codes.items():
                coding = {"system": cmap.target_system, "code": target.code}
                if target.display:
                    coding["display"] = target.display
                table[local] = coding
        return out


class SiteConfig(_Strict):
    default: FeedConfig = Field(default_factory=FeedConfig)
    feeds: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        resolved = {name: _merged(self.default, raw, f"feeds.{name}") for name, raw in
                    self.feeds.items()}
        object.__setattr__(self, "_resolved", resolved)

    def for_feed(self, feed: str) -> FeedConfig:
        resolved: dict[str, FeedConfig] = self._resolved  # type: ignore[attr-defined]
        return resolved.get(feed, self.default)


def _merged(default: FeedConfig, raw: dict[str, Any], where: str) -> FeedConfig:
    base = default.model_dump(exclude_defaults=False)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        elif isinstance(value, list) and isinstance(base.get(key), list):
            base[key] = [*base[key], *value]
        else:
            base[key] = value
    try:
        return FeedConfig.model_validate(base)
    except ValidationError as exc:
        raise SiteConfigError(_describe(exc, where)) from None


def _describe(exc: ValidationError, where: str | None = None) -> str:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{where}.{loc}" if where else loc
        problems.append(f"{key}: {err['msg']}")
    return "invalid site configuration: " + "; ".join(problems)


def load_site_config(path: Path | None) -> SiteConfig:
    """Read and validate a site file; no file means the defaults."""
    if path is None:
        return SiteConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"cannot read site configuration {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiteConfigError(f"site configuration {path} is not valid TOML: {exc}") from None
    return parse_site_config(data)


def parse_site_config(data: dict[str, Any]) -> SiteConfig:
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise SiteConfigError(_describe(exc)) from None
