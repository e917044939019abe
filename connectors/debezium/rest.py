"""A Kafka Connect REST API client that retries what is worth retrying and says why not.

5xx answers, 409 (a worker rebalance is in progress) and connection errors are transient:
they are retried with capped exponential backoff and jitter. Any other 4xx is permanent and
raised at once, quoting Connect's own message. Secrets (the REST password, anything the
caller names) are scrubbed from every message, and request or response bodies never reach
the logs: a connector config or a validation message may quote them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from fhirbus.consumers.backoff import backoff_ms
from fhirbus.settings import ConnectSettings

from .config import MASK

log = logging.getLogger(__name__)

Outcome = Literal["created", "updated", "unchanged"]
_RETRYABLE_4XX = {409}  # "rebalance in progress": the herder is busy, not the request bad


class ConnectError(Exception):
    """Connect refused the request (4xx other than 409): retrying the same call cannot help."""

    def __init__(self, message: str, status: int | None = None,
                 error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class ConnectUnavailable(ConnectError):
    """Connect stayed unreachable or kept failing (5xx, 409) after every retry."""


class ConnectClient:
    def __init__(self, settings: ConnectSettings, secrets: Iterable[str] = (),
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.session = session or requests.Session()
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else ""
            self.session.auth = (settings.username, password)
        self._secrets = [s for s in (*secrets, *self._own_secrets()) if s]
        self._sleep = sleep
        self._rng = rng

    @property
    def display_url(self) -> str:
        """The base URL without any user:password in it."""
        parts = urlsplit(self.base)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=netloc))

    def _own_secrets(self) -> list[str]:
        out = [self.settings.password.get_secret_value()] if self.settings.password else []
        password = urlsplit(self.settings.url).password
        return [*out, password] if password else out

    # -- the calls ---------------------------------------------------------------------

    def get_config(self, name: str) -> dict[str, str] | None:
        resp = self._call("GET", f"/connectors/{_seg(name)}/config", allow_404=True)
        return None if resp.status_code == 404 else resp.json()

    def put_config(self, name: str, config: dict[str, str]) -> int:
        return self._call("PUT", f"/connectors/{_seg(name)}/config", json=config).status_code

    def apply(self, name: str, config: dict[str, str]) -> Outcome:
        """Create or update, idempotently: an identical config is not PUT again."""
        current = self.get_config(name)
        if current is not None and _comparable(current, name) == _comparable(config, name):
            return "unchanged"
        status = self.put_config(name, config)
        return "created" if status == 201 or current is None else "updated"

    def status(self, name: str) -> dict[str, Any] | None:
        resp = self._call("GET", f"/connectors/{_seg(name)}/status", allow_404=True)
        return None if resp.status_code == 404 else resp.json()

    def restart(self, name: str, include_tasks: bool = True,
                only_failed: bool = False) -> dict[str, Any] | None:
        """Restart the connector (and its tasks); Connect answers 202 with the new status."""
        params = {"includeTasks": _flag(include_tasks), "onlyFailed": _flag(only_failed)}
        resp = self._call("POST", f"/connectors/{_seg(name)}/restart", params=params)
        return resp.json() if resp.content else None

    def delete(self, name: str) -> bool:
        """True if a connector was deleted, False if there was none (already the goal)."""
        resp = self._call("DELETE", f"/connectors/{_seg(name)}", allow_404=True)
        return resp.status_code != 404

    # -- one request, with retries -----------------------------------------------------

    def _call(self, method: str, path: str, allow_404: bool = False,
              **kwargs: Any) -> requests.Response:
        attempts = self.settings.max_retries + 1
        what = f"{method} {self.display_url}{path}"
        for attempt in range(1, attempts + 1):
            try:
                resp = self.session.request(method, self.base + path,
                                            timeout=self.settings.timeout_s, **kwargs)
            except requests.RequestException as exc:
                problem = f"cannot reach Kafka Connect ({type(exc).__name__})"
                status = None
            else:
                log.info("kafka connect %s %s -> %d", method, path, resp.status_code)
                if resp.status_code < 400 or (allow_404 and resp.status_code == 404):
                    return resp
                status = resp.status_code
                code, message = _error_body(resp)
                problem = f"Kafka Connect answered {status}: {self.scrub(message)}"
                if status < 500 and status not in _RETRYABLE_4XX:
                    raise ConnectError(f"{what} failed: {problem}", status, code)
            if attempt < attempts:
                delay = backoff_ms(attempt, self.settings.backoff_initial_ms,
                                   self.settings.backoff_max_ms, self._rng) / 1000
                log.warning("kafka connect %s %s: %s; retry %d/%d in %.1fs", method, path,
                            problem, attempt, attempts - 1, delay)
                self._sleep(delay)
        hint = ("is the worker up and FHIRBUS_CONNECT__URL right?" if status is None
                else "check the Connect worker's log")
        raise ConnectUnavailable(f"{what} failed after {attempts} attempt(s): {problem}; {hint}",
                                 status)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def _seg(name: str) -> str:
    return quote(name, safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _comparable(config: dict[str, str], name: str) -> dict[str, str]:
    # Connect adds "name" to the stored config and keeps every value as a string.
    return {k: str(v) for k, v in config.items() if k != "name"} | {"name": name}


def _error_body(resp: requests.Response) -> tuple[int | None, str]:
    """Connect's ``{"error_code": ..., "message": ...}``, or the start of a non-JSON body."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return None, text[:300] or resp.reason or "(no message)"
    if isinstance(body, dict) and "message" in body:
        code = body.get("error_code")
        return code if isinstance(code, int) else None, str(body["message"])
    return None, str(body)[:300]
