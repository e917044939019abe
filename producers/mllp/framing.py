"""MLLP framing: ``<VT> payload <FS><CR>``, as a sans-IO decoder plus a thin StreamReader adapter.

The decoder is lenient where senders differ in harmless ways and strict where leniency could
merge or split messages:

* CR/LF/space/tab between frames are skipped (senders pad with newlines).
* ``<FS>`` alone ends a frame; the ``<CR>`` after it is consumed as padding. Waiting for the CR
  would hang on senders that omit it, and an FS never occurs inside HL7 content.
* A ``<VT>`` inside a frame is content: real sample files end with a stray VT, and treating it
  as a restart would split a valid message into two broken ones.
* Bytes outside a frame are reported as a ``missing_start_block`` frame (so they can be
  NACKed and kept), never silently skipped.
* A frame longer than the limit is reported once, when its end arrives, with its first
  ``max_bytes`` bytes; the rest is not held, so memory stays bounded. Given a ``spill``
  factory, the decoder hands an oversize unit's bytes (head first, then the rest as it
  streams in) to a writer it makes for that unit (claimcheck.py), else it discards them.
  Units within the limit never touch it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
_START = b"\x0b"
_END = b"\x1c"
_PADDING = b"\r\n \t"

# Frame error reasons (also used as reject reasons downstream).
MISSING_START_BLOCK = "missing_start_block"
TRUNCATED = "truncated_frame"
TOO_LARGE = "too_large"

_IDLE, _FRAME, _GARBAGE, _DISCARD = range(4)


@dataclass(frozen=True, slots=True)
class Frame:
    """One unit to acknowledge: a payload, or bytes that failed framing (``error`` set).

    ``size`` is the full length on the wire; it exceeds ``len(payload)`` only when the
    payload was cut to the size limit.
    """

    payload: bytes
    error: str | None = None
    size: int = 0

    @property
    def truncated(self) -> bool:
        return self.size > len(self.payload)


class Spill(Protocol):
    """Where an oversize unit's bytes go: head first, then the rest in order."""

    def write(self, data: bytes | bytearray) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SpilledFrame(Frame):
    """An oversize unit whose bytes, head included, went to ``spill`` as they arrived."""

    spill: Spill | None = None


def encode_frame(payload: bytes) -> bytes:
    return _START + payload + b"\x1c\r"


