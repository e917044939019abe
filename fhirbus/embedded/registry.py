"""Embedded schema registry: the Confluent Schema Registry REST calls, AVRO only, on localhost.

It answers what confluent-kafka's ``SchemaRegistryClient`` (and so ``AvroSerializer`` /
``AvroDeserializer``) and kcat's libserdes (``GET /schemas/ids/{id}``) send, with Confluent's
status codes, error codes and content type, so code and tools run unchanged against it and
against a real registry. Compatibility is decided by ``fhirbus.schemas.compat.
check_compatibility``, the function ``fhirbus schemas check`` uses, under the same default level.

Schema identity is the canonical form, so a schema re-sent with other whitespace or key order
gets its existing id (``normalize`` is accepted; there is nothing left for it to do). Ids are
global across subjects and handed out in order, schema files first (by version, then subject),
so the same files give the same ids on every start. ``store_path`` keeps what was registered,
configured or deleted at runtime across restarts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from fhirbus.schemas.compat import (
    POLICY_LEVEL,
    InvalidSchemaError,
    canonical_form,
    check_compatibility,
    normalize_level,
)
from fhirbus.schemas.governance import load_schema_files

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_VERSION = 2**31 - 1
# A fixed namespace makes a schema's guid a function of its canonical form: stable run to run.
_GUID_NAMESPACE = uuid.UUID("6f1d7c1e-5b1a-4d0e-9a47-2b3f1c0d9e11")
_STORE_FORMAT = 1

# Confluent's codes and wording, so clients and people see what a real registry would say.
_ERRORS = {
    40401: (404, "Subject '{s}' not found."),
    40402: (404, "Version {v} not found."),
    40403: (404, "Schema {id} not found"),
    40404: (404, "Subject '{s}' was soft deleted.Set permanent=true to delete permanently"),
    40405: (404, "Subject '{s}' was not deleted first before being permanently deleted"),
    40406: (404, "Subject '{s}' Version {v} was soft deleted.Set permanent=true to delete"
                 " permanently"),
    40407: (404, "Subject '{s}' Version {v} was not deleted first before being permanently"
                 " deleted"),
    40408: (404, "Subject '{s}' does not have subject-level compatibility configured"),
    409: (409, "Schema being registered is incompatible with an earlier schema for subject"
               ' "{s}", details: {details}'),
    42201: (422, "{details}"),
    42202: (422, "The specified version '{v}' is not a valid version id. Allowed values are"
                 ' between [1, 2^31-1] and the string "latest"'),
    42203: (422, "Invalid compatibility level. Valid values are none, backward, forward, full,"
                 " backward_transitive, forward_transitive, and full_transitive"),
}  # fmt: skip


class RegistryError(Exception):
    """A Confluent-style error response: HTTP status plus registry error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RegistryStartupError(RuntimeError):
    """The schema files or the store cannot be loaded."""


def _err(code: int, **fields: Any) -> RegistryError:
    status, template = _ERRORS[code]
    return RegistryError(status, code, template.format(**fields))


class _Raw(str):
    """A handler result sent as-is (the bare schema endpoints), not JSON-encoded."""


@dataclass
class _Schema:
    id: int
    text: str
    canonical: str
    guid: str


@dataclass
class _Version:
    version: int
    schema_id: int
    deleted: bool = False


