"""Which dead letters an operator means: the filter every ``fhirbus dlq`` action shares.

Parsing is strict and its errors say what form was expected, because a filter that silently
matches more than intended is how a purge removes the wrong records.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbus.schemas.topics import DEAD_LETTER_STAGES, REJECTED_HL7, dead_letter_topic

from .records import DeadLetter

_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_HL7_STRUCTURE = re.compile(r"^[A-Za-z0-9]{3}_[A-Za-z0-9]{2,3}$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ID = re.compile(r"^(?:(?P<topic>[A-Za-z0-9._\-]+):)?(?P<partition>\d{1,6}):(?P<offset>\d{1,19})$")


class FilterError(ValueError):
    """A filter value has the wrong form; the message names the option and the form."""


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """ISO-8601 (a date, or a time with or without offset; no offset = UTC) or a relative
    age such as ``30m``, ``2h``, ``7d`` (that long before now)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{option}: expected an ISO-8601 time (2026-03-01T10:00:00+01:00) or an age "
            "such as 30m, 2h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def resolve_topic(name: str) -> str:
    """A DLQ topic by name, or a stage's name (``canonicalizer`` -> ``dlq.canonicalizer.v1``)."""
    if name in DEAD_LETTER_STAGES:
        return dead_letter_topic(name)
    if name in ("hl7-listener", "rejected"):
        return REJECTED_HL7
    return name


def parse_id(text: str, default_topic: str) -> tuple[str, int, int]:
    """``PARTITION:OFFSET`` in the scanned topic, or ``TOPIC:PARTITION:OFFSET`` (as printed)."""
    match = _ID.match(text.strip())
    if match is None:
        raise FilterError(
            f"record id {text!r}: expected PARTITION:OFFSET or TOPIC:PARTITION:OFFSET "
            "(as `fhirbus dlq list` prints)"
        )
    topic = match.group("topic") or default_topic
    if topic != default_topic:
        raise FilterError(
            f"record id {text!r} names topic {topic}, but the command reads {default_topic}: "
            "pass --topic " + topic
        )
    return topic, int(match.group("partition")), int(match.group("offset"))


@dataclass(frozen=True)
class DlqFilter:
    """All given conditions must hold; an empty filter selects every record."""

    consumer_group: str | None = None
    error_class: str | None = None
    error_type: str | None = None
    original_topic: str | None = None
    source_system: str | None = None
    message_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[tuple[str, int, int]] = field(default_factory=frozenset)

    def matches(self, record: DeadLetter) -> bool:
        if self.ids and (record.dlq_topic, record.partition, record.offset) not in self.ids:
            return False
        checks = (
            _equal(self.consumer_group, record.consumer_group),
            _equal(self.error_class, record.error_class),
            _equal(self.error_type, record.error_type),
            _equal(self.original_topic, record.original_topic or ""),
            _source_matches(self.source_system, record.source_system),
            _type_matches(self.message_type, record.message_type),
        )
        if not all(checks):
            return False
        when = record.failed_at
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until

    @property
    def is_empty(self) -> bool:
        return self == DlqFilter()

    def describe(self) -> dict[str, Any]:
        """For the audit record: only the conditions that were given, as plain values."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value in (None, frozenset(), set()):
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, (set, frozenset)):
                value = sorted(f"{t}:{p}:{o}" for t, p, o in value)
            out[name] = value
        return out


def _equal(wanted: str | None, actual: str) -> bool:
    return wanted is None or wanted.casefold() == actual.casefold()


def _source_matches(wanted: str | None, actual: str) -> bool:
    """``LIS`` matches ``LIS/LAB`` (the sending application), ``LIS/LAB`` only itself."""
    if wanted is None:
        return True
    wanted, actual = wanted.casefold(), actual.casefold()
    return actual == wanted or ("/" not in wanted and actual.split("/")[0] == wanted)


def _type_matches(wanted: str | None, actual: str) -> bool:
    """``ORU`` matches every ORU trigger; ``ORU^R01`` (or ``ORU_R01``) exactly that one."""
    if wanted is None:
        return True
    if _HL7_STRUCTURE.match(wanted):
        wanted = wanted.replace("_", "^")
    wanted, actual = wanted.casefold(), actual.casefold()
    if "^" in wanted:
        return actual == wanted
    return actual == wanted or actual.split("^")[0] == wanted
