"""``fhirbus connectors ...`` against a real HTTP server speaking the Kafka Connect REST API.

The server (``http.server`` in a thread, real sockets) keeps connectors in memory and answers
with Connect's status codes and ``{"error_code": .., "message": ..}`` bodies; a script of
canned failures (409 rebalance, 400/422 validation, 500) is served first where a test needs
them. The real Kafka Connect run is in the docker tier (tests/docker/).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from fhirbus.cli import main
from fhirbus.connectors.debezium.config import connector_config
from fhirbus.connectors.sources import load_sources

CONNECT_PASSWORD = "connect-pw-7c1d"
DB_PASSWORD = "db-pw-93ab"
NAME = "fhirbus-cdc-labbilling"
SOURCES = """\
sources:
  - name: labbilling
    dsn: postgresql://fhirbus:{password}@source-db:5432/source
    snapshot: {snapshot}
    tables:
      - {{schema: labbilling, table: patients}}
      - {{schema: labbilling, table: audit_log, key_columns: [audit_id]}}
"""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeConnect:
    """Connect's REST semantics for the calls fhirbus makes, over a real socket."""

    auth: str = "Basic " + base64.b64encode(f"ops:{CONNECT_PASSWORD}".encode()).decode()
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: list[tuple[str, int, Any]] = field(default_factory=list)  # (method, status, body)
    requests: list[Request] = field(default_factory=list)

    def handle(self, req: Request, authorization: str | None) -> tuple[int, Any]:
        self.requests.append(req)
        if authorization != self.auth:
            return 401, {"error_code": 401, "message": "Unauthorized"}
        if self.script and self.script[0][0] == req.method:
            _, status, body = self.script.pop(0)
            return status, body
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        if parts[0] != "connectors" or len(parts) < 2:
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        name, rest = parts[1], parts[2:]
        return self._route(req, name, rest)

    def _route(self, req: Request, name: str, rest: list[str]) -> tuple[int, Any]:
        known = self.connectors.get(name)
        if req.method == "PUT" and rest == ["config"]:
            if "connector.class" not in req.body:
                return 400, {"error_code": 400,
                             "message": f"Connector config {req.body} contains no connector type"}
            created = known is None
            self.connectors[name] = {"config": {**req.body, "name": name},
                                     "tasks": ["RUNNING"], "state": "RUNNING"}
            return (201 if created else 200), {"name": name, "config": req.body, "tasks": [],
                                                "type": "source"}
        if known is None:
            return 404, {"error_code": 404, "message": f"Connector {name} not found"}
        if req.method == "GET" and rest == ["config"]:
            return 200, known["config"]
        if req.method == "GET" and rest == ["status"]:
            return 200, self.status_of(name)
        if req.method == "POST" and rest == ["restart"]:
            only_failed = req.query.get("onlyFailed") == ["true"]
            if req.query.get("includeTasks") == ["true"]:
                known["tasks"] = ["RUNNING" if (s == "FAILED" or not only_failed) else s
                                  for s in known["tasks"]]
            return 202, self.status_of(name)
        if req.method == "DELETE" and not rest:
            del self.connectors[name]
            return 204, None
        return 405, {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}

    def status_of(self, name: str) -> dict[str, Any]:
        known = self.connectors[name]
        tasks = [{"id": i, "state": s, "worker_id": "connect:8083"}
                 | ({"trace": "org.apache.kafka.connect.errors.ConnectException: slot busy\n"
                               "\tat io.debezium...(row 42 'Doe')"} if s == "FAILED" else {})
                 for i, s in enumerate(known["tasks"])]
        return {"name": name, "connector": {"state": known["state"], "worker_id": "connect:8083"},
                "tasks": tasks, "type": "source"}

    def count(self, method: str, suffix: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.endswith(suffix))


def _handler(fake: FakeConnect) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            req = Request(self.command, url.path, parse_qs(url.query),
                          json.loads(raw) if raw else None)
            status, body = fake.handle(req, self.headers.get("Authorization"))
            data = b"" if body is None else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def connect() -> Iterator[tuple[FakeConnect, str]]:
    fake = FakeConnect()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES.format(password=DB_PASSWORD, snapshot="initial"))
    return path


@pytest.fixture
def env(connect: tuple[FakeConnect, str], sources_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FHIRBUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FHIRBUS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FHIRBUS_LOG_LEVEL", "DEBUG")  # secrets must stay out even at DEBUG
    monkeypatch.setenv("FHIRBUS_CONNECT__URL", connect[1])
    monkeypatch.setenv("FHIRBUS_CONNECT__USERNAME", "ops")
    monkeypatch.setenv("FHIRBUS_CONNECT__PASSWORD", CONNECT_PASSWORD)
    monkeypatch.setenv("FHIRBUS_CONNECT__MAX_RETRIES", "3")
    monkeypatch.setenv("FHIRBUS_CONNECT__BACKOFF_INITIAL_MS", "2")
    monkeypatch.setenv("FHIRBUS_CONNECT__BACKOFF_MAX_MS", "20")
    monkeypatch.setenv("FHIRBUS_CDC__SOURCES_FILE", str(sources_file))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["connectors", *argv])
    out, err = capsys.readouterr()
    for secret in (CONNECT_PASSWORD, DB_PASSWORD):
        assert secret not in out + err, "a secret reached the output or the logs"
    return code, out, err


