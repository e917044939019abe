"""Unit tests for fhirbus.hl7: escapes, terminators, numbering, paths, errors, charsets,
batches, and the documented outcome of every corpus file under invalid/."""

from __future__ import annotations

import pytest

from fhirbus.hl7 import (
    DEFAULT_DELIMITERS,
    Delimiters,
    HL7EncodingError,
    HL7ParseError,
    decode_message,
    detect_charset,
    escape,
    parse,
    parse_bytes,
    parse_header,
    split_batch,
    unescape,
)
from tests.corpus import HL7_CORPUS

CORPUS = HL7_CORPUS
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared HL7 corpus not mounted")

MSH = "MSH|^~\\&|LAB^1.2.3^ISO|FAC|RCV|RFAC|20240101120000||ORU^R01^ORU_R01|CTRL1|P^T|2.5.1|||AL|NE"
PID = "PID|1||111^^^MRN^MR~222^^^SSA^SS||DOE^JANE^Q||19800101|F|||1 Main St^^Town^ST^12345"
OBX1 = "OBX|1|NM|2345-7^Glucose^LN||182|mg/dL|70_105|H|||F"
OBX2 = "OBX|2|ST|8302-2^Height^LN||tall&very^x||||||F"
ORU = "\r".join([MSH, PID, OBX1, OBX2]) + "\r"
D = DEFAULT_DELIMITERS


def corpus(rel: str) -> bytes:
    return (CORPUS / rel).read_bytes()


# --- escape sequences ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\F\\\\S\\\\R\\\\E\\\\T\\", "|^~\\&"),
        ("x\\X0D0A\\y", "x\r\ny"),
        ("\\X0D\\\\X0A\\", "\r\n"),
        ("caf\\XC3A9\\", "café"),  # UTF-8 bytes by default
        ("caf\\XE9\\", "café"),  # not UTF-8: Latin-1 fallback
        ("a\\.br\\b", "a\nb"),
        ("a\\.sp\\b", "a\nb"),
        ("a\\.sp3\\b", "a\n\n\nb"),
        ("a\\.ce\\b", "a\nb"),
        ("a\\.sk2\\b", "a  b"),
        ("a\\.in+4\\b\\.ti-2\\c", "abc"),
        ("\\.fi\\a\\.nf\\", "a"),
        ("\\H\\bold\\N\\ plain", "bold plain"),
        ("Double: \\E\\T\\E\\", "Double: \\T\\"),  # one decode of a double-encoded value
    ],
)
def test_unescape_sequences(escaped: str, plain: str) -> None:
    assert unescape(escaped, D) == plain


@pytest.mark.parametrize(
    "literal",
    [
        "BSV 4\\5 re.",  # lone escape char (corpus: efferent ZZ1)
        "trailing\\",
        "\\Q\\",  # unknown single letter
        "\\C2842\\",  # ISO 2022 charset switch: not supported, kept
        "\\M2442\\",
        "\\Zlocal\\",  # locally defined
        "\\X0\\",  # odd number of hex digits
        "\\XZZ\\",  # not hex
        "\\X\\",
        "\\.zz\\",  # unknown formatting command
        "\\.brx\\",
        "\\.spx\\",
        "\\\\",  # empty sequence
    ],
)
def test_unknown_or_invalid_escapes_are_kept_literally(literal: str) -> None:
    assert unescape(literal, D) == literal


def test_stray_escape_does_not_swallow_following_sequence() -> None:
    assert unescape("4\\5 re. \\F\\ end", D) == "4\\5 re. | end"


def test_counted_formatting_is_capped() -> None:
    assert unescape("\\.sp99999999\\", D) == "\n" * 100


def test_hex_uses_message_charset() -> None:
    assert unescape("\\XE9\\", D, charset="latin-1") == "é"
    assert unescape("\\XC3A9\\", D, charset="latin-1") == "Ã©"
    assert unescape("\\XE9\\", D, charset="ascii") == "é"  # undecodable: falls back


def test_truncation_escape() -> None:
    with_trunc = Delimiters("|", "^", "~", "\\", "&", "#")
    assert unescape("a\\P\\b", with_trunc) == "a#b"
    assert unescape("a\\P\\b", D) == "a\\P\\b"


