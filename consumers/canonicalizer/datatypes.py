"""HL7 v2 data types to FHIR R4 data types (v2-to-FHIR IG datatype maps, simplified).

Pure functions over parsed segments. An optional value that does not parse (a malformed
timestamp, a non-numeric NM) maps to "absent" rather than failing the message; required
values are checked by the mappers, which raise with the HL7 path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fhirbus.hl7 import Segment

from .terminology import CODE_SYSTEMS, UCUM_AS_IS, UNIT_ALIASES

Json = dict[str, Any]

_TS = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?\s*(?:([+-])(\d{2})(\d{2}))?"
)

@dataclass(frozen=True, slots=True)
class Ts:
    """A parsed HL7 TS/DTM: FHIR text at the source's precision, plus epoch millis."""

    fhir: str
    epoch_ms: int
    has_time: bool

    @property
    def date(self) -> str:
        return self.fhir[:10]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=4096)
def parse_ts(value: str, tz: str = "UTC") -> Ts | None:
    """HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) -> Ts, None when absent/malformed.

    FHIR requires a timezone whenever a time is given; a v2 time without an offset is the
    sender's local time, so the feed's configured zone supplies it. Cached: one message
    repeats its times (OBR-7 under every OBX) and Ts is immutable.
    """
    value = value.strip()
    if not value or value == '""':
        return None
    m = _TS.fullmatch(value)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, sign, oh, om = m.groups()
    try:
        if hh is None:
            local = datetime(int(y), int(mo or 1), int(d or 1), tzinfo=_zone(tz))
            text = "-".join(p for p in (y, mo, d) if p)
            return Ts(text, int(local.timestamp() * 1000), False)
        micros = int((frac or "0").ljust(6, "0")[:6])
        naive = datetime(int(y), int(mo), int(d), int(hh), int(mi or 0), int(ss or 0), micros)
    except ValueError:
        return None
    try:
        aware = naive.replace(tzinfo=_offset(sign, oh, om) if sign else _zone(tz))
    except ValueError:
        return None
    if sign and (int(oh) > 14 or int(om) > 59):
        # Outside FHIR's offset range (up to +/-14:00): the same instant, expressed in UTC.
        aware = aware.astimezone(UTC)
    text = aware.isoformat(timespec="milliseconds" if frac else "seconds")
    return Ts(text.replace("+00:00", "Z"), _millis(aware), True)


def _offset(sign: str, hours: str, minutes: str) -> timezone:
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta >= timedelta(hours=24):
        raise ValueError("not a UTC offset")
    return timezone(-delta if sign == "-" else delta)


def _millis(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp() * 1000)


def fhir_datetime(value: str, tz: str) -> str | None:
    ts = parse_ts(value, tz)
    return ts.fhir if ts else None


def fhir_instant(value: str, tz: str) -> str | None:
    """FHIR instant needs seconds and a zone; date-only values cannot be instants."""
    ts = parse_ts(value, tz)
    return ts.fhir if ts and ts.has_time else None


def fhir_date(value: str) -> str | None:
    """Birth dates and the like: the calendar date as written, no zone conversion."""
    ts = parse_ts(value[:8], "UTC") if value.strip() else None
    return ts.date if ts else None


def uri_part(text: str) -> str:
    """Make free text safe inside a URI (FHIR uri forbids whitespace)."""
    return quote(text.strip(), safe="")


def code_system(name: str, site_systems: dict[str, str] | None = None) -> str | None:
    name = name.strip()
    if not name:
        return None
    if site_systems and name in site_systems:
        return site_systems[name]
    known = CODE_SYSTEMS.get(name.upper())
    if known:
        return known
    if name.upper().startswith("HL7") and name[3:].isdigit():
        return f"http://terminology.hl7.org/CodeSystem/v2-{name[3:]}"
    return None


def coding(code: str, display: str, system: str | None) -> Json | None:
    if not code and not display:
        return None
    out: Json = {}
    if system:
        out["system"] = system
    if code:
        out["code"] = code
    if display:
        out["display"] = display
    return out


