"""Column values as Debezium's JsonConverter sends them -> FHIR JSON values.

Debezium conventions (PostgreSQL connector, as both fhirbus CDC paths configure it):
numeric/decimal as strings (``decimal.handling.mode=string``; plain JSON numbers are
accepted too), ``date`` as days since the epoch, ``timestamptz`` as an ISO-8601 UTC string,
``timestamp`` as epoch microseconds, ``boolean`` as JSON true/false. An unchanged TOASTed
column is the placeholder below, which is not a value: reading it raises.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import BadColumnValue, UnavailableValue

UNAVAILABLE = "__debezium_unavailable_value"
_EPOCH = date(1970, 1, 1)

Converter = Callable[[Any], Any]


def to_string(value: Any) -> str | None:
    """FHIR has no empty strings: an empty or blank column reads as absent."""
    if isinstance(value, bool | dict | list):
        raise ValueError("not a scalar")
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def to_code(value: Any) -> str | None:
    """A FHIR ``code`` has no leading, trailing or repeated whitespace (its lexical form);
    source columns often do (``char(n)`` padding, a pasted line end): normalized, not lost."""
    text = to_string(value)
    return " ".join(text.split()) if text is not None else None


def to_integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean")
    if isinstance(value, int):
        return value
    return int(str(value))


def to_exact(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("boolean")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("not a decimal") from None
    if not number.is_finite():
        raise ValueError("not finite")
    return number


def to_decimal(value: Any) -> int | float:
    """FHIR decimals go out as JSON numbers (integral values as integers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value if isinstance(value, Decimal) else to_exact(value)
    return int(number) if number == number.to_integral_value() and abs(number) < 2**53 \
        else float(number)


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "t", "1", "y", "yes"):
        return True
    if text in ("false", "f", "0", "n", "no"):
        return False
    raise ValueError("not a boolean")


def to_date(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return (_EPOCH + timedelta(days=value)).isoformat()
    return date.fromisoformat(str(value)).isoformat()


def to_datetime(value: Any) -> datetime:
    """ISO-8601 (a zone is required: a timestamptz) or epoch microseconds, as UTC."""
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1_000_000, tz=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp without a zone")
    return parsed.astimezone(UTC)


def iso_instant(value: datetime) -> str:
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def to_fhir_datetime(value: Any) -> str:
    return iso_instant(to_datetime(value))


CONVERTERS: dict[str, Converter] = {
    "string": to_string,
    "code": to_code,
    "integer": to_integer,
    "decimal": to_decimal,
    "boolean": to_boolean,
    "date": to_date,
    "dateTime": to_fhir_datetime,
}


def read(row: dict[str, Any], column: str, table: str, convert: Converter,
         required: bool = True) -> Any:
    """The converted value of ``column`` (None for SQL NULL). A column absent from the row
    image raises when ``required`` (schema drift), else reads as NULL (a key-only image)."""
    if column not in row:
        if required:
            raise BadColumnValue(f"{table}.{column}", "column missing from the row image")
        return None
    value = row[column]
    if value is None:
        return None
    if value == UNAVAILABLE:
        raise UnavailableValue(
            f"{table}.{column}",
            "unchanged TOAST value not sent; set REPLICA IDENTITY FULL on the table or "
            "stop mapping this column",
        )
    try:
        return convert(value)
    except (ValueError, TypeError, OverflowError):
        raise BadColumnValue(f"{table}.{column}",
                             f"not readable as {convert.__name__.removeprefix('to_')}") from None
