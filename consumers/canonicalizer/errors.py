"""Why a message could not become canonical events.

Every class is a ``PermanentError``: the runtime dead-letters the original bytes at once.
``str(exc)`` becomes the ``dlq.error_message`` header, so it is a fixed, parseable form,
``reason=<code> path=<where> [detail=<what>]``, and never holds field values (HL7 is PHI).
"""

from __future__ import annotations

from fhirbus.consumers.errors import PermanentError


class MappingError(PermanentError):
    """Base class; ``reason`` is the machine code ops filter dead letters on."""

    reason = "mapping_error"

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        text = f"reason={self.reason} path={path}"
        super().__init__(f"{text} detail={detail}" if detail else text)


class ParseFailure(MappingError):
    """The bytes are not a parseable HL7 v2 message (bad MSH, charset, segment ids)."""

    reason = "parse_error"


class UnsupportedMessageType(MappingError):
    """MSH-9 names a message type no mapper handles: dead-lettered, never dropped."""

    reason = "unsupported_message_type"


class MissingRequiredSegment(MappingError):
    reason = "missing_required_segment"


class MissingRequiredField(MappingError):
    reason = "missing_required_field"


class InvalidFhirResource(MappingError):
    """A mapped resource failed fhir.resources (R4B) validation."""

    reason = "invalid_fhir_resource"


class EmptyBatch(MappingError):
    """A batch envelope (FHS/BHS) with no message in it: nothing to map."""

    reason = "empty_batch"


# Every reason a dead letter from this stage can carry (docs and the conformance test).
DEAD_LETTER_REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (
        ParseFailure,
        UnsupportedMessageType,
        MissingRequiredSegment,
        MissingRequiredField,
        InvalidFhirResource,
        EmptyBatch,
    )
)
