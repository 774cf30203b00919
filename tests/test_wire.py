"""The lab payload header (toolkit.wire): layout, vector decode, TCP message framing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import wire
from toolkit.pcap.columns import UDP_HEAD

U32, U64 = (1 << 32) - 1, (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def test_layout_is_the_documented_table():
    assert wire.HEADER_LEN == 32 <= UDP_HEAD
    assert [(n, off, size) for n, _, off, size in wire.FIELDS] == [
        ("magic", 0, 4), ("version", 4, 1), ("kind", 5, 1), ("reserved", 6, 2),
        ("flow", 8, 4), ("seq", 12, 8), ("send_ns", 20, 8), ("length", 28, 4)]
    raw = wire.Header(0x01020304, 5, 6, 7, wire.KIND_RESPONSE).pack()
    # network byte order, field by field
    assert raw == (b"LBK1" + bytes([1, 2, 0, 0]) + bytes([1, 2, 3, 4])
                   + (5).to_bytes(8, "big") + (6).to_bytes(8, "big") + (7).to_bytes(4, "big"))


@pytest.mark.parametrize("h", [
    wire.Header(0, 0, 0),
    wire.Header(7, 1, 1_700_000_000_123_456_789, 1400),
    wire.Header(U32, U64, I64_MAX, U32, wire.KIND_FILE),
    wire.Header(1, 2, I64_MIN, 0, wire.KIND_REQUEST),
    wire.Header(1, 2, -1),
])
def test_round_trip(h):
    assert wire.Header.unpack(h.pack()) == h
    assert wire.Header.unpack(h.pack() + b"body follows") == h


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, U32), st.integers(0, I64_MAX),
                          st.integers(I64_MIN, I64_MAX), st.integers(0, U32),
                          st.integers(0, 3)), min_size=1, max_size=20))
def test_vector_decode_equals_scalar(fields):
    hs = [wire.Header(*f) for f in fields]
    heads = np.frombuffer(b"".join(h.pack() for h in hs), np.uint8).reshape(len(hs), 32)
    d = wire.decode_heads(heads, np.full(len(hs), 32))
    assert d["valid"].all()
    for i, h in enumerate(hs):
        s = wire.Header.unpack(heads[i].tobytes())
        assert s == h
        assert (d["flow"][i], d["seq"][i], d["send_ns"][i], d["length"][i], d["kind"][i]) == (
            s.flow, s.seq, s.send_ns, s.length, s.kind)


def test_vector_decode_validity():
    good = wire.Header(3, 9, 10).pack()
    rows = [good,                                   # valid
            b"LBK2" + good[4:],                     # bad magic
            good[:4] + b"\x02" + good[5:],          # unknown version
            good,                                   # but only 20 bytes were captured
            bytes(32)]                              # not ours at all
    heads = np.zeros((len(rows), UDP_HEAD + 8), np.uint8)   # wider than 32 is fine
    for i, r in enumerate(rows):
        heads[i, :32] = np.frombuffer(r, np.uint8)
    d = wire.decode_heads(heads, np.array([32, 32, 32, 20, 32]))
    assert d["valid"].tolist() == [True, False, False, False, False]
    assert d["seq"][0] == 9 and d["flow"][0] == 3 and d["send_ns"][0] == 10
    assert wire.decode_heads(heads[:1])["valid"].tolist() == [True]     # lengths optional
    assert len(wire.decode_heads(np.zeros((0, 32), np.uint8))["valid"]) == 0


def _messages(n=6):
    return [(wire.Header(1, i, 1000 + i, 0, wire.KIND_DATA), bytes([i]) * (i * 10))
            for i in range(n)]


def _stream(msgs):
    return b"".join(wire.frame(h, b) for h, b in msgs)


def _pieces(stream, cuts):
    edges = [0, *[c for c in cuts if 0 < c < len(stream)], len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:], strict=False)]


# (name, cut points in the byte stream of _messages())
SPLITS = [
    ("all at once", []),
    ("byte by byte", list(range(1, 400))),
    ("inside the first header", [5]),
    ("exactly after a header", [32]),
    ("one byte short of a header", [31, 63]),
    ("header split across three feeds", [10, 20, 33]),
    ("inside bodies", [40, 77, 150]),
    ("every 7 bytes", list(range(7, 400, 7))),
    ("every 33 bytes", list(range(33, 400, 33))),
]


@pytest.mark.parametrize("keep", [True, False], ids=["bodies", "skipped"])
@pytest.mark.parametrize("name,cuts", SPLITS, ids=[s[0] for s in SPLITS])
def test_deframer_split_and_glued(name, cuts, keep):
    """The same messages however the stream is cut, whether the bodies are kept or (a
    counting receiver's heads()) hopped over."""
    msgs = _messages()
    d, got, offsets = wire.Deframer(keep_bodies=keep), [], []
    for piece in _pieces(_stream(msgs), cuts):
        got += d.feed(piece)
        offsets.append(d.offset)
    d.close()
    assert [(h.seq, h.send_ns, h.length, b) for h, b in got] == [
        (h.seq, h.send_ns, len(b), b if keep else b"") for h, b in msgs]
    assert d.buffered == 0
    # heads() alone, on the same pieces: the same headers, and the same offsets as it goes
    d2, heads = wire.Deframer(keep_bodies=False), []
    for piece, offset in zip(_pieces(_stream(msgs), cuts), offsets):
        heads += d2.heads(piece)
        assert d2.offset == offset
    assert heads == [h for h, _ in got]


def test_a_read_of_one_whole_frame_gives_what_pieces_give():
    """A request/response read is one whole frame, parsed without the general loop: the
    same messages, bodies (or none, when skipped) and stream offsets as in pieces."""
    frames = [wire.frame(h, b) for h, b in _messages()]
    for keep in (True, False):
        whole, pieces = wire.Deframer(keep_bodies=keep), wire.Deframer(keep_bodies=keep)
        for f in frames:
            got = whole.feed(memoryview(bytearray(f)))
            want = []
            for i in range(0, len(f), 5):
                want += pieces.feed(f[i:i + 5])
            assert len(got) == 1 and got == want and whole.offset == pieces.offset
            assert type(got[0][0]) is wire.Header and type(got[0][1]) is bytes
            assert got[0][1] == (f[32:] if keep else b"")
        # a partial frame left over: the next read, though one whole frame, goes on from it
        big = max(frames, key=len)
        assert len(big) > 40 and whole.feed(big[:40]) == []
        (h, _), = whole.feed(big[40:])
        assert h == wire.Header.unpack(big) and whole.buffered == 0


def test_encode_message_and_empty_body():
    raw = wire.encode_message(4, 5, 6, b"", wire.KIND_REQUEST)
    assert len(raw) == 32
    (h, body), = wire.Deframer().feed(raw)
    assert (h.flow, h.seq, h.send_ns, h.length, h.kind, body) == (4, 5, 6, 0, 1, b"")


def test_feed_accepts_bytearray_and_memoryview():
    raw = _stream(_messages(3))
    assert len(wire.Deframer().feed(bytearray(raw))) == 3
    assert len(wire.Deframer().feed(memoryview(raw))) == 3


# (name, bytes fed, limit, words in the error); fed in one piece and byte by byte
BAD = [
    ("bad magic", b"XXXX" + bytes(28), 1 << 20, "bad magic"),
    ("bad magic after a good frame", wire.encode_message(1, 0, 0, b"ok") + b"HTTP/1.1 200 OK"
     + bytes(32), 1 << 20, "at stream byte 34: bad magic"),
    ("unknown version", b"LBK1\x09" + bytes(27), 1 << 20, "unsupported header version 9"),
    ("length beyond the limit", wire.Header(1, 0, 0, 1 << 30).pack(), 1 << 20,
     "length 1073741824 exceeds the limit of 1048576"),
    ("limit + 1", wire.Header(1, 0, 0, 101).pack(), 100, "exceeds the limit"),
    ("a whole frame over the limit", wire.encode_message(1, 0, 0, b"x" * 101), 100,
     "length 101 exceeds the limit of 100"),
    ("a whole frame of another version", b"LBK1\x02" + bytes(27), 1 << 20,
     "unsupported header version 2"),
    ("largest length field", wire.Header(1, 0, 0, U32).pack(), wire.DEFAULT_LIMIT,
     "exceeds the limit"),
]


@pytest.mark.parametrize("keep", [True, False], ids=["bodies", "skipped"])
@pytest.mark.parametrize("name,data,limit,words", BAD, ids=[b[0] for b in BAD])
def test_deframer_rejects(name, data, limit, words, keep):
    with pytest.raises(wire.FramingError, match=words):
        wire.Deframer(limit, keep_bodies=keep).feed(data)
    d = wire.Deframer(limit, keep_bodies=keep)
    with pytest.raises(wire.FramingError, match=words):
        for i in range(len(data)):
            d.feed(data[i:i + 1])
    with pytest.raises(wire.FramingError, match=words):   # it stays failed
        d.feed(b"")


def test_length_at_the_limit_is_accepted():
    (h, body), = wire.Deframer(limit=100).feed(wire.encode_message(1, 0, 0, b"x" * 100))
    assert len(body) == 100


@pytest.mark.parametrize("data,words", [
    (wire.encode_message(1, 0, 0, b"abc")[:5], r"inside a message header.*5 of 32"),
    (wire.encode_message(1, 0, 0, b"abc")[:31], r"truncated header \(31 of 32"),
    (wire.encode_message(1, 0, 0, b"abc")[:-1], r"inside a message body \(2 of 3"),
    (wire.encode_message(1, 0, 0, b"abc") + b"LB", r"at stream byte 35: .*header"),
])
@pytest.mark.parametrize("keep", [True, False], ids=["bodies", "skipped"])
def test_truncated_stream_at_close(data, words, keep):
    d = wire.Deframer(keep_bodies=keep)
    d.feed(data)
    with pytest.raises(wire.FramingError, match=words):
        d.close()


def test_unpack_rejects_short_and_foreign_bytes():
    with pytest.raises(wire.FramingError, match="truncated header: 10 of 32"):
        wire.Header.unpack(bytes(10))
    with pytest.raises(wire.FramingError, match="bad magic"):
        wire.Header.unpack(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")


def test_memory_bounded_whatever_the_length_says():
    limit = 1000
    d = wire.Deframer(limit)
    # frames at the limit glued in one feed, then 10 MB after a frame: only one frame is
    # buffered at a time, and what follows a frame must itself be a frame
    body = b"z" * limit
    glued = wire.encode_message(1, 0, 0, body) * 3 + wire.encode_message(1, 3, 0, b"q")[:20]
    assert len(d.feed(glued)) == 3
    assert d.buffered <= limit + wire.HEADER_LEN
    d2 = wire.Deframer(limit)
    peak = 0
    big = wire.Header(1, 0, 0, limit).pack() + b"y" * (limit - 1)
    for i in range(0, len(big), 97):
        d2.feed(big[i:i + 97])
        peak = max(peak, d2.buffered)
    assert peak <= limit + wire.HEADER_LEN
    d3 = wire.Deframer(limit)
    with pytest.raises(wire.FramingError):
        d3.feed(wire.encode_message(1, 0, 0, body) + b"\x00" * 10_000_000)
    assert d3.buffered <= limit + wire.HEADER_LEN


def test_struct_matches_fields():
    assert struct.calcsize("!" + "".join(code for _, code, _, _ in wire.FIELDS)) == 32
