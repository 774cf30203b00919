"""The capture file a backend leaves behind: make sure it is readable, and count it.

A backend stopped by SIGINT closes its file properly. One that had to be killed can leave
a torn last block (stdio flushes in 4 KiB pieces), or no file at all if it died before
writing a header. `repair` cuts a torn tail at the last whole block or record, and writes
an empty file (header only) when there was none, so every stop leaves a file that
Wireshark and our reader open. `summarize` walks the blocks to count packets and bytes
without decoding anything (the analyzer is the place for that).

Formats: pcap (24-byte file header, 16-byte record headers) and pcapng (blocks with their
total length at both ends; RFC draft-ietf-opsawg-pcapng).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_EPB, PCAPNG_SPB, PCAPNG_OPB = 6, 3, 2
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",      # microseconds
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}      # nanoseconds
LINKTYPE_ETHERNET = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSummary:
    file_format: str          # "pcapng" | "pcap" | "unknown"
    packets: int
    wire_bytes: int           # sum of original lengths, as on the wire
    file_bytes: int
    good_bytes: int           # where the last whole block ends


def empty_pcapng() -> bytes:
    """A section header block alone: a valid pcapng file with no interfaces and no packets."""
    body = struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1)
    n = 12 + len(body)
    return struct.pack("<II", PCAPNG_SHB, n) + body + struct.pack("<I", n)


def empty_pcap(snaplen: int = 262144, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


class _Reader:
    """Sequential reads through a big buffer: block walks without a syscall per block."""

    def __init__(self, f):
        self.f, self.buf, self.base = f, b"", 0

    def at(self, pos: int, n: int) -> bytes:
        if not (self.base <= pos and pos + n <= self.base + len(self.buf)):
            self.f.seek(pos)
            self.buf, self.base = self.f.read(max(n, _CHUNK)), pos
        return self.buf[pos - self.base: pos - self.base + n]


def summarize(path: str | Path) -> FileSummary:
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if size >= 12:
        with open(path, "rb") as f:
            head = f.read(12)
            if struct.unpack("<I", head[:4])[0] == PCAPNG_SHB:
                return _walk_pcapng(_Reader(f), size)
            if head[:4] in PCAP_MAGICS:
                return _walk_pcap(_Reader(f), size, PCAP_MAGICS[head[:4]])
    return FileSummary("unknown", 0, 0, size, 0)


def _walk_pcapng(r: _Reader, size: int) -> FileSummary:
    pos = packets = wire = 0
    end = "<"
    while pos + 12 <= size:
        hdr = r.at(pos, 12)
        btype = struct.unpack(end + "I", hdr[:4])[0]
        if btype == PCAPNG_SHB or struct.unpack("<I", hdr[:4])[0] == PCAPNG_SHB:
            # each section declares its own byte order
            end = "<" if struct.unpack("<I", hdr[8:12])[0] == PCAPNG_BOM else ">"
            btype = PCAPNG_SHB
        blen = struct.unpack(end + "I", hdr[4:8])[0]
        if blen < 12 or blen % 4 or pos + blen > size:
            break
        if struct.unpack(end + "I", r.at(pos + blen - 4, 4))[0] != blen:
            break
        if btype == PCAPNG_EPB and blen >= 32:
            packets += 1
            wire += struct.unpack(end + "I", r.at(pos + 24, 4))[0]
        elif btype == PCAPNG_SPB and blen >= 16:
            packets += 1
            wire += struct.unpack(end + "I", r.at(pos + 8, 4))[0]
        elif btype == PCAPNG_OPB and blen >= 32:
            packets += 1
            wire += struct.unpack(end + "I", r.at(pos + 24, 4))[0]
        pos += blen
    return FileSummary("pcapng", packets, wire, size, pos)


def _walk_pcap(r: _Reader, size: int, end: str) -> FileSummary:
    if size < 24:
        return FileSummary("pcap", 0, 0, size, 0)
    snaplen = struct.unpack(end + "I", r.at(16, 4))[0]
    limit = max(snaplen, 262144)
    pos, packets, wire = 24, 0, 0
    while pos + 16 <= size:
        incl, orig = struct.unpack(end + "II", r.at(pos + 8, 8))
        if incl > limit or pos + 16 + incl > size:
            break
        packets += 1
        wire += orig
        pos += 16 + incl
    return FileSummary("pcap", packets, wire, size, pos)


def repair(path: str | Path, file_format: str, snaplen: int = 262144) -> str | None:
    """Leave a readable capture at `path`; returns what was done, or None if nothing was."""
    path = Path(path)
    s = summarize(path)
    if s.file_format == "unknown" or s.good_bytes == 0:
        path.write_bytes(empty_pcapng() if file_format == "pcapng" else empty_pcap(snaplen))
        return (f"no capture header in {path.name} ({s.file_bytes} bytes): "
                f"wrote an empty {file_format} file")
    if s.good_bytes < s.file_bytes:
        with open(path, "r+b") as f:
            f.truncate(s.good_bytes)
        return (f"cut a torn tail of {s.file_bytes - s.good_bytes} bytes from {path.name} "
                f"({s.packets} whole packets kept)")
    return None


def section_comments(path: str | Path) -> list[str]:
    """The comments (opt_comment) of a pcapng file's first section header; [] for pcap."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or struct.unpack("<I", head[:4])[0] != PCAPNG_SHB:
            return []
        end = "<" if struct.unpack("<I", head[8:12])[0] == PCAPNG_BOM else ">"
        shb = head + f.read(struct.unpack(end + "I", head[4:8])[0] - 12)
    # type, length, byte-order magic, version, section length: 24 bytes; then options
    return [v.decode("utf-8", "replace") for code, v in _options(shb[24:-4], end)
            if code == 1]


