"""Embedded schema registry: the Confluent Schema Registry REST calls, AVRO only, on localhost.

It answers what confluent-kafka's ``SchemaRegistryClient`` (and so ``AvroSerializer`` /
``AvroDeserializer``) and kcat's libserdes (``GET /schemas/ids/{id}``) send, with Confluent's
status codes, error codes and content type, so code and tools run unchanged against it and
against a real registry. This module is the HTTP side: routing, request and response handling,
and the server's lifecycle. What the registry holds, how ids are assigned, how compatibility is
decided and how the store file is kept live in ``fhirbus.embedded.registry_state``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from fhirbus.embedded.registry_state import (
    RegistryError,
    RegistryStartupError,
    RegistryState,
    RegistryStore,
    registry_error,
)
from fhirbus.schemas.compat import POLICY_LEVEL, normalize_level

# RegistryStartupError lives with the state that raises it; start() lets it through, so callers
# keep importing it from here.
__all__ = ["CONTENT_TYPE", "EmbeddedRegistry", "RegistryStartupError"]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class _Raw(str):
    """A handler result sent as-is (the bare schema endpoints), not JSON-encoded."""


def _candidate(body: Any) -> str:
    """The schema text of a register/lookup/compatibility request, after Confluent's checks."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        details = 'Request body must be a JSON object with a "schema" string'
        raise registry_error(42201, details=details)
    schema_type = body.get("schemaType") or "AVRO"
    if str(schema_type).upper() != "AVRO":
        details = f"Unsupported schema type {schema_type!r}: the embedded registry is AVRO only"
        raise registry_error(42201, details=details)
    for key in ("references", "metadata", "ruleSet"):
        if body.get(key):
            details = f"Schema {key} are not supported by the embedded registry"
            raise registry_error(42201, details=details)
    return str(body["schema"])


# -- REST routes -----------------------------------------------------------------------------
class _Req(NamedTuple):
    query: dict[str, str]
    body: Any

    def flag(self, name: str) -> bool:
        # The client sends both "true" (httpx params) and "True" (f-strings of Python bools).
        return self.query.get(name, "").strip().lower() == "true"

    def page(self, items: list[Any]) -> list[Any]:
        offset, limit = (self.query.get(k, "") for k in ("offset", "limit"))
        items = items[int(offset) :] if offset.isdigit() else items
        return items[: int(limit)] if limit.isdigit() and int(limit) > 0 else items


def _usages(st: RegistryState, r: _Req, sid: str) -> list[tuple[str, int]]:
    st.visible(int(sid))
    return [
        (name, v.version)
        for name in sorted(st.subjects)
        for v in st.versions(name, r.flag("deleted"))
        if v.schema_id == int(sid) and r.query.get("subject", name) == name
    ]


def _by_guid(st: RegistryState, guid: str) -> dict[str, Any]:
    for record in st.schemas.values():
        if record.guid == guid:
            return {"schema": st.visible(record.id).text, "id": record.id, "guid": guid}
    raise registry_error(40403, id=guid)


def _subjects(st: RegistryState, r: _Req) -> list[str]:
    prefix = r.query.get("subjectPrefix", ":*:").replace(":*:", "")  # ":*:" = default context
    if r.flag("deleted_only"):
        names = [n for n in st.subjects if not st.versions(n)]
    else:
        names = [n for n in st.subjects if st.versions(n, r.flag("deleted"))]
    return r.page(sorted(n for n in names if n.startswith(prefix)))


def _versions(st: RegistryState, r: _Req, subject: str) -> list[int]:
    deleted_only = r.flag("deleted_only")
    versions = st.versions(subject, deleted_only or r.flag("deleted"))
    versions = [v for v in versions if v.deleted or not deleted_only]
    if subject not in st.subjects or not (versions or deleted_only):
        raise registry_error(40401, s=subject)
    return r.page([v.version for v in versions])


def _get_config(st: RegistryState, r: _Req, subject: str | None = None) -> dict[str, str]:
    if subject is None or (subject not in st.levels and r.flag("defaultToGlobal")):
        return {"compatibilityLevel": st.global_level}
    if subject not in st.levels:
        raise registry_error(40408, s=subject)
    return {"compatibilityLevel": st.levels[subject]}


def _put_config(st: RegistryState, r: _Req, subject: str | None = None) -> dict[str, str]:
    # set_compatibility sends "compatibility"; a ServerConfig may carry "compatibilityLevel".
    body = r.body if isinstance(r.body, dict) else {}
    try:
        level = normalize_level(str(body.get("compatibility") or body.get("compatibilityLevel")))
    except ValueError:
        raise registry_error(42203) from None
    if subject is None:
        st.global_level = level
    else:
        st.levels[subject] = level
    return {"compatibility": level}


def _delete_config(st: RegistryState, r: _Req, subject: str | None = None) -> dict[str, str]:
    if subject is None:
        old, st.global_level = st.global_level, POLICY_LEVEL
        return {"compatibilityLevel": old}
    if subject not in st.levels:
        raise registry_error(40408, s=subject)
    return {"compatibilityLevel": st.levels.pop(subject)}