class MllpDecoder:
    """Feed bytes in, take frames out. Holds at most ``max_bytes`` plus one read chunk."""

    def __init__(self, max_bytes: int, spill: Callable[[], Spill] | None = None) -> None:
        self.max_bytes = max_bytes
        self._new_spill = spill
        self._spill: Spill | None = None  # the current unit's, once it went over the limit
        self._buf = bytearray()
        self._state = _IDLE
        self._scan = 0  # where to resume looking for the end block in _buf
        self._dropped = 0  # bytes discarded from an oversize frame or garbage run

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame, and any complete frames not taken yet."""
        return len(self._buf)

    @property
    def pending(self) -> bool:
        """True when part of a frame (or garbage) has arrived without its end."""
        return self._state != _IDLE or bool(self._buf.lstrip(_PADDING))

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more bytes are needed."""
        while True:
            if self._state == _IDLE:
                if not self._enter_frame():
                    return None
                continue
            if self._state == _FRAME:
                return self._scan_frame()
            return self._scan_outside()

    def _enter_frame(self) -> bool:
        buf = self._buf
        i = 0
        while i < len(buf) and buf[i] in _PADDING:
            i += 1
        del buf[:i]
        if not buf:
            return False
        if buf[0] == START_BLOCK:
            del buf[:1]
            self._state = _FRAME
        else:
            self._state = _GARBAGE
        self._scan = 0
        self._dropped = 0
        return True

    def _scan_frame(self) -> Frame | None:
        buf = self._buf
        end = buf.find(_END, self._scan)
        if end < 0:
            if len(buf) > self.max_bytes:
                # Keep the head (it holds MSH, for the NACK), pass on the tail as it streams.
                self._overflow(buf)
                del buf[self.max_bytes :]
                self._state = _DISCARD
            self._scan = len(buf)
            return None
        payload = bytes(buf[:end])
        del buf[: end + 1]
        self._state = _IDLE
        if len(payload) > self.max_bytes:
            return self._unit(payload, TOO_LARGE)
        return Frame(payload, None, len(payload))

    def _scan_outside(self) -> Frame | None:
        """Garbage (no start block) runs to the next VT or FS; oversize frames to the next FS."""
        buf = self._buf
        ends = (_END,) if self._state == _DISCARD else (_END, _START)
        hits = [p for p in (buf.find(e, self._scan) for e in ends) if p >= 0]
        if not hits:
            self._trim_to_limit()
            return None
        end = min(hits)
        head = bytes(buf[:end])
        del buf[: end + (1 if buf[end] == END_BLOCK else 0)]
        return self._finish_outside(head)

    def _trim_to_limit(self) -> None:
        buf = self._buf
        if len(buf) > self.max_bytes:
            self._overflow(buf)
            del buf[self.max_bytes :]
        self._scan = len(buf)

    def _finish_outside(self, head: bytes) -> Frame:
        return self._unit(head, TOO_LARGE if self._state == _DISCARD else MISSING_START_BLOCK)

    def _overflow(self, data: bytes | bytearray) -> None:
        """``data`` starts with the unit's head; what is past the limit is counted and spilled.
        The first time for a unit, the spill gets the head too, so it holds the whole unit."""
        limit = self.max_bytes
        self._dropped += len(data) - limit
        if self._new_spill is None:
            return
        if self._spill is None:
            self._spill = self._new_spill()
            self._spill.write(data[:limit])
        self._spill.write(data[limit:])

    def _unit(self, head: bytes, reason: str) -> Frame:
        """A finished unit in error: its head cut to the limit, with its spill if it has one."""
        if len(head) > self.max_bytes:
            self._overflow(head)
            head = head[: self.max_bytes]
        size = len(head) + self._dropped
        spill, self._spill = self._spill, None
        self._state = _IDLE
        self._dropped = 0
        if spill is None:
            return Frame(head, reason, size)
        return SpilledFrame(head, reason, size, spill)

    def finish(self) -> Frame | None:
        """At end of stream (or idle timeout): whatever partial frame is left, else None."""
        if self._state == _IDLE:
            if not self._buf.lstrip(_PADDING):
                self._buf.clear()
                return None
            self._enter_frame()
        head = bytes(self._buf)
        reason = {_FRAME: TRUNCATED, _GARBAGE: MISSING_START_BLOCK}.get(self._state, TOO_LARGE)
        self._buf.clear()
        return self._unit(head, reason)

    def close(self) -> None:
        """The stream is gone without its last unit being taken: drop that unit's spill."""
        spill, self._spill = self._spill, None
        if spill is not None:
            spill.abort()


class FrameReader:
    """Frames from an asyncio StreamReader. Reads only when no complete frame is buffered,
    so a sender that pipelines is held back by TCP flow control (backpressure)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        max_bytes: int,
        chunk: int = 65536,
        spill: Callable[[], Spill] | None = None,
    ) -> None:
        self._reader = reader
        self._decoder = MllpDecoder(max_bytes, spill)
        self._chunk = chunk
        self._eof = False

    async def next_frame(self) -> Frame | None:
        """The next frame; None at a clean end of stream."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return frame
            if self._eof:
                return self._decoder.finish()
            data = await self._reader.read(self._chunk)
            if not data:
                self._eof = True
            else:
                self._decoder.feed(data)

    def abandon(self) -> Frame | None:
        """The partial frame left when the connection is given up (idle timeout)."""
        return self._decoder.finish()
