"""Property tests: generated messages round-trip through build -> parse -> get, and
arbitrary input never raises anything but HL7ParseError / HL7EncodingError."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirbus.hl7 import (
    DEFAULT_DELIMITERS,
    Delimiters,
    HL7EncodingError,
    HL7ParseError,
    Message,
    escape,
    parse,
    parse_bytes,
    split_batch,
    unescape,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Characters a sender may pick as delimiters (printable, not alphanumeric, not space).
DELIMITER_POOL = "|^~\\&#!@%*$+:;=?/<>"
SAFE = "ABCXYZabcxyz0129 .-_,'()éßÜ中"
ENVELOPE = {"MSH", "FHS", "BHS", "BTS", "FTS"}

# value[seg][field][rep][comp][sub]
Model = list[tuple[str, list[list[list[list[str]]]]]]


@dataclass(frozen=True)
class Case:
    d: Delimiters
    segments: Model


@st.composite
def delimiters(draw: st.DrawFn) -> Delimiters:
    if draw(st.booleans()):
        return DEFAULT_DELIMITERS
    chars = draw(st.permutations(DELIMITER_POOL))
    truncation = chars[5] if draw(st.booleans()) else None
    return Delimiters(chars[0], chars[1], chars[2], chars[3], chars[4], truncation)


def values(d: Delimiters) -> st.SearchStrategy[str]:
    specials = "".join(
        c for c in (d.field, d.component, d.repetition, d.escape, d.subcomponent, d.truncation) if c
    )
    return st.text(alphabet=SAFE + specials + "\r\n", max_size=12)


segment_ids = st.from_regex(r"\A[A-Z][A-Z0-9]{2}\Z").filter(lambda s: s not in ENVELOPE)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    d = draw(delimiters())
    sub = values(d)
    comp = st.lists(sub, min_size=1, max_size=3)
    rep = st.lists(comp, min_size=1, max_size=3)
    field = st.lists(rep, min_size=1, max_size=3)
    segment = st.tuples(segment_ids, st.lists(field, max_size=6))
    return Case(d, draw(st.lists(segment, min_size=1, max_size=5)))


def build(case: Case, terminator: str = "\r") -> str:
    d = case.d
    msh = d.field.join(
        ["MSH", d.encoding_characters, "APP", "FAC", "", "", "20240101", "", "ADT", "1", "P", "2.5"]
    )
    lines = [msh]
    for seg_id, fields in case.segments:
        encoded = [
            d.repetition.join(  # type: ignore[union-attr]
                d.component.join(d.subcomponent.join(escape(v, d) for v in comp) for comp in rep)
                for rep in reps
            )
            for reps in fields
        ]
        lines.append(d.field.join([seg_id, *encoded]))
    return terminator.join(lines) + terminator


@SETTINGS
@given(cases(), st.sampled_from(["\r", "\n", "\r\n"]))
def test_round_trip(case: Case, terminator: str) -> None:
    msg = parse(build(case, terminator))
    assert msg.delimiters == case.d
    assert [s.id for s in msg.segments] == ["MSH"] + [seg_id for seg_id, _ in case.segments]
    seen: dict[str, int] = {}
    for seg, (seg_id, fields) in zip(msg.segments[1:], case.segments, strict=True):
        seen[seg_id] = occurrence = seen.get(seg_id, 0) + 1
        for n, reps in enumerate(fields, 1):
            for r, comps in enumerate(reps, 1):
                for c, subs in enumerate(comps, 1):
                    for s, value in enumerate(subs, 1):
                        assert seg.get(n, r, c, s) == value
                        assert msg.get(f"{seg_id}({occurrence})-{n}[{r}].{c}.{s}") == value
                    if len(subs) == 1:
                        assert (seg.components(n, r) or [""])[c - 1] == subs[0]
                    assert (seg.subcomponents(n, r, c) or [""]) == subs


@SETTINGS
@given(st.text(alphabet=SAFE, max_size=10), st.sampled_from(["^~&", "^\\&", "!@*"]))
def test_round_trip_three_character_msh2(value: str, encoding: str) -> None:
    msg = parse(f"MSH|{encoding}|A\rZZ1|{value}|x")
    assert msg.get("ZZ1-1") == value and msg.get("ZZ1-2") == "x"


@SETTINGS
@given(st.text(max_size=40), delimiters())
def test_escape_unescape_inverse(value: str, d: Delimiters) -> None:
    assert unescape(escape(value, d), d) == value


@SETTINGS
@given(st.text(max_size=60), delimiters(), st.sampled_from([None, "latin-1", "utf-8", "ascii"]))
def test_unescape_never_raises(value: str, d: Delimiters, charset: str | None) -> None:
    assert isinstance(unescape(value, d, charset), str)


def _touch_everything(text: str) -> None:
    """Parse, then read every position we can think of; only parse errors may escape."""
    try:
        msg = parse(text)
    except HL7ParseError:
        return
    _touch(msg)


def _touch(msg: Message) -> None:
    _ = (msg.message_type, msg.control_id, msg.version, msg.charset, repr(msg))
    for seg in msg.segments:
        for n in range(1, seg.field_count + 2):
            seg.field(n)
            seg.repetitions(n)
            for r in (1, 2):
                seg.components(n, r)
                seg.subcomponents(n, r, 2)
                for c in (1, 2, 3):
                    seg.get(n, r, c, 1)
                    seg.get(n, r, c, 2)
        msg.get(f"{seg.id}-1[2].2.2")


HL7ISH = st.text(alphabet="MSHPIDOBX|^~\\&#XF.br09 \r\n\x0b\x1cé", max_size=200)


@SETTINGS
@given(st.one_of(st.text(max_size=200), HL7ISH, HL7ISH.map(lambda t: "MSH|^~\\&|" + t)))
def test_arbitrary_text_only_raises_parse_errors(text: str) -> None:
    _touch_everything(text)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), HL7ISH.map(lambda t: ("MSH|^~\\&|" + t).encode())))
def test_arbitrary_bytes_only_raise_hl7_errors(raw: bytes) -> None:
    try:
        for part in split_batch(raw):
            _touch(parse_bytes(part))
    except (HL7ParseError, HL7EncodingError):
        pass


@SETTINGS
@given(st.lists(cases(), min_size=1, max_size=4), st.sampled_from(["\r", "\n", "\r\n"]))
def test_split_batch_returns_each_message_byte_exact(batch: list[Case], term: str) -> None:
    messages = [build(case, term).encode() for case in batch]
    envelope = f"FHS|^~\\&|A{term}BHS|^~\\&|A{term}".encode()
    trailer = f"BTS|{len(batch)}{term}FTS|1{term}".encode()
    assert split_batch(envelope + b"".join(messages) + trailer) == messages
