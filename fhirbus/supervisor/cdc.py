"""Whether ``fhirbus up`` runs CDC, against which sources, and the example database.

With no sources file configured, ``up`` uses the example lab/billing source
(``connectors/examples/labbilling``) against a database of its own on the local PostgreSQL;
a source named ``labbilling`` gets its database and the example schema created if missing.
``FHIRBUS_SUPERVISOR__WITH_CDC=auto`` turns CDC on only when every source's PostgreSQL
answers and has logical decoding on; otherwise ``up`` says how to enable it and runs without.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhirbus.settings import ConfigError, Settings

EXAMPLE_SOURCE = "labbilling"  # its database and schema are created when missing
EXAMPLE_DSN_ENV = "FHIRBUS_CDC_LABBILLING_DSN"
# Its own database, so the demo never touches anyone's tables and a reset is a DROP.
EXAMPLE_DSN = "postgresql://postgres@127.0.0.1:5432/fhirbus_example"
CONNECT_TIMEOUT_S = 2
OWN_DATABASE_PREFIX = "fhirbus_"  # databases the demo and tests create, and may drop


@dataclass
class CdcPlan:
    enabled: bool
    note: str
    sources_file: Path | None = None
    sources: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)  # cdc.<source>.<schema>.<table>
    env: dict[str, str] = field(default_factory=dict)  # for the children

    def to_json(self) -> dict[str, object]:
        return {"enabled": self.enabled, "note": self.note, "sources": self.sources,
                "sources_file": str(self.sources_file) if self.sources_file else None}


def describe_dsn(dsn: str) -> str:
    """host:port/dbname, never the user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # a malformed DSN: say so without echoing it
        return "(unparseable DSN)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def example_env() -> dict[str, str]:
    """The example source's DSN variable, defaulted to the local example database."""
    return {EXAMPLE_DSN_ENV: os.environ.get(EXAMPLE_DSN_ENV) or EXAMPLE_DSN}


def plan_cdc(settings: Settings, has_cdc_command: bool) -> CdcPlan:
    from fhirbus.connectors.sources import EXAMPLE_SOURCES, load_sources

    mode = settings.supervisor.with_cdc
    if mode == "no":
        return CdcPlan(False, "CDC off (FHIRBUS_SUPERVISOR__WITH_CDC=no)")
    if not has_cdc_command:
        return _unavailable(mode, "this installation has no `fhirbus cdc run` command",
                            "install a fhirbus with the connectors step (pip install -e .)")
    path = settings.cdc.sources_file or EXAMPLE_SOURCES
    env = example_env() if settings.cdc.sources_file is None else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        sources = load_sources(path)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    for source in sources:
        problem = probe(source.dsn, create=source.name == EXAMPLE_SOURCE)
        if problem:
            return _unavailable(mode, f"source {source.name}: {problem}")
    return CdcPlan(True, f"CDC on for {', '.join(s.name for s in sources)} ({path})",
                   path, [s.name for s in sources], [s.topic(t) for s in sources for t in s.tables],
                   {"FHIRBUS_CDC__SOURCES_FILE": str(path), **env})


_ENABLE_PG = ("start PostgreSQL with wal_level=logical and wal2json (bash scripts/setup does "
              f"both), or point {EXAMPLE_DSN_ENV} / FHIRBUS_CDC__SOURCES_FILE at your database")


def _unavailable(mode: str, why: str, how: str = _ENABLE_PG) -> CdcPlan:
    if mode == "yes":
        raise ConfigError(f"CDC cannot start: {why}; to fix it, {how}; or set "
                          "FHIRBUS_SUPERVISOR__WITH_CDC=auto to run without CDC")
    return CdcPlan(False, f"CDC off: {why}. To enable it: {how}")


def probe(dsn: str, create: bool) -> str | None:
    """None when the database answers with logical decoding on (creating the example
    database and schema when ``create``), else what is wrong and where."""
    import psycopg

    where = describe_dsn(dsn)
    try:
        if create:
            ensure_example_database(dsn)
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            level = conn.execute("SHOW wal_level").fetchone()
            if not level or level[0] != "logical":
                return (f"PostgreSQL at {where} has wal_level={level[0] if level else '?'}, "
                        "CDC needs wal_level=logical (then restart PostgreSQL)")
            if create:
                conn.execute(example_schema_sql())
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {where} is not reachable ({reason})"
    return None


def example_schema_sql() -> str:
    from fhirbus.connectors.sources import EXAMPLES_DIR

    return (EXAMPLES_DIR / "labbilling" / "schema.sql").read_text(encoding="utf-8")


def _maintenance(dsn: str) -> tuple[str, str]:
    """(DSN of the same server's `postgres` database, the example database's name)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    return make_conninfo(**{**parts, "dbname": "postgres"}), str(parts.get("dbname", ""))


def ensure_example_database(dsn: str) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _maintenance(dsn)
    with psycopg.connect(admin, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_example(dsn: str, slots: list[str]) -> list[str]:
    """Drop the example's replication slots and (when it is one of ours, ``fhirbus_*``) its
    database; returns what was dropped. A slot left behind keeps WAL on the server forever,
    so the demo and tests always call this.
    An active slot (CDC still running) is refused: stop ``fhirbus up`` first."""
    import psycopg
    from psycopg import sql

    admin, name = _maintenance(dsn)
    dropped: list[str] = []
    with psycopg.connect(admin, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
        for slot in slots:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()
            if row is None:
                continue
            if row[0]:
                raise RuntimeError(f"replication slot {slot} is in use by a running CDC "
                                   "reader; stop `fhirbus up` first, then run this again")
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            dropped.append(f"slot {slot}")
        if not name.startswith(OWN_DATABASE_PREFIX):
            return dropped  # not one we created: never drop someone's database
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            dropped.append(f"database {name}")
    return dropped