def test_custom_delimiters_escape() -> None:
    d = Delimiters("#", "!", "@", "%", "*", None)
    assert unescape("a%F%b%S%c%T%d%R%e%E%f", d) == "a#b!c*d@e%f"


def test_no_escape_character_means_no_unescaping() -> None:
    d = Delimiters("|", "^", "~", None, "&", None)
    assert unescape("\\T\\", d) == "\\T\\"


@pytest.mark.parametrize("value", ["", "plain", "|^~\\&", "a\\F\\b", "line1\r\nline2", "100%#!"])
@pytest.mark.parametrize(
    "d",
    [DEFAULT_DELIMITERS, Delimiters("#", "!", "@", "%", "*", None), Delimiters(*"|^~\\&#")],
)
def test_escape_round_trips(value: str, d: Delimiters) -> None:
    escaped = escape(value, d)
    assert all(c not in escaped for c in (d.field, d.component, d.repetition, d.subcomponent))
    assert "\r" not in escaped and "\n" not in escaped
    assert unescape(escaped, d) == value


def test_escape_without_escape_character() -> None:
    d = Delimiters("|", "^", "~", None, "&", None)
    assert escape("plain \\ text", d) == "plain \\ text"
    with pytest.raises(ValueError):
        escape("a^b", d)


# --- terminators and blank lines --------------------------------------------------------


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
@pytest.mark.parametrize("final", [True, False])
def test_terminator_styles(sep: str, final: bool) -> None:
    text = sep.join([MSH, PID, OBX1, OBX2]) + (sep if final else "")
    msg = parse(text)
    assert [s.id for s in msg.segments] == ["MSH", "PID", "OBX", "OBX"]
    assert msg.get("OBX(2)-11") == "F"
    assert all("\r" not in s.raw and "\n" not in s.raw for s in msg.segments)


def test_mixed_terminators_blank_lines_and_framing_bytes() -> None:
    text = "\ufeff" + MSH + "\r\n\r\n" + PID + "\n \n\x0b\r" + OBX1 + "\r\x1c\r\n "
    assert [s.id for s in parse(text).segments] == ["MSH", "PID", "OBX"]


def test_leading_whitespace_before_segment_is_ignored() -> None:
    msg = parse("\x0b" + MSH + "\r  " + PID)
    assert [s.id for s in msg.segments] == ["MSH", "PID"]


def test_trailing_spaces_are_data() -> None:
    msg = parse(MSH + "\rPID|1||x||DOE ")
    assert msg.get("PID-5") == "DOE "


# --- MSH numbering and accessors --------------------------------------------------------


def test_msh_field_numbering() -> None:
    msh = parse(ORU).segments[0]
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.field(3) == "LAB^1.2.3^ISO"
    assert msh.get(1) == "|" and msh.get(2) == "^~\\&"  # never split or unescaped
    assert msh.get(2, comp=2) == ""
    assert msh.repetitions(2) == ["^~\\&"] and msh.components(2) == ["^~\\&"]
    assert msh.get(3, 1, 2) == "1.2.3"
    assert msh.get(9, 1, 3) == "ORU_R01"
    assert msh.field_count == 16


def test_message_properties() -> None:
    msg = parse(ORU)
    assert msg.message_type == "ORU^R01"
    assert (msg.trigger, msg.structure) == ("R01", "ORU_R01")
    assert (msg.control_id, msg.processing_id, msg.version) == ("CTRL1", "P", "2.5.1")
    assert (msg.sending_app, msg.sending_facility) == ("LAB", "FAC")
    assert (msg.receiving_app, msg.receiving_facility) == ("RCV", "RFAC")
    assert (msg.accept_ack_type, msg.app_ack_type, msg.charset) == ("AL", "NE", "")
    assert msg.codec is None
    assert msg.delimiters == DEFAULT_DELIMITERS


def test_message_type_without_trigger_and_custom_delimiters() -> None:
    assert parse("MSH|^~\\&|A||||||ORU|1|P|2.2").message_type == "ORU"
    custom = parse("MSH#!@%*#A#B#C#D#20240101##ADT!A01#1#P#2.5\rPID#1##X@Y##D%S%E!J")
    assert custom.message_type == "ADT^A01"
    assert custom.get("PID-3[2]") == "Y"
    assert custom.get("PID-5.1") == "D!E"


