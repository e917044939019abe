"""Differential test: our parser against hl7apy (and python-hl7's unescaper) on the corpus.

For every message in shared/corpus/hl7v2 (batch files split with split_batch) that
hl7apy accepts, every leaf (field / repetition / component / subcomponent) we expose must
equal hl7apy's leaf. hl7apy keeps leaves *escaped* (it never unescapes on parse), so leaves
are compared raw; decoded values are compared separately against python-hl7's unescaper.

Where the two legitimately differ, the difference must match one of the named, reasoned
``KNOWN_DIFFERENCES`` below; anything else fails. hl7apy's tree loses positions in places
(it drops blank values of known datatypes and leaves fields/components it has no definition
for unnamed), so leaves are aligned by hl7apy's element names where it has them and by
order otherwise; a value hl7apy lost or invented fails as well.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import hl7 as pyhl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import InvalidName
from hl7apy.parser import get_message_info, parse_message, parse_segment

from fhirbus.hl7 import (
    Delimiters,
    HL7EncodingError,
    HL7ParseError,
    Message,
    Segment,
    decode_message,
    parse,
    split_batch,
)
from tests.corpus import HL7_CORPUS

CORPUS = HL7_CORPUS
_INDEXED = re.compile(r"_(\d+)$")

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared HL7 corpus not mounted")


# ---------------------------------------------------------------------------------------
# Known, understood differences. Each names the hl7apy behaviour and where it comes from.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    where: str  # e.g. "PID-3[2].4.1"; never the value (corpus data is synthetic, but habits)
    ours: str
    theirs: str
    typed: bool = False  # hl7apy converted the leaf to a non-text datatype
    segment_tail: bool = False  # the leaf ends the segment text


@dataclass(frozen=True)
class KnownDifference:
    name: str
    reason: str
    applies: Callable[[Mismatch], bool]


def _same_number(m: Mismatch) -> bool:
    try:
        return m.typed and float(m.ours) == float(m.theirs)
    except ValueError:
        return False


KNOWN_DIFFERENCES = (
    KnownDifference(
        "HL7APY_NORMALISES_NUMBERS",
        "hl7apy converts SI/NM leaves to numbers, so '001' / '0010' come back as '1' / '10'; "
        "we return what the sender wrote (leading zeros can be significant to a receiver).",
        _same_number,
    ),
    KnownDifference(
        "HL7APY_STRIPS_SEGMENT_END",
        "hl7apy calls str.strip() on every segment (parser.parse_segments), dropping trailing "
        "spaces that several senders leave at the end of a segment (msft-ADT01-23, "
        "msft-PC1-Problem-Add); we keep the field value as sent and leave trimming to the "
        "canonicalizer.",
        lambda m: m.segment_tail and m.ours.rstrip() == m.theirs,
    ),
    KnownDifference(
        "HL7APY_DROPS_BLANK_VALUES",
        "hl7apy skips fields and components of known datatypes whose text is only whitespace "
        "(`if field.strip()` in parser.parse_fields/parse_components), e.g. OBR-13 = ' ' in "
        "msft-LAB-ORU-1; we keep the blank as sent.",
        lambda m: m.theirs == "" and m.ours != "" and m.ours.isspace(),
    ),
)


def _explain(m: Mismatch) -> str | None:
    for known in KNOWN_DIFFERENCES:
        if known.applies(m):
            return known.name
    return None


# ---------------------------------------------------------------------------------------
# Corpus loading
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusMessage:
    ident: str
    raw: bytes


@cache
def corpus_messages() -> tuple[CorpusMessage, ...]:
    found = []
    for path in sorted(CORPUS.rglob("*.hl7")):
        rel = path.relative_to(CORPUS).as_posix()
        try:
            parts = split_batch(path.read_bytes())
        except HL7ParseError:
            found.append(CorpusMessage(rel, path.read_bytes()))
            continue
        for k, part in enumerate(parts):
            found.append(CorpusMessage(rel if len(parts) == 1 else f"{rel}#{k + 1}", part))
    return tuple(found)


def _for_hl7apy(text: str) -> str:
    """hl7apy wants CR terminators and chokes on blank lines; both are framing, not data."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(line for line in lines if line.strip())


# ---------------------------------------------------------------------------------------
# Alignment of hl7apy's tree with our positional view
# ---------------------------------------------------------------------------------------


