"""`fhirbus schemas check` as CI runs it: a breaking change fails, a compatible one passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirbus.cli import main
from fhirbus.embedded.broker import schema_dir

V1 = json.loads((schema_dir() / "fhirbus.canonical.CanonicalEvent.v1.avsc").read_text())


def _write(directory: Path, version: int, schema: dict) -> None:
    (directory / f"fhirbus.canonical.CanonicalEvent.v{version}.avsc").write_text(json.dumps(schema))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _write(tmp_path, 1, V1)
    return tmp_path


def test_shipped_schemas_pass() -> None:
    assert main(["schemas", "check"]) == 0


def test_removing_a_required_field_is_rejected(repo: Path, capsys: pytest.CaptureFixture) -> None:
    v2 = {**V1, "fields": [f for f in V1["fields"] if f["name"] != "mapping_version"]}
    _write(repo, 2, v2)
    assert main(["schemas", "check", "--dir", str(repo)]) == 1
    assert "v2 breaks" in capsys.readouterr().err


def test_adding_an_optional_field_with_default_passes(repo: Path) -> None:
    extra = {"name": "tenant", "type": ["null", "string"], "default": None}
    _write(repo, 2, {**V1, "fields": [*V1["fields"], extra]})
    assert main(["schemas", "check", "--dir", str(repo)]) == 0


def test_adding_a_required_field_without_default_is_rejected(repo: Path) -> None:
    _write(repo, 2, {**V1, "fields": [*V1["fields"], {"name": "tenant", "type": "string"}]})
    assert main(["schemas", "check", "--dir", str(repo)]) == 1