def test_repetitions_components_subcomponents() -> None:
    pid = parse(ORU).segment("PID")
    assert pid is not None
    assert pid.repetitions(3) == ["111^^^MRN^MR", "222^^^SSA^SS"]
    assert pid.get(3, 2, 4) == "SSA"
    assert pid.get(3, 3) == ""
    assert pid.components(5) == ["DOE", "JANE", "Q"]
    assert pid.components(3, 2) == ["222", "", "", "SSA", "SS"]
    assert pid.components(3, 5) == [] and pid.components(99) == []
    assert pid.repetitions(2) == [] and pid.repetitions(99) == []
    obx = parse(ORU).all("OBX")[1]
    assert obx.get(5, 1, 1, 2) == "very"
    assert obx.subcomponents(5) == ["tall", "very"]
    assert obx.components(5) == ["tall&very", "x"]  # subcomponents stay joined
    assert obx.get(5, 1, 1, 3) == "" and obx.get(5, 1, 3) == ""
    assert pid.field(4) == "" and pid.field(200) == "" and pid.get(200) == ""


def test_components_are_decoded_and_fields_are_raw() -> None:
    pid = parse(MSH + "\rPID|1||A\\T\\B^C\\S\\D").segment("PID")
    assert pid is not None
    assert pid.field(3) == "A\\T\\B^C\\S\\D"
    assert pid.components(3) == ["A&B", "C^D"]
    assert pid.get(3, 1, 2) == "C^D"


@pytest.mark.parametrize(
    "call", ["field(0)", "get(0)", "get(3, 0)", "get(3, 1, 0)", "get(3, 1, 1, 0)"]
)
def test_positions_are_one_based(call: str) -> None:
    pid = parse(ORU).segment("PID")
    with pytest.raises(ValueError):
        eval(f"pid.{call}", {"pid": pid})


def test_segment_lookup() -> None:
    msg = parse(ORU)
    assert msg.segment("ZZZ") is None and msg.all("ZZZ") == []
    assert len(msg.all("OBX")) == 2
    assert repr(msg) == "<Message ORU^R01 segments=4>"
    assert "DOE" not in repr(msg.segment("PID"))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("PID-5.1", "DOE"),
        ("PID-5", "DOE"),
        ("PID-5.2", "JANE"),
        ("PID-3[2].4", "SSA"),
        ("PID-3[2].4.1", "SSA"),
        ("PID-3[3].1", ""),
        ("MSH-9.2", "R01"),
        ("MSH-3.2", "1.2.3"),
        ("OBX-5", "182"),
        ("OBX(1)-5", "182"),
        ("OBX(2)-5.1.2", "very"),
        ("OBX(3)-5", ""),
        ("ZZ1-1", ""),
        (" PID-8 ", "F"),
    ],
)
def test_path_syntax(path: str, value: str) -> None:
    assert parse(ORU).get(path) == value


@pytest.mark.parametrize("path", ["PID5", "pid-5", "PID-", "PID-5.", "PID-3[]", "OBX()-5", "P1-1"])
def test_invalid_paths(path: str) -> None:
    with pytest.raises(ValueError, match="invalid HL7 path"):
        parse(ORU).get(path)


@pytest.mark.parametrize("path", ["PID-0", "PID-3[0]", "PID-2[0]", "PID-99.0", "OBX(0)-5"])
def test_path_position_zero_is_rejected(path: str) -> None:
    with pytest.raises(ValueError):
        parse(ORU).get(path)


def test_empty_repetition_has_no_components() -> None:
    pid = parse(MSH + "\rPID|1||~x^y").segment("PID")
    assert pid is not None
    assert pid.repetitions(3) == ["", "x^y"]
    assert pid.components(3, 1) == [] and pid.components(3, 2) == ["x", "y"]
    assert pid.subcomponents(3, 1) == [] and pid.subcomponents(3, 2, 2) == ["y"]


# --- encoding characters ----------------------------------------------------------------


def test_three_character_msh2_without_escape() -> None:
    msg = parse("MSH|^~&|A|B\rPID|1||1^^^X&1.2&ISO~2||A\\T\\B")
    d = msg.delimiters
    assert (d.component, d.repetition, d.escape, d.subcomponent) == ("^", "~", None, "&")
    assert msg.get("PID-3.4.2") == "1.2"
    assert msg.get("PID-3[2]") == "2"
    assert msg.get("PID-5") == "A\\T\\B"  # nothing to unescape with
    assert d.encoding_characters == "^~&"