def _index(node: Any) -> int | None:
    match = _INDEXED.search(node.name or "")
    return int(match.group(1)) if match else None


def _leaf(node: Any) -> tuple[str, bool]:
    """(hl7apy's leaf text, whether hl7apy converted it to a non-text datatype)."""
    value = node.value
    if isinstance(value, str):
        return value, False
    inner = getattr(value, "value", None)
    if isinstance(inner, str):
        return inner, False
    return node.to_er7(), True


def _align(ours: list[str], children: list[Any], keep_blank: bool) -> list[tuple[int, Any]]:
    """Pair hl7apy children with our 1-based positions (positions left out have no node).

    Indexed children (CX_4, VARIES_2) sit at their index. Unindexed ones are either a plain
    positional list (primitive datatype: hl7apy keeps everything) or elements beyond
    hl7apy's definition, which it appends in order after the defined ones.
    """
    named = {i: c for c in children if (i := _index(c)) is not None}
    unnamed = [c for c in children if _index(c) is None]
    assert len(named) + len(unnamed) == len(children), "hl7apy repeated an element index"
    if not named and len(unnamed) == len(ours):
        return list(enumerate(unnamed, 1))
    free = [
        pos
        for pos in range(1, len(ours) + 1)
        if pos not in named and (keep_blank or ours[pos - 1].strip())
    ]
    # More unnamed children than free positions: the surplus gets positions past our end,
    # so it surfaces as values hl7apy has and we do not.
    free += range(len(ours) + 1, len(ours) + 1 + max(0, len(unnamed) - len(free)))
    paired = list(named.items())
    if unnamed:
        paired += list(zip(free[-len(unnamed) :], unnamed, strict=True))
    return paired


@dataclass
class _Walk:
    seg: Segment
    out: list[Mismatch]
    tail: tuple[int, int, int, int]
    matched: int = 0


def _compare_leaf(w: _Walk, key: tuple[int, int, int, int], ours: str, node: Any) -> None:
    theirs, typed = _leaf(node) if node is not None else ("", False)
    w.matched += node is not None
    if ours != theirs:
        where = f"{w.seg.id}-{key[0]}[{key[1]}].{key[2]}.{key[3]}"
        w.out.append(Mismatch(where, ours, theirs, typed, key == w.tail))


def _compare_component(w: _Walk, key: tuple[int, int, int], ours: str, node: Any, d: Any) -> None:
    subs = ours.split(d.subcomponent)
    children = list(node.children) if node is not None else []
    by_pos = dict(_align(subs, children, keep_blank=True))
    for pos, value in enumerate(subs, 1):
        _compare_leaf(w, (*key, pos), value, by_pos.pop(pos, None))
    for pos, extra in by_pos.items():
        _compare_leaf(w, (*key, pos), "", extra)


def _compare_repetition(w: _Walk, key: tuple[int, int], ours: str, node: Any, d: Any) -> None:
    comps = ours.split(d.component)
    by_pos = dict(_align(comps, list(node.children), keep_blank=False))
    for pos, value in enumerate(comps, 1):
        _compare_component(w, (*key, pos), value, by_pos.pop(pos, None), d)
    for pos, extra in by_pos.items():
        _compare_component(w, (*key, pos), "", extra, d)


def _flat_repetitions(seg: Segment) -> Iterator[tuple[int, int, str]]:
    for n in range(1, seg.field_count + 1):
        if seg.id == "MSH" and n <= 2:
            yield n, 1, seg.field(n)
        elif seg.field(n).strip():
            for r, value in enumerate(seg.repetitions(n), 1):
                yield n, r, value


def _tail_key(seg: Segment, d: Any) -> tuple[int, int, int, int]:
    n = seg.field_count
    reps = seg.repetitions(n) or [""]
    comps = reps[-1].split(d.component)
    return n, len(reps), len(comps), len(comps[-1].split(d.subcomponent))