Handler = Callable[..., Any]
_S, _I = "([^/]+)", r"(\d+)"
# method, path, handler(state, request, *path groups), whether it changes state (then persist)
_ROUTES: list[tuple[str, str, Handler, bool]] = [
    ("GET", "/", lambda st, r: {}, False),
    ("GET", "/schemas/types", lambda st, r: ["AVRO"], False),
    ("GET", f"/schemas/ids/{_I}", lambda st, r, i: {
        "schema": st.visible(int(i)).text, "guid": st.schemas[int(i)].guid}, False),
    ("GET", f"/schemas/ids/{_I}/schema", lambda st, r, i: _Raw(st.visible(int(i)).text), False),
    ("GET", f"/schemas/ids/{_I}/subjects", lambda st, r, i: r.page(
        list(dict.fromkeys(n for n, _ in _usages(st, r, i)))), False),
    ("GET", f"/schemas/ids/{_I}/versions", lambda st, r, i: r.page(
        [{"subject": n, "version": v} for n, v in _usages(st, r, i)]), False),
    ("GET", f"/schemas/guids/{_S}", lambda st, r, g: _by_guid(st, g), False),
    ("GET", "/subjects", _subjects, False),
    ("POST", f"/subjects/{_S}", lambda st, r, s: st.lookup(
        s, _candidate(r.body), r.flag("deleted")), False),
    ("DELETE", f"/subjects/{_S}", lambda st, r, s: st.delete_subject(
        s, r.flag("permanent")), True),
    ("GET", f"/subjects/{_S}/versions", _versions, False),
    ("POST", f"/subjects/{_S}/versions", lambda st, r, s: st.register(
        s, _candidate(r.body)), True),
    ("GET", f"/subjects/{_S}/versions/{_S}", lambda st, r, s, v: st.describe(
        s, st.find(s, v, r.flag("deleted"))), False),
    ("GET", f"/subjects/{_S}/versions/{_S}/schema", lambda st, r, s, v: _Raw(
        st.schemas[st.find(s, v, r.flag("deleted")).schema_id].text), False),
    ("GET", f"/subjects/{_S}/versions/{_S}/referencedby", lambda st, r, s, v: [
        st.find(s, v)][:0], False),  # references are not supported, so none refer here
    ("DELETE", f"/subjects/{_S}/versions/{_S}", lambda st, r, s, v: st.delete_version(
        s, v, r.flag("permanent")), True),
    ("POST", f"/compatibility/subjects/{_S}/versions/{_S}", lambda st, r, s, v: st.test(
        s, v, _candidate(r.body), r.flag("verbose")), False),
    ("POST", f"/compatibility/subjects/{_S}/versions", lambda st, r, s: st.test(
        s, None, _candidate(r.body), r.flag("verbose")), False),
    ("GET", "/config", _get_config, False),
    ("PUT", "/config", _put_config, True),
    ("DELETE", "/config", _delete_config, True),
    ("GET", f"/config/{_S}", _get_config, False),
    ("PUT", f"/config/{_S}", _put_config, True),
    ("DELETE", f"/config/{_S}", _delete_config, True),
    ("GET", "/mode", lambda st, r: {"mode": "READWRITE"}, False),
    ("GET", f"/mode/{_S}", lambda st, r, s: {"mode": "READWRITE"}, False),
]  # fmt: skip
_COMPILED = [(m, re.compile(p), h, mut) for m, p, h, mut in _ROUTES]


def _route(method: str, path: str) -> tuple[Handler, list[str], bool]:
    known_path = False
    for route_method, pattern, handler, mutates in _COMPILED:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            # Subjects arrive percent-encoded: the client quotes them with safe="".
            return handler, [unquote(g) for g in match.groups()], mutates
        known_path = known_path or match is not None
    if known_path:
        raise RegistryError(405, 405, "HTTP 405 Method Not Allowed")
    raise RegistryError(404, 404, "HTTP 404 Not Found")


class _App:
    """Dispatch over one :class:`RegistryStore`: routing, locking, persisting what changed."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def dispatch(self, method: str, target: str, raw_body: bytes) -> tuple[int, Any]:
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            handler, args, mutates = _route(method, split.path.rstrip("/") or "/")
            request = _Req(query, _json_body(raw_body))
            with self.store.lock:
                result = handler(self.store.state, request, *args)
                if mutates:
                    self.store.save()
            return 200, result
        except RegistryError as exc:
            return exc.status, {"error_code": exc.code, "message": exc.message}
        except Exception:
            logger.exception("embedded registry failed on %s %s", method, target)
            return 500, {"error_code": 50001, "message": "Error in the backend data store"}


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(400, 400, f"Request body is not valid JSON: {exc}") from exc


# -- HTTP --------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, port: int, app: _App) -> None:
        self.app = app
        # Tracked so stop() can cut keep-alive connections, which would otherwise outlive it.
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, e.g. whenever a client hangs up early.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the clients reuse connections
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms per call.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        status, result = self.server.app.dispatch(self.command, self.path, raw)
        data = (result if isinstance(result, _Raw) else json.dumps(result)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class EmbeddedRegistry:
    """A Confluent-compatible schema registry on 127.0.0.1, preloaded from ``schema_dir``.

    ``port`` 0 picks a free port (see :attr:`url`). ``store_path``, if given, is a JSON file
    holding everything registered; it is reloaded on start, before the schema files.
    """

    def __init__(
        self, schema_dir: Path | None = None, port: int = 0, store_path: Path | None = None
    ) -> None:
        self.schema_dir = Path(schema_dir) if schema_dir is not None else None
        self.port = port
        self.store_path = Path(store_path) if store_path is not None else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded registry is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> EmbeddedRegistry:
        if self._server is not None:
            raise RuntimeError("embedded registry already started")
        store = RegistryStore(self.store_path)
        store.load()
        if self.schema_dir is not None:
            store.preload(self.schema_dir)
        self._server = _Server(self.port, _App(store))
        # A short poll interval only bounds how long stop() waits for the serving loop.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="fhirbus-registry", daemon=True
        )
        self._thread.start()
        logger.info("embedded schema registry at %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmbeddedRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()