def test_three_character_msh2_without_repetition() -> None:
    # ruby-hl7's adt_a01 sample: MSH-2 = ^\& (the repetition separator was dropped).
    msg = parse("MSH|^\\&|A|B\rPID|1||A~B||X\\T\\Y")
    d = msg.delimiters
    assert (d.component, d.repetition, d.escape, d.subcomponent) == ("^", None, "\\", "&")
    assert msg.get("PID-3") == "A~B"
    assert msg.get("PID-5") == "X&Y"
    assert d.encoding_characters == "^\\&"


def test_three_nonstandard_characters_have_no_escape() -> None:
    d = parse("MSH|!@*|A").delimiters
    assert (d.component, d.repetition, d.escape, d.subcomponent) == ("!", "@", None, "*")


def test_truncation_character() -> None:
    msg = parse("MSH|^~\\&#|A|||||||RSP^K22|1|P|2.7\rPID|1||A#B")
    assert msg.delimiters.truncation == "#"
    assert msg.get("PID-3") == "A#B"
    assert msg.segments[0].field(2) == "^~\\&#"


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\r\n", "   \n\x0b\r"])
def test_empty(text: str) -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(text)
    assert info.value.reason == "empty"


@pytest.mark.parametrize("text", ["PID|1||X", "FHS|^~\\&|A\rMSH|^~\\&|A", "MSX|^~\\&", "msh|^~\\&"])
def test_no_msh(text: str) -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(text)
    assert info.value.reason == "no_msh"


@pytest.mark.parametrize(
    "msh",
    [
        "MSH",
        "MSH|",
        "MSH|^~",
        "MSH|^~\\&$%|A",  # 6 characters
        "MSH|^^\\&|A",  # duplicate
        "MSH|^~\\A|A",  # alphanumeric
        "MSH|^~\\ |A",  # whitespace
        "MSH|^~|&|A",  # MSH-2 cut short by the field separator
        "MSHA^~\\&A",  # alphanumeric field separator
        "MSH ^~\\& ",  # whitespace field separator
        "MSH|^~\\\x01|A",  # control character
        "MSH|~\\&|A",  # three standard chars but no component separator
    ],
)
def test_bad_encoding_characters(msh: str) -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(msh + "\rPID|1")
    assert info.value.reason == "bad_encoding_characters"
    assert info.value.segment_index == 1


@pytest.mark.parametrize(
    ("segment", "index"),
    [
        ("pid|1", 2),
        ("PIDX|1", 2),
        ("PV|1", 2),
        ("1AB|1", 2),
        ("||||", 2),
        ("PID 1", 2),
        ("P-D|", 2),
    ],
)
def test_bad_segment_id(segment: str, index: int) -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(MSH + "\r" + segment + "|SECRET-NAME")
    assert info.value.reason == "bad_segment_id"
    assert info.value.segment_index == index
    assert "SECRET" not in str(info.value)


def test_bad_segment_id_index_counts_segments_not_lines() -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(MSH + "\r\r" + PID + "\n\nbad|x")
    assert info.value.segment_index == 3


def test_second_msh_is_rejected() -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(ORU + MSH)
    assert info.value.reason == "multiple_msh"


@pytest.mark.parametrize("seg", ["BTS|1", "FTS|1", "BHS|^~\\&", "FHS|^~\\&"])
def test_batch_envelope_inside_message_is_rejected(seg: str) -> None:
    with pytest.raises(HL7ParseError) as info:
        parse(ORU + seg)
    assert info.value.reason == "batch_envelope"


def test_error_messages_never_quote_content() -> None:
    for text in ["PID|SECRET", "MSH|^^\\&|SECRET", MSH + "\rxx|SECRET", MSH + "\r" + MSH]:
        with pytest.raises(HL7ParseError) as info:
            parse(text)
        assert "SECRET" not in str(info.value) and "LAB" not in str(info.value)


# --- charsets ---------------------------------------------------------------------------


def _msh18(value: str, body: str = "") -> bytes:
    return f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||{value}\rPID|1||{body}".encode()


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("", "ascii"),
        ("ASCII", "ascii"),
        ("UNICODE UTF-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ("8859/1", "latin-1"),
        ("8859/2", "iso8859-2"),
        ("8859/9", "iso8859-9"),
        ("8859/15", "iso8859-15"),
        ("unicode utf-8", "utf-8"),
        ("8859/1~UNICODE UTF-8", "latin-1"),  # first repetition is the message charset
    ],
)
def test_detect_charset(label: str, codec: str) -> None:
    assert detect_charset(_msh18(label)) == codec