@pytest.mark.usefixtures("env")
def test_apply_creates_then_reports_unchanged_then_updates(
    connect: tuple[FakeConnect, str], sources_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, _ = connect
    assert run(capsys, "apply")[:2] == (0, f"{NAME}: created\n")
    expected = connector_config(load_sources(sources_file)[0])
    assert fake.connectors[NAME]["config"] == {**expected, "name": NAME}
    assert expected["database.password"] == "${env:FHIRBUS_CDC_LABBILLING_PASSWORD}"

    assert run(capsys, "apply")[:2] == (0, f"{NAME}: unchanged\n")
    assert fake.count("PUT") == 1, "an identical config is not PUT again"

    sources_file.write_text(SOURCES.format(password=DB_PASSWORD, snapshot="never"))
    assert run(capsys, "apply", "--source", "labbilling")[:2] == (0, f"{NAME}: updated\n")
    assert fake.connectors[NAME]["config"]["snapshot.mode"] == "never"
    assert fake.count("PUT") == 2


@pytest.mark.usefixtures("env")
def test_dry_run_prints_the_config_with_secrets_masked_and_calls_nothing(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "apply", "--dry-run")
    assert code == 0 and connect[0].requests == []
    shown = json.loads(out)
    assert shown["name"] == NAME and shown["config"]["topic.prefix"] == "cdc.labbilling"
    assert shown["config"]["database.password"] == "${env:FHIRBUS_CDC_LABBILLING_PASSWORD}"
    assert "FHIRBUS_CDC_LABBILLING_PASSWORD" in err  # says where the password must come from


@pytest.mark.usefixtures("env")
def test_rebalance_conflict_and_server_errors_are_retried(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, _ = connect
    rebalance = {"error_code": 409, "message": "Cannot complete request momentarily due to "
                 "stale configuration (typically caused by a concurrent config change)"}
    fake.script = [("PUT", 409, rebalance), ("PUT", 500, {"error_code": 500, "message": "boom"}),
                   ("PUT", 409, rebalance)]
    code, out, err = run(capsys, "apply")
    assert (code, out) == (0, f"{NAME}: created\n")
    assert fake.count("PUT") == 4 and "retry 3/3" in err


@pytest.mark.usefixtures("env")
def test_persistent_server_error_gives_up_after_the_retries_with_connects_message(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, _ = connect
    fake.script = [("GET", 500, {"error_code": 500, "message": "Request timed out"})] * 4
    code, out, err = run(capsys, "apply")
    assert code == 1 and out == ""
    assert fake.count("GET") == 4 and fake.count("PUT") == 0
    assert "after 4 attempt(s): Kafka Connect answered 500: Request timed out" in err


@pytest.mark.parametrize("status", [400, 422])
@pytest.mark.usefixtures("env")
def test_validation_error_is_permanent_and_quotes_connect_without_secrets(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str], status: int
) -> None:
    fake, _ = connect
    message = ("Connector configuration is invalid and contains the following 1 error(s):\n"
               f"database.password: FATAL: password authentication failed ({DB_PASSWORD}, "
               f"{CONNECT_PASSWORD})")
    fake.script = [("PUT", status, {"error_code": status, "message": message})]
    code, out, err = run(capsys, "apply")  # run() asserts neither secret is printed
    assert code == 1 and out == ""
    assert fake.count("PUT") == 1, "a 4xx is not retried"
    assert f"answered {status}: Connector configuration is invalid" in err
    assert "password authentication failed (********, ********)" in err


@pytest.mark.usefixtures("env")
def test_wrong_credentials_are_a_clear_permanent_error(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIRBUS_CONNECT__PASSWORD", "wrong")
    code, _, err = run(capsys, "status")
    assert code == 1 and "answered 401: Unauthorized" in err and connect[0].count("GET") == 1


@pytest.mark.usefixtures("env")
def test_unreachable_connect_is_retried_then_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FHIRBUS_CONNECT__URL", f"http://ops:{CONNECT_PASSWORD}@127.0.0.1:{port}")
    code, _, err = run(capsys, "apply")
    assert code == 1
    assert f"GET http://127.0.0.1:{port}/connectors/{NAME}/config failed after 4 attempt(s)" in err
    assert "cannot reach Kafka Connect (ConnectionError)" in err


@pytest.mark.usefixtures("env")
def test_status_restart_and_delete(
    connect: tuple[FakeConnect, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, _ = connect
    code, out, _ = run(capsys, "status")
    assert code == 1 and "not deployed" in out
    assert run(capsys, "apply")[0] == 0
    code, out, _ = run(capsys, "status")
    assert code == 0 and "connector RUNNING" in out and "task 0: RUNNING" in out

    fake.connectors[NAME]["tasks"] = ["FAILED"]
    code, out, _ = run(capsys, "status")
    assert code == 1 and "task 0: FAILED" in out and "ConnectException: slot busy" in out
    assert "Doe" not in out, "only the exception line of a trace is shown"

    code, out, _ = run(capsys, "restart", "--only-failed")
    restart = next(r for r in fake.requests if r.method == "POST")
    assert restart.path == f"/connectors/{NAME}/restart"
    assert restart.query == {"includeTasks": ["true"], "onlyFailed": ["true"]}
    assert code == 0 and "task 0: RUNNING" in out

    assert run(capsys, "delete")[:2][0] == 0 and NAME not in fake.connectors
    code, out, _ = run(capsys, "delete")
    assert (code, out) == (0, f"{NAME}: absent\n")
    code, _, err = run(capsys, "restart")
    assert code == 1 and f"answered 404: Connector {NAME} not found" in err
