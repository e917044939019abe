"""Why a change event could not become canonical events.

Every class is a MappingError (a PermanentError), so the runtime dead-letters the original
bytes at once with ``reason=<code> path=<table.column> [detail=...]`` in
``dlq.error_message``. Messages name tables and columns, never row values (rows are PHI).
"""

from __future__ import annotations

from fhirbus.consumers.canonicalizer.errors import MappingError


class NotAChangeEvent(MappingError):
    """The bytes are not a Debezium change event (not JSON, no op, no source)."""

    reason = "cdc_parse_error"


class UnmappedTable(MappingError):
    """No mapping file declares this table: dead-lettered, never dropped."""

    reason = "cdc_unmapped_table"


class UnsupportedOperation(MappingError):
    """``op`` is a truncate (no row identity to retire) or a value Debezium does not send."""

    reason = "cdc_unsupported_op"


class MissingIdentity(MappingError):
    """Neither the row image nor the Kafka key holds the table's key columns."""

    reason = "cdc_missing_identity"


class UnavailableValue(MappingError):
    """A mapped column holds Debezium's unchanged-TOAST placeholder: the value is unknown."""

    reason = "cdc_unavailable_value"


class BadColumnValue(MappingError):
    """A column's value cannot be read as the type its mapping declares (or is missing)."""

    reason = "cdc_bad_value"


class UnmappedCode(MappingError):
    """A coded column holds a value the mapping's code map does not list."""

    reason = "cdc_unmapped_code"


CDC_DEAD_LETTER_REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (
        NotAChangeEvent,
        UnmappedTable,
        UnsupportedOperation,
        MissingIdentity,
        UnavailableValue,
        BadColumnValue,
        UnmappedCode,
    )
)