@pytest.mark.parametrize("label", ["UNICODE UTF-16", "EBCDIC", "ISO IR87", "Ü"])
def test_unsupported_charset(label: str) -> None:
    with pytest.raises(HL7EncodingError) as info:
        detect_charset(_msh18(label))
    assert info.value.reason == "unsupported_charset"
    with pytest.raises(HL7EncodingError):
        decode_message(_msh18(label))


def test_detect_charset_without_msh18_or_msh() -> None:
    assert detect_charset(b"MSH|^~\\&|A") == "ascii"
    assert detect_charset(b"PID|1") == "ascii"
    assert detect_charset(b"\xef\xbb\xbf\x0bMSH|^~\\&|A|B|C|D|E||F|G|H|I||||||UTF-8") == "utf-8"


def test_decode_message() -> None:
    assert decode_message(b"\xef\xbb\xbf" + _msh18("")) == (_msh18("").decode(), "ascii")
    text, codec = decode_message(_msh18("", "M\u00fcller"))
    assert (codec, "Müller" in text) == ("utf-8", True)
    text, codec = decode_message(_msh18("").replace(b"PID|1||", b"PID|1||M\xfcller"))
    assert (codec, "Müller" in text) == ("latin-1", True)
    text, codec = decode_message(_msh18("8859/1").replace(b"PID|1||", b"PID|1||M\xfcller"))
    assert (codec, "Müller" in text) == ("latin-1", True)
    assert decode_message(_msh18("UNICODE UTF-8", "Straße"))[0].endswith("Straße")


@pytest.mark.parametrize(
    "raw",
    [_msh18("ASCII", "Müller"), _msh18("UNICODE UTF-8").replace(b"PID|1||", b"PID|1||\xfc")],
)
def test_bad_charset_bytes(raw: bytes) -> None:
    with pytest.raises(HL7EncodingError) as info:
        decode_message(raw)
    assert info.value.reason == "bad_charset_bytes"
    assert "ller" not in str(info.value)


def test_parse_bytes_hex_escape_uses_declared_charset() -> None:
    msg = parse_bytes(_msh18("8859/1", "caf\\XE9\\"))
    assert msg.codec == "latin-1" and msg.charset == "8859/1"
    assert msg.get("PID-3") == "café"


# --- batches ----------------------------------------------------------------------------

BATCH = (
    b"FHS|^~\\&|A\rBHS|^~\\&|A\r"
    + b"MSH|^~\\&|A||||||ADT^A04|1|P|2.5\rPID|1||X\r"
    + b"MSH|^~&|A||||||ADT^A04|2|P|2.5\r\r"
    + b"BTS|2\rBHS|^~\\&\rMSH|^~\\&|A||||||ADT^A04|3|P|2.5\nPID|1\nBTS|1\nFTS|2\n"
)


def test_split_batch_byte_exact() -> None:
    parts = split_batch(BATCH)
    assert [parse_bytes(p).control_id for p in parts] == ["1", "2", "3"]
    assert parts[0] == b"MSH|^~\\&|A||||||ADT^A04|1|P|2.5\rPID|1||X\r"
    assert parts[1] == b"MSH|^~&|A||||||ADT^A04|2|P|2.5\r\r"
    assert parts[2] == b"MSH|^~\\&|A||||||ADT^A04|3|P|2.5\nPID|1\n"
    offset = 0
    for part in parts:
        offset = BATCH.index(part, offset) + len(part)


