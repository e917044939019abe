"""HL7 v2 escape sequences (v2.5 section 2.7): decoding leaf values and encoding them.

Decoding rules:
  * delimiter escapes ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and ``\\P\\``, the v2.7 truncation
    character) become the delimiter;
  * ``\\Xhh..\\`` hex bytes are decoded with the message charset, falling back to UTF-8 and
    then Latin-1 (which cannot fail) so one odd byte never loses the whole value;
  * formatted-text commands: ``.br``/``.sp``/``.ce`` become line breaks, ``.sk n`` spaces,
    ``.fi``/``.nf``/``.in``/``.ti`` (layout only) are dropped; highlighting ``\\H\\``/``\\N\\``
    is dropped;
  * anything else (``\\C..\\``/``\\M..\\`` charset switching, ``\\Z..\\`` local escapes,
    malformed or unterminated sequences) is kept literally. Real senders emit lone escape
    characters in free text (a corpus sample has ``4\\5``), and dropping text is worse than
    showing a backslash.
"""

from __future__ import annotations

from functools import lru_cache
from string import hexdigits

from fhirbus.hl7.delimiters import Delimiters

__all__ = ["escape", "unescape"]

_HEX = frozenset(hexdigits)
# Counted formatting commands (\.sp5\) would otherwise let one short escape allocate an
# arbitrarily large string.
_MAX_REPEAT = 100


@lru_cache(maxsize=128)
def _single_char_map(d: Delimiters) -> dict[str, str]:
    table = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
        "P": d.truncation,
        "H": "",
        "N": "",
    }
    return {k: v for k, v in table.items() if v is not None}


def _count(arg: str) -> int | None:
    arg = arg.strip()
    if not arg:
        return 1
    if arg[0] in "+-":
        arg = arg[1:]
    if not arg.isdigit() or not arg.isascii():
        return None
    return min(int(arg), _MAX_REPEAT)


def _formatting(seq: str) -> str | None:
    command, arg = seq[:3], seq[3:]
    if command in (".br", ".fi", ".nf", ".ce") and arg:
        return None
    if command == ".br" or command == ".ce":
        return "\n"
    if command == ".fi" or command == ".nf":
        return ""
    count = _count(arg)
    if count is None:
        return None
    if command == ".sp":
        return "\n" * max(count, 1)
    if command == ".sk":
        return " " * count
    if command == ".in" or command == ".ti":
        return ""
    return None


def _hex(digits: str, charset: str | None) -> str | None:
    if not digits or len(digits) % 2 or not _HEX.issuperset(digits):
        return None
    data = bytes.fromhex(digits)
    for codec in (charset or "utf-8", "utf-8"):
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _resolve(seq: str, d: Delimiters, charset: str | None) -> str | None:
    if len(seq) == 1:
        return _single_char_map(d).get(seq)
    if not seq:
        return None
    if seq[0] == "X":
        return _hex(seq[1:], charset)
    if seq[0] == ".":
        return _formatting(seq)
    return None


def unescape(value: str, d: Delimiters, charset: str | None = None) -> str:
    """Resolve the escape sequences of one leaf value (see the module docstring).

    ``charset`` is the Python codec of the message (MSH-18), used for ``\\X..\\`` bytes.
    """
    esc = d.escape
    if esc is None or esc not in value:
        return value
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(esc, pos)
        end = value.find(esc, start + 1) if start >= 0 else -1
        if end < 0:
            break
        replacement = _resolve(value[start + 1 : end], d, charset)
        if replacement is None:
            # Keep it literally, and let the closing character open the next sequence so
            # a stray escape character cannot swallow a following valid sequence.
            out.append(value[pos:end])
            pos = end
            continue
        out.append(value[pos:start])
        out.append(replacement)
        pos = end + 1
    out.append(value[pos:])
    return "".join(out)


def escape(value: str, d: Delimiters) -> str:
    """Encode a plain value so it can be placed in a leaf (inverse of ``unescape``).

    CR and LF become hex escapes because they would otherwise end the segment.
    """
    esc = d.escape
    specials = [d.field, d.component, d.subcomponent, d.repetition, d.truncation, "\r", "\n"]
    if esc is None:
        if any(c is not None and c in value for c in specials):
            raise ValueError("value holds a delimiter but the message has no escape character")
        return value
    out = value.replace(esc, f"{esc}E{esc}")
    codes = ("F", "S", "T", "R", "P", "X0D", "X0A")
    for char, code in zip(specials, codes, strict=True):
        if char is not None and char in out:
            out = out.replace(char, f"{esc}{code}{esc}")
    return out
