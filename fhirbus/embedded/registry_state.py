"""Embedded schema registry state: schemas, subjects, ids, compatibility and the store file.

This is what the registry knows, with no HTTP in it; ``fhirbus.embedded.registry`` serves it.
Compatibility is decided by ``fhirbus.schemas.compat.check_compatibility``, the function
``fhirbus schemas check`` uses, under the same default level.

Schema identity is the canonical form, so a schema re-sent with other whitespace or key order
gets its existing id (``normalize`` is accepted; there is nothing left for it to do). Ids are
global across subjects and handed out in order, schema files first (by version, then subject),
so the same files give the same ids on every start. ``store_path`` keeps what was registered,
configured or deleted at runtime across restarts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhirbus.schemas.compat import (
    POLICY_LEVEL,
    InvalidSchemaError,
    canonical_form,
    check_compatibility,
    normalize_level,
)
from fhirbus.schemas.governance import load_schema_files

_MAX_VERSION = 2**31 - 1
# A fixed namespace makes a schema's guid a function of its canonical form: stable run to run.
_GUID_NAMESPACE = uuid.UUID("6f1d7c1e-5b1a-4d0e-9a47-2b3f1c0d9e11")
_STORE_FORMAT = 1

# Confluent's codes and wording, so clients and people see what a real registry would say.
_ERRORS = {
    40401: (404, "Subject '{s}' not found."),
    40402: (404, "Version {v} not found."),
    40403: (404, "Schema {id} not found"),
    40404: (404, "Subject '{s}' was soft deleted.Set permanent=true to delete permanently"),
    40405: (404, "Subject '{s}' was not deleted first before being permanently deleted"),
    40406: (404, "Subject '{s}' Version {v} was soft deleted.Set permanent=true to delete"
                 " permanently"),
    40407: (404, "Subject '{s}' Version {v} was not deleted first before being permanently"
                 " deleted"),
    40408: (404, "Subject '{s}' does not have subject-level compatibility configured"),
    409: (409, "Schema being registered is incompatible with an earlier schema for subject"
               ' "{s}", details: {details}'),
    42201: (422, "{details}"),
    42202: (422, "The specified version '{v}' is not a valid version id. Allowed values are"
                 ' between [1, 2^31-1] and the string "latest"'),
    42203: (422, "Invalid compatibility level. Valid values are none, backward, forward, full,"
                 " backward_transitive, forward_transitive, and full_transitive"),
}  # fmt: skip


class RegistryError(Exception):
    """A Confluent-style error response: HTTP status plus registry error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RegistryStartupError(RuntimeError):
    """The schema files or the store cannot be loaded."""


def registry_error(code: int, **fields: Any) -> RegistryError:
    """The error a real registry returns for ``code``, its message filled in from ``fields``."""
    status, template = _ERRORS[code]
    return RegistryError(status, code, template.format(**fields))


@dataclass
class _Schema:
    id: int
    text: str
    canonical: str
    guid: str


@dataclass
class _Version:
    version: int
    schema_id: int
    deleted: bool = False


