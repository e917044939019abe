"""docker-compose.kafka.yml and the Dockerfile, checked against the code (no Docker needed).

Every ``FHIRBUS_*`` name must be a setting the code reads (derived from the Settings model)
or a variable the CDC declarations expand; addresses must point at the service and port that
serves them; every image tag is pinned; every long-running service has a healthcheck; every
fhirbus command parses with the real CLI; the Dockerfile installs the package like
scripts/setup.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from fhirbus import __version__
from fhirbus.cli import build_parser
from fhirbus.connectors.debezium.config import password_env_var
from fhirbus.connectors.sources import EXAMPLE_SOURCES, SourceDeclaration
from fhirbus.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.kafka.yml"
# Distroless image without a shell or HTTP client; nothing waits on it (telemetry is
# best-effort), so it has no healthcheck. Any other exception must be added here, with why.
NO_HEALTHCHECK = {"otel-collector"}
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?]([^}]*))?\}")


def setting_env_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment variable the Settings model reads, nested with ``__``."""
    names = set()
    for name, info in model.model_fields.items():
        env = prefix + name.upper()
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= setting_env_names(kind, env + "__")
        else:
            names.add(env)
    return names


def example_source() -> SourceDeclaration:
    text = EXAMPLE_SOURCES.read_text()
    data = yaml.safe_load(_INTERP.sub("postgresql://u@h/d", text))
    return SourceDeclaration.model_validate(data["sources"][0])


def declared_source_vars() -> set[str]:
    """Variables the CDC declarations use: ${VAR} in the file, the worker's password var."""
    refs = {m.group(1) for m in _INTERP.finditer(EXAMPLE_SOURCES.read_text())}
    return refs | {password_env_var(example_source())}


def interpolate(value: Any) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?err} with test values; $$ is a literal $."""
    return _INTERP.sub(lambda m: m.group(2) or f"test-{m.group(1).lower()}",
                       str(value)).replace("$$", "$")


# The two ways to run it (README "Running on Kafka"): 3 brokers, or the 1-broker laptop
# profile, an override file merged on top. Every check below runs on both.
LAPTOP = ROOT / "docker-compose.kafka.laptop.yml"
# The in-process CDC reader is a Compose profile (the alternative to Debezium).
PROFILES = {"three-brokers": ([COMPOSE], set()), "laptop": ([COMPOSE, LAPTOP], set()),
            "cdc-inprocess": ([COMPOSE], {"cdc-inprocess"}),
            "laptop+cdc-inprocess": ([COMPOSE, LAPTOP], {"cdc-inprocess"})}


class _Override:
    def __init__(self, value: Any) -> None:
        self.value = value


class _Reset:
    pass


class _ComposeLoader(yaml.SafeLoader):
    """Compose's YAML: the !override and !reset tags of override files."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!override", lambda ld, n: _Override(_tagged(ld, n)))
_ComposeLoader.add_constructor("!reset", lambda ld, n: _Reset())
_REPLACED = {"command", "entrypoint", "test"}  # Compose replaces these sequences


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Compose's merge rules (compose-spec "Merge"): mappings merge, sequences append
    (unique entries), shell commands and !override replace, !reset removes."""
    if isinstance(over, _Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if isinstance(v, _Reset):
                out.pop(k, None)
            else:
                out[k] = merge(base[k], v, k) if k in base else merge(None, v, k)
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        return base + [item for item in over if item not in base]
    return over


def load_compose(files: list[Path]) -> dict[str, Any]:
    merged: Any = None
    for path in files:
        merged = merge(merged, yaml.load(path.read_text(), Loader=_ComposeLoader))
    return merged


@pytest.fixture(scope="module", params=list(PROFILES))
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    files, enabled = PROFILES[request.param]
    return {**load_compose(files), "x-enabled-profiles": enabled}


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services `docker compose up` starts: in no profile or in an enabled one."""
    enabled = compose["x-enabled-profiles"]
    return {n: s for n, s in compose["services"].items()
            if not s.get("profiles") or enabled & set(s["profiles"])}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def fhirbus_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if s.get("build")}


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_every_image_tag_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (fhirbus services build and tag fhirbus:<version>)"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} not pinned"
        if service.get("build"):
            assert image == f"fhirbus:{__version__}", f"{name}: tag the built image by version"


