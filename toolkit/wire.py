"""The lab payload header: what every labkit UDP datagram and TCP message starts with.

Layout (network byte order, 32 bytes, version 1):

    offset  size  field
    0       4     magic      b"LBK1"
    4       1     version    1
    5       1     kind       0 data, 1 request, 2 response, 3 file header
    6       2     reserved   0
    8       4     flow       flow id, chosen by the sender
    12      8     seq        sequence number, 0, 1, 2, ... per flow
    20      8     send_ns    CLOCK_REALTIME at send, ns since the Unix epoch
    28      4     length     bytes of message body that follow the header

A UDP datagram is one header and its body. A TCP stream is a sequence of frames, each a
header followed by `length` body bytes: the length field is the message framing (TCP has no
message boundaries, RFC 9293 section 3.8.4). The header fits in the first 32 payload bytes,
which is what the capture reader keeps of every UDP datagram, so loss, duplication,
reordering and one-way delay can be computed from a capture alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"LBK1"
VERSION = 1
KIND_DATA, KIND_REQUEST, KIND_RESPONSE, KIND_FILE = 0, 1, 2, 3
FIELDS = [("magic", "4s"), ("version", "B"), ("kind", "B"), ("reserved", "H"),
          ("flow", "I"), ("seq", "Q"), ("send_ns", "q"), ("length", "I")]
STRUCT = struct.Struct("!" + "".join(code for _, code in FIELDS))
HEADER_LEN = STRUCT.size
assert HEADER_LEN == 32


class FramingError(ValueError):
    """A byte stream that is not a sequence of lab frames."""


@dataclass(frozen=True)
class Header:
    flow: int
    seq: int
    send_ns: int
    length: int = 0
    kind: int = KIND_DATA

    def pack(self) -> bytes:
        return STRUCT.pack(MAGIC, VERSION, self.kind, 0, self.flow, self.seq, self.send_ns,
                           self.length)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) < HEADER_LEN:
            raise FramingError(f"truncated header: {len(data)} of {HEADER_LEN} bytes")
        magic, version, kind, _, flow, seq, send_ns, length = STRUCT.unpack_from(data)
        if magic != MAGIC:
            raise FramingError(f"bad magic {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            raise FramingError(f"unsupported header version {version}")
        return cls(flow, seq, send_ns, length, kind)


def decode_heads(heads: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised decode of (K, >=32) payload heads: valid mask, flow, seq, send_ns."""
    k = len(heads)
    if k == 0 or heads.shape[1] < HEADER_LEN:
        z = np.zeros(k, np.int64)
        return {"valid": np.zeros(k, bool), "flow": z, "seq": z, "send_ns": z}
    h = np.ascontiguousarray(heads[:, :HEADER_LEN])
    magic = np.frombuffer(MAGIC, np.uint8)
    valid = (lengths >= HEADER_LEN) & (h[:, :4] == magic).all(axis=1) & (h[:, 4] == VERSION)

    def be(lo, n):
        v = np.zeros(k, np.uint64)
        for j in range(lo, lo + n):
            v = (v << np.uint64(8)) | h[:, j].astype(np.uint64)
        return v

    return {"valid": valid, "flow": be(8, 4).astype(np.int64), "seq": be(12, 8).astype(np.int64),
            "send_ns": be(20, 8).astype(np.int64)}


def frame(header: Header, body: bytes) -> bytes:
    """One TCP message: the header (with its length set) and the body."""
    h = Header(header.flow, header.seq, header.send_ns, len(body), header.kind)
    return h.pack() + body


class Deframer:
    """Feed bytes from a TCP stream; get back whole (header, body) messages.

    Never holds more than `limit` + HEADER_LEN bytes, whatever a length field claims.
    """

    def __init__(self, limit: int = 16 << 20):
        self.limit = limit
        self.buf = bytearray()
        self.offset = 0          # stream offset of buf[0], for error messages

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER_LEN:
            try:
                h = Header.unpack(bytes(self.buf[:HEADER_LEN]))
            except FramingError as e:
                raise FramingError(f"at stream byte {self.offset}: {e}") from None
            if h.length > self.limit:
                raise FramingError(f"at stream byte {self.offset}: message length {h.length} "
                                   f"exceeds the limit of {self.limit}")
            total = HEADER_LEN + h.length
            if len(self.buf) < total:
                break
            out.append((h, bytes(self.buf[HEADER_LEN:total])))
            del self.buf[:total]
            self.offset += total
        return out

    def close(self) -> None:
        """The stream ended: anything left over is a truncated message."""
        if self.buf:
            raise FramingError(f"at stream byte {self.offset}: stream ended inside a message "
                               f"({len(self.buf)} bytes)")
