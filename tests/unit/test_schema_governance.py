"""Schema files in the repository: naming, loading, and the offline compatibility check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirbus.schemas.governance import (
    SchemaFile,
    SchemaFileError,
    check_repository,
    load_schema_files,
)

SUBJECT = "test.gov.Patient"


def record(*fields: dict[str, Any], name: str = "Patient", ns: str = "test.gov") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": ns, "fields": list(fields)}


ID = {"name": "id", "type": "string"}
MRN = {"name": "mrn", "type": "string"}
NOTE = {"name": "note", "type": ["null", "string"], "default": None}


def write(directory: Path, file_name: str, schema: dict[str, Any] | str) -> Path:
    path = directory / file_name
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema, indent=2))
    return path


def test_loads_subjects_with_versions_in_order(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID, MRN, NOTE))
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID, MRN))
    write(tmp_path, "test.gov.Encounter.v1.avsc", record(ID, name="Encounter"))
    (tmp_path / "README.md").write_text("not a schema")

    loaded = load_schema_files(tmp_path)

    assert list(loaded) == ["test.gov.Encounter", SUBJECT]
    assert [f.version for f in loaded[SUBJECT]] == [1, 2]
    first = loaded[SUBJECT][0]
    assert isinstance(first, SchemaFile)
    version, text, path = first
    assert (version, path.name) == (1, f"{SUBJECT}.v1.avsc")
    assert json.loads(text) == record(ID, MRN)


def test_fullname_from_dotted_name_without_namespace(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v1.avsc", {**record(ID), "name": SUBJECT, "namespace": None})
    assert list(load_schema_files(tmp_path)) == [SUBJECT]


def test_empty_directory_has_no_subjects(tmp_path: Path) -> None:
    assert load_schema_files(tmp_path) == {}


def test_repository_schemas_load() -> None:
    # The real schema directory must always satisfy the rules it is checked by.
    repo_schemas = Path(__file__).resolve().parents[2] / "schemas" / "avro"
    loaded = load_schema_files(repo_schemas)
    assert "fhirbus.canonical.CanonicalEvent" in loaded
    assert check_repository(repo_schemas) == []


@pytest.mark.parametrize(
    ("file_name", "content", "problem"),
    [
        ("Patient.avsc", record(ID), "file name must be <record fullname>.v<N>.avsc"),
        (f"{SUBJECT}.v0.avsc", record(ID), "file name must be"),
        (f"{SUBJECT}.v01.avsc", record(ID), "file name must be"),
        (f"{SUBJECT}.v1.avsc", record(ID, ns="other.ns"), "record fullname is 'other.ns.Patient'"),
        (f"{SUBJECT}.v1.avsc", '{"type": "record",\n "name": }', "not JSON: Expecting value at"
                                                                    " line 2"),
        (f"{SUBJECT}.v1.avsc", '"string"', "top-level schema must be a record"),
        (f"{SUBJECT}.v1.avsc", record({"name": "x", "type": "nosuch"}), "invalid Avro schema"),
        (f"{SUBJECT}.v1.avsc", record({"name": "x", "type": "int", "default": "a"}), "invalid"),
        (f"{SUBJECT}.v1.avsc", record({"name": "x"}), "invalid Avro schema"),
    ],
)  # fmt: skip
def test_bad_file_is_reported_with_its_name(
    tmp_path: Path, file_name: str, content: dict[str, Any] | str, problem: str
) -> None:
    path = write(tmp_path, file_name, content)
    with pytest.raises(SchemaFileError) as caught:
        load_schema_files(tmp_path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}: ")
    assert problem in caught.value.problems[0]


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "bad name.avsc", record(ID))
    write(tmp_path, f"{SUBJECT}.v1.avsc", "{")
    with pytest.raises(SchemaFileError) as caught:
        load_schema_files(tmp_path)
    assert len(caught.value.problems) == 2
    assert "bad name.avsc" in str(caught.value) and f"{SUBJECT}.v1.avsc" in str(caught.value)


def test_version_gap_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID))
    write(tmp_path, f"{SUBJECT}.v3.avsc", record(ID))
    with pytest.raises(SchemaFileError, match=r"v1\.\.v2 without gaps; found v1, v3"):
        load_schema_files(tmp_path)


def test_subject_must_start_at_v1(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID))
    with pytest.raises(SchemaFileError, match="found v2"):
        load_schema_files(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SchemaFileError, match="does not exist"):
        load_schema_files(tmp_path / "nope")


def test_check_rejects_v2_that_removes_a_required_field(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID, MRN))
    v2 = write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID))

    findings = check_repository(tmp_path)

    assert len(findings) == 1
    finding = findings[0]
    assert (finding.subject, finding.version, finding.path, finding.severity) == (
        SUBJECT, 2, v2, "error"
    )  # fmt: skip
    assert finding.messages[0] == "v2 breaks FULL_TRANSITIVE compatibility"
    assert any("readers on v1" in m and "mrn" in m for m in finding.messages[1:])
    assert str(v2) in str(finding)


def test_check_passes_v2_that_adds_an_optional_field_with_default(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID, MRN))
    write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID, MRN, NOTE))
    assert check_repository(tmp_path) == []


def test_check_is_transitive_by_default(tmp_path: Path) -> None:
    # Each step is FULL-compatible; only v3 against v1 is not (string written, int read).
    score_v1 = {"name": "score", "type": "string", "default": ""}
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID, score_v1))
    write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID))
    score_v3 = {"name": "score", "type": "int", "default": 0}
    write(tmp_path, f"{SUBJECT}.v3.avsc", record(ID, score_v3))

    assert check_repository(tmp_path, "FULL") == []
    findings = check_repository(tmp_path)
    assert [f.version for f in findings] == [3]
    assert all("v1" in m for m in findings[0].messages[1:])
    assert any("TYPE_MISMATCH" in m for m in findings[0].messages)


def test_check_level_is_configurable(tmp_path: Path) -> None:
    write(tmp_path, f"{SUBJECT}.v1.avsc", record(ID, MRN))
    write(tmp_path, f"{SUBJECT}.v2.avsc", record(ID))
    assert check_repository(tmp_path, "backward") == []
    with pytest.raises(ValueError, match="unknown compatibility level"):
        check_repository(tmp_path, "LENIENT")