def compare_segment(seg: Segment, node: Any, msg: Message) -> tuple[list[Mismatch], int]:
    """Mismatches between one of our segments and hl7apy's, and the number of leaves paired.

    hl7apy emits one Field per repetition of every non-blank field, in order, so the two
    flat lists pair one to one; named fields additionally have to agree on the number.
    """
    d = msg.delimiters
    w = _Walk(seg, [], _tail_key(seg, d))
    for n in range(1, seg.field_count + 1):
        if seg.field(n).isspace() and not (seg.id == "MSH" and n <= 2):
            w.out.append(Mismatch(f"{seg.id}-{n}", seg.field(n), ""))
    ours = list(_flat_repetitions(seg))
    theirs = list(node.children)
    if len(ours) != len(theirs):
        w.out.append(Mismatch(f"{seg.id} repetition count", str(len(ours)), str(len(theirs))))
        return w.out, 0
    for (n, r, value), node_field in zip(ours, theirs, strict=True):
        index = _index(node_field)
        if index is not None and index != n:
            w.out.append(Mismatch(f"{seg.id}-{n} field name", str(n), str(index)))
        elif seg.id == "MSH" and n <= 2:
            _compare_leaf(w, (n, 1, 1, 1), value, node_field.children[0].children[0])
        else:
            _compare_repetition(w, (n, r), value, node_field, d)
    return w.out, w.matched


# ---------------------------------------------------------------------------------------
# Running the comparison (cached: hl7apy costs ~10 ms per message)
# ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ident: str
    skipped: str | None = None  # why the message was not compared
    adapted: str | None = None  # how the input was adapted so that hl7apy accepts it
    leaves: int = 0
    explained: Counter[str] = field(default_factory=Counter)
    unexplained: list[Mismatch] = field(default_factory=list)
    unescaped_checked: int = 0
    unescape_failures: list[str] = field(default_factory=list)


def _four_char_equivalent(text: str, d: Delimiters) -> str | None:
    """The message with a three-character MSH-2 completed to the standard four characters.

    hl7apy only accepts four; filling in the missing role with a character that does not
    occur anywhere in the message changes nothing else, so the rest can still be compared.
    """
    rep, esc = d.repetition or "~", d.escape or "\\"
    if (d.repetition is None and rep in text) or (d.escape is None and esc in text):
        return None
    fs = d.field
    old = f"MSH{fs}{d.encoding_characters}{fs}"
    return text.replace(old, f"MSH{fs}{d.component}{rep}{esc}{d.subcomponent}{fs}", 1)


def _hl7apy_segments(text: str) -> tuple[list[Any], str | None]:
    """hl7apy's segments (None where it cannot build one) and a note on any bypass.

    hl7apy refuses a whole message for one segment its version library does not know
    (PRT in 2.5.1, non-Z custom segments); parsing such a message segment by segment, as
    parse_message itself does internally, keeps the other segments comparable.
    """
    lines = _for_hl7apy(text)
    try:
        message = parse_message(
            lines, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )
        return list(message.children), None
    except InvalidName:
        pass
    encoding_chars, _structure, version = get_message_info(lines)
    nodes: list[Any] = []
    for line in lines.split("\r"):
        try:
            nodes.append(
                parse_segment(line.strip(), version, encoding_chars, VALIDATION_LEVEL.TOLERANT)
            )
        except InvalidName:
            nodes.append(None)
    unknown = sorted(
        {line[:3] for line, n in zip(lines.split("\r"), nodes, strict=True) if n is None}
    )
    return nodes, f"segments unknown to hl7apy not compared: {', '.join(unknown)}"


def _compare_message(result: Outcome, ours: Message, nodes: list[Any]) -> None:
    names = [
        n.name if n is not None else seg.id for seg, n in zip(ours.segments, nodes, strict=False)
    ]
    if len(nodes) != len(ours.segments) or names != [s.id for s in ours.segments]:
        result.unexplained.append(Mismatch("segment list", "", ""))
        return
    for seg, node in zip(ours.segments, nodes, strict=True):
        if node is None:
            continue
        mismatches, leaves = compare_segment(seg, node, ours)
        result.leaves += leaves
        for m in mismatches:
            if result.adapted and m.where == "MSH-2[1].1.1":
                continue  # the MSH-2 we rewrote for hl7apy
            name = _explain(m)
            if name is None:
                result.unexplained.append(m)
            else:
                result.explained[name] += 1


