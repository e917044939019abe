"""Encoding characters of an HL7 v2 message (MSH-1 and MSH-2) and the parse error type."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["DEFAULT_DELIMITERS", "Delimiters", "HL7ParseError", "delimiters_from_msh"]

# The standard encoding characters in MSH-2 order (component, repetition, escape,
# subcomponent). Used to assign roles when a sender drops one of them (see below).
_STANDARD_ROLES = {"^": "component", "~": "repetition", "\\": "escape", "&": "subcomponent"}


class HL7ParseError(ValueError):
    """The text is not a parseable HL7 v2 message. ``reason`` is a short machine code.

    Messages name positions (segment index, field number), never content: HL7 carries PHI.
    """

    def __init__(self, reason: str, message: str, segment_index: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.segment_index = segment_index


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators in force for one message.

    ``escape`` is None when MSH-2 has no escape character (then nothing is unescaped), and
    ``repetition`` is None when MSH-2 has no repetition separator (then a field is a single
    repetition). Both only happen with the non-standard three-character MSH-2 some senders
    emit; ``truncation`` is the optional fifth character introduced in v2.7.
    """

    field: str
    component: str
    repetition: str | None
    escape: str | None
    subcomponent: str
    truncation: str | None = None

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as the sender wrote it (roles in standard order, absent ones skipped)."""
        chars = (self.component, self.repetition, self.escape, self.subcomponent, self.truncation)
        return "".join(c for c in chars if c is not None)


DEFAULT_DELIMITERS = Delimiters("|", "^", "~", "\\", "&", None)


def _bad(message: str) -> HL7ParseError:
    return HL7ParseError("bad_encoding_characters", message, segment_index=1)


def _usable(char: str) -> bool:
    # Letters, digits and whitespace occur in data; a delimiter made of them would split
    # ordinary values. Control characters would collide with segment terminators/framing.
    return not char.isalnum() and not char.isspace() and char.isprintable()


@lru_cache(maxsize=128)
def _build(field: str, encoding: str) -> Delimiters:
    if not _usable(field):
        raise _bad("MSH-1 is not a usable field separator")
    if len(encoding) not in (3, 4, 5):
        raise _bad("MSH-2 must hold 4 encoding characters (5 with truncation)")
    if len(encoding) == 5 and encoding[2] == encoding[3]:
        # A doubled escape character (``^~\\&``) is how MSH-2 arrives from senders that
        # copied it out of a string literal (LinuxForHealth's samples); the data itself uses
        # the single character, so reading ``^~\&`` loses nothing.
        encoding = encoding[:3] + encoding[4]
    if len(set(encoding)) != len(encoding) or field in encoding:
        raise _bad("MSH-1/MSH-2 encoding characters are not distinct")
    if not all(_usable(c) for c in encoding):
        raise _bad("MSH-2 holds a character that cannot be a delimiter")
    if len(encoding) == 3:
        return _three_chars(field, encoding)
    truncation = encoding[4] if len(encoding) == 5 else None
    return Delimiters(field, encoding[0], encoding[1], encoding[2], encoding[3], truncation)


def _three_chars(field: str, encoding: str) -> Delimiters:
    """A sender dropped one of the four MSH-2 characters (real samples: ``^~&``, ``^\\&``).

    Positional reading would make ``&`` the escape character of ``^~&`` even though the
    data uses it as the subcomponent separator, so when all three are standard characters
    each keeps its standard role and the dropped one is absent. Otherwise the escape
    character is taken to be the missing one.
    """
    if set(encoding) <= _STANDARD_ROLES.keys():
        roles = {_STANDARD_ROLES[c]: c for c in encoding}
        if "component" in roles and "subcomponent" in roles:
            return Delimiters(
                field,
                roles["component"],
                roles.get("repetition"),
                roles.get("escape"),
                roles["subcomponent"],
            )
        raise _bad("MSH-2 lacks a component or subcomponent separator")
    return Delimiters(field, encoding[0], encoding[1], None, encoding[2])


def delimiters_from_msh(line: str) -> Delimiters:
    """Read and validate MSH-1/MSH-2 from the MSH segment text."""
    if len(line) < 5:
        raise _bad("MSH segment too short for its encoding characters")
    field = line[3]
    end = line.find(field, 4)
    return _build(field, line[4:] if end < 0 else line[4:end])
