"""Build frames and capture files from byte literals, for table-driven reader tests."""

from __future__ import annotations

import struct


def tcp(sport=1234, dport=80, seq=1000, ack=0, flags=0x02, win=65535, options=b"",
        payload=b"") -> bytes:
    options += b"\x00" * (-len(options) % 4)
    off = (20 + len(options)) // 4
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (off << 12) | flags, win, 0,
                       0) + options + payload


def udp(sport=5000, dport=53, payload=b"", length=None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length,
                       0) + payload


def ipv4(l4: bytes, proto=6, src="10.0.0.1", dst="10.0.0.2", options=b"", ident=1,
         frag=0, total=None) -> bytes:
    ihl = (20 + len(options)) // 4
    tot = 4 * ihl + len(l4) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, frag, 64, proto, 0,
                       bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) \
        + options + l4


def ipv6(l4: bytes, nxt=6, src=b"\x20\x01" + b"\0" * 13 + b"\x01",
         dst=b"\x20\x01" + b"\0" * 13 + b"\x02", ext=b"") -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(ext) + len(l4), nxt, 64) + src + dst + ext + l4


def ether(l3: bytes, etype=0x0800, tags=()) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    return head + struct.pack("!H", etype) + l3


def pcap(frames, linktype=1, order="<", nanos=False, snaplen=262144) -> bytes:
    """frames: list of bytes or (bytes, ts_ns, wirelen)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
    for i, f in enumerate(frames):
        data, ts, wire = f if isinstance(f, tuple) else (f, 1_700_000_000_000_000_000 + i *
                                                         1_000_000, len(f))
        sec, frac = divmod(ts, 1_000_000_000)
        out += struct.pack(order + "IIII", sec, frac if nanos else frac // 1000, len(data),
                           wire) + data
    return out


def _opt(code: int, value: bytes, order: str) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _options(opts, order):
    if not opts:
        return b""
    return b"".join(_opt(c, v, order) for c, v in opts) + struct.pack(order + "HH", 0, 0)


def _block(btype: int, body: bytes, order: str) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order="<", comments=()) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return _block(0x0A0D0D0A, body + _options([(1, c.encode()) for c in comments], order),
                  order)


def idb(linktype=1, order="<", snaplen=0, tsresol=None, tsoffset=None, name=None,
        comments=()) -> bytes:
    opts = []
    if name:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(order + "q", tsoffset)))
    opts += [(1, c.encode()) for c in comments]
    return _block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + _options(opts, order),
                  order)


def epb(data: bytes, ticks: int, iface=0, order="<", wirelen=None, comments=()) -> bytes:
    body = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if wirelen is None else wirelen)
    body += data + b"\0" * (-len(data) % 4)
    return _block(6, body + _options([(1, c.encode()) for c in comments], order), order)


def spb(data: bytes, order="<") -> bytes:
    return _block(3, struct.pack(order + "I", len(data)) + data, order)


def obsolete_pb(data: bytes, ticks: int, iface=0, order="<") -> bytes:
    body = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data)) + data
    return _block(2, body, order)


def unknown_block(order="<") -> bytes:
    return _block(0x0BAD, b"hello, world", order)


class Conversation:
    """A TCP conversation between two IPv4 endpoints, built a segment at a time: `a` and
    `b` are (address, port); each segment comes `step_ns` after the one before (or
    `after_ns`). frames() gives pcap()'s (bytes, ts_ns, wirelen) tuples."""

    SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10

    def __init__(self, a=("10.0.0.1", 40000), b=("10.0.0.2", 80),
                 t0_ns=1_700_000_000_000_000_000, step_ns=1_000_000):
        self.ends = {"a": a, "b": b}
        self.t = t0_ns
        self.step = step_ns
        self._frames: list[tuple[bytes, int, int]] = []

    def send(self, side: str, seq: int, ack: int = 0, flags: int = 0x10, win: int = 65535,
             options: bytes = b"", payload: bytes = b"", after_ns: int | None = None) -> int:
        """Append a segment from `side` ("a" or "b"); returns its frame number."""
        (src, sport), (dst, dport) = self.ends[side], self.ends["b" if side == "a" else "a"]
        frame = ether(ipv4(tcp(sport, dport, seq, ack, flags, win, options, payload),
                           src=src, dst=dst))
        if self._frames:
            self.t += self.step if after_ns is None else after_ns
        self._frames.append((frame, self.t, len(frame)))
        return len(self._frames)

    def frames(self) -> list[tuple[bytes, int, int]]:
        return list(self._frames)

    def write(self, path) -> None:
        """The conversation as a pcap file (nanosecond timestamps)."""
        with open(path, "wb") as f:
            f.write(pcap(self._frames, nanos=True))
