"""The embedded registry, driven through confluent-kafka's own registry client and Avro serdes,
plus raw HTTP for what the client hides (error codes, verbose compatibility, headers)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    header_schema_id_serializer,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from fhirbus.embedded.registry import CONTENT_TYPE, EmbeddedRegistry, RegistryStartupError
from fhirbus.schemas.governance import SchemaFileError, check_against_registry, check_repository

SUBJECT = "test.registry.Patient"
TOPIC = "fhir.patient.v1"


def record(*fields: dict[str, Any], name: str = "Patient") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test.registry", "fields": list(fields)}


ID = {"name": "id", "type": "string"}
MRN = {"name": "mrn", "type": "string"}
NOTE = {"name": "note", "type": ["null", "string"], "default": None}
V1 = record(ID, MRN)
V2_OPTIONAL = record(ID, MRN, NOTE)
V2_REMOVED = record(ID)
ENCOUNTER = record(ID, name="Encounter")


def avro(schema: dict[str, Any], indent: int | None = None) -> Schema:
    return Schema(json.dumps(schema, indent=indent), "AVRO")


def write(directory: Path, subject: str, version: int, schema: dict[str, Any]) -> Path:
    path = directory / f"{subject}.v{version}.avsc"
    path.write_text(json.dumps(schema, indent=2))
    return path


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "avro"
    directory.mkdir()
    write(directory, SUBJECT, 1, V1)
    write(directory, "test.registry.Encounter", 1, ENCOUNTER)
    return directory


@pytest.fixture
def registry(schema_dir: Path) -> Iterator[EmbeddedRegistry]:
    with EmbeddedRegistry(schema_dir) as running:
        yield running


@pytest.fixture
def client(registry: EmbeddedRegistry) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry.url}) as sr:
        yield sr


def api(registry: EmbeddedRegistry, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, registry.url + path, timeout=10, **kwargs)


def assert_error(response: requests.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == CONTENT_TYPE
    body = response.json()
    assert body["error_code"] == code
    return str(body["message"])


def ctx(headers: list[tuple[str, bytes]] | None = None) -> SerializationContext:
    return SerializationContext(TOPIC, MessageField.VALUE, headers)


def serializer(
    sr: SchemaRegistryClient, schema: dict[str, Any], indent: int | None = None, **conf: Any
) -> AvroSerializer:
    conf = {"subject.name.strategy": record_subject_name_strategy, **conf}
    return AvroSerializer(sr, json.dumps(schema, indent=indent), conf=conf)


RECORD_NAMES = {"subject.name.strategy": record_subject_name_strategy}


# -- the serdes --------------------------------------------------------------------------------
def test_preloaded_ids_are_deterministic(schema_dir: Path) -> None:
    write(schema_dir, SUBJECT, 2, V2_OPTIONAL)
    seen = []
    for _ in range(2):
        with EmbeddedRegistry(schema_dir) as reg, SchemaRegistryClient({"url": reg.url}) as sr:
            seen.append([
                (s, v, sr.get_version(s, v).schema_id)
                for s in sr.get_subjects() for v in sr.get_versions(s)
            ])  # fmt: skip
    # every v1 first (subjects in name order), then the v2s
    assert seen[0] == seen[1] == [
        ("test.registry.Encounter", 1, 1), (SUBJECT, 1, 2), (SUBJECT, 2, 3)
    ]  # fmt: skip


def test_auto_register_round_trip(client: SchemaRegistryClient, registry: EmbeddedRegistry) -> None:
    observation = record(ID, {"name": "value", "type": "double"}, name="Observation")
    data = serializer(client, observation)({"id": "o1", "value": 4.2}, ctx())

    assert data[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    latest = client.get_latest_version("test.registry.Observation")
    assert (int.from_bytes(data[1:5], "big"), latest.version) == (latest.schema_id, 1)
    with SchemaRegistryClient({"url": registry.url}) as fresh:  # nothing cached
        assert AvroDeserializer(fresh)(data, ctx()) == {"id": "o1", "value": 4.2}


def test_preloaded_schema_without_auto_register(client: SchemaRegistryClient) -> None:
    preloaded = client.get_latest_version(SUBJECT)
    # other whitespace than the file: identity is the canonical form
    ser = serializer(client, V1, indent=7, **{"auto.register.schemas": False})
    data = ser({"id": "p1", "mrn": "M-1"}, ctx())

    assert int.from_bytes(data[1:5], "big") == preloaded.schema_id
    assert AvroDeserializer(client)(data, ctx()) == {"id": "p1", "mrn": "M-1"}
    assert client.get_versions(SUBJECT) == [1]


def test_unregistered_schema_without_auto_register_is_refused(
    client: SchemaRegistryClient,
) -> None:
    ser = serializer(client, V2_OPTIONAL, **{"auto.register.schemas": False})
    with pytest.raises(SchemaRegistryError) as caught:
        ser({"id": "p1", "mrn": "M-1", "note": None}, ctx())
    assert (caught.value.http_status_code, caught.value.error_code) == (404, 40403)


def test_old_data_read_with_latest_version(
    client: SchemaRegistryClient, registry: EmbeddedRegistry
) -> None:
    ser = serializer(client, V1, **{"auto.register.schemas": False})
    data = ser({"id": "a", "mrn": "b"}, ctx())
    assert client.register_schema(SUBJECT, avro(V2_OPTIONAL)) != int.from_bytes(data[1:5], "big")
    with SchemaRegistryClient({"url": registry.url}) as fresh:
        reader = AvroDeserializer(fresh, conf={"use.latest.version": True, **RECORD_NAMES})
        assert reader(data, ctx()) == {"id": "a", "mrn": "b", "note": None}


def test_guid_in_headers_round_trip(
    client: SchemaRegistryClient, registry: EmbeddedRegistry
) -> None:
    headers: list[tuple[str, bytes]] = []
    ser = serializer(client, V1, **{"schema.id.serializer": header_schema_id_serializer})
    value = {"id": "guid-1", "mrn": "M-2"}  # the client wants > 5 bytes even with a header id
    data = ser(value, ctx(headers))
    assert headers and data[0] != 0  # the id travels in a header, not in the payload
    with SchemaRegistryClient({"url": registry.url}) as fresh:
        assert AvroDeserializer(fresh)(data, ctx(headers)) == value


def test_one_schema_in_two_subjects_shares_its_id(client: SchemaRegistryClient) -> None:
    schema_id = client.get_latest_version(SUBJECT).schema_id
    assert client.register_schema("odd/subject name", avro(V1, indent=1)) == schema_id
    assert client.register_schema(SUBJECT, avro(V1, indent=3)) == schema_id
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_subjects_by_schema_id(schema_id) == ["odd/subject name", SUBJECT]
    pairs = {(v.subject, v.version) for v in client.get_schema_versions(schema_id)}
    assert pairs == {("odd/subject name", 1), (SUBJECT, 1)}
    assert client.get_latest_version("odd/subject name").schema_id == schema_id


# -- the acceptance pair -----------------------------------------------------------------------
def test_v2_removing_a_required_field_is_rejected(
    schema_dir: Path, client: SchemaRegistryClient
) -> None:
    path = write(schema_dir, SUBJECT, 2, V2_REMOVED)

    offline = check_repository(schema_dir)
    assert [(f.subject, f.version, f.path) for f in offline] == [(SUBJECT, 2, path)]
    assert client.test_compatibility(SUBJECT, avro(V2_REMOVED)) is False
    online = check_against_registry(schema_dir, client)
    assert [(f.version, f.severity) for f in online] == [(2, "error")]
    assert any("mrn" in m for m in online[0].messages)
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(SUBJECT, avro(V2_REMOVED))
    assert (caught.value.http_status_code, caught.value.error_code) == (409, 409)
    assert "mrn" in caught.value.error_message
    assert client.get_versions(SUBJECT) == [1]


def test_v2_adding_an_optional_field_with_default_passes(
    schema_dir: Path, client: SchemaRegistryClient
) -> None:
    write(schema_dir, SUBJECT, 2, V2_OPTIONAL)

    assert check_repository(schema_dir) == []
    assert client.test_compatibility(SUBJECT, avro(V2_OPTIONAL)) is True
    assert check_against_registry(schema_dir, client) == []
    schema_id = client.register_schema(SUBJECT, avro(V2_OPTIONAL))
    assert client.get_latest_version(SUBJECT).version == 2
    assert client.get_version(SUBJECT, 2).schema_id == schema_id
    assert check_against_registry(schema_dir, client) == []  # now registered


def test_registry_check_warns_when_the_registry_level_differs(
    schema_dir: Path, client: SchemaRegistryClient
) -> None:
    client.set_compatibility(SUBJECT, "BACKWARD")
    write(schema_dir, SUBJECT, 2, V2_REMOVED)
    findings = check_against_registry(schema_dir, client)
    # BACKWARD lets the removal through; the warning is what tells the two checks apart
    assert [(f.subject, f.severity) for f in findings] == [(SUBJECT, "warning")]
    assert "BACKWARD" in findings[0].messages[0] and "FULL_TRANSITIVE" in findings[0].messages[0]


def test_registry_check_skips_subjects_the_registry_lacks(
    schema_dir: Path, client: SchemaRegistryClient
) -> None:
    write(schema_dir, "test.registry.Brand", 1, record(ID, name="Brand"))
    write(schema_dir, "test.registry.Brand", 2, record(name="Brand"))  # checked offline only
    assert check_against_registry(schema_dir, client) == []


# -- compatibility endpoint --------------------------------------------------------------------
def test_compatibility_endpoint(registry: EmbeddedRegistry, client: SchemaRegistryClient) -> None:
    url = f"/compatibility/subjects/{SUBJECT}/versions/latest"
    body = {"schema": json.dumps(V2_REMOVED)}
    verbose = api(registry, "POST", url + "?verbose=true", json=body).json()
    assert verbose["is_compatible"] is False
    assert any("FORWARD" in m and "mrn" in m for m in verbose["messages"])
    assert api(registry, "POST", url, json=body).json() == {"is_compatible": False}
    body = {"schema": json.dumps(V2_OPTIONAL)}
    assert api(registry, "POST", url + "?verbose=true", json=body).json() == {
        "is_compatible": True, "messages": []}  # fmt: skip

    assert client.test_compatibility(SUBJECT, avro(V2_OPTIONAL), version=1) is True
    assert client.test_compatibility_all_versions(SUBJECT, avro(V2_REMOVED)) is False
    assert client.test_compatibility("test.registry.New", avro(V2_REMOVED)) is True
    path = f"/compatibility/subjects/{SUBJECT}/versions/7"
    assert_error(api(registry, "POST", path, json=body), 404, 40402)
    path = "/compatibility/subjects/test.registry.New/versions/1"
    assert_error(api(registry, "POST", path, json=body), 404, 40401)


# -- config ------------------------------------------------------------------------------------
def test_config(registry: EmbeddedRegistry, client: SchemaRegistryClient) -> None:
    assert client.get_compatibility() == "FULL_TRANSITIVE"
    with pytest.raises(SchemaRegistryError) as caught:
        client.get_compatibility(SUBJECT)
    assert caught.value.error_code == 40408
    path = f"/config/{SUBJECT}?defaultToGlobal=true"
    assert api(registry, "GET", path).json() == {"compatibilityLevel": "FULL_TRANSITIVE"}

    assert client.set_compatibility(SUBJECT, "backward") == {"compatibility": "BACKWARD"}
    assert client.get_compatibility(SUBJECT) == "BACKWARD"
    assert client.register_schema(SUBJECT, avro(V2_REMOVED)) > 0  # BACKWARD allows removal
    assert str(client.delete_config(SUBJECT).compatibility_level) == "BACKWARD"
    with pytest.raises(SchemaRegistryError):
        client.get_compatibility(SUBJECT)

    assert client.set_compatibility(level="NONE") == {"compatibility": "NONE"}
    assert client.get_config().compatibility_level is not None
    assert str(client.get_config().compatibility_level) == "NONE"
    assert client.register_schema(SUBJECT, avro(record(name="Patient"))) > 0
    message = assert_error(api(registry, "PUT", "/config", json={"compatibility": "X"}), 422, 42203)
    assert "full_transitive" in message
    assert api(registry, "DELETE", "/config").json() == {"compatibilityLevel": "NONE"}
    assert client.get_compatibility() == "FULL_TRANSITIVE"


# -- deletion ----------------------------------------------------------------------------------
def test_soft_and_permanent_version_delete(
    registry: EmbeddedRegistry, client: SchemaRegistryClient
) -> None:
    v2_id = client.register_schema(SUBJECT, avro(V2_OPTIONAL))
    assert client.delete_version(SUBJECT, 2) == 2
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_versions(SUBJECT, deleted=True) == [1, 2]
    assert client.get_versions(SUBJECT, deleted_only=True) == [2]
    assert client.lookup_schema(SUBJECT, avro(V2_OPTIONAL), deleted=True).version == 2
    assert_error(api(registry, "POST", f"/subjects/{SUBJECT}",
                     json={"schema": json.dumps(V2_OPTIONAL)}), 404, 40403)  # fmt: skip
    assert "schema" in api(registry, "GET", f"/schemas/ids/{v2_id}").json()  # still decodable
    assert_error(api(registry, "DELETE", f"/subjects/{SUBJECT}/versions/2"), 404, 40406)
    path = f"/subjects/{SUBJECT}/versions/1?permanent=true"
    assert_error(api(registry, "DELETE", path), 404, 40407)

    assert client.delete_version(SUBJECT, 2, permanent=True) == 2
    assert client.get_versions(SUBJECT, deleted=True) == [1]
    assert_error(api(registry, "GET", f"/schemas/ids/{v2_id}"), 404, 40403)


def test_soft_and_permanent_subject_delete(
    registry: EmbeddedRegistry, client: SchemaRegistryClient
) -> None:
    schema_id = client.get_latest_version(SUBJECT).schema_id
    assert_error(api(registry, "DELETE", f"/subjects/{SUBJECT}?permanent=true"), 404, 40405)
    assert client.delete_subject(SUBJECT) == [1]
    assert SUBJECT not in client.get_subjects()
    assert SUBJECT in client.get_subjects(deleted=True)
    assert client.get_subjects(deleted_only=True) == [SUBJECT]
    assert_error(api(registry, "GET", f"/subjects/{SUBJECT}/versions"), 404, 40401)
    assert_error(api(registry, "DELETE", f"/subjects/{SUBJECT}"), 404, 40404)
    assert client.delete_subject(SUBJECT, permanent=True) == [1]
    assert SUBJECT not in client.get_subjects(deleted=True)
    assert_error(api(registry, "GET", f"/schemas/ids/{schema_id}"), 404, 40403)
    # re-registering after a hard delete brings the same schema back under its old id
    with SchemaRegistryClient({"url": registry.url}) as fresh:
        assert fresh.register_schema(SUBJECT, avro(V1)) == schema_id


def test_register_after_soft_delete_continues_version_numbers(
    client: SchemaRegistryClient,
) -> None:
    client.delete_subject(SUBJECT)
    registered = client.register_schema_full_response(SUBJECT, avro(V2_REMOVED))
    assert registered.version == 2  # versions are never reused; the deleted v1 is not checked
    assert client.get_versions(SUBJECT) == [2]


# -- raw REST surface --------------------------------------------------------------------------
def test_reads(registry: EmbeddedRegistry, client: SchemaRegistryClient) -> None:
    schema_id = client.get_latest_version(SUBJECT).schema_id
    assert api(registry, "GET", "/").json() == {}
    assert client.get_schema_types() == ["AVRO"]
    assert client.get_subjects() == ["test.registry.Encounter", SUBJECT]
    assert client.get_subjects(subject_prefix="test.registry.P") == [SUBJECT]
    # what kcat/libserdes asks for
    by_id = api(registry, "GET", f"/schemas/ids/{schema_id}")
    assert by_id.headers["Content-Type"] == CONTENT_TYPE
    assert json.loads(by_id.json()["schema"]) == V1
    assert json.loads(api(registry, "GET", f"/schemas/ids/{schema_id}/schema").text) == V1
    bare = api(registry, "GET", f"/subjects/{SUBJECT}/versions/latest/schema").text
    assert json.loads(bare) == V1
    version = api(registry, "GET", f"/subjects/{SUBJECT}/versions/-1").json()
    assert {k: version[k] for k in ("subject", "version", "id")} == {
        "subject": SUBJECT, "version": 1, "id": schema_id}  # fmt: skip
    assert client.get_schema(schema_id).schema_str == version["schema"]
    assert api(registry, "GET", f"/subjects/{SUBJECT}/versions/1/referencedby").json() == []
    assert api(registry, "GET", "/mode").json() == {"mode": "READWRITE"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/nope/versions/latest", None, 404, 40401),
        ("GET", f"/subjects/{SUBJECT}/versions/9", None, 404, 40402),
        ("GET", f"/subjects/{SUBJECT}/versions/abc", None, 422, 42202),
        ("GET", f"/subjects/{SUBJECT}/versions/0", None, 422, 42202),
        ("GET", "/schemas/ids/999", None, 404, 40403),
        ("GET", "/schemas/guids/not-a-guid", None, 404, 40403),
        ("POST", "/subjects/nope", {"schema": json.dumps(V1)}, 404, 40401),
        ("POST", f"/subjects/{SUBJECT}", {"schema": json.dumps(V2_OPTIONAL)}, 404, 40403),
        ("POST", f"/subjects/{SUBJECT}/versions", {"schema": "{nope"}, 422, 42201),
        ("POST", f"/subjects/{SUBJECT}/versions", {"schema": '{"type": "what"}'}, 422, 42201),
        ("POST", f"/subjects/{SUBJECT}/versions", {"nope": 1}, 422, 42201),
        ("POST", "/subjects/x/versions", {"schema": "{}", "schemaType": "PROTOBUF"}, 422, 42201),
        ("POST", "/subjects/x/versions", {"schema": json.dumps(V1),
                                          "references": [{"name": "a"}]}, 422, 42201),
        ("DELETE", "/subjects/nope", None, 404, 40401),
        ("GET", "/config/nope", None, 404, 40408),
        ("GET", "/no/such/path", None, 404, 404),
        ("PUT", "/subjects", None, 405, 405),
    ],
)  # fmt: skip
def test_errors_are_confluent_shaped(
    registry: EmbeddedRegistry, method: str, path: str, body: Any, status: int, code: int
) -> None:
    assert_error(api(registry, method, path, json=body), status, code)


def test_error_messages_are_clear(registry: EmbeddedRegistry) -> None:
    body = {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
    message = assert_error(api(registry, "POST", "/subjects/x/versions", json=body), 422, 42201)
    assert "PROTOBUF" in message and "AVRO only" in message
    malformed = api(registry, "POST", "/subjects/x/versions", data=b"{oops",
                    headers={"Content-Type": CONTENT_TYPE})  # fmt: skip
    assert_error(malformed, 400, 400)


# -- lifecycle, persistence, concurrency -------------------------------------------------------
def test_persistence_across_restart(schema_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "state" / "registry.json"
    with (
        EmbeddedRegistry(schema_dir, store_path=store) as reg,
        SchemaRegistryClient({"url": reg.url}) as sr,
    ):
        runtime_id = sr.register_schema("runtime.Subject", avro(record(ID, name="Runtime")))
        other_id = sr.register_schema("runtime.Other", avro(record(NOTE, name="Other")))
        sr.set_compatibility(SUBJECT, "FORWARD")
        sr.delete_subject("runtime.Other")
    assert (runtime_id, other_id) == (3, 4)  # after the preloaded 1 and 2
    assert json.loads(store.read_text())["next_id"] == 5
    assert list(store.parent.iterdir()) == [store]  # no temp file left behind

    write(schema_dir, SUBJECT, 2, V2_OPTIONAL)  # a new file joins the stored state
    with (
        EmbeddedRegistry(schema_dir, store_path=store) as reg,
        SchemaRegistryClient({"url": reg.url}) as sr,
    ):
        assert sr.get_latest_version("runtime.Subject").schema_id == runtime_id
        assert sr.get_compatibility(SUBJECT) == "FORWARD"
        assert "runtime.Other" not in sr.get_subjects()
        assert sr.get_subjects(deleted=True).count("runtime.Other") == 1
        assert sr.get_schema(other_id).schema_str is not None
        assert sr.get_version(SUBJECT, 2).schema_id == 5  # after every stored id
        assert sr.register_schema("runtime.New", avro(record(name="New"))) == 6


def test_corrupt_store_is_a_clear_startup_error(schema_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "registry.json"
    store.write_text("{not json")
    with pytest.raises(RegistryStartupError, match=r"registry\.json: cannot load"):
        EmbeddedRegistry(schema_dir, store_path=store).start()


def test_incompatible_schema_file_stops_startup(schema_dir: Path) -> None:
    path = write(schema_dir, SUBJECT, 2, V2_REMOVED)
    with pytest.raises(RegistryStartupError) as caught:
        EmbeddedRegistry(schema_dir).start()
    assert str(caught.value).startswith(f"{path}: cannot register under {SUBJECT}")
    assert "incompatible" in str(caught.value)


def test_bad_schema_file_stops_startup(schema_dir: Path) -> None:
    (schema_dir / "Nameless.avsc").write_text("{}")
    with pytest.raises(SchemaFileError, match=r"Nameless\.avsc"):
        EmbeddedRegistry(schema_dir).start()


def test_lifecycle_and_fixed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reg = EmbeddedRegistry(None, port=port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = reg.url
    reg.start()
    url = reg.url
    try:
        assert url == f"http://127.0.0.1:{port}"
        with pytest.raises(RuntimeError, match="already started"):
            reg.start()
        session = requests.Session()
        assert session.get(url + "/subjects", timeout=5).json() == []
    finally:
        reg.stop()
    with pytest.raises(requests.ConnectionError):  # the kept-alive connection was cut too
        session.get(url + "/subjects", timeout=5)
    reg.stop()  # idempotent


def test_concurrent_registration(registry: EmbeddedRegistry) -> None:
    results: dict[tuple[int, int], int] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with SchemaRegistryClient({"url": registry.url}) as sr:
                for i in range(8):
                    schema = record({"name": f"f{n}_{i}", "type": "int"}, name=f"R{n}_{i}")
                    results[(n, i)] = sr.register_schema(f"s{n}", avro(schema))
                    sr.set_compatibility(f"s{n}", "NONE")
                # every thread also races on one shared schema and subject
                results[(n, -1)] = sr.register_schema("shared", avro(V1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    distinct = [v for (_, i), v in results.items() if i >= 0]
    assert len(set(distinct)) == len(distinct) == 48
    assert {v for (_, i), v in results.items() if i < 0} == {2}  # V1 was preloaded as id 2
    assert api(registry, "GET", "/subjects/shared/versions").json() == [1]


def test_requests_are_not_logged_to_stderr(
    capfd: pytest.CaptureFixture[str], registry: EmbeddedRegistry
) -> None:
    api(registry, "GET", "/subjects")
    api(registry, "GET", "/schemas/ids/999")
    assert capfd.readouterr().err == ""
