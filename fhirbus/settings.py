"""Typed configuration: environment variables ``FHIRBUS_*`` over an optional TOML file.

Validation happens once, at start; a bad value stops the process with a message that names
the setting (as its environment variable) and the expected form, never the value itself,
because values may be secrets.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "FHIRBUS_"
CONFIG_FILE_ENV = "FHIRBUS_CONFIG"
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class ConfigError(Exception):
    """Invalid configuration; the message is safe to print (it holds no values)."""


class RuntimeSettings(BaseModel):
    """How the consumer runtime polls, retries and gives up."""

    batch_size: int = Field(500, ge=1, le=100_000)
    poll_timeout_s: float = Field(0.5, gt=0, le=60)
    # After a batch's first record, how long to wait for more. 0: take what is already
    # fetched. Records that arrive while a batch is handled queue up locally, so batches
    # grow with load anyway; waiting only adds latency when traffic is light.
    batch_linger_s: float = Field(0.0, ge=0, le=1)
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_initial_ms: int = Field(100, ge=1)
    backoff_max_ms: int = Field(30_000, ge=1)
    # A downstream outage pauses the partition and retries forever instead of
    # dead-lettering the whole backlog; this caps the pause between probes.
    outage_probe_max_ms: int = Field(60_000, ge=100)
    session_timeout_ms: int = Field(10_000, ge=1_000)


class TelemetrySettings(BaseModel):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None
    service_name: str = "fhirbus"
    metrics_interval_s: float = Field(30.0, gt=0)


class Hl7ListenerSettings(BaseModel):
    """The MLLP listener (``fhirbus hl7 listen``)."""

    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    listener_id: str = "mllp-1"
    feed: str = "default"
    max_message_bytes: int = Field(1_048_576, ge=1_024)
    idle_timeout_s: float = Field(300.0, gt=0)
    max_connections: int = Field(256, ge=1)
    # How long the broker may take to confirm before the message is spooled locally.
    broker_confirm_timeout_s: float = Field(2.0, gt=0)
    spool_path: Path | None = None  # default: <state_dir>/spool/<listener_id>.sqlite
    # Claim checks: an oversize message's full bytes go to a file here, named in its
    # rejected record (producers/mllp/claimcheck.py). Default: <state_dir>/rejected/<id>/.
    oversize_dir: Path | None = None
    # At most this much per claim-check file; the rest is discarded (fhirbus.truncated).
    # 0 turns claim checks off: only the first max_message_bytes are kept.
    max_oversize_bytes: int = Field(64 * 1_048_576, ge=0)
    duplicate_window_s: float = Field(3600.0, ge=0)
    supported_versions: list[str] = Field(
        default_factory=lambda: ["2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6",
                                 "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"]
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set = mutual TLS: clients must present a cert
    # "original": always answer AA/AE/AR. "auto": when a sender values MSH-15/16, answer in
    # enhanced mode (CA/CE/CR) and only when MSH-15 asks for it (NE/ER/SU may mean no reply).
    ack_mode: Literal["original", "auto"] = "original"
    # Worker processes sharing the port, each with its own event loop and producer (one
    # process's per-message Python work tops out at one core); they share the spool file and
    # the retransmission window (producers/mllp/claims.py). 1 = one process, as before.
    workers: int = Field(1, ge=1, le=32)


class ProjectionSettings(BaseModel):
    """The read models (``fhirbus project ehr|billing|analytics``)."""

    # sqlite:///ABS/PATH.sqlite or postgresql://user@host/db; unset = one SQLite file per
    # projection under <state_dir>/projections/.
    dsn: str | None = None
    # HMAC-SHA256 key for analytics patient tokens; required by the analytics projection.
    analytics_secret: SecretStr | None = None
    analytics_date_granularity: Literal["day", "week", "month"] = "day"
    # Billing: also charge completed orders whose code has a price here (code -> amount).
    billing_order_prices: dict[str, Decimal] = Field(default_factory=dict)
    billing_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    # Wait for the WAL flush on every read-model commit (PostgreSQL synchronous_commit=on,
    # SQLite synchronous=FULL). Exactly-once does not need it: positions commit in the same
    # transaction as the rows, so a power loss drops both together and the lost tail is
    # applied again from Kafka. Turn it on only if something reads a model as a record of
    # truth before Kafka could replay it.
    durable_commits: bool = False


class CdcSettings(BaseModel):
    """Log-based CDC (``fhirbus cdc run``) and the CDC-to-FHIR mappings."""

    # YAML file declaring the sources (DSN, slot, tables); ${VAR} in it expands from the
    # environment so DSNs with passwords stay out of the file. Unset = no CDC source.
    sources_file: Path | None = None
    # Folder of per-table YAML mappings (table -> FHIR resource) used by the canonicalizer.
    mappings_dir: Path | None = None
    # How long the slot reader waits for Kafka to confirm a batch before it retries.
    publish_timeout_s: float = Field(30.0, gt=0)
    # How often the confirmed LSN is reported to PostgreSQL while idle (keeps WAL trimmed).
    status_interval_s: float = Field(5.0, gt=0)
    max_batch_changes: int = Field(5_000, ge=1)
    # Output plugin for a new slot: auto = wal2json when the server allows it, else pgoutput
    # (an existing slot keeps its plugin). See connectors/docs/cdc.md.
    plugin: Literal["auto", "wal2json", "pgoutput"] = "auto"
    # How often an idle reader asks the slot for new changes (the latency floor).
    poll_interval_ms: int = Field(50, ge=1, le=60_000)


class ConnectSettings(BaseModel):
    """The Kafka Connect REST API (``fhirbus connectors ...``), production only."""

    url: str = "http://localhost:8083"
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    # Retries (5xx, 409 rebalance, connection errors) wait with capped exponential backoff.
    backoff_initial_ms: int = Field(500, ge=1)
    backoff_max_ms: int = Field(10_000, ge=1)


class ReconcileSettings(BaseModel):
    """The reconciler (``fhirbus reconcile ...``) and its review worklist."""

    # resource type (or "default") -> risk; high-risk drift goes to the worklist, low is
    # repaired by replay events.
    risk: dict[str, Literal["low", "high"]] = Field(
        default_factory=lambda: {
            "Observation": "high",
            "DiagnosticReport": "high",
            "AllergyIntolerance": "high",
            "MedicationRequest": "high",
            "Immunization": "high",
            "default": "low",
        }
    )
    # Worklist and run history; unset = SQLite under <state_dir>/reconcile/.
    dsn: str | None = None
    report_dir: Path | None = None  # default: <state_dir>/reconcile/reports
    range_buckets: int = Field(1024, ge=1)


class SupervisorSettings(BaseModel):
    """``fhirbus up``: which processes it starts and how it restarts them."""

    with_cdc: Literal["auto", "yes", "no"] = "auto"  # auto = when PostgreSQL is reachable
    # Canonicalizer processes in its consumer group: the stage that costs most CPU per
    # message (FHIR validation) scales out by raw-topic partition, one process per core.
    canonicalizers: int = Field(1, ge=1, le=64)
    reconcile_every_s: float = Field(60.0, gt=0)
    restart_backoff_initial_s: float = Field(1.0, gt=0)
    restart_backoff_max_s: float = Field(30.0, gt=0)
    # On stop, how long each process may take after SIGTERM before it gets SIGKILL (the
    # listener drains in-flight messages and flushes to Kafka or its spool in this time).
    stop_timeout_s: float = Field(30.0, gt=0)


# librdkafka properties fhirbus sets for correctness (or that have a setting of their own);
# FHIRBUS_KAFKA_EXTRA may tune anything else.
KAFKA_GUARANTEED_KEYS = frozenset({
    "bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "isolation.level", "enable.idempotence", "acks", "request.required.acks",
})


class Settings(BaseSettings):
    """Every setting has an environment variable: ``FHIRBUS_<NAME>``, nested with ``__``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port...] of a real cluster; unset = embedded broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    # Anything else librdkafka understands, passed through untouched (e.g. tuning).
    kafka_extra: dict[str, str] = Field(default_factory=dict)
    # Replication of the catalog's topics when `fhirbus topics apply` creates them; unset =
    # each topic's own (3). Set 1 only for a one-broker (laptop) cluster.
    kafka_topic_replication: int | None = Field(None, ge=1)
    schema_registry_url: str | None = None
    schema_registry_basic_auth: SecretStr | None = None
    state_dir: Path = Field(default_factory=lambda: _default_state_dir())
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    hl7: Hl7ListenerSettings = Field(default_factory=Hl7ListenerSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    projections: ProjectionSettings = Field(default_factory=ProjectionSettings)
    cdc: CdcSettings = Field(default_factory=CdcSettings)
    connect: ConnectSettings = Field(default_factory=ConnectSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_form(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = [p.strip() for p in value.split(",")]
        if not all(_HOSTPORT.match(p) for p in parts):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(parts)

    @field_validator("kafka_extra")
    @classmethod
    def _extra_keeps_guarantees(cls, value: dict[str, str]) -> dict[str, str]:
        # Extras tune librdkafka and win over fhirbus's tuning defaults; these keys carry
        # the platform's delivery promises (or have their own setting), so they are refused
        # here rather than silently ignored or silently weakened.
        fixed = sorted(k for k in value if k in KAFKA_GUARANTEED_KEYS)
        if fixed:
            raise ValueError(f"may not set {', '.join(fixed)}: fhirbus fixes these "
                             "(durability and offset guarantees, or a setting of their own)")
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_form(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http(s):// URL")
        return value.rstrip("/")

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fhirbus"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings or raise ConfigError naming every bad setting and its expected form."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"configuration file {config_file} does not exist")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read configuration file: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        path = "__".join(str(p) for p in err["loc"])
        name = ENV_PREFIX + path.upper()
        lines.append(f"  {name}: {err['msg']}")
    return "\n".join(lines)