@cache
def outcome(item: CorpusMessage) -> Outcome:
    try:
        text, _charset = decode_message(item.raw)
        ours = parse(text)
    except (HL7ParseError, HL7EncodingError) as exc:
        return Outcome(item.ident, skipped=f"we reject it: {exc.reason}")
    result = Outcome(item.ident)
    d = ours.delimiters
    hl7apy_text = text
    if d.escape is None or d.repetition is None:
        hl7apy_text = _four_char_equivalent(text, d) or text
        result.adapted = "three-character MSH-2 completed to four"
    elif not text.startswith(f"MSH{d.field}{d.encoding_characters}{d.field}"):
        # MSH-2 arrived with a doubled escape character, which we read as one; hl7apy
        # rejects duplicates, so it gets the four characters the message actually uses.
        fs = d.field
        rest = text.partition(fs)[2].partition(fs)[2]
        hl7apy_text = f"MSH{fs}{d.encoding_characters}{fs}{rest}"
        result.adapted = "doubled escape character in MSH-2 read as one"
    try:
        nodes, note = _hl7apy_segments(hl7apy_text)
    except Exception as exc:  # hl7apy raises a zoo of types; the reason is recorded
        return Outcome(item.ident, skipped=f"hl7apy rejects it: {type(exc).__name__}: {exc}")
    if note:
        result.adapted = note
    _compare_message(result, ours, nodes)
    _check_unescaping(result, ours, text)
    return result


# python-hl7's defaults differ from ours by design (highlight -> '_', line break -> CR);
# its app_map hook lets us state our choices so only real disagreements remain.
PYHL7_APP_MAP = {
    "H": "",
    "N": "",
    ".br": "\n",
    ".sp": "\n",
    ".ce": "\n",
    ".fi": "",
    ".nf": "",
    ".in": "",
    ".ti": "",
    ".sk": " ",
}


def _unresolved_kept(raw: str, decoded: str, esc: str) -> bool:
    """We kept an escape sequence literally (unknown or unterminated), python-hl7 drops it.

    Named exception PYHL7_DROPS_UNKNOWN_ESCAPES: python-hl7's unescape removes what it
    cannot map ("Items which cannot be mapped are removed"); we keep such text (a corpus
    sample has a lone backslash in free text, 'BSV 4\\5 re.'), since losing clinical text is
    worse than showing an odd character.
    """
    return esc in decoded and f"{esc}E{esc}" not in raw


def _leaves_with_escapes(seg: Segment, esc: str, d: Any) -> Iterator[tuple[tuple, str]]:
    for n, r, rep in _flat_repetitions(seg):
        if (seg.id == "MSH" and n <= 2) or esc not in rep:
            continue
        for c, comp in enumerate(rep.split(d.component), 1):
            for s, sub in enumerate(comp.split(d.subcomponent), 1):
                if esc in sub:
                    yield (n, r, c, s), sub


def _check_unescaping(result: Outcome, ours: Message, text: str) -> None:
    d = ours.delimiters
    result.unescape_failures = []
    if d.escape is None or d.repetition is None:
        return  # python-hl7 would read a three-character MSH-2 positionally
    oracle = pyhl7.parse(_for_hl7apy(text))
    for seg in ours.segments:
        for key, raw in _leaves_with_escapes(seg, d.escape, d):
            decoded = seg.get(*key)
            result.unescaped_checked += 1
            expected = oracle.unescape(raw, app_map=PYHL7_APP_MAP)
            if decoded == expected:
                continue
            if _unresolved_kept(raw, decoded, d.escape):
                result.explained["PYHL7_DROPS_UNKNOWN_ESCAPES"] += 1
                continue
            result.unescape_failures.append(f"{seg.id}-{key}")


# ---------------------------------------------------------------------------------------
# Expectations about which messages are compared
# ---------------------------------------------------------------------------------------

# Messages hl7apy cannot parse at all, with the understood cause. A message missing from
# this table must be compared; one listed must still be rejected (so it cannot go stale).
HL7APY_REJECTS = {
    "invalid/rethink-invalid-wrong-version.hl7": "MSH-12 = 1.0 is not a supported version",
    "other/efferent-ACK-DoubleEncoding.hl7": "hl7apy has no v2.6.1 library",
}

# Messages compared after adapting the input for hl7apy (see _four_char_equivalent and
# _hl7apy_segments).
ADAPTED = {
    "adt/lfh-sample_unix.hl7": "doubled escape character",
    "adt/lfh-sample_win.hl7": "doubled escape character",
    "adt/ruby-adt_a01.hl7": "three-character MSH-2",
    "batch/ruby-realm-batch.hl7#2": "three-character MSH-2",
    "oru/ruby-realm-minimal-message.hl7": "three-character MSH-2",
    "orm/msft-MDHHS-OML-O21-1.hl7": "segments unknown to hl7apy not compared: PRT",
    "oru/msft-ORU-R01-01.hl7": "segments unknown to hl7apy not compared: PRT",
    "orm/ruby-lotsunknowns.hl7": "segments unknown to hl7apy not compared: BBQ, OMG, WTF",
}

