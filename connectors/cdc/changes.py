"""What the slot decoders produce: row changes grouped into committed transactions.

Both decoders (wal2json format 2 and pgoutput) turn their output into these records, so the
event builder and the reader never know which output plugin the slot uses. Values stay in
the form the plugin delivered them (PostgreSQL text output, or JSON natives from wal2json);
``events.debezium_value`` converts them by column type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RawValue = str | int | float | bool | None

# A column the new tuple does not carry: an unchanged TOASTed value (PostgreSQL does not
# write it to the WAL again when an UPDATE leaves it alone).
UNCHANGED_TOAST = object()


@dataclass(frozen=True, slots=True)
class Change:
    op: Literal["c", "u", "d"]
    schema: str
    table: str
    # column -> raw value; absent columns in ``new`` of an update are UNCHANGED_TOAST
    new: dict[str, object] | None
    # the old tuple: key columns only (REPLICA IDENTITY DEFAULT), the whole row (FULL), or
    # None (an update that did not change the key, under DEFAULT)
    old: dict[str, object] | None
    lsn: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(slots=True)
class Transaction:
    xid: int
    # End of the commit record: the slot may be advanced here once every change is acked.
    end_lsn: int = 0
    commit_ts_ms: int = 0
    changes: list[Change] = field(default_factory=list)


class DecodeError(Exception):
    """The slot produced output this reader does not understand (a bug or a new plugin
    version): the reader stops without advancing the slot, so nothing is lost."""


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> integer, as Debezium reports LSNs."""
    high, _, low = text.partition("/")
    if not low:
        raise DecodeError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