def test_fhirbus_env_names_are_settings_the_code_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    valid = setting_env_names() | declared_source_vars()
    assert "FHIRBUS_CONNECT__URL" in valid and "FHIRBUS_HL7__PORT" in valid  # derivation works
    seen = set()
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith(ENV_PREFIX):
                assert key in valid, f"{name}: {key} is not a setting fhirbus reads"
                seen.add(key)
    assert {"FHIRBUS_KAFKA_BOOTSTRAP", "FHIRBUS_SCHEMA_REGISTRY_URL",
            "FHIRBUS_PROJECTIONS__DSN", "FHIRBUS_CDC__SOURCES_FILE"} <= seen


def test_fhirbus_service_settings_validate(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name, service in fhirbus_services(services).items():
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX):
                monkeypatch.delenv(key)
        for key, value in env_of(service).items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # raises ConfigError naming a bad setting
        assert settings.kafka_bootstrap, f"{name}: not pointed at the cluster"


def test_addresses_point_at_the_service_and_port_that_serve_them(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in fhirbus_services(services).items():
        env = env_of(service)
        for hostport in env["FHIRBUS_KAFKA_BOOTSTRAP"].split(","):
            host, port = hostport.split(":")
            listeners = env_of(services[host])["KAFKA_LISTENERS"]
            assert f"PLAINTEXT://:{port}" in listeners, f"{name}: {hostport}"
            assert f"PLAINTEXT://{hostport}" in env_of(services[host])[
                "KAFKA_ADVERTISED_LISTENERS"]
        registry = urlsplit(env["FHIRBUS_SCHEMA_REGISTRY_URL"])
        assert env_of(services[registry.hostname])["SCHEMA_REGISTRY_LISTENERS"].endswith(
            f":{registry.port}")
        otlp = urlsplit(env["FHIRBUS_TELEMETRY__OTLP_ENDPOINT"])
        collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
        assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(
            f":{otlp.port}") and otlp.hostname in services
        for key, db in (("FHIRBUS_PROJECTIONS__DSN", "readmodel-db"),
                        ("FHIRBUS_CDC_LABBILLING_DSN", "source-db")):
            if key in env:
                dsn = urlsplit(env[key])
                assert (dsn.hostname, dsn.port, dsn.path.lstrip("/")) == (
                    db, 5432, env_of(services[db])["POSTGRES_DB"]), f"{name}: {key}"
        if "FHIRBUS_CONNECT__URL" in env:
            url = urlsplit(env["FHIRBUS_CONNECT__URL"])
            assert url.hostname == "connect" and f"{url.port}:{url.port}" in services[
                "connect"]["ports"]


def test_published_listener_port_matches_the_setting(
    services: dict[str, dict[str, Any]],
) -> None:
    listener = services["hl7-listener"]
    port = env_of(listener)["FHIRBUS_HL7__PORT"]
    assert f"{port}:{port}" in listener["ports"]
    assert env_of(listener)["FHIRBUS_HL7__HOST"] == "0.0.0.0"  # reachable from outside
    assert listener["healthcheck"]["test"][-1] == port


def test_long_running_services_have_healthchecks_and_ordering_uses_them(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        if one_shot(service) or name in NO_HEALTHCHECK:
            assert not check.get("test"), f"{name}: unexpected healthcheck"
            continue
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        for dep, cond in (service.get("depends_on") or {}).items():
            wanted = ("service_completed_successfully" if one_shot(services[dep])
                      else "service_healthy")
            assert cond["condition"] == wanted, f"{name} -> {dep}"
    hc = ROOT / "deploy" / "healthcheck.py"
    assert hc.is_file(), "the fhirbus services' healthcheck script"


def fhirbus_commands(service: dict[str, Any]) -> list[list[str]]:
    if service.get("entrypoint"):
        script = service["entrypoint"][-1]
        return [shlex.split(part)[1:] for part in script.split("&&")]
    return [service["command"]]


def test_every_fhirbus_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    parser = build_parser()
    commands = []
    for name, service in fhirbus_services(compose["services"]).items():
        for argv in fhirbus_commands(service):
            args = parser.parse_args(argv)  # exits (fails the test) on an unknown command
            assert getattr(args, "func", None), f"{name}: {argv} runs nothing"
            commands.append(" ".join(argv[:2]))
    # The bring-up order of README "Running on Kafka".
    assert {"topics apply", "schemas register", "connectors apply", "hl7 listen",
            "canonicalize", "project ehr", "project billing", "project analytics",
            "reconcile schedule", "cdc run"} <= set(commands)


def test_merge_follows_the_compose_rules() -> None:
    base = {"s": {"ports": ["1:1"], "command": ["a"], "environment": {"A": "1", "B": "2"},
                  "depends_on": {"x": {}}, "dns": ["d"]}}
    text = ("s:\n  ports: [\"2:2\"]\n  command: [b]\n  environment: {B: '3'}\n"
            "  depends_on: !override {y: {}}\n  dns: !reset []\n")
    over = yaml.load(text, Loader=_ComposeLoader)
    assert merge(base, over) == {"s": {"ports": ["1:1", "2:2"], "command": ["b"],
                                       "environment": {"A": "1", "B": "3"},
                                       "depends_on": {"y": {}}}}


def test_dependencies_are_services_that_run(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} waits for {dep}, which this profile never starts"


def _int(env: dict[str, str], key: str, default: int) -> int:
    return int(env.get(key, default))


def test_replication_never_exceeds_the_brokers_that_run(
    services: dict[str, dict[str, Any]],
) -> None:
    brokers = {n: env_of(s) for n, s in services.items()
               if s.get("image", "").startswith("apache/kafka:")}
    count = len(brokers)
    assert count in (1, 3)
    ids = {env["KAFKA_NODE_ID"] for env in brokers.values()}
    for name, env in brokers.items():
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert {v.split("@")[0] for v in voters} == ids, f"{name}: voters are not the brokers"
        assert {v.split("@")[1].split(":")[0] for v in voters} == set(brokers)
        for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
            assert int(env[key]) <= count, f"{name}: {key}"
        # acks=all needs min ISR replicas in sync: below the replication, or nothing is
        # writable while one broker restarts.
        rf = int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == max(1, rf - 1)
    connect = env_of(services["connect"])
    for what in ("CONFIG", "OFFSET", "STATUS"):
        assert int(connect[f"CONNECT_{what}_STORAGE_REPLICATION_FACTOR"]) <= count
    registry = env_of(services["schema-registry"])
    assert _int(registry, "SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR", 3) <= count
    from fhirbus.schemas.topics import CATALOG

    for name, service in fhirbus_services(services).items():
        env = env_of(service)
        catalog_rf = max(spec.replication for spec in CATALOG)
        assert _int(env, "FHIRBUS_KAFKA_TOPIC_REPLICATION", catalog_rf) <= count, name
        assert len(env["FHIRBUS_KAFKA_BOOTSTRAP"].split(",")) == count, name
    for host in registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].split(",") + connect[
            "BOOTSTRAP_SERVERS"].split(","):
        assert host.split(":")[0] in brokers, f"{host} is not a broker that runs"


@pytest.mark.parametrize("path", [COMPOSE, LAPTOP], ids=lambda p: p.name)
def test_no_secret_is_written_in_the_file(path: Path) -> None:
    raw = yaml.load(path.read_text(), Loader=_ComposeLoader)["services"]
    required = re.compile(r"\$\{[A-Z_]+:\?[^}]+\}")  # ${VAR:?why}: from the environment
    for name, service in raw.items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if re.search(r"PASSWORD|SECRET", key):
                assert required.fullmatch(text), f"{name}: {key} must be ${{VAR:?...}}"
            resolved = interpolate(required.sub("<from-env>", text))
            for userinfo in re.findall(r"://([^@/\s]+)@", resolved):
                password = userinfo.partition(":")[2]
                assert password in ("", "<from-env>"), f"{name}: {key} has a literal password"


def test_connect_worker_resolves_the_connector_password_from_its_env(
    services: dict[str, dict[str, Any]],
) -> None:
    env = env_of(services["connect"])
    assert env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"] == (
        "org.apache.kafka.common.config.provider.EnvVarConfigProvider")
    assert password_env_var(example_source()) in env
    allow = re.compile(env["CONNECT_CONFIG_PROVIDERS_ENV_PARAM_ALLOWLIST_PATTERN"])
    assert allow.fullmatch(password_env_var(example_source()))
    assert not allow.fullmatch("FHIRBUS_PROJECTIONS__DSN")
    assert env["KEY_CONVERTER"] == env["VALUE_CONVERTER"] == (
        "org.apache.kafka.connect.json.JsonConverter")