class CodingSite(Protocol):
    """What codeable() needs from a feed's site config."""

    code_systems: dict[str, str]

    def translate(self, system_name: str, code: str) -> Json | None: ...


def codeable(seg: Segment, n: int, rep: int = 1, site: CodingSite | None = None) -> Json | None:
    """CE/CWE/CNE -> CodeableConcept (primary and alternate triplets, original text), plus
    the site's standard coding for a mapped local code (the local coding is kept)."""
    c = seg.components(n, rep)
    if not c or not any(x.strip() for x in c):
        return None
    c = [x.strip() for x in c] + [""] * (9 - len(c))
    systems = site.code_systems if site is not None else None
    codings = [
        x
        for x in (
            coding(c[0], c[1], code_system(c[2], systems)),
            coding(c[3], c[4], code_system(c[5], systems)),
        )
        if x
    ]
    if site is not None:
        for code, name in ((c[0], c[2]), (c[3], c[5])):
            target = site.translate(name, code) if code else None
            if target and target not in codings:
                codings.append(target)
    out: Json = {}
    if codings:
        out["coding"] = codings
    text = c[8] if len(c) > 8 and c[8] else ""
    if text:
        out["text"] = text
    elif not codings:
        return None
    return out


def code_only(seg: Segment, n: int, rep: int = 1) -> str:
    return seg.get(n, rep, 1).strip()


def authority(seg: Segment, n: int, rep: int, comp: int) -> tuple[str, str, str]:
    """HD inside a component: (namespace id, universal id, universal id type)."""
    return tuple(seg.get(n, rep, comp, s).strip() for s in (1, 2, 3))  # type: ignore[return-value]


def hd_system(namespace: str, universal: str, kind: str, systems: dict[str, str]) -> str | None:
    """Identifier.system for an assigning authority: site map first, then OID/UUID/URI."""
    for key in (namespace, universal):
        if key and key in systems:
            return systems[key]
    kind = kind.upper()
    if universal and kind == "ISO" and re.fullmatch(r"[0-2](\.\d+)+", universal):
        return f"urn:oid:{universal}"
    if universal and kind == "UUID":
        return f"urn:uuid:{universal.lower()}"
    if universal and kind in ("URI", "URL"):
        return universal
    if namespace:
        return f"urn:fhirbus:authority:{uri_part(namespace)}"
    return None


def identifier(
    seg: Segment, n: int, rep: int, systems: dict[str, str], type_system: bool = True
) -> Json | None:
    """CX -> Identifier (value, system from CX-4, type from CX-5)."""
    value = seg.get(n, rep, 1).strip()
    if not value or value == '""':
        return None
    out: Json = {"value": value}
    system = hd_system(*authority(seg, n, rep, 4), systems)
    if system:
        out["system"] = system
    id_type = seg.get(n, rep, 5).strip()
    if id_type and type_system:
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": id_type}]
        }
    return out


def entity_identifier(seg: Segment, n: int, systems: dict[str, str]) -> Json | None:
    """EI (entity id, namespace, universal id, type) -> Identifier."""
    value = seg.get(n, 1, 1).strip()
    if not value:
        return None
    out: Json = {"value": value}
    system = hd_system(
        seg.get(n, 1, 2).strip(), seg.get(n, 1, 3).strip(), seg.get(n, 1, 4).strip(), systems
    )
    if system:
        out["system"] = system
    return out


_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous",
             "B": "official", "C": "old", "P": "usual", "S": "anonymous", "T": "temp",
             "U": "old", "R": "official", "BAD": "old", "NAV": "old", "TEMP": "temp",
             "NB": "usual"}


