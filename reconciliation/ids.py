"""Resource ids of source rows, computed once per row on the reconciler's hot path.

A CDC row's resource id is a UUIDv5 (SHA-1) of fixed parts (``cdc``, source, table, or
``hl7v2``, resource type, identifier system) and the row's key. PostgreSQL has no SHA-1
without an extension, so the reconciler computes ids in Python over a million rows: the
fixed parts are encoded once, the range-hash pass works on the raw digest, and the UUID
text is formatted only where a row is compared key by key. The text is exactly
``identity.fast_stable_id(*parts, key)`` (a unit test holds it to that).
"""

from __future__ import annotations

import hashlib

from fhirbus.schemas.envelope import FHIRBUS_NAMESPACE

_VARIANT = "89ab"  # RFC 4122 variant: the top two bits of byte 8 are 10


class StableIds:
    """``ids(key) == fast_stable_id(*parts, key)``; ``ids.digest(key)`` is its SHA-1.

    The UUID text is the hex of digest bytes 0-15 with the version nibble (byte 6) and the
    variant bits (byte 8) overwritten, so digest bytes 0-5 and 9-15 read the same in both."""

    def __init__(self, *parts: object) -> None:
        self._head = FHIRBUS_NAMESPACE.bytes + "".join(
            ("" if p is None else str(p)) + "\x1f" for p in parts).encode("utf-8")

    def digest(self, key: object) -> bytes:
        text = key if type(key) is str else ("" if key is None else str(key))
        return hashlib.sha1(self._head + text.encode("utf-8")).digest()

    def __call__(self, key: object) -> str:
        d = self.digest(key)
        x = d[:16].hex()
        return (f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[(d[8] >> 4) & 3]}{x[17:20]}"
                f"-{x[20:]}")
