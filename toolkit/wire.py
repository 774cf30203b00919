"""The lab payload header: what every labkit UDP datagram and TCP message starts with.

Format, version 1 (network byte order, 32 bytes)::

    offset  size  field     meaning
    0       4     magic     b"LBK1": marks a labkit payload
    4       1     version   1; a receiver rejects versions it does not know
    5       1     kind      0 data, 1 request, 2 response, 3 file data, 4 control
                            (a JSON body: hello, end, report; see endpoints/control.py)
    6       2     reserved  0; room for flags in later versions
    8       4     flow      flow id (uint32), chosen by the sender
    12      8     seq       sequence number (uint64), 0, 1, 2, ... per flow
    20      8     send_ns   send time (int64), ns since the Unix epoch, CLOCK_REALTIME,
                            so a sender and a receiver on one machine share the clock
    28      4     length    bytes of message body that follow the header (uint32)

A UDP datagram (RFC 768) is one header and its body. A TCP byte stream is a sequence of
frames, each a header followed by `length` body bytes: the length field is the message
framing, since TCP keeps no message boundaries (RFC 9293 section 3.8.4). The header fits in
the first 32 payload bytes, which the capture reader keeps of every UDP datagram
(toolkit.pcap.columns.UDP_HEAD), so loss, duplication, reordering and one-way delay can be
computed from a capture alone.

Theory of operation: `Header.pack`/`Header.unpack` handle one header; `decode_heads` decodes
many captured heads at once with numpy; `frame` builds one TCP message and `Deframer` turns
received bytes back into messages. Nothing here does I/O. A deframer never buffers more
than `limit` + HEADER_LEN bytes, whatever a length field claims, so a hostile or corrupt
peer cannot make a receiver allocate without bound.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:                 # numpy is imported where it is used (decode_heads)
    import numpy as np

__all__ = ["MAGIC", "VERSION", "HEADER_LEN", "FIELDS", "DEFAULT_LIMIT", "KIND_DATA",
           "KIND_REQUEST", "KIND_RESPONSE", "KIND_FILE", "KIND_CONTROL", "FramingError",
           "Header", "decode_heads", "frame", "encode_message", "Deframer"]

MAGIC = b"LBK1"
VERSION = 1
KIND_DATA, KIND_REQUEST, KIND_RESPONSE, KIND_FILE, KIND_CONTROL = 0, 1, 2, 3, 4
DEFAULT_LIMIT = 16 << 20          # largest message body a Deframer accepts by default

# The header as a table of fields (dpkt style): name, struct code, offset, size.
_CODES = [("magic", "4s"), ("version", "B"), ("kind", "B"), ("reserved", "H"),
          ("flow", "I"), ("seq", "Q"), ("send_ns", "q"), ("length", "I")]
STRUCT = struct.Struct("!" + "".join(code for _, code in _CODES))
HEADER_LEN = STRUCT.size
FIELDS: list[tuple[str, str, int, int]] = []
_off = 0
for _name, _code in _CODES:
    _size = struct.calcsize("!" + _code)
    FIELDS.append((_name, _code, _off, _size))
    _off += _size
OFFSET = {name: off for name, _, off, _ in FIELDS}
assert HEADER_LEN == _off == 32, "the header must fit the 32 captured head bytes"
# flow, seq and send_ns, adjacent in the header from IDS_AT: an endpoint that keeps one
# message buffer rewrites only these (the rest of its header is the same every time), in a
# request/response exchange twice a transaction
IDS = struct.Struct("!IQq")
IDS_AT = OFFSET["flow"]
assert IDS_AT + IDS.size == OFFSET["length"] and OFFSET["seq"] == IDS_AT + 4


class FramingError(ValueError):
    """Bytes that are not a lab header, or a byte stream that is not a sequence of frames."""


class Header(NamedTuple):
    """One header's fields. A tuple, not a frozen dataclass: a receiver makes one per message
    (tens of thousands a second on a fast link), and a frozen dataclass's __init__ costs
    several times a tuple's."""
    flow: int
    seq: int
    send_ns: int
    length: int = 0
    kind: int = KIND_DATA

    def pack(self) -> bytes:
        return STRUCT.pack(MAGIC, VERSION, self.kind, 0, self.flow, self.seq, self.send_ns,
                           self.length)

    def pack_into(self, buf, offset: int = 0) -> None:
        """Write the header into `buf` at `offset` (a sender reusing one message buffer)."""
        pack_header_into(buf, offset, self.flow, self.seq, self.send_ns, self.length, self.kind)

    @classmethod
    def unpack(cls, data, offset: int = 0) -> Header:
        """Parse the header at `offset` in `data` (which may carry the body after it)."""
        if len(data) - offset < HEADER_LEN:
            raise FramingError(f"truncated header: {max(len(data) - offset, 0)} of "
                               f"{HEADER_LEN} bytes")
        magic, version, kind, _, flow, seq, send_ns, length = STRUCT.unpack_from(data, offset)
        if magic != MAGIC:
            raise FramingError(f"bad magic {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            raise FramingError(f"unsupported header version {version} (this is {VERSION})")
        return _new_header(cls, (flow, seq, send_ns, length, kind))


_new_header = tuple.__new__        # a Header from its five fields, in order, unchecked


def pack_header_into(buf, offset: int, flow: int, seq: int, send_ns: int, length: int,
                     kind: int = KIND_DATA) -> None:
    """Header(...).pack_into(buf, offset) without making the Header: a bulk sender writes
    tens of thousands a second."""
    STRUCT.pack_into(buf, offset, MAGIC, VERSION, kind, 0, flow, seq, send_ns, length)


def _be(h: np.ndarray, name: str, dtype: str) -> np.ndarray:
    """One big-endian field of every row of `h`, as a native array."""
    import numpy as np
    off = OFFSET[name]
    size = np.dtype(dtype).itemsize
    return np.ascontiguousarray(h[:, off:off + size]).view(">" + dtype).reshape(-1).astype(
        dtype)


def decode_heads(heads: np.ndarray, lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Decode many captured payload heads at once.

    heads: (K, W) uint8, W >= 32 (the reader's udp_head); lengths: (K,) bytes of each head
    that are real (udp_head_len), all W when None. Returns arrays of K: `valid` (magic and
    version right and the whole header present), `flow`, `seq`, `send_ns`, `length`, `kind`
    (int64; a seq above 2**63 - 1 reads negative). Fields of invalid rows are meaningless.
    """
    # numpy only here: the endpoints import this module for framing, and a sender's
    # start-up should not pay for numpy
    import numpy as np
    heads = np.asarray(heads, np.uint8)
    k = len(heads)
    if heads.ndim != 2 or heads.shape[1] < HEADER_LEN or k == 0:
        z = np.zeros(k, np.int64)
        return {"valid": np.zeros(k, bool), "flow": z, "seq": z.copy(), "send_ns": z.copy(),
                "length": z.copy(), "kind": z.copy()}
    h = heads[:, :HEADER_LEN]
    complete = (np.full(k, True) if lengths is None
                else np.asarray(lengths).astype(np.int64) >= HEADER_LEN)
    magic = np.frombuffer(MAGIC, np.uint8)
    valid = complete & (h[:, :4] == magic).all(axis=1) & (h[:, OFFSET["version"]] == VERSION)
    return {"valid": valid,
            "flow": _be(h, "flow", "u4").astype(np.int64),
            "seq": _be(h, "seq", "u8").astype(np.int64),
            "send_ns": _be(h, "send_ns", "i8"),
            "length": _be(h, "length", "u4").astype(np.int64),
            "kind": h[:, OFFSET["kind"]].astype(np.int64)}


def frame(header: Header, body: bytes = b"") -> bytes:
    """One TCP message: the header (its length set to len(body)) followed by the body."""
    h = Header(header.flow, header.seq, header.send_ns, len(body), header.kind)
    return h.pack() + bytes(body)


def encode_message(flow: int, seq: int, send_ns: int, body: bytes = b"",
                   kind: int = KIND_DATA) -> bytes:
    """One TCP message from its fields: header + body."""
    return frame(Header(flow, seq, send_ns, 0, kind), body)


class Deframer:
    """Feed bytes from a TCP stream; get back whole (header, body) messages.

    Bytes are taken in only as far as the current frame needs them, so the buffer never
    holds more than `limit` + HEADER_LEN bytes, whatever a length field claims and however
    much is fed at once. A bad magic, an unknown version or a length above `limit` raises
    FramingError as soon as the header is complete; after that the deframer stays failed
    (a byte stream has no resynchronisation point). `close()` at the end of the stream
    raises if it ended inside a header or a body.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, keep_bodies: bool = True):
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        # a receiver that only counts (bulk) skips the bodies: no copy, b"" in their place
        self.keep_bodies = keep_bodies
        self._skipped = 0
        self._buf = bytearray()
        self._header: Header | None = None    # parsed header of the frame being filled
        self._error: FramingError | None = None
        self.offset = 0                       # stream offset of the current frame's start

    @property
    def buffered(self) -> int:
        """Bytes held (or, skipping bodies, counted) for the frame in progress."""
        return len(self._buf) + self._skipped

    def _fail(self, why: str) -> FramingError:
        self._error = FramingError(f"at stream byte {self.offset}: {why}")
        return self._error

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        if not self.keep_bodies:
            return [(h, b"") for h in self.heads(data)]
        h = self.one(data)
        if h is not None:
            return [(h, bytes(data[HEADER_LEN:]))]
        if self._error is not None:
            raise self._error
        out: list[tuple[Header, bytes]] = []
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while pos < end:
            if self._header is None:
                if not self._buf and end - pos >= HEADER_LEN:
                    # the usual case: a whole header in this read, parsed in place
                    self._start(view, pos)
                    pos += HEADER_LEN
                else:
                    pos = self._gather(view, pos)
                    if self._header is None:
                        break
            h = self._header
            if not self._buf and end - pos >= h.length:
                take, done = h.length, True        # a whole body in this read: one copy
                body = bytes(view[pos:pos + take])
            else:
                take = min(h.length - len(self._buf), end - pos)
                self._buf += view[pos:pos + take]
                done = len(self._buf) == h.length
                body = bytes(self._buf) if done else b""
            pos += take
            if done:
                out.append((h, body))
                self.offset += HEADER_LEN + h.length
                self._header = None
                self._buf.clear()
        return out

    def one(self, data: bytes, kind: int | None = None) -> Header | None:
        """`data` as exactly one whole frame (of `kind`, when given), as a request/response
        exchange's reads are: its header, the stream offset moved past it. None, with
        nothing taken, when it is anything else (feed and heads then take it, and say what
        is wrong with it)."""
        if self._header is not None or self._buf or self._error is not None or \
                len(data) < HEADER_LEN:
            return None
        magic, version, frame_kind, _, flow, seq, send_ns, length = STRUCT.unpack_from(data)
        if len(data) != HEADER_LEN + length or length > self.limit or magic != MAGIC or \
                version != VERSION or (kind is not None and frame_kind != kind):
            return None
        self.offset += HEADER_LEN + length
        return _new_header(Header, (flow, seq, send_ns, length, frame_kind))

    def heads(self, data: bytes) -> list[Header]:
        """For a deframer that skips bodies (keep_bodies=False): the headers of the frames
        that end in `data`, in order. A counting receiver (bulk, stream, rr) needs no more,
        and this hops from one header to the next without looking at the bytes between:
        per read, the few operations a read inside a body needs, and per frame one
        unpack."""
        if self._error is not None:
            raise self._error
        h = self._header
        end = len(data)
        if h is not None and self._skipped + end < h.length:
            # the usual bulk read: inside a body, and not its end
            self._skipped += end
            return []
        out: list[Header] = []
        pos = 0
        while True:
            if h is not None:
                left = h.length - self._skipped
                if end - pos < left:
                    self._skipped += end - pos
                    return out
                pos += left
                out.append(h)
                self.offset += HEADER_LEN + h.length
                h = self._header = None
                self._skipped = 0
            if pos == end:
                return out
            if not self._buf and end - pos >= HEADER_LEN:
                magic, version, kind, _, flow, seq, send_ns, length = \
                    STRUCT.unpack_from(data, pos)
                if magic == MAGIC and version == VERSION and length <= self.limit:
                    h = _new_header(Header, (flow, seq, send_ns, length, kind))
                else:
                    self._start(data, pos)             # raises, saying what is wrong
                pos += HEADER_LEN
            else:
                pos = self._gather(data, pos)
                if self._header is None:
                    return out
                h = self._header
            self._header = h

    def _start(self, data, pos: int) -> None:
        """The header at `pos` in `data` begins the next frame (FramingError if it is none)."""
        try:
            h = Header.unpack(data, pos)
        except FramingError as e:
            raise self._fail(str(e)) from None
        if h.length > self.limit:
            raise self._fail(f"message length {h.length} exceeds the limit of {self.limit}")
        self._header = h

    def _gather(self, data, pos: int) -> int:
        """Header bytes from `data` at `pos` into the buffer, as many as it lacks; once it
        holds a whole header, that header begins the next frame. Returns the new pos."""
        take = min(HEADER_LEN - len(self._buf), len(data) - pos)
        self._buf += memoryview(data).cast("B")[pos:pos + take]
        if len(self._buf) == HEADER_LEN:
            self._start(self._buf, 0)
            self._buf.clear()
        return pos + take

    def close(self) -> None:
        """The stream ended: anything left over is a truncated header or message."""
        if self._error is not None:
            raise self._error
        if self._header is not None:
            got = len(self._buf) if self.keep_bodies else self._skipped
            raise self._fail(f"stream ended inside a message body ({got} of "
                             f"{self._header.length} bytes)")
        if self._buf:
            raise self._fail(f"stream ended inside a message header, truncated header "
                             f"({len(self._buf)} of {HEADER_LEN} bytes)")
