"""Debezium PostgreSQL connector configs, generated from the CDC source declarations.

The config makes Debezium publish exactly what the in-process slot reader publishes: topics
``cdc.<source>.<schema>.<table>``, schemaless JSON keys and values, decimals as strings,
dates as epoch days, timestamptz as ISO strings, a tombstone after each delete. So the
canonicalizer cannot tell the two paths apart.

The database password is never written into the config. It is a Kafka config-provider
reference, ``${env:FHIRBUS_CDC_<SOURCE>_PASSWORD}``, that the Connect worker resolves from
its own environment (worker settings ``config.providers=env`` and
``config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fhirbus.connectors.sources import SourceDeclaration
from fhirbus.settings import ConfigError

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
UNAVAILABLE_PLACEHOLDER = "__debezium_unavailable_value"
MASK = "********"
_ENV_REF = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")
_SECRET_KEY = re.compile(r"password|secret|token|credential", re.IGNORECASE)


@dataclass(frozen=True)
class DatabaseAddress:
    """Where Connect reaches the source database; the password is deliberately absent."""

    host: str
    port: int
    user: str
    dbname: str
    sslmode: str | None
    dsn_has_password: bool


def connector_name(source: SourceDeclaration) -> str:
    return f"fhirbus-cdc-{source.name}"


def password_env_var(source: SourceDeclaration) -> str:
    """The worker environment variable holding the source's database password."""
    return f"FHIRBUS_CDC_{source.name.upper()}_PASSWORD"


def parse_dsn(source: SourceDeclaration) -> DatabaseAddress:
    """Host, port, user and database from the DSN (URL or key=value form).

    Errors name the source, never the DSN: it may hold a password.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    where = f"CDC source {source.name!r}"
    try:
        parts = conninfo_to_dict(source.dsn)
    except ProgrammingError:
        raise ConfigError(f"{where}: the DSN is not a valid PostgreSQL connection string "
                          "(expected postgresql://user@host:port/db or key=value pairs)") from None
    missing = [k for k in ("host", "user", "dbname") if not parts.get(k)]
    if missing:
        raise ConfigError(f"{where}: Kafka Connect needs {', '.join(missing)} in the DSN "
                          "(it runs elsewhere: no local socket or login defaults)")
    host = str(parts["host"])
    if "," in host or host.startswith("/"):
        raise ConfigError(f"{where}: Debezium needs one TCP host in the DSN, not a list or a "
                          "Unix socket directory")
    port = str(parts.get("port") or "5432")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: the DSN's port is not a number between 1 and 65535")
    return DatabaseAddress(host=host, port=int(port), user=str(parts["user"]),
                           dbname=str(parts["dbname"]), sslmode=parts.get("sslmode"),
                           dsn_has_password=bool(parts.get("password")))


def connector_config(source: SourceDeclaration, password_env: str | None = None) -> dict[str, str]:
    """The documented Debezium config for one source (all values strings, as Connect keeps)."""
    db = parse_dsn(source)
    config = {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",  # the PostgreSQL connector reads one slot with one task
        "database.hostname": db.host,
        "database.port": str(db.port),
        "database.user": db.user,
        "database.password": "${env:" + (password_env or password_env_var(source)) + "}",
        "database.dbname": db.dbname,
        "topic.prefix": f"cdc.{source.name}",
        "plugin.name": "pgoutput",
        "slot.name": source.slot,
        "publication.name": source.publication,
        "publication.autocreate.mode": "filtered",
        # Entries are anchored regexes; identifiers are [a-z0-9_], so only "." is loose.
        "table.include.list": ",".join(t.qualified for t in source.tables),
        "snapshot.mode": source.snapshot,
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "false",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "false",
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive",
        "tombstones.on.delete": "true",
        "unavailable.value.placeholder": UNAVAILABLE_PLACEHOLDER,
        # CDC topics are not in the catalog (one per table); Connect creates them with the
        # broker's default partitions and replication.
        "topic.creation.default.partitions": "-1",
        "topic.creation.default.replication.factor": "-1",
    }
    if db.sslmode:
        config["database.sslmode"] = db.sslmode
    keyed = [f"{t.qualified}:{','.join(t.key_columns)}" for t in source.tables if t.key_columns]
    if keyed:
        # Tables without a primary key get the declared key, like the slot reader's.
        config["message.key.columns"] = ";".join(keyed)
    return config


def masked(config: dict[str, str]) -> dict[str, str]:
    """A copy safe to print: secret-looking values hidden unless they are ${env:...} refs."""
    return {k: (MASK if _SECRET_KEY.search(k) and not _ENV_REF.match(v) else v)
            for k, v in config.items()}

