"""A dead-letter record as the toolset sees it: the original key, bytes and headers, and the
error context read from the headers the runtime (``consumers/deadletter.py``) and the MLLP
listener (``hl7.rejected.v1``) write. Pure: no Kafka here.

Message type and source system are not separate DLQ headers: they come from what the
original record already carries (``hl7.msh9``, ``fhirbus.event_type``, the CDC topic name)
or, for HL7, from MSH-3/MSH-4/MSH-9 of the original bytes, which hold no patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from fhirbus.consumers import deadletter as dl
from fhirbus.schemas.topics import CDC_TOPIC_PREFIX, REJECTED_HL7

Headers = list[tuple[str, bytes]]

# The listener's reject headers (producers/mllp/intake.py rejected_record).
H_REJECT_REASON = "fhirbus.reject_reason"
H_REJECT_CODE = "fhirbus.reject_code"
# Where an oversize unit's full bytes are (producers/mllp/claimcheck.py): the value is
# only its head.
H_CLAIM_CHECK = "fhirbus.claim_check"
H_CLAIM_CHECK_SHA256 = "fhirbus.claim_check_sha256"
# Headers a replay adds; a record dead-lettered again after a replay keeps them.
H_REPLAY_OF = "replay-of"
H_REPLAY_ID = "replay-id"

# The canonicalizer's PHI-free reason form (consumers/canonicalizer/errors.py):
# ``reason=<code> path=<where> [detail=<what>]``; details are fixed texts, never values.
_SAFE_REASON = re.compile(
    r"^reason=[a-z_]{1,64} path=[A-Za-z0-9_.\-\[\]()]{1,80}"
    r"( detail=[A-Za-z0-9_.^ \-()]{0,120})?$"
)
_SAFE_TOKEN = re.compile(r"^[a-z_]{1,64}$")


def safe_reason(error_type: str, message: str) -> str:
    """A reason fit for a terminal or a ticket: the message only when it has the PHI-free
    form; otherwise the exception type, because other stages' messages may quote content."""
    if _SAFE_REASON.match(message):
        return message
    return f"{error_type or 'error'} (message withheld: may quote content; see show --show-phi)"


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, addressed by ``dlq_topic:partition:offset``."""

    dlq_topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    # Source.system of a canonical-event value (Avro needs the registry; see ops.enrich).
    envelope_system: str = ""

    @property
    def id(self) -> str:
        return f"{self.dlq_topic}:{self.partition}:{self.offset}"

    @cached_property
    def header_map(self) -> dict[str, str]:
        """Last value wins, as Kafka clients usually read repeated headers."""
        return {k: (v or b"").decode("utf-8", "replace") for k, v in self.headers}

    def header(self, name: str, default: str = "") -> str:
        return self.header_map.get(name, default)

    @property
    def is_listener_reject(self) -> bool:
        return dl.H_STAGE not in self.header_map and H_REJECT_REASON in self.header_map

    @property
    def stage(self) -> str:
        return "hl7-listener" if self.is_listener_reject else self.header(dl.H_STAGE)

    @property
    def consumer_group(self) -> str:
        return self.header(dl.H_GROUP)

    @property
    def error_class(self) -> str:
        return "rejected" if self.is_listener_reject else self.header(dl.H_ERROR_CLASS)

    @property
    def error_type(self) -> str:
        if self.is_listener_reject:
            return self.header(H_REJECT_CODE)
        return self.header(dl.H_ERROR_TYPE)

    @property
    def error_message(self) -> str:
        """May quote content for some stages: print only through ``reason``/``--show-phi``."""
        if self.is_listener_reject:
            return self.header(H_REJECT_REASON)
        return self.header(dl.H_ERROR_MESSAGE)

    @property
    def reason(self) -> str:
        if self.is_listener_reject:
            code = self.header(H_REJECT_REASON)
            return f"rejected reason={code}" if _SAFE_TOKEN.match(code) else "rejected"
        return safe_reason(self.error_type, self.error_message)

    @property
    def original_topic(self) -> str | None:
        return self.header_map.get(dl.H_TOPIC) or None

    @property
    def original_position(self) -> tuple[int, int] | None:
        try:
            return int(self.header(dl.H_PARTITION)), int(self.header(dl.H_OFFSET))
        except ValueError:
            return None

    @property
    def failed_at(self) -> datetime:
        """When it was dead-lettered: the runtime's header, else the DLQ record's timestamp."""
        stamp = self.header(dl.H_FAILED) or self.header("fhirbus.received_at")
        if stamp:
            try:
                when = datetime.fromisoformat(stamp)
                return when if when.tzinfo else when.replace(tzinfo=UTC)
            except ValueError:
                pass
        return datetime.fromtimestamp(max(self.timestamp_ms, 0) / 1000, tz=UTC)

    @property
    def replay_of(self) -> str | None:
        return self.header_map.get(H_REPLAY_OF) or None

    @cached_property
    def message_type(self) -> str:
        """``ORU^R01`` for HL7, the event type for canonical events, ``<table>:<op>`` for CDC."""
        if msh9 := self.header("hl7.msh9"):
            return _hl7_type(msh9, "^")
        if event_type := self.header("fhirbus.event_type"):
            return event_type
        msh = _msh(self.value)
        if msh is not None:
            sep, fields = msh
            return _hl7_type(fields[8] if len(fields) > 8 else "", _component_sep(fields, sep))
        topic = self.original_topic or ""
        if topic.startswith(CDC_TOPIC_PREFIX):
            return topic.split(".", 2)[-1]
        return ""

    @cached_property
    def source_system(self) -> str:
        """``APP/FACILITY`` (MSH-3/MSH-4) for HL7, the CDC source name for CDC records."""
        msh = _msh(self.value)
        if msh is not None:
            sep, fields = msh
            comp = _component_sep(fields, sep)
            app = fields[2].split(comp)[0] if len(fields) > 2 else ""
            fac = fields[3].split(comp)[0] if len(fields) > 3 else ""
            return f"{app}/{fac}" if fac else app
        if cdc_source := self.header("cdc.source"):
            return cdc_source
        if self.envelope_system:
            return self.envelope_system
        topic = self.original_topic or ""
        if topic.startswith(CDC_TOPIC_PREFIX):
            return topic.split(".")[1]
        return ""

    def replay_headers(self, replay_id: str) -> Headers:
        """The original headers, minus the DLQ context, an earlier replay's marks and trace
        context (the producer starts a new span), plus where this replay came from."""
        dropped = (H_REPLAY_OF, H_REPLAY_ID, "traceparent", "tracestate")
        kept = [(k, v) for k, v in self.headers if not k.startswith("dlq.") and k not in dropped]
        return [*kept, (H_REPLAY_OF, self.id.encode()), (H_REPLAY_ID, replay_id.encode())]

    @property
    def claim_check(self) -> str | None:
        """The file holding the full original bytes, when the value is only their head."""
        return self.header_map.get(H_CLAIM_CHECK) or None

    @property
    def default_target(self) -> str | None:
        """Where a replay goes without ``--to``: the original topic. Listener rejects have no
        original topic (they never reached one), so replaying them needs an explicit target."""
        if self.dlq_topic == REJECTED_HL7 or self.is_listener_reject:
            return None
        return self.original_topic


def _msh(value: bytes | None) -> tuple[str, list[str]] | None:
    """MSH fields by HL7 number minus one (fields[2] is MSH-3), from the first segment only."""
    if not value or not value.startswith(b"MSH") or len(value) < 8:
        return None
    end = min((i for i in (value.find(b"\r"), value.find(b"\n")) if i >= 0), default=len(value))
    line = value[:end].decode("latin-1")
    sep = line[3]
    parts = line.split(sep)
    # parts[0] is "MSH", parts[1] the encoding characters (MSH-2); MSH-1 is the separator.
    return sep, [sep, *parts[1:]]


def _component_sep(fields: list[str], sep: str) -> str:
    encoding = fields[1] if len(fields) > 1 else ""
    return encoding[0] if encoding else "^"


def _hl7_type(msh9: str, comp: str) -> str:
    parts = msh9.split(comp)
    return "^".join(p for p in parts[:2] if p)
