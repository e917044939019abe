"""Schema governance: the schema files in the repository, and whether each version may follow
the ones before it (offline), or may follow what a registry already holds (online).

Files live in one directory named ``<record fullname>.v<N>.avsc``. The subject of a file is
its record fullname (record-name subject strategy), so every version of one record, across all
topics, is one subject. Versions of a subject must be 1..N with no gap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from .compat import (
    POLICY_LEVEL,
    InvalidSchemaError,
    check_compatibility,
    normalize_level,
    parse_avro,
)

_FILE_NAME = re.compile(
    r"^(?P<fullname>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"\.v(?P<version>[1-9][0-9]*)\.avsc$"
)
# Confluent error codes that mean "not registered" rather than "the call failed".
_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403
_SUBJECT_LEVEL_NOT_SET = 40408


class SchemaFile(NamedTuple):
    version: int
    schema_str: str
    path: Path


class SchemaFileError(ValueError):
    """One or more schema files are malformed; each problem names its file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Finding:
    """A version that may not be published. ``severity`` "warning" does not fail a check."""

    subject: str
    version: int | None
    path: Path | None
    messages: list[str] = field(default_factory=list)
    severity: str = "error"

    def __str__(self) -> str:
        where = str(self.path) if self.path else self.subject
        body = "\n  ".join(self.messages)
        return f"{self.severity}: {where}:\n  {body}"


def load_schema_files(schema_dir: Path | str) -> dict[str, list[SchemaFile]]:
    """Read every ``*.avsc`` in ``schema_dir``: ``{subject: [SchemaFile, ...]}`` by version.

    Raises :class:`SchemaFileError` listing every bad file (name, JSON, fullname, parse,
    version gaps), so one run shows all of them.
    """
    directory = Path(schema_dir)
    if not directory.is_dir():
        raise SchemaFileError([f"{directory}: schema directory does not exist"])
    problems: list[str] = []
    subjects: dict[str, list[SchemaFile]] = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            subject, version, text = _read_schema_file(path)
        except _BadFile as exc:
            problems.append(f"{path}: {exc}")
            continue
        subjects.setdefault(subject, []).append(SchemaFile(version, text, path))
    for subject, files in subjects.items():
        files.sort(key=lambda f: f.version)
        expected = list(range(1, len(files) + 1))
        if [f.version for f in files] != expected:
            found = ", ".join(f"v{f.version}" for f in files)
            problems.append(
                f"{directory}: versions of {subject} must be v1..v{len(files)} without gaps; "
                f"found {found}"
            )
    if problems:
        raise SchemaFileError(problems)
    return dict(sorted(subjects.items()))


class _BadFile(Exception):
    pass


def _read_schema_file(path: Path) -> tuple[str, int, str]:
    match = _FILE_NAME.match(path.name)
    if not match:
        raise _BadFile("file name must be <record fullname>.v<N>.avsc, N >= 1")
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadFile(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(obj, dict) or obj.get("type") != "record":
        raise _BadFile("top-level schema must be a record (subjects are record names)")
    fullname = _record_fullname(obj)
    if fullname != match["fullname"]:
        raise _BadFile(
            f"record fullname is {fullname!r} but the file name says {match['fullname']!r}"
        )
    try:
        parse_avro(text)  # fastavro, and the Apache avro parser the checker runs on
    except InvalidSchemaError as exc:
        raise _BadFile(f"invalid Avro schema: {exc}") from exc
    return fullname, int(match["version"]), text


def _record_fullname(obj: dict[str, Any]) -> str:
    name = str(obj.get("name", ""))
    if "." in name:
        return name
    namespace = obj.get("namespace")
    return f"{namespace}.{name}" if namespace else name


def check_repository(schema_dir: Path | str, level: str = POLICY_LEVEL) -> list[Finding]:
    """Check each version of each subject against its predecessors; [] means all pass."""
    level = normalize_level(level)
    findings: list[Finding] = []
    for subject, files in load_schema_files(schema_dir).items():
        for index, current in enumerate(files[1:], start=1):
            earlier = files[:index]
            result = check_compatibility(
                current.schema_str,
                [f.schema_str for f in earlier],
                level,
                labels=[f"v{f.version}" for f in earlier],
            )
            if not result.is_compatible:
                messages = [f"v{current.version} breaks {level} compatibility", *result.messages]
                findings.append(Finding(subject, current.version, current.path, messages))
    return findings


def check_against_registry(
    schema_dir: Path | str, client: SchemaRegistryClient, level: str = POLICY_LEVEL
) -> list[Finding]:
    """Ask the registry whether each file not yet registered would be accepted.

    Uses the registry's own compatibility API against all registered versions (so the
    subject's configured level, transitive or not, decides), and warns when that level is
    not ``level``, since the offline check and the registry would then disagree.
    """
    level = normalize_level(level)
    findings: list[Finding] = []
    for subject, files in load_schema_files(schema_dir).items():
        registry_level = _registry_level(client, subject)
        if registry_level != level:
            note = f"registry enforces {registry_level} for {subject}; repository policy is {level}"
            findings.append(Finding(subject, None, None, [note], severity="warning"))
        for current in files:
            state = _registration(client, subject, current.schema_str)
            if state == "no subject":
                break  # nothing registered yet: the offline check covers the whole chain
            schema = Schema(current.schema_str, "AVRO")
            if state == "absent" and not client.test_compatibility_all_versions(subject, schema):
                messages = [f"v{current.version} is rejected by the registry ({registry_level})"]
                messages += _explain(client, subject, current.schema_str, registry_level)
                findings.append(Finding(subject, current.version, current.path, messages))
    return findings


def _registration(client: SchemaRegistryClient, subject: str, schema_str: str) -> str:
    """One of: registered, absent (the subject exists without it), no subject."""
    try:
        client.lookup_schema(subject, Schema(schema_str, "AVRO"))
        return "registered"
    except SchemaRegistryError as exc:
        if exc.error_code == _SUBJECT_NOT_FOUND:
            return "no subject"
        if exc.error_code == _SCHEMA_NOT_FOUND:
            return "absent"
        raise


def _explain(
    client: SchemaRegistryClient, subject: str, schema_str: str, registry_level: str
) -> list[str]:
    # The client's compatibility call returns a bare bool; rerun the check locally for details.
    versions = client.get_versions(subject)
    registered = [client.get_version(subject, v).schema.schema_str for v in versions]
    labels = [f"registered version {v}" for v in versions]
    return check_compatibility(schema_str, registered, registry_level, labels=labels).messages


def _registry_level(client: SchemaRegistryClient, subject: str) -> str:
    try:
        return normalize_level(client.get_compatibility(subject))
    except SchemaRegistryError as exc:
        # Confluent answers 40408 (or 40401) when the subject has no level of its own.
        if exc.error_code not in (_SUBJECT_LEVEL_NOT_SET, _SUBJECT_NOT_FOUND):
            raise
    return normalize_level(client.get_compatibility())