def _options(raw: bytes, end: str) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(raw):
        code, n = struct.unpack(end + "HH", raw[pos:pos + 4])
        if code == 0:
            break
        out.append((code, raw[pos + 4:pos + 4 + n]))
        pos += 4 + n + (-n % 4)
    return out


def annotate(path: str | Path, comment: str) -> bool:
    """Add `comment` to the first section header of a pcapng file, as its opt_comment,
    unless it is already there; True if the file was rewritten.

    The section header's other options and every later block are kept byte for byte;
    the section length field counts only what follows the header, so it stays right.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or struct.unpack("<I", head[:4])[0] != PCAPNG_SHB:
            raise ValueError(f"{path} is not a pcapng file: pcap has no place for a comment")
        end = "<" if struct.unpack("<I", head[8:12])[0] == PCAPNG_BOM else ">"
        shb = head + f.read(struct.unpack(end + "I", head[4:8])[0] - 12)
        opts = _options(shb[24:-4], end)
        if any(code == 1 and v == comment.encode() for code, v in opts):
            return False
        opts.insert(0, (1, comment.encode()))
        raw = b"".join(struct.pack(end + "HH", c, len(v)) + v + b"\0" * (-len(v) % 4)
                       for c, v in opts) + struct.pack(end + "HH", 0, 0)
        new_body = shb[8:24] + raw        # byte-order magic, version, section length
        n = 12 + len(new_body)
        tmp = path.with_name(path.name + ".lk-annotate")
        try:
            with open(tmp, "wb") as out:
                out.write(struct.pack(end + "II", PCAPNG_SHB, n) + new_body
                          + struct.pack(end + "I", n))
                while chunk := f.read(_CHUNK):
                    out.write(chunk)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return True


def _ns(units: int, if_tsresol: int) -> int:
    """A pcapng timestamp in ns: units of 10^-n s, or of 2^-n s when the high bit is set."""
    n = if_tsresol & 0x7F
    if if_tsresol & 0x80:
        return units * 1_000_000_000 >> n
    return units * 10 ** (9 - n) if n <= 9 else units // 10 ** (n - 9)


def iter_frames(path: str | Path):
    """Yield (timestamp_ns, frame_bytes, original_length) for each packet of a pcap or
    pcapng file, in file order; a quick look for checks and tests (dpkt-style: bytes
    out, decoding elsewhere). The analyzer's reader (toolkit.pcap) is the fast path."""
    data = Path(path).read_bytes()
    if len(data) >= 24 and data[:4] in PCAP_MAGICS:
        end = PCAP_MAGICS[data[:4]]
        scale = 1 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
        pos = 24
        while pos + 16 <= len(data):
            sec, frac, incl, orig = struct.unpack(end + "IIII", data[pos:pos + 16])
            if pos + 16 + incl > len(data):
                return
            yield sec * 1_000_000_000 + frac * scale, data[pos + 16:pos + 16 + incl], orig
            pos += 16 + incl
        return
    pos, end, tick = 0, "<", []         # tick: if_tsresol per interface
    while pos + 12 <= len(data):
        if struct.unpack("<I", data[pos:pos + 4])[0] == PCAPNG_SHB:
            end = "<" if struct.unpack("<I", data[pos + 8:pos + 12])[0] == PCAPNG_BOM else ">"
            tick = []
        btype, blen = struct.unpack(end + "II", data[pos:pos + 8])
        if blen < 12 or pos + blen > len(data):
            return
        body = data[pos + 8:pos + blen - 4]
        if btype == 1:                                           # interface description
            resol = next((v[0] for c, v in _options(body[8:], end) if c == 9 and v), 6)
            tick.append(resol)
        elif btype == PCAPNG_EPB:
            iface, hi, lo, incl, orig = struct.unpack(end + "IIIII", body[:20])
            ns = _ns((hi << 32) | lo, tick[iface] if iface < len(tick) else 6)
            yield ns, body[20:20 + incl], orig
        pos += blen
