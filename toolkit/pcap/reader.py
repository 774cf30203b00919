"""read_capture(path): a pcap or pcapng file (optionally gzip-compressed) into columns.

Theory of operation
-------------------
The file is read in chunks into one reusable buffer; a compiled kernel (decode.py) walks
the records of each chunk and writes every frame's headers into column arrays. A record
cut by the chunk's end is carried over to the next chunk. pcapng section and interface
blocks are rare: the kernel stops at them and this module reads them (byte order, link
type, timestamp resolution and offset, names, comments) before the kernel goes on.

Memory stays near the size of the columns whatever the file's size: the packets' bytes
are never all in memory at once.

Damage (a length that cannot be, a file that ends inside a record) stops the reading: every
frame before it is kept and `Capture.error` names the byte offset and what is wrong.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import decode as K
from . import formats as F
from .columns import PACKET_COLUMNS
from .errors import CaptureError
from .fragments import reassemble

CHUNK = 4 << 20
ROWS = 1 << 16                  # frames decoded between two flushes of the column matrix


@dataclass
class Interface:
    index: int
    linktype: int
    name: str = ""
    description: str = ""
    snaplen: int = 0
    tsresol: str = "1e-6"        # seconds per tick, as text (power of 10 or of 2)
    tsoffset_s: int = 0
    comments: list[str] = field(default_factory=list)

    @property
    def linktype_name(self) -> str:
        return F.LINKTYPE_NAMES.get(self.linktype, f"linktype {self.linktype}")


@dataclass
class Capture:
    path: str
    file_format: str                 # 'pcap' or 'pcapng'
    compressed: bool
    cols: dict[str, np.ndarray]
    interfaces: list[Interface]
    section_comments: list[str] = field(default_factory=list)
    packet_comments: dict[int, list[str]] = field(default_factory=dict)
    error: CaptureError | None = None

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])


class _Source:
    """A byte stream with a reusable buffer: what the kernels scan."""

    def __init__(self, path: str, stream, raw, size: int, progress):
        self.path = path
        self.stream = stream
        self.raw = raw
        self.size = size
        self.progress = progress
        self.buf = bytearray(CHUNK)
        self.filled = 0
        self.base = 0            # stream offset of buf[0]
        self.eof = False

    def fill(self, need: int = 0) -> None:
        """Read until the buffer holds `need` bytes (or is full), or the stream ends."""
        if need > len(self.buf):
            self.buf.extend(bytes(need - len(self.buf)))
        while not self.eof and self.filled < max(need, 1) or (
                not self.eof and need == 0 and self.filled < len(self.buf)):
            view = memoryview(self.buf)[self.filled:]
            try:
                n = self.stream.readinto(view)
            except (EOFError, OSError, zlib.error) as e:
                # a gzip stream cut short or corrupt: what was decompressed stays usable
                self.eof = True
                self.gzip_error = str(e) or type(e).__name__
                break
            finally:
                view.release()
            if not n:
                self.eof = True
                break
            self.filled += n
            if need == 0:
                break
        if self.progress is not None:
            try:
                self.progress(self.raw.tell(), self.size)
            except (OSError, ValueError):
                pass

    def consume(self, pos: int) -> None:
        """Drop buf[:pos]; keep the partial record that follows."""
        rest = self.filled - pos
        if pos:
            self.buf[:rest] = self.buf[pos:self.filled]
        self.filled = rest
        self.base += pos

    def array(self) -> np.ndarray:
        return np.frombuffer(self.buf, np.uint8)


class _Columns:
    """Output arrays for a chunk, and the frames collected so far."""

    def __init__(self):
        self.out = K.alloc(ROWS)
        self.parts: list[dict[str, np.ndarray]] = []
        self.row = self.sk = self.uk = 0
        self.total = 0

    def full(self) -> bool:
        return self.row >= ROWS

    def flush(self) -> None:
        if self.row == 0:
            return
        m, sack_rows, sack_le, sack_re, udp_rows, udp_head, udp_head_len = self.out
        r = self.row
        part = {name: m[i, :r].astype(dt) for i, (name, (dt, _)) in
                enumerate(PACKET_COLUMNS.items())}
        part["sack_rows"] = sack_rows[: self.sk] + self.total
        part["sack_le"] = sack_le[: self.sk].copy()
        part["sack_re"] = sack_re[: self.sk].copy()
        part["udp_rows"] = udp_rows[: self.uk] + self.total
        part["udp_head"] = udp_head[: self.uk].copy()
        part["udp_head_len"] = udp_head_len[: self.uk].copy()
        self.parts.append(part)
        self.total += r
        self.out = K.alloc(ROWS)     # fresh zeros: decode only writes what a frame has
        self.row = self.sk = self.uk = 0

    def result(self) -> dict[str, np.ndarray]:
        self.flush()
        self.out = None
        names = list(PACKET_COLUMNS) + ["sack_rows", "sack_le", "sack_re", "udp_rows",
                                        "udp_head", "udp_head_len"]
        m, *side = K.alloc(0)
        empty = [m[i].astype(dt) for i, (dt, _) in enumerate(PACKET_COLUMNS.values())]
        empty += side
        cols = {}
        for i, name in enumerate(names):
            pieces = [p.pop(name) for p in self.parts]
            cols[name] = np.concatenate(pieces) if pieces else empty[i]
        return cols


def read_capture(path: str | os.PathLike, progress=None) -> Capture:
    """Read a pcap/pcapng file (gzip or not) into packet columns.

    Raises CaptureError when nothing can be read (not a capture file, empty, unreadable
    header). A file damaged further on is returned up to the damage, with `error` set.
    """
    path = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        compressed = magic[:2] == F.GZIP_MAGIC
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        src = _Source(path, stream, raw, size, progress)
        src.fill(24)
        if src.filled == 0:
            raise CaptureError(path, 0, "empty file" + (" (after gzip)" if compressed else ""))
        head = bytes(src.buf[:4])
        first = int.from_bytes(head.ljust(4, b"\0"), "little")
        if first in F.PCAP_MAGIC:
            cap = _read_pcap(src, compressed)
        elif first == F.SHB:
            cap = _read_pcapng(src, compressed)
        else:
            raise CaptureError(path, 0, f"not a pcap or pcapng file (starts with {head.hex(' ')})")
    reassemble(cap.cols)
    if getattr(src, "gzip_error", None) and cap.error is None:
        cap.error = CaptureError(path, src.base + src.filled,
                                 f"gzip stream damaged: {src.gzip_error} "
                                 "(offset in the decompressed data)")
    return cap


def _read_pcap(src: _Source, compressed: bool) -> Capture:
    path = src.path
    if src.filled < F.PCAP_FILE_HEADER_LEN:
        raise CaptureError(path, src.filled, "file ends inside the 24-byte pcap file header")
    order, tick_ns = F.PCAP_MAGIC[int.from_bytes(src.buf[:4], "little")]
    fmt = order + "".join(code for _, code in F.PCAP_FILE_HEADER)
    hdr = dict(zip([n for n, _ in F.PCAP_FILE_HEADER],
                   struct.unpack_from(fmt, src.buf, 0), strict=True))
    # the upper bits of the link type field carry FCS information (pcap-linktype(7))
    linktype = hdr["linktype"] & 0x03FFFFFF
    iface = Interface(0, linktype, snaplen=hdr["snaplen"],
                      tsresol="1e-9" if tick_ns == 1 else "1e-6")
    src.consume(F.PCAP_FILE_HEADER_LEN)
    out = _Columns()
    big = order == ">"
    error = None
    while True:
        pos, out.row, out.sk, out.uk, status, err_pos, value = K.scan_pcap(
            src.array(), 0, src.filled, big, tick_ns, linktype, src.eof, *out.out, out.row,
            out.sk, out.uk)
        src.consume(pos)
        if status == K.OK:
            out.flush()
            continue
        if status == K.E_RECORD_TOO_BIG:
            error = CaptureError(path, src.base, f"packet record claims {value} bytes, more "
                                 f"than the {F.MAX_PACKET} allowed (damaged file?)")
            break
        # NEED_MORE
        if src.eof:
            if src.filled:
                what = "record header" if src.filled < 16 else "packet data"
                error = CaptureError(path, src.base, f"file ends inside a packet record "
                                     f"({what}: {src.filled} bytes of the record present)")
            break
        src.fill(16 + value if value else 0)
    return Capture(path, "pcap", compressed, out.result(), [iface], error=error)


def _opts(buf, start: int, end: int, big: bool):
    """(code, value bytes) of a pcapng option list, stopping at opt_endofopt or damage."""
    order = ">" if big else "<"
    q = start
    while q + 4 <= end:
        code, ln = struct.unpack_from(order + "HH", buf, q)
        if code == F.OPT_ENDOFOPT or q + 4 + ln > end:
            return
        yield code, bytes(buf[q + 4:q + 4 + ln])
        q += 4 + ((ln + 3) & ~3)


def _text(v: bytes) -> str:
    return v.decode("utf-8", "replace").rstrip("\0")


def _read_pcapng(src: _Source, compressed: bool) -> Capture:
    path = src.path
    out = _Columns()
    interfaces: list[Interface] = []
    section_comments: list[str] = []
    packet_comments: dict[int, list[str]] = {}
    big = False
    sec: dict[str, list] = {}
    if_base = 0
    comment_rows = np.zeros(4096, np.int64)
    comment_pos = np.zeros(4096, np.int64)
    error = None

    def new_section():
        return {"lt": [], "mul": [], "div": [], "shift": [], "off": [], "snap": []}

    def arrays():
        return (np.array(sec["lt"], np.int64), np.array(sec["mul"], np.int64),
                np.array(sec["div"], np.int64), np.array(sec["shift"], np.int64),
                np.array(sec["off"], np.int64), np.array(sec["snap"], np.int64))

    sec = new_section()
    if_arrays = arrays()
    while True:
        nc = 0
        pos, out.row, out.sk, out.uk, nc, status, err_pos, value = K.scan_pcapng(
            src.array(), 0, src.filled, big, *if_arrays, if_base, *out.out, out.row, out.sk,
            out.uk, comment_rows, comment_pos, 0, src.base)
        for i in range(nc):
            _epb_comments(src, int(comment_pos[i]) - src.base, big,
                          out.total + int(comment_rows[i]), packet_comments)
        src.consume(pos)
        at = src.base
        if status == K.OK:
            out.flush()
            continue
        if status == K.NEED_MORE:
            if src.eof:
                if src.filled:
                    error = CaptureError(path, at, f"file ends inside a block "
                                         f"({src.filled} of {value or '?'} bytes present)")
                break
            src.fill(value if value else 0)
            continue
        if status == K.E_BLOCK_LENGTH:
            error = CaptureError(path, at, f"block length {value} is impossible "
                                 "(under 12, not a multiple of 4, or over 16 MiB)")
            break
        if status == K.E_BLOCK_TRAILER:
            error = CaptureError(path, at, "block's trailing length differs from its leading "
                                 f"length {value}")
            break
        if status == K.E_CAPLEN_BEYOND_BLOCK:
            error = CaptureError(path, at, f"captured length {value} runs past the end of "
                                 "its block")
            break
        if status == K.E_UNKNOWN_INTERFACE:
            error = CaptureError(path, at, f"packet refers to interface {value}, which the "
                                 "section has not described")
            break
        # CONTROL_BLOCK: a section header or an interface description, read here
        if src.filled < 12:
            src.fill(12)
            if src.filled < 12:
                error = CaptureError(path, at, "file ends inside a block header")
                break
        if value == F.SHB:
            bom = bytes(src.buf[8:12])
            if bom == b"\x1a\x2b\x3c\x4d":
                big = True
            elif bom == b"\x4d\x3c\x2b\x1a":
                big = False
            else:
                error = CaptureError(path, at + 8, f"section header has no byte-order magic "
                                     f"(found {bom.hex(' ')})")
                break
        order = ">" if big else "<"
        blen = struct.unpack_from(order + "I", src.buf, 4)[0]
        if blen < 12 or blen % 4 or blen > F.MAX_BLOCK or (value == F.SHB and blen < 28) or (
                value == F.IDB and blen < 20):
            error = CaptureError(path, at, f"block length {blen} is impossible for a "
                                 f"{'section header' if value == F.SHB else 'interface'} block")
            break
        if src.filled < blen:
            src.fill(blen)
            if src.filled < blen:
                error = CaptureError(path, at, f"file ends inside a block ({src.filled} of "
                                     f"{blen} bytes present)")
                break
        if struct.unpack_from(order + "I", src.buf, blen - 4)[0] != blen:
            error = CaptureError(path, at, "block's trailing length differs from its leading "
                                 f"length {blen}")
            break
        if value == F.SHB:
            if_base = len(interfaces)
            sec = new_section()
            for code, v in _opts(src.buf, 24, blen - 4, big):
                if code == F.OPT_COMMENT:
                    section_comments.append(_text(v))
        else:
            lt, _, snap = struct.unpack_from(order + "HHI", src.buf, 8)
            iface = Interface(len(interfaces), lt, snaplen=snap)
            mul, div, shift, off = 1000, 1, -1, 0
            for code, v in _opts(src.buf, 16, blen - 4, big):
                if code == F.IF_NAME:
                    iface.name = _text(v)
                elif code == F.IF_DESCRIPTION:
                    iface.description = _text(v)
                elif code == F.OPT_COMMENT:
                    iface.comments.append(_text(v))
                elif code == F.IF_TSRESOL and v:
                    r = v[0]
                    if r & 0x80:
                        shift = r & 0x7F
                        iface.tsresol = f"2^-{shift}"
                    else:
                        mul, div = (10 ** (9 - r), 1) if r <= 9 else (1, 10 ** (r - 9))
                        iface.tsresol = f"1e-{r}"
                elif code == F.IF_TSOFFSET and len(v) == 8:
                    iface.tsoffset_s = struct.unpack(order + "q", v)[0]
                    off = iface.tsoffset_s * 1_000_000_000
            interfaces.append(iface)
            for k, x in zip(("lt", "mul", "div", "shift", "off", "snap"),
                            (lt, mul, div, shift, off, snap), strict=True):
                sec[k].append(x)
        if_arrays = arrays()
        src.consume(blen)
    return Capture(path, "pcapng", compressed, out.result(), interfaces, section_comments,
                   packet_comments, error)


def _epb_comments(src: _Source, pos: int, big: bool, row: int, into: dict) -> None:
    order = ">" if big else "<"
    blen = struct.unpack_from(order + "I", src.buf, pos + 4)[0]
    caplen = struct.unpack_from(order + "I", src.buf, pos + 20)[0]
    start = pos + 28 + ((caplen + 3) & ~3)
    for code, v in _opts(src.buf, start, pos + blen - 4, big):
        if code == F.OPT_COMMENT:
            into.setdefault(row, []).append(_text(v))