def human_names(seg: Segment, n: int) -> list[Json]:
    """XPN repetitions -> HumanName (family from FN.1, given + middle, prefix, suffix)."""
    names = []
    for rep in range(1, len(seg.repetitions(n)) + 1):
        family = seg.get(n, rep, 1, 1).strip()
        given = [g for g in (seg.get(n, rep, 2).strip(), seg.get(n, rep, 3).strip()) if g]
        name: Json = {}
        if family and family != '""':
            name["family"] = family
        if given:
            name["given"] = given
        if not name:
            continue
        prefix, suffix = seg.get(n, rep, 5).strip(), seg.get(n, rep, 4).strip()
        if prefix:
            name["prefix"] = [prefix]
        if suffix:
            name["suffix"] = [suffix]
        use = _NAME_USE.get(seg.get(n, rep, 7).strip().upper())
        if use:
            name["use"] = use
        names.append(name)
    return names


_ADDR_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "M": None,
             "P": None, "L": "home"}
_ADDR_TYPE = {"M": "postal", "P": "physical", "SH": "physical"}


def addresses(seg: Segment, n: int) -> list[Json]:
    out = []
    for rep in range(1, len(seg.repetitions(n)) + 1):
        c = [x.strip() for x in seg.components(n, rep)] + [""] * 9
        street = " ".join(s.strip() for s in seg.subcomponents(n, rep, 1) if s.strip())
        addr: Json = {}
        lines = [x for x in (street, c[1]) if x]
        if lines:
            addr["line"] = lines
        for key, val in (("city", c[2]), ("state", c[3]), ("postalCode", c[4]),
                         ("country", c[5]), ("district", c[8])):
            if val:
                addr[key] = val
        if not addr:
            continue
        kind = c[6].upper()
        if _ADDR_USE.get(kind):
            addr["use"] = _ADDR_USE[kind]
        if kind in _ADDR_TYPE:
            addr["type"] = _ADDR_TYPE[kind]
        out.append(addr)
    return out


_TEL_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "home", "ASN": "work",
            "EMR": "home", "NET": None, "BPN": "work", "PRS": "mobile"}
_TEL_SYSTEM = {"PH": "phone", "FX": "fax", "CP": "phone", "BP": "pager", "Internet": "email",
               "X.400": "email", "MD": "other", "TDD": "other", "TTY": "other"}


def telecoms(seg: Segment, n: int, default_use: str | None = None) -> list[Json]:
    out = []
    for rep in range(1, len(seg.repetitions(n)) + 1):
        c = [x.strip() for x in seg.components(n, rep)] + [""] * 12
        value = c[3] if c[3] else _phone(c) or c[0]
        if not value:
            continue
        tel: Json = {"system": _TEL_SYSTEM.get(c[2], "email" if "@" in value else "phone"),
                     "value": value}
        use = _TEL_USE.get(c[1], default_use) if c[1] else default_use
        if c[2] == "CP":
            use = "mobile"
        if use:
            tel["use"] = use
        out.append(tel)
    return out


def _phone(c: list[str]) -> str:
    parts = [p for p in (c[4] and f"+{c[4]}", c[5] and f"({c[5]})", c[6]) if p]
    text = " ".join(parts)
    return f"{text} ext. {c[7]}" if text and c[7] else text


def decimal(text: str) -> float | int | None:
    text = text.strip()
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", text):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def ucum(unit: str, unit_system: str, aliases: dict[str, str]) -> str | None:
    """The UCUM code for an OBX-6 unit, when it is UCUM or a known alias; else None."""
    unit = unit.strip()
    if not unit:
        return None
    if unit in aliases:
        return aliases[unit]
    if unit_system.upper() in ("UCUM", "ISO+", "ANSI+", "UCUM "):
        return unit
    if unit in UCUM_AS_IS:
        return unit
    return UNIT_ALIASES.get(unit.lower())


def quantity(value: float | int, unit_comps: list[str], aliases: dict[str, str]) -> Json:
    c = [x.strip() for x in unit_comps] + ["", "", ""]
    out: Json = {"value": value}
    unit = c[1] or c[0]  # v2-to-FHIR CWE[Quantity]: the text is the unit, the code the code
    if unit:
        out["unit"] = unit
    code = ucum(c[0], c[2], aliases)
    if code:
        out["system"] = "http://unitsofmeasure.org"
        out["code"] = code
    return out