class RegistryState:
    """Registry contents and the operations on them. Callers hold the registry lock."""

    def __init__(self) -> None:
        self.schemas: dict[int, _Schema] = {}
        self.by_canonical: dict[str, int] = {}
        self.subjects: dict[str, list[_Version]] = {}
        self.global_level = POLICY_LEVEL
        self.levels: dict[str, str] = {}
        self.next_id = 1

    def intern(self, text: str, canonical: str) -> _Schema:
        if canonical in self.by_canonical:
            return self.schemas[self.by_canonical[canonical]]
        # Served as compact JSON in the writer's key order, as Confluent does.
        compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        record = _Schema(self.next_id, compact, canonical, _guid(canonical))
        self.schemas[record.id] = record
        self.by_canonical[canonical] = record.id
        self.next_id += 1
        return record

    def versions(self, subject: str, deleted: bool = False) -> list[_Version]:
        return [v for v in self.subjects.get(subject, []) if deleted or not v.deleted]

    def find(self, subject: str, token: str, deleted: bool = False) -> _Version:
        number = _parse_version(token)
        versions = self.versions(subject, deleted)
        if not versions:
            raise registry_error(40401, s=subject)
        matches = [v for v in versions if v.version == number] if number else versions[-1:]
        if not matches:
            raise registry_error(40402, v=number)
        return matches[0]

    def visible(self, schema_id: int) -> _Schema:
        # A soft-deleted version keeps its id readable (old messages still decode).
        if not any(v.schema_id == schema_id for vs in self.subjects.values() for v in vs):
            raise registry_error(40403, id=schema_id)
        return self.schemas[schema_id]

    def describe(self, subject: str, v: _Version, with_schema: bool = True) -> dict[str, Any]:
        s = self.schemas[v.schema_id]
        described = {"subject": subject, "version": v.version, "id": s.id, "guid": s.guid}
        return {**described, "schema": s.text} if with_schema else described

    def check(self, subject: str, text: str, previous: list[_Version]) -> tuple[bool, list[str]]:
        result = check_compatibility(
            text,
            [self.schemas[v.schema_id].text for v in previous],
            self.levels.get(subject, self.global_level),
            labels=[f"version {v.version}" for v in previous],
        )
        return result.is_compatible, result.messages

    def register(self, subject: str, text: str) -> dict[str, Any]:
        canonical, live = _canonical(text), self.versions(subject)
        for v in live:
            if self.schemas[v.schema_id].canonical == canonical:
                return self.describe(subject, v, with_schema=False)
        ok, messages = self.check(subject, text, live)
        if not ok:
            raise registry_error(409, s=subject, details=messages)
        record = self.intern(text, canonical)
        every = self.subjects.setdefault(subject, [])
        every.append(_Version(max((v.version for v in every), default=0) + 1, record.id))
        # Without "schema" the client caches the id under the schema it sent, so asking again
        # with the same Schema is answered from its cache.
        return self.describe(subject, every[-1], with_schema=False)

    def lookup(self, subject: str, text: str, deleted: bool) -> dict[str, Any]:
        canonical, versions = _canonical(text), self.versions(subject, deleted)
        if not versions:
            raise registry_error(40401, s=subject)
        for v in versions:
            if self.schemas[v.schema_id].canonical == canonical:
                return self.describe(subject, v)
        raise RegistryError(404, 40403, "Schema not found")

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        every, live = self.versions(subject, deleted=True), self.versions(subject)
        if not every:
            raise registry_error(40401, s=subject)
        if permanent and live:
            raise registry_error(40405, s=subject)
        if not permanent and not live:
            raise registry_error(40404, s=subject)
        if permanent:
            del self.subjects[subject]
        for v in live:
            v.deleted = True
        self.levels.pop(subject, None)  # Confluent drops the subject's config with it
        return [v.version for v in (every if permanent else live)]

    def delete_version(self, subject: str, token: str, permanent: bool) -> int:
        v = self.find(subject, token, deleted=True)
        if v.deleted != permanent:
            raise registry_error(40407 if permanent else 40406, s=subject, v=v.version)
        if permanent:
            self.subjects[subject].remove(v)
            if not self.subjects[subject]:
                del self.subjects[subject]
        v.deleted = True
        return v.version

    def test(self, subject: str, token: str | None, text: str, verbose: bool) -> dict[str, Any]:
        _canonical(text)
        if token is None:
            previous = self.versions(subject)  # the level decides: latest only, or all
        elif _parse_version(token) is None and not self.versions(subject):
            previous = []  # "latest" of a subject not yet registered: anything goes
        else:
            previous = [self.find(subject, token)]
        ok, messages = self.check(subject, text, previous)
        return {"is_compatible": ok, "messages": messages} if verbose else {"is_compatible": ok}

    def to_json(self) -> dict[str, Any]:
        subjects = {
            name: [{"version": v.version, "id": v.schema_id, "deleted": v.deleted} for v in vs]
            for name, vs in self.subjects.items()
        }
        schemas = [{"id": s.id, "schema": s.text} for s in self.schemas.values()]
        return {"format": _STORE_FORMAT, "next_id": self.next_id, "schemas": schemas,
                "subjects": subjects, "global_level": self.global_level,
                "levels": self.levels}  # fmt: skip

    def load_json(self, data: dict[str, Any]) -> None:
        if data.get("format") != _STORE_FORMAT:
            raise ValueError(f"unknown store format {data.get('format')!r}")
        for item in data["schemas"]:
            canonical = canonical_form(item["schema"])
            record = _Schema(item["id"], item["schema"], canonical, _guid(canonical))
            self.schemas[record.id] = record
            self.by_canonical.setdefault(canonical, record.id)
        self.subjects = {
            name: [_Version(v["version"], v["id"], v["deleted"]) for v in vs]
            for name, vs in data["subjects"].items()
        }
        self.global_level = normalize_level(data["global_level"])
        self.levels = {k: normalize_level(v) for k, v in data["levels"].items()}
        self.next_id = max([data["next_id"], *(i + 1 for i in self.schemas)])


def _guid(canonical: str) -> str:
    return str(uuid.uuid5(_GUID_NAMESPACE, canonical))


def _canonical(text: str) -> str:
    try:
        return canonical_form(text)
    except InvalidSchemaError as exc:
        raise registry_error(42201, details=f"Invalid schema: {exc}") from exc


def _parse_version(token: str) -> int | None:
    """A version number, or None for "latest" (also spelled -1)."""
    number = int(token) if re.fullmatch(r"-?\d{1,10}", token) else 0
    if token == "latest" or number == -1:
        return None
    if not 1 <= number <= _MAX_VERSION:
        raise registry_error(42202, v=token)
    return number


# -- persistence -------------------------------------------------------------------------------
class RegistryStore:
    """One :class:`RegistryState`, the lock that serializes it, and the file that keeps it."""

    def __init__(self, store_path: Path | None) -> None:
        self.state = RegistryState()
        self.lock = threading.RLock()
        self.store_path = store_path

    def load(self) -> None:
        if self.store_path is None or not self.store_path.exists():
            return
        try:
            self.state.load_json(json.loads(self.store_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryStartupError(
                f"{self.store_path}: cannot load the registry store: {type(exc).__name__}: {exc}"
            ) from exc

    def preload(self, schema_dir: Path) -> None:
        files = load_schema_files(schema_dir)
        ordered = sorted((f.version, subject, f) for subject, fs in files.items() for f in fs)
        with self.lock:
            for _version, subject, file in ordered:
                try:
                    self.state.register(subject, file.schema_str)
                except RegistryError as exc:
                    source = f" (with the state in {self.store_path})" if self.store_path else ""
                    raise RegistryStartupError(
                        f"{file.path}: cannot register under {subject}{source}: {exc.message}"
                    ) from exc
            self.save()

    def save(self) -> None:
        if self.store_path is not None:
            _atomic_write(self.store_path, json.dumps(self.state.to_json(), indent=1))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is flushed too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