class _State:
    """Registry contents and the operations on them. Callers hold the registry lock."""

    def __init__(self) -> None:
        self.schemas: dict[int, _Schema] = {}
        self.by_canonical: dict[str, int] = {}
        self.subjects: dict[str, list[_Version]] = {}
        self.global_level = POLICY_LEVEL
        self.levels: dict[str, str] = {}
        self.next_id = 1

    def intern(self, text: str, canonical: str) -> _Schema:
        if canonical in self.by_canonical:
            return self.schemas[self.by_canonical[canonical]]
        # Served as compact JSON in the writer's key order, as Confluent does.
        compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        record = _Schema(self.next_id, compact, canonical, _guid(canonical))
        self.schemas[record.id] = record
        self.by_canonical[canonical] = record.id
        self.next_id += 1
        return record

    def versions(self, subject: str, deleted: bool = False) -> list[_Version]:
        return [v for v in self.subjects.get(subject, []) if deleted or not v.deleted]

    def find(self, subject: str, token: str, deleted: bool = False) -> _Version:
        number = _parse_version(token)
        versions = self.versions(subject, deleted)
        if not versions:
            raise _err(40401, s=subject)
        matches = [v for v in versions if v.version == number] if number else versions[-1:]
        if not matches:
            raise _err(40402, v=number)
        return matches[0]

    def visible(self, schema_id: int) -> _Schema:
        # A soft-deleted version keeps its id readable (old messages still decode).
        if not any(v.schema_id == schema_id for vs in self.subjects.values() for v in vs):
            raise _err(40403, id=schema_id)
        return self.schemas[schema_id]

    def describe(self, subject: str, v: _Version, with_schema: bool = True) -> dict[str, Any]:
        s = self.schemas[v.schema_id]
        described = {"subject": subject, "version": v.version, "id": s.id, "guid": s.guid}
        return {**described, "schema": s.text} if with_schema else described

    def check(self, subject: str, text: str, previous: list[_Version]) -> tuple[bool, list[str]]:
        result = check_compatibility(
            text,
            [self.schemas[v.schema_id].text for v in previous],
            self.levels.get(subject, self.global_level),
            labels=[f"version {v.version}" for v in previous],
        )
        return result.is_compatible, result.messages

    def register(self, subject: str, text: str) -> dict[str, Any]:
        canonical, live = _canonical(text), self.versions(subject)
        for v in live:
            if self.schemas[v.schema_id].canonical == canonical:
                return self.describe(subject, v, with_schema=False)
        ok, messages = self.check(subject, text, live)
        if not ok:
            raise _err(409, s=subject, details=messages)
        record = self.intern(text, canonical)
        every = self.subjects.setdefault(subject, [])
        every.append(_Version(max((v.version for v in every), default=0) + 1, record.id))
        # Without "schema" the client caches the id under the schema it sent, so asking again
        # with the same Schema is answered from its cache.
        return self.describe(subject, every[-1], with_schema=False)

    def lookup(self, subject: str, text: str, deleted: bool) -> dict[str, Any]:
        canonical, versions = _canonical(text), self.versions(subject, deleted)
        if not versions:
            raise _err(40401, s=subject)
        for v in versions:
            if self.schemas[v.schema_id].canonical == canonical:
                return self.describe(subject, v)
        raise RegistryError(404, 40403, "Schema not found")

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        every, live = self.versions(subject, deleted=True), self.versions(subject)
        if not every:
            raise _err(40401, s=subject)
        if permanent and live:
            raise _err(40405, s=subject)
        if not permanent and not live:
            raise _err(40404, s=subject)
        if permanent:
            del self.subjects[subject]
        for v in live:
            v.deleted = True
        self.levels.pop(subject, None)  # Confluent drops the subject's config with it
        return [v.version for v in (every if permanent else live)]

    def delete_version(self, subject: str, token: str, permanent: bool) -> int:
        v = self.find(subject, token, deleted=True)
        if v.deleted != permanent:
            raise _err(40407 if permanent else 40406, s=subject, v=v.version)
        if permanent:
            self.subjects[subject].remove(v)
            if not self.subjects[subject]:
                del self.subjects[subject]
        v.deleted = True
        return v.version

    def test(self, subject: str, token: str | None, text: str, verbose: bool) -> dict[str, Any]:
        _canonical(text)
        if token is None:
            previous = self.versions(subject)  # the level decides: latest only, or all
        elif _parse_version(token) is None and not self.versions(subject):
            previous = []  # "latest" of a subject not yet registered: anything goes
        else:
            previous = [self.find(subject, token)]
        ok, messages = self.check(subject, text, previous)
        return {"is_compatible": ok, "messages": messages} if verbose else {"is_compatible": ok}

    def to_json(self) -> dict[str, Any]:
        subjects = {
            name: [{"version": v.version, "id": v.schema_id, "deleted": v.deleted} for v in vs]
            for name, vs in self.subjects.items()
        }
        schemas = [{"id": s.id, "schema": s.text} for s in self.schemas.values()]
        return {"format": _STORE_FORMAT, "next_id": self.next_id, "schemas": schemas,
                "subjects": subjects, "global_level": self.global_level,
                "levels": self.levels}  # fmt: skip

    def load_json(self, data: dict[str, Any]) -> None:
        if data.get("format") != _STORE_FORMAT:
            raise ValueError(f"unknown store format {data.get('format')!r}")
        for item in data["schemas"]:
            canonical = canonical_form(item["schema"])
            record = _Schema(item["id"], item["schema"], canonical, _guid(canonical))
            self.schemas[record.id] = record
            self.by_canonical.setdefault(canonical, record.id)
        self.subjects = {
            name: [_Version(v["version"], v["id"], v["deleted"]) for v in vs]
            for name, vs in data["subjects"].items()
        }
        self.global_level = normalize_level(data["global_level"])
        self.levels = {k: normalize_level(v) for k, v in data["levels"].items()}
        self.next_id = max([data["next_id"], *(i + 1 for i in self.schemas)])


def _guid(canonical: str) -> str:
    return str(uuid.uuid5(_GUID_NAMESPACE, canonical))


def _canonical(text: str) -> str:
    try:
        return canonical_form(text)
    except InvalidSchemaError as exc:
        raise _err(42201, details=f"Invalid schema: {exc}") from exc


def _parse_version(token: str) -> int | None:
    """A version number, or None for "latest" (also spelled -1)."""
    number = int(token) if re.fullmatch(r"-?\d{1,10}", token) else 0
    if token == "latest" or number == -1:
        return None
    if not 1 <= number <= _MAX_VERSION:
        raise _err(42202, v=token)
    return number