# Names the images' entrypoints read besides their prefix (debezium/container-images,
# connect-base/2.7/docker-entrypoint.sh); any other name would be silently ignored.
DEBEZIUM_SHORT_NAMES = {"BOOTSTRAP_SERVERS", "GROUP_ID", "CONFIG_STORAGE_TOPIC",
                        "OFFSET_STORAGE_TOPIC", "STATUS_STORAGE_TOPIC", "KEY_CONVERTER",
                        "VALUE_CONVERTER", "HOST_NAME", "REST_PORT", "ADVERTISED_HOST_NAME",
                        "ADVERTISED_PORT", "HEAP_OPTS", "LOG_LEVEL", "OFFSET_FLUSH_INTERVAL_MS",
                        "OFFSET_FLUSH_TIMEOUT_MS", "SHUTDOWN_TIMEOUT"}


def test_image_env_names_are_ones_the_images_read(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        env = env_of(service)
        if image.startswith("apache/kafka:"):
            # docker/examples/README.md of apache/kafka: KAFKA_<PROPERTY> plus CLUSTER_ID.
            bad = {k for k in env if not k.startswith("KAFKA_") and k != "CLUSTER_ID"}
        elif image.startswith("confluentinc/cp-schema-registry:"):
            bad = {k for k in env if not k.startswith("SCHEMA_REGISTRY_")}
        elif "debezium/connect:" in image:
            passwords = {password_env_var(example_source())}
            bad = {k for k in env if not k.startswith("CONNECT_")} - DEBEZIUM_SHORT_NAMES
            bad -= passwords
        elif image.startswith("postgres:"):
            bad = {k for k in env if not k.startswith("POSTGRES_")}
        else:
            continue
        assert not bad, f"{name}: {sorted(bad)} are read by nothing in {image}"


def test_mounted_files_exist_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
    init = [v for v in services["source-db"]["volumes"] if "initdb" in v]
    assert init and "labbilling/schema.sql" in init[0], "the example schema is loaded"
    assert "wal_level=logical" in services["source-db"]["command"]


# -- Dockerfile vs scripts/setup (what .ci/run runs) ----------------------------------

def dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_package_like_scripts_setup() -> None:
    setup = (ROOT / "scripts" / "setup").read_text().replace("\\\n", " ")
    assert (ROOT / ".ci" / "run").read_text().count("scripts/setup") == 1
    lines = dockerfile_lines()
    run = " ".join(line for line in lines if line.startswith("RUN"))
    # Same steps: a venv, pip upgraded, `python -m pip install` of the repo root with the
    # same flags (minus editable and the dev extras), then the same import check.
    assert "python3 -m venv .venv" in setup and "python -m venv /opt/fhirbus" in run
    flags = "-q --disable-pip-version-check"
    assert f"python -m pip install {flags} --upgrade pip" in setup
    assert f"python -m pip install {flags} -e '.[dev]'" in setup
    assert re.search(rf"python -m pip install {flags} --no-cache-dir --upgrade pip", run)
    assert re.search(rf"python -m pip install {flags} --no-cache-dir \.( |$)", run)
    check = re.search(r"-c '(import [^']+)'", setup).group(1)  # type: ignore[union-attr]
    assert f"-c '{check}'" in run


def test_dockerfile_copies_every_package_folder_and_pins_python() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {line.split()[1] for line in dockerfile_lines() if line.startswith("COPY")}
    assert folders <= copied, f"not copied: {sorted(folders - copied)}"
    assert {"pyproject.toml", "deploy/healthcheck.py"} <= copied
    base = next(line for line in dockerfile_lines() if line.startswith("FROM")).split()[1]
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert re.fullmatch(rf"python:{re.escape(minimum)}\.\d+-slim-\w+", base), base
