"""Debezium connector configs generated from the CDC source declarations."""

from __future__ import annotations

import pytest

from fhirbus.connectors.debezium.config import (
    connector_config,
    connector_name,
    masked,
    parse_dsn,
)
from fhirbus.connectors.sources import EXAMPLE_SOURCES, SourceDeclaration, load_sources
from fhirbus.schemas.topics import cdc_topic
from fhirbus.settings import ConfigError

# The config documented in connectors/debezium/README.md, for the example source.
DOCUMENTED = {
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "database.hostname": "source-db",
    "database.port": "5432",
    "database.user": "fhirbus",
    "database.password": "${env:FHIRBUS_CDC_LABBILLING_PASSWORD}",
    "database.dbname": "source",
    "topic.prefix": "cdc.labbilling",
    "plugin.name": "pgoutput",
    "slot.name": "fhirbus_labbilling",
    "publication.name": "fhirbus_labbilling",
    "publication.autocreate.mode": "filtered",
    "table.include.list": "labbilling.patients,labbilling.lab_results,labbilling.charges",
    "snapshot.mode": "initial",
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "false",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "false",
    "decimal.handling.mode": "string",
    "time.precision.mode": "adaptive",
    "tombstones.on.delete": "true",
    "unavailable.value.placeholder": "__debezium_unavailable_value",
    "topic.creation.default.partitions": "-1",
    "topic.creation.default.replication.factor": "-1",
}


def source(dsn: str, **extra: object) -> SourceDeclaration:
    return SourceDeclaration.model_validate({
        "name": "labbilling", "dsn": dsn, "tables": [{"schema": "labbilling", "table": "patients"}],
        **extra})


def test_the_example_declaration_gives_the_documented_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FHIRBUS_CDC_LABBILLING_DSN",
                       "postgresql://fhirbus:do-not-copy@source-db:5432/source")
    declared = load_sources(EXAMPLE_SOURCES)[0]
    config = connector_config(declared)
    assert config == DOCUMENTED
    assert "do-not-copy" not in str(config)
    assert connector_name(declared) == "fhirbus-cdc-labbilling"
    # Debezium names topics <topic.prefix>.<schema>.<table>: the slot reader's topics.
    for table in declared.tables:
        assert f"{config['topic.prefix']}.{table.qualified}" == declared.topic(table)
        assert declared.topic(table) == cdc_topic("labbilling", "labbilling", table.table)


def test_key_value_dsn_sslmode_snapshot_and_declared_keys() -> None:
    declared = SourceDeclaration.model_validate({
        "name": "lab", "dsn": "host=db.example port=6432 user=cdc dbname=lab sslmode=require",
        "snapshot": "never", "slot": "s1", "publication": "p1",
        "tables": [{"schema": "lab", "table": "a"},
                   {"schema": "lab", "table": "log", "key_columns": ["at", "seq"]},
                   {"schema": "ops", "table": "b", "key_columns": ["id"]}]})
    config = connector_config(declared, password_env="LAB_DB_PASSWORD")
    assert config["database.hostname"] == "db.example" and config["database.port"] == "6432"
    assert config["database.sslmode"] == "require"
    assert config["database.password"] == "${env:LAB_DB_PASSWORD}"
    assert (config["slot.name"], config["publication.name"]) == ("s1", "p1")
    assert config["snapshot.mode"] == "never"
    assert config["message.key.columns"] == "lab.log:at,seq;ops.b:id"
    assert not parse_dsn(declared).dsn_has_password


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql:///source", "needs host, user in the DSN"),
    ("postgresql://u@/source?host=/var/run/postgresql", "not a list or a Unix socket"),
    ("postgresql://u@h1,h2/source", "not a list or a Unix socket"),
    ("postgresql://u:pw-xyz@h:99999/source", "port is not a number"),
    ("host=h user=u dbname=d 'broken pw-xyz", "not a valid PostgreSQL connection string"),
])
def test_unusable_dsns_are_refused_without_echoing_them(dsn: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        connector_config(source(dsn))
    assert expected in str(err.value) and "pw-xyz" not in str(err.value)
    assert "'labbilling'" in str(err.value)


def test_masked_hides_literal_secrets_but_shows_env_references() -> None:
    config = {"database.password": "${env:X}", "sasl.jaas.password": "literal",
              "some.token": "t", "database.user": "u"}
    assert masked(config) == {"database.password": "${env:X}", "sasl.jaas.password": "********",
                              "some.token": "********", "database.user": "u"}
