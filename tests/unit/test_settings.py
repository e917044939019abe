"""Configuration fails at start, naming the setting and the expected form, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbus.cli import main
from fhirbus.kafka.config import NoBrokerError, client_config, consumer_config, producer_config
from fhirbus.settings import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FHIRBUS_STATE_DIR", str(tmp_path / "state"))


def test_defaults_mean_embedded() -> None:
    settings = load_settings()
    assert settings.uses_embedded_broker
    assert settings.runtime.max_attempts == 5


def test_bad_bootstrap_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRBUS_KAFKA_BOOTSTRAP", "kafka-without-port")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "FHIRBUS_KAFKA_BOOTSTRAP" in str(err.value)
    assert "host:port" in str(err.value)
    assert "kafka-without-port" not in str(err.value)


def test_nested_setting_error_names_nested_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRBUS_RUNTIME__MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="FHIRBUS_RUNTIME__MAX_ATTEMPTS"):
        load_settings()


def test_unknown_setting_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "fhirbus.toml"
    config.write_text('kafka_bootstrp = "a:1"\n')
    with pytest.raises(ConfigError, match="FHIRBUS_KAFKA_BOOTSTRP"):
        load_settings(config)


def test_toml_file_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fhirbus.toml"
    config.write_text('kafka_bootstrap = "k1:9092,k2:9092"\n[runtime]\nmax_attempts = 3\n')
    monkeypatch.setenv("FHIRBUS_RUNTIME__MAX_ATTEMPTS", "7")
    settings = load_settings(config)
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.runtime.max_attempts == 7


def test_security_settings_pass_through_and_secret_is_not_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FHIRBUS_KAFKA_BOOTSTRAP", "k1:9093")
    monkeypatch.setenv("FHIRBUS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FHIRBUS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FHIRBUS_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("FHIRBUS_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("FHIRBUS_KAFKA_EXTRA", '{"socket.keepalive.enable": "true"}')
    settings = load_settings()
    conf = producer_config(settings)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.password"] == "s3cret"
    assert conf["socket.keepalive.enable"] == "true"
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert "s3cret" not in repr(settings)


def test_no_broker_anywhere_says_what_to_do() -> None:
    with pytest.raises(NoBrokerError, match="fhirbus broker"):
        client_config(load_settings())


def test_cli_exits_2_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FHIRBUS_LOG_LEVEL", "LOUD")
    assert main(["topics", "list"]) == 2
    assert "FHIRBUS_LOG_LEVEL" in capsys.readouterr().err


def test_kafka_extra_tunes_over_fhirbus_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: consumer_config applied its own fetch.wait.max.ms over the operator's
    FHIRBUS_KAFKA_EXTRA, so the tuning was silently ignored (on the embedded broker every
    stage then waited the full 100 ms)."""
    monkeypatch.setenv("FHIRBUS_KAFKA_BOOTSTRAP", "k1:9093")
    monkeypatch.setenv("FHIRBUS_KAFKA_EXTRA", '{"fetch.wait.max.ms": "5", "linger.ms": "1"}')
    settings = load_settings()
    consumer = consumer_config(settings, "g")
    producer = producer_config(settings)
    assert consumer["fetch.wait.max.ms"] == "5" and producer["linger.ms"] == "1"
    assert consumer["enable.auto.commit"] is False and producer["acks"] == "all"
    assert producer_config(settings, **{"linger.ms": 20})["linger.ms"] == 20  # code wins


@pytest.mark.parametrize("key", ["acks", "enable.auto.commit", "isolation.level",
                                 "bootstrap.servers"])
def test_kafka_extra_may_not_weaken_guarantees(monkeypatch: pytest.MonkeyPatch,
                                               key: str) -> None:
    monkeypatch.setenv("FHIRBUS_KAFKA_EXTRA", f'{{"{key}": "1"}}')
    with pytest.raises(ConfigError, match=f"(?s)FHIRBUS_KAFKA_EXTRA.*may not set {key}"):
        load_settings()


def test_embedded_broker_fetches_are_short(settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock cluster holds a fetch for fetch.wait.max.ms even when data arrives."""
    assert consumer_config(settings, "g")["fetch.wait.max.ms"] == 5
    monkeypatch.setenv("FHIRBUS_KAFKA_BOOTSTRAP", "k1:9093")
    assert consumer_config(load_settings(), "g")["fetch.wait.max.ms"] == 100
