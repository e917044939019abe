"""MLLP framing, fed through a real asyncio StreamReader (no sockets) and the sans-IO decoder."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbus.producers.mllp.framing import (
    MISSING_START_BLOCK,
    TOO_LARGE,
    TRUNCATED,
    Frame,
    FrameReader,
    MllpDecoder,
    SpilledFrame,
    encode_frame,
)

MSG = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1\r"


def read_all(chunks: list[bytes], max_bytes: int = 1024) -> list[Frame]:
    async def run() -> list[Frame]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        frames, out = FrameReader(reader, max_bytes, chunk=7), []
        while (frame := await frames.next_frame()) is not None:
            out.append(frame)
        return out

    return asyncio.run(run())


def test_one_frame_is_the_exact_payload() -> None:
    assert read_all([encode_frame(MSG)]) == [Frame(MSG, None, len(MSG))]


def test_frames_split_byte_by_byte_and_back_to_back() -> None:
    wire = encode_frame(MSG) + encode_frame(b"MSH|2") + encode_frame(MSG)
    frames = read_all([bytes([b]) for b in wire])
    assert [f.payload for f in frames] == [MSG, b"MSH|2", MSG]
    assert all(f.error is None for f in frames)


def test_padding_between_frames_is_skipped() -> None:
    wire = b"\r\n " + encode_frame(MSG) + b"\n\r\n" + encode_frame(MSG) + b"\r\n"
    assert [f.payload for f in read_all([wire])] == [MSG, MSG]


def test_end_block_without_cr_still_ends_the_frame() -> None:
    # Waiting for a CR that never comes would hang a sender that omits it.
    decoder = MllpDecoder(1024)
    decoder.feed(b"\x0b" + MSG + b"\x1c")
    assert decoder.next_frame() == Frame(MSG, None, len(MSG))


def test_vertical_tab_inside_a_frame_is_content() -> None:
    payload = MSG + b"\x0b\r\r\n"  # corpus files end like this
    assert read_all([encode_frame(payload)])[0].payload == payload


def test_bytes_before_the_start_block_are_reported_not_skipped() -> None:
    frames = read_all([b"garbage" + encode_frame(MSG)])
    assert frames[0] == Frame(b"garbage", MISSING_START_BLOCK, 7)
    assert frames[1].payload == MSG


def test_frame_without_start_block_ends_at_the_end_block() -> None:
    frames = read_all([MSG + b"\x1c\r" + encode_frame(MSG)])
    assert frames[0].error == MISSING_START_BLOCK and frames[0].payload == MSG
    assert frames[1] == Frame(MSG, None, len(MSG))


def test_truncated_frame_at_end_of_stream() -> None:
    frames = read_all([b"\x0b" + MSG[:20]])
    assert frames == [Frame(MSG[:20], TRUNCATED, 20)]


def test_clean_end_of_stream_gives_no_frame() -> None:
    assert read_all([encode_frame(MSG), b"\r\n"]) == [Frame(MSG, None, len(MSG))]
    assert read_all([]) == []


def test_oversize_frame_keeps_the_head_and_resynchronises() -> None:
    big = b"MSH|" + b"x" * 5000
    wire = encode_frame(big) + encode_frame(MSG)
    for chunks in ([wire], [wire[i : i + 100] for i in range(0, len(wire), 100)]):
        frames = read_all(chunks, max_bytes=1024)
        assert frames[0].error == TOO_LARGE
        assert frames[0].payload == big[:1024] and frames[0].size == len(big)
        assert frames[0].truncated
        assert frames[1] == Frame(MSG, None, len(MSG))


def test_decoder_memory_is_bounded_while_discarding() -> None:
    decoder = MllpDecoder(1024)
    decoder.feed(b"\x0b")
    for _ in range(100):
        decoder.feed(b"y" * 1000)
        assert decoder.next_frame() is None
        assert len(decoder._buf) <= 1024  # the head only
    decoder.feed(b"\x1c\r")
    frame = decoder.next_frame()
    assert frame is not None and frame.error == TOO_LARGE and frame.size == 100_000


def test_abandon_returns_the_partial_frame() -> None:
    async def run() -> Frame | None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x0bMSH|partial")
        frames = FrameReader(reader, 1024)
        task = asyncio.ensure_future(frames.next_frame())
        await asyncio.sleep(0)
        task.cancel()
        return frames.abandon()

    assert asyncio.run(run()) == Frame(b"MSH|partial", TRUNCATED, 11)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(
        st.binary(max_size=300)
        .map(lambda b: b.replace(b"\x1c", b""))
        .filter(lambda b: b.strip(b"\r\n \t") == b or b == b""),
        max_size=5,
    ),
    cut=st.lists(st.integers(min_value=1, max_value=50), max_size=30),
)
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cut: list[int]) -> None:
    payloads = [p for p in payloads if p]
    wire = b"".join(encode_frame(p) for p in payloads)
    chunks, pos = [], 0
    for n in cut:
        chunks.append(wire[pos : pos + n])
        pos += n
    chunks.append(wire[pos:])
    frames = read_all(chunks, max_bytes=1024)
    assert [f.payload for f in frames] == payloads
    assert all(f.error is None for f in frames)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), max_bytes=st.sampled_from([16, 64, 1024]))
def test_random_bytes_never_raise_and_stay_within_limits(data: bytes, max_bytes: int) -> None:
    frames = read_all([data], max_bytes=max_bytes)
    for frame in frames:
        assert len(frame.payload) <= max_bytes
        assert frame.size >= len(frame.payload)
    # Every non-padding byte is accounted for in some frame (or was a framing byte).
    accounted = sum(f.size for f in frames)
    content = len(data) - sum(data.count(c) for c in b"\x0b\x1c")
    assert accounted <= len(data)
    assert accounted >= content - sum(data.count(c) for c in b"\r\n \t")


class MemorySpill:
    """A claim check in memory: what the decoder hands over, in order."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False

    def write(self, data: bytes | bytearray) -> None:
        self.data += data

    def abort(self) -> None:
        self.aborted = True