def test_split_batch_non_batch_and_empty() -> None:
    raw = ORU.encode()
    assert split_batch(raw) == [raw]
    assert split_batch(b"") == [b""]
    assert split_batch(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\n") == []
    two = ORU.encode() + b"\n" + ORU.encode()
    assert [p.startswith(b"MSH") for p in split_batch(two)] == [True, True]


def test_split_batch_segment_outside_message() -> None:
    with pytest.raises(HL7ParseError) as info:
        split_batch(b"BHS|^~\\&\rEVN|A04\rPID|1||SECRET\rBTS|1")
    assert info.value.reason == "no_msh" and "SECRET" not in str(info.value)


# --- corpus quirks (see shared/corpus/SOURCES.md) ----------------------------------


@needs_corpus
@pytest.mark.parametrize(
    ("rel", "path", "value"),
    [
        ("orm/efferent-ORM_O01-GetValueTest.hl7", "PID-5.1", "Smith|^~\\&"),
        ("adt/efferent-ADT_A28-DecodedValue.hl7", "PID-5.1", "TEST|TEST"),
        ("other/efferent-ACK-DoubleEncoding.hl7", "MSA-3", "Double encoded value: \\T\\"),
        ("adt/efferent-ADT_A08-ZZ1-SkipInvalidEscapeSequenceTest.hl7", "ZZ1-9", "BSV 4\\5 re."),
        ("adt/rethink-edge-escaped-delimiters.hl7", "PID-5.2", "JOHN^JANE"),
        ("adt/rethink-edge-custom-delimiters.hl7", "PID-5.2", "JOHN"),
        ("adt/rethink-edge-non-ascii.hl7", "PID-5.1", "MÜLLER"),
        ("other/hl7apy-RSP_K22-v2.7-truncation-char.hl7", "MSH-2", "^~\\&#"),
        ("oru/ruby-realm-minimal-message.hl7", "PID-3.4.2", "2.16.840.1.113883.19.3.2.1"),
        ("adt/ruby-adt_a01.hl7", "MSH-9", "ADT"),
        ("dft/efferent-DFT_P03-InvalidRepetitionTest.hl7", "PV1-9[2]", ""),
    ],
)
def test_corpus_quirks(rel: str, path: str, value: str) -> None:
    assert parse_bytes(corpus(rel)).get(path) == value


@needs_corpus
def test_corpus_escape_heavy_values() -> None:
    obx = parse_bytes(corpus("adt/rethink-edge-escaped-delimiters.hl7")).get("OBX-5")
    assert "pipe | and ampersand & and caret ^ and tilde ~ and backslash \\ chars" in obx
    ntes = parse_bytes(corpus("orm/efferent-Sample-ORM.hl7")).all("NTE")
    texts = [n.get(3) for n in ntes]
    assert "some text\nsome text after new line\nissue Efferent-Health#82" in texts
    assert "some text\r\nsome text after new line\r\nissue Efferent-Health#81" in texts


@needs_corpus
def test_corpus_batches() -> None:
    assert len(split_batch(corpus("batch/pyhl7-sample_file1.hl7"))) == 3
    assert split_batch(corpus("batch/ruby-empty-batch.hl7")) == []
    first, second = (parse_bytes(p) for p in split_batch(corpus("batch/ruby-realm-batch.hl7")))
    assert first.delimiters.escape == "\\" and second.delimiters.escape is None
    dft = split_batch(corpus("dft/nhc-mieweb-dft-example.hl7"))
    assert [parse_bytes(p).message_type for p in dft] == ["DFT^P03", "DFT^P03"]


# Every file under invalid/: what the parser does with it, and why that is right.
INVALID_OUTCOMES = {
    # Missing MSH: nothing identifies the message or its delimiters.
    "rethink-invalid-missing-msh.hl7": "no_msh",
    # 'PIDX' / 'PV' ids: the segment structure is unreliable, so reject (AR to the sender).
    "rethink-invalid-segment-header-length.hl7": "bad_segment_id",
    # Segments with no id ('||||'): rejected rather than silently dropped.
    "ruby-empty_segments.hl7": "bad_segment_id",
    # OBR hard-wrapped mid-field yields a '8866' segment: rejecting beats half an order.
    "nhc-catalyze-io-orm-example.hl7": "bad_segment_id",
    # A batch whose message lacks MSH: split_batch refuses rather than dropping segments.
    "pyhl7-sample_bad_batch.hl7": "no_msh",
    # Trailing empty fields are valid HL7; only a linter complains.
    "rethink-invalid-trailing-empty-fields.hl7": "parses",
    # MSH-12 = 1.0: syntax is fine; version policy belongs to the listener/canonicalizer.
    "rethink-invalid-wrong-version.hl7": "parses",
    # Segments joined by spaces (no terminators): syntactically one long MSH. It parses,
    # and downstream must notice the missing EVN/PID (see test below).
    "nhc-healthcare-it-systems-adt-example.hl7": "parses",
}


def _outcome(raw: bytes) -> str:
    try:
        for part in split_batch(raw):
            parse_bytes(part)
    except (HL7ParseError, HL7EncodingError) as exc:
        return exc.reason
    return "parses"


@needs_corpus
def test_invalid_corpus_is_fully_documented() -> None:
    assert sorted(p.name for p in (CORPUS / "invalid").iterdir()) == sorted(INVALID_OUTCOMES)


@needs_corpus
@pytest.mark.parametrize(("name", "expected"), sorted(INVALID_OUTCOMES.items()))
def test_invalid_corpus(name: str, expected: str) -> None:
    assert _outcome(corpus(f"invalid/{name}")) == expected


@needs_corpus
def test_invalid_corpus_details() -> None:
    joined = parse_bytes(corpus("invalid/nhc-healthcare-it-systems-adt-example.hl7"))
    assert [s.id for s in joined.segments] == ["MSH"] and joined.segment("PID") is None
    assert parse_bytes(corpus("invalid/rethink-invalid-wrong-version.hl7")).version == "1.0"
    trailing = parse_bytes(corpus("invalid/rethink-invalid-trailing-empty-fields.hl7"))
    assert trailing.get("PID-5.1") == "DOE"


@needs_corpus
def test_every_valid_corpus_file_parses_except_known() -> None:
    rejected = {}
    for path in sorted(CORPUS.rglob("*.hl7")):
        if path.parent.name != "invalid":
            outcome = _outcome(path.read_bytes())
            if outcome != "parses":
                rejected[path.name] = outcome
    assert rejected == {}


@needs_corpus
def test_doubled_escape_character_in_msh2_reads_as_one() -> None:
    # lfh-sample_*: MSH-2 is '^~\\&', a backslash left doubled by a string-literal copy.
    msg = parse_bytes(corpus("adt/lfh-sample_unix.hl7"))
    assert msg.delimiters.encoding_characters == "^~\\&"
    assert msg.delimiters.escape == "\\" and msg.delimiters.subcomponent == "&"
    assert msg.message_type == "ADT^A01" and msg.version == "2.6"


# --- parse_header: the listener's header-only read ---------------------------------------


def _read_outcome(fn: object, text: str) -> tuple[object, ...]:
    """What a parse function makes of text: the error (reason, segment index) or the
    header fields the listener reads and the segment count."""
    try:
        result = fn(text)  # type: ignore[operator]
    except HL7ParseError as exc:
        return ("error", exc.reason, exc.segment_index)
    msg, count = result if isinstance(result, tuple) else (result, len(result.segments))
    msh = msg.segments[0]
    fields = tuple(msh.field(n) for n in range(1, 19))
    return ("ok", count, fields, msg.delimiters, msg.codec, msg.message_type, msg.version)


HEADER_CASES = [
    ORU,
    ORU.replace("\r", "\n"),
    ORU.replace("\r", "\r\n"),
    "\ufeff" + ORU,
    "\r\n  \r" + ORU + "\r\x0b\r \t\r",
    MSH + "\r",
    MSH + "\r\rPID|1\r   \r",
    MSH + "\r  ZZ1|x\r",
    MSH + "\rpid|1\r",
    MSH + "\rPI|1\r",
    MSH + "\rPIDX|1\r",
    MSH + "\rPID\r",
    MSH + "\r" + MSH + "\r",
    MSH + "\rBHS|^~\\&\r",
    MSH + "\rPID|1\rFTS|1\r",
    "",
    "\r\n",
    "PID|1\r" + MSH,
    "MSH|^~|x",
    "MSH#^~\\&#A#B\rPID#1\rPID|1\r",
]


@pytest.mark.parametrize("text", HEADER_CASES)
def test_parse_header_agrees_with_parse(text: str) -> None:
    assert _read_outcome(parse_header, text) == _read_outcome(parse, text)
    msg, _ = parse_header(text) if _read_outcome(parse, text)[0] == "ok" else (None, 0)
    if msg is not None:
        assert [s.id for s in msg.segments] == ["MSH"]


@needs_corpus
def test_parse_header_agrees_with_parse_on_the_corpus() -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    assert files
    for path in files:
        try:
            text, _ = decode_message(path.read_bytes())
        except HL7EncodingError:
            continue
        assert _read_outcome(parse_header, text) == _read_outcome(parse, text), path.name
