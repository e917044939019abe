"""librdkafka configuration from settings: one place decides bootstrap, security and defaults."""

from __future__ import annotations

from typing import Any

from ..embedded import discovery
from ..settings import ConfigError, Settings


class NoBrokerError(ConfigError):
    pass


def resolve_bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    stack = discovery.read(settings.state_dir)
    if stack is None:
        raise NoBrokerError(
            "no Kafka bootstrap configured (FHIRBUS_KAFKA_BOOTSTRAP) and no embedded broker "
            f"running for state dir {settings.state_dir}: start one with `fhirbus broker` "
            "(or `fhirbus up`), or point FHIRBUS_KAFKA_BOOTSTRAP at a cluster"
        )
    return stack.bootstrap


def resolve_registry_url(settings: Settings) -> str:
    if settings.schema_registry_url:
        return settings.schema_registry_url
    stack = discovery.read(settings.state_dir)
    if stack is None or not stack.registry_url:
        raise NoBrokerError(
            "no schema registry configured (FHIRBUS_SCHEMA_REGISTRY_URL) and no embedded "
            "registry running: start `fhirbus broker`, or set FHIRBUS_SCHEMA_REGISTRY_URL"
        )
    return stack.registry_url


def client_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": resolve_bootstrap(settings)}
    optional = {
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "ssl.ca.location": settings.kafka_ssl_ca_location,
        "ssl.certificate.location": settings.kafka_ssl_certificate_location,
        "ssl.key.location": settings.kafka_ssl_key_location,
    }
    conf.update({k: str(v) for k, v in optional.items() if v is not None})
    if settings.kafka_sasl_password is not None:
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    conf.update(settings.kafka_extra)
    return conf


def _tuned(settings: Settings, conf: dict[str, Any], defaults: dict[str, Any]) -> None:
    """fhirbus's tuning defaults, under the operator's FHIRBUS_KAFKA_EXTRA (which the
    settings already keep away from the guaranteed keys)."""
    for key, value in defaults.items():
        if key not in settings.kafka_extra:
            conf[key] = value


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Durable by default: idempotent, acks from all in-sync replicas, compressed batches."""
    conf = client_config(settings)
    conf.update({"enable.idempotence": True, "acks": "all"})
    _tuned(settings, conf, {
        "compression.type": "lz4",
        "linger.ms": 5,
        "delivery.timeout.ms": 120_000,
    })
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Offsets are stored by the runtime after the effect, never automatically."""
    conf = client_config(settings)
    conf.update({
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
    })
    _tuned(settings, conf, {
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.runtime.session_timeout_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        # A real broker answers a waiting fetch as soon as data arrives; this bounds the
        # wait on an idle partition. The embedded broker (librdkafka's mock cluster) never
        # answers early, so there every stage waits half of it on average: 5 ms cost ~6 ms
        # less per HL7 message through two stages than 10 ms did, for ~1% of a core idle.
        "fetch.wait.max.ms": 5 if settings.uses_embedded_broker else 100,
    })
    conf.update(overrides)
    return conf


def redacted(conf: dict[str, Any]) -> dict[str, Any]:
    """For logs: a config with every secret masked."""
    return {k: ("***" if "password" in k or "secret" in k else v) for k, v in conf.items()}
