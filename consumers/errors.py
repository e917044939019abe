"""Error classes the runtime acts on.

transient -> retry the record with capped exponential backoff, then dead-letter;
permanent -> dead-letter at once with context and the original bytes;
outage    -> a dependency is down: pause and retry without limit, dead-letter nothing,
             because dead-lettering a whole backlog during a database restart loses the
             ordering and floods operators.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum

from confluent_kafka import KafkaException


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    OUTAGE = "outage"


class TransientError(Exception):
    """Worth retrying soon (a lock timeout, a throttled call)."""


class PermanentError(Exception):
    """Retrying cannot help (invalid content, an unmappable message)."""


class DownstreamUnavailable(Exception):
    """A dependency is unreachable; the record is fine and must wait, not be dead-lettered."""


class DeserializationError(PermanentError):
    """The record's bytes do not decode with the topic's format."""


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, PermanentError):
        return ErrorClass.PERMANENT
    if isinstance(exc, DownstreamUnavailable):
        return ErrorClass.OUTAGE
    if isinstance(exc, TransientError | TimeoutError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, ConnectionError):
        return ErrorClass.OUTAGE
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        retriable = bool(err is not None and hasattr(err, "retriable") and err.retriable())
        return ErrorClass.TRANSIENT if retriable else ErrorClass.PERMANENT
    if isinstance(exc, sqlite3.OperationalError):
        # "database is locked" and friends: contention, not bad data.
        return ErrorClass.TRANSIENT
    if _is_db_connection_error(exc):
        return ErrorClass.OUTAGE
    # Anything else is a bug or bad data: retrying the same input gives the same result.
    return ErrorClass.PERMANENT


def _is_db_connection_error(exc: BaseException) -> bool:
    # psycopg is optional; recognise its connection failures by name, without importing it.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"}) and "psycopg" in (
        type(exc).__module__ or ""
    )