def _candidate(body: Any) -> str:
    """The schema text of a register/lookup/compatibility request, after Confluent's checks."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise _err(42201, details='Request body must be a JSON object with a "schema" string')
    schema_type = body.get("schemaType") or "AVRO"
    if str(schema_type).upper() != "AVRO":
        details = f"Unsupported schema type {schema_type!r}: the embedded registry is AVRO only"
        raise _err(42201, details=details)
    for key in ("references", "metadata", "ruleSet"):
        if body.get(key):
            raise _err(42201, details=f"Schema {key} are not supported by the embedded registry")
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


def _usages(st: _State, r: _Req, sid: str) -> list[tuple[str, int]]:
    st.visible(int(sid))
    return [
        (name, v.version)
        for name in sorted(st.subjects)
        for v in st.versions(name, r.flag("deleted"))
        if v.schema_id == int(sid) and r.query.get("subject", name) == name
    ]


def _by_guid(st: _State, guid: str) -> dict[str, Any]:
    for record in st.schemas.values():
        if record.guid == guid:
            return {"schema": st.visible(record.id).text, "id": record.id, "guid": guid}
    raise _err(40403, id=guid)


def _subjects(st: _State, r: _Req) -> list[str]:
    prefix = r.query.get("subjectPrefix", ":*:").replace(":*:", "")  # ":*:" = default context
    if r.flag("deleted_only"):
        names = [n for n in st.subjects if not st.versions(n)]
    else:
        names = [n for n in st.subjects if st.versions(n, r.flag("deleted"))]
    return r.page(sorted(n for n in names if n.startswith(prefix)))


def _versions(st: _State, r: _Req, subject: str) -> list[int]:
    deleted_only = r.flag("deleted_only")
    versions = st.versions(subject, deleted_only or r.flag("deleted"))
    versions = [v for v in versions if v.deleted or not deleted_only]
    if subject not in st.subjects or not (versions or deleted_only):
        raise _err(40401, s=subject)
    return r.page([v.version for v in versions])


def _get_config(st: _State, r: _Req, subject: str | None = None) -> dict[str, str]:
    if subject is None or (subject not in st.levels and r.flag("defaultToGlobal")):
        return {"compatibilityLevel": st.global_level}
    if subject not in st.levels:
        raise _err(40408, s=subject)
    return {"compatibilityLevel": st.levels[subject]}


def _put_config(st: _State, r: _Req, subject: str | None = None) -> dict[str, str]:
    # set_compatibility sends "compatibility"; a ServerConfig may carry "compatibilityLevel".
    body = r.body if isinstance(r.body, dict) else {}
    try:
        level = normalize_level(str(body.get("compatibility") or body.get("compatibilityLevel")))
    except ValueError:
        raise _err(42203) from None
    if subject is None:
        st.global_level = level
    else:
        st.levels[subject] = level
    return {"compatibility": level}


def _delete_config(st: _State, r: _Req, subject: str | None = None) -> dict[str, str]:
    if subject is None:
        old, st.global_level = st.global_level, POLICY_LEVEL
        return {"compatibilityLevel": old}
    if subject not in st.levels:
        raise _err(40408, s=subject)
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
    """Dispatch, locking and persistence around one :class:`_State`."""

    def __init__(self, store_path: Path | None) -> None:
        self.state = _State()
        self.lock = threading.RLock()
        self.store_path = store_path

    def dispatch(self, method: str, target: str, raw_body: bytes) -> tuple[int, Any]:
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            handler, args, mutates = _route(method, split.path.rstrip("/") or "/")
            request = _Req(query, _json_body(raw_body))
            with self.lock:
                result = handler(self.state, request, *args)
                if mutates:
                    self.save()
            return 200, result
        except RegistryError as exc:
            return exc.status, {"error_code": exc.code, "message": exc.message}
        except Exception:
            logger.exception("embedded registry failed on %s %s", method, target)
            return 500, {"error_code": 50001, "message": "Error in the backend data store"}

    def load(self) -> None:
        if self.store_path is None or not self.store_path.exists():
            return
        try:
            self.state.load_json(json.loads(self.store_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryStartupError(
                f"{self.store_path}: cannot load the registry store: {type(exc).__name__}: {exc}"
            ) from exc

    def preload(self, schema_dir: Path) -> None:
        files = load_schema_files(schema_dir)
        ordered = sorted((f.version, subject, f) for subject, fs in files.items() for f in fs)
        with self.lock:
            for _version, subject, file in ordered:
                try:
                    self.state.register(subject, file.schema_str)
                except RegistryError as exc:
                    source = f" (with the state in {self.store_path})" if self.store_path else ""
                    raise RegistryStartupError(
                        f"{file.path}: cannot register under {subject}{source}: {exc.message}"
                    ) from exc
            self.save()

    def save(self) -> None:
        if self.store_path is not None:
            _atomic_write(self.store_path, json.dumps(self.state.to_json(), indent=1))


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(400, 400, f"Request body is not valid JSON: {exc}") from exc


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is flushed too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
        app = _App(self.store_path)
        app.load()
        if self.schema_dir is not None:
            app.preload(self.schema_dir)
        self._server = _Server(self.port, app)
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