def spilled(chunks: list[bytes], max_bytes: int) -> tuple[list[Frame], list[MemorySpill]]:
    made: list[MemorySpill] = []

    def new() -> MemorySpill:
        made.append(MemorySpill())
        return made[-1]

    decoder, frames = MllpDecoder(max_bytes, new), []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    if (last := decoder.finish()) is not None:
        frames.append(last)
    return frames, made


def test_oversize_frame_spills_head_and_tail_and_normal_frames_do_not() -> None:
    big = b"MSH|" + b"x" * 5000
    wire = encode_frame(MSG) + encode_frame(big) + encode_frame(MSG)
    frames, made = spilled([wire[i : i + 100] for i in range(0, len(wire), 100)], 1024)
    assert [type(f) for f in frames] == [Frame, SpilledFrame, Frame]
    assert len(made) == 1 and frames[1].spill is made[0]
    assert bytes(made[0].data) == big and frames[1].payload == big[:1024]
    assert frames[1].size == len(big) and frames[1].error == TOO_LARGE


def test_garbage_run_over_the_limit_spills_and_a_cut_stream_aborts() -> None:
    junk = b"junk" * 1000
    frames, made = spilled([junk, b"\x1c"], 1024)
    assert frames[0].error == MISSING_START_BLOCK and bytes(made[0].data) == junk
    decoder = MllpDecoder(16, lambda: made[0])
    decoder.feed(b"\x0b" + b"y" * 100)
    assert decoder.next_frame() is None
    decoder.close()  # the connection broke: this unit is never reported
    assert made[0].aborted


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(min_size=1, max_size=400).map(lambda b: b.replace(b"\x1c", b"")),
    framed=st.booleans(),
    max_bytes=st.sampled_from([16, 64, 1024]),
    cut=st.lists(st.integers(min_value=1, max_value=90), max_size=30),
)
def test_any_chunking_spills_exactly_the_unit(
    content: bytes, framed: bool, max_bytes: int, cut: list[int]
) -> None:
    """Head + claim check == the unit's content: every byte, in order, for any chunking."""
    if not framed:  # garbage: starts after the padding, runs to the next VT or FS
        content = content.replace(b"\x0b", b"").lstrip(b"\r\n \t") or b"z"
    wire = (b"\x0b" if framed else b"") + content + b"\x1c\r" + encode_frame(MSG)
    chunks, pos = [], 0
    for n in cut:
        chunks.append(wire[pos : pos + n])
        pos += n
    chunks.append(wire[pos:])
    frames, made = spilled(chunks, max_bytes)
    unit, after = frames
    assert after.payload == MSG[:max_bytes] and after.size == len(MSG)
    assert unit.payload == content[:max_bytes] and unit.size == len(content)
    oversize = len(content) > max_bytes
    assert isinstance(unit, SpilledFrame) == oversize
    assert len(made) == oversize + (len(MSG) > max_bytes)
    if oversize:
        assert unit.spill is made[0] and bytes(made[0].data) == content