# Messages we reject ourselves (asserted in detail in test_hl7_parser.py).
WE_REJECT = {
    "invalid/nhc-catalyze-io-orm-example.hl7": "bad_segment_id",
    "invalid/pyhl7-sample_bad_batch.hl7": "no_msh",
    "invalid/rethink-invalid-missing-msh.hl7": "no_msh",
    "invalid/rethink-invalid-segment-header-length.hl7": "bad_segment_id",
    "invalid/ruby-empty_segments.hl7": "bad_segment_id",
}


def _ids() -> list[str]:
    return [m.ident for m in corpus_messages()] if CORPUS.is_dir() else []


@pytest.mark.parametrize("ident", _ids())
def test_agrees_with_hl7apy(ident: str) -> None:
    item = next(m for m in corpus_messages() if m.ident == ident)
    result = outcome(item)
    if ident in WE_REJECT:
        assert result.skipped == f"we reject it: {WE_REJECT[ident]}"
        return
    if ident in HL7APY_REJECTS:
        assert result.skipped is not None and result.skipped.startswith("hl7apy rejects it")
        return
    assert result.skipped is None, result.skipped
    if ident in ADAPTED:
        assert result.adapted is not None and result.adapted.startswith(ADAPTED[ident])
    else:
        assert result.adapted is None
    assert result.unexplained == [], [m.where for m in result.unexplained]
    assert result.unescape_failures == []
    assert result.leaves > 0


def test_differential_summary(capsys: pytest.CaptureFixture[str]) -> None:
    results = [outcome(m) for m in corpus_messages()]
    compared = [r for r in results if r.skipped is None]
    skipped = [r for r in results if r.skipped is not None]
    explained: Counter[str] = Counter()
    for r in compared:
        explained.update(r.explained)
    with capsys.disabled():
        print(
            f"\nhl7apy differential: {len(compared)} messages compared "
            f"({sum(r.leaves for r in compared)} leaves, "
            f"{sum(r.unescaped_checked for r in compared)} escaped leaves checked against "
            f"python-hl7), {len(skipped)} skipped"
        )
        for r in skipped:
            print(f"  skipped {r.ident}: {r.skipped}")
        for r in compared:
            if r.adapted:
                print(f"  adapted {r.ident}: {r.adapted}")
        for name, count in sorted(explained.items()):
            print(f"  known difference {name}: {count}")
    assert len(compared) >= 85
    # Every named exception must still be needed, or it is hiding nothing and should go.
    expected_names = {k.name for k in KNOWN_DIFFERENCES} | {"PYHL7_DROPS_UNKNOWN_ESCAPES"}
    assert set(explained) == expected_names


@pytest.mark.parametrize(
    ("original", "tampered"),
    [
        ("DOE^JOHN", "DOE^JOHNNY"),  # wrong value
        ("DOE^JOHN", "DOE^^JOHN"),  # value moved to another component
        ("123^^^H^MR", "123^^^H&X^MR"),  # extra subcomponent
        ("123^^^H^MR", "123^^^H^MR~9"),  # extra repetition
        ("|19800101", "||19800101"),  # value moved to another field
        ("DOE^JOHN", "DOE^JOHN "),  # a trailing space not at the end of the segment
    ],
)
def test_comparator_flags_disagreements(original: str, tampered: str) -> None:
    """Guard against a comparator that passes everything: feed it a deliberately wrong
    parse of the message hl7apy saw."""
    text = "MSH|^~\\&|A|B|||20200101||ADT^A01|1|P|2.5\rPID|1||123^^^H^MR||DOE^JOHN||19800101|F"
    nodes, _note = _hl7apy_segments(text)
    clean = Outcome("clean")
    _compare_message(clean, parse(text), nodes)
    assert clean.unexplained == [] and clean.leaves > 10
    result = Outcome("tampered")
    _compare_message(result, parse(text.replace(original, tampered, 1)), nodes)
    assert result.unexplained != []
