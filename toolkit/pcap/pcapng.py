"""pcapng files (draft-ietf-opsawg-pcapng): sections of blocks, each with its byte order.

Every block is (type, total length, body, total length again). The compiled kernel walks
packet blocks (Enhanced 6, Simple 3, obsolete Packet 2) and skips blocks it need not read
(Name Resolution 4, Interface Statistics 5, Decryption Secrets 10, anything unknown); it
stops at a Section Header (which sets the byte order and restarts interface numbering) or
an Interface Description, which this module reads: link type, snaplen, if_name,
if_description, if_tsresol, if_tsoffset, if_fcslen and comments. Packet comments are
noted by the kernel (row and file offset of the block) and read here.

Checks, as Wireshark's wiretap/pcapng.c makes them: a total length under 12 or not a
multiple of 4, a trailing length that differs, a captured length past the block or over
262144, an interface not described in the section. Deliberate differences: a Simple
Packet Block is cut to the interface's snaplen and read in full (tshark 4.0 then misreads
the block's trailer); Sysdig and systemd-journal blocks are skipped, not shown as frames.
Custom blocks are kept as frames without a packet, as Wireshark 4.0 numbers them.
"""

from __future__ import annotations

import struct

from . import decode as K
from . import formats as F
from .interfaces import Interface, kernel_table
from .scanner import Scanner
from .source import ChunkSource
from .store import ColumnStore


def options(buf, start: int, end: int, order: str):
    """(code, value) of an option list, to opt_endofopt or the first that overruns."""
    q = start
    while q + 4 <= end:
        code, ln = struct.unpack_from(order + "HH", buf, q)
        if code == F.OPT_ENDOFOPT or q + 4 + ln > end:
            return
        yield code, bytes(buf[q + 4:q + 4 + ln])
        q += 4 + ((ln + 3) & ~3)


def _text(v: bytes) -> str:
    return v.decode("utf-8", "replace").rstrip("\0")


def read_interface(buf, blen: int, order: str, index: int) -> Interface:
    lt, _, snap = struct.unpack_from(order + "HHI", buf, 8)
    iface = Interface(index, lt, snaplen=snap)
    for code, v in options(buf, 16, blen - 4, order):
        if code == F.IF_NAME:
            iface.name = _text(v)
        elif code == F.IF_DESCRIPTION:
            iface.description = _text(v)
        elif code == F.OPT_COMMENT:
            iface.comments.append(_text(v))
        elif code == F.IF_TSRESOL and v:
            iface.set_tsresol(v[0])
        elif code == F.IF_TSOFFSET and len(v) == 8:
            iface.tsoffset_s = struct.unpack(order + "q", v)[0]
        elif code == F.IF_FCSLEN and v:
            iface.fcs_len = v[0]
    return iface


class _Reader:
    def __init__(self, src: ChunkSource, store: ColumnStore, fail, threads: int | None):
        self.src, self.store, self.fail = src, store, fail
        self.scanner = Scanner(store, threads)
        self.interfaces: list[Interface] = []
        self.section: list[Interface] = []      # this section's interfaces, by local id
        self.section_comments: list[str] = []
        self.packet_comments: dict[int, list[str]] = {}
        self.big = False

    def run(self):
        """Decode every block. Returns the error that stopped it, or None."""
        src = self.src
        table = kernel_table([])
        if_base = 0
        first = True
        while True:
            pos, status, value = self.scanner.run(src.array(), 0, src.filled, self.big, True, 1,
                                                  table, if_base, src.base)
            for row, at in self.scanner.comments:
                self._packet_comments(at - src.base, row)
            self.scanner.comments.clear()
            src.consume(pos)
            at = src.base
            err = None
            if status == K.NEED_MORE:
                if not src.eof:
                    src.fill(value)
                    continue
                if src.filled == 0:
                    return None
                err = self.fail(at, f"file ends inside a block ({src.filled} of "
                                    f"{value or 'at least 12'} bytes present)")
            elif status != K.CONTROL_BLOCK:
                err = self.fail(at, _damage(status, value, len(self.section)))
            else:
                # a section header or an interface description: read here
                err = self._control_block(value, at)
            if err is not None:
                if first:
                    raise err       # not even the first section header is readable
                return err
            first = False
            if value == F.SHB:
                if_base = len(self.interfaces)
            table = kernel_table(self.section)

    def _control_block(self, btype: int, at: int):
        src = self.src
        if src.filled < 12:
            src.fill(12)
            if src.filled < 12:
                return self.fail(at, "file ends inside a block header")
        if btype == F.SHB:
            bom = bytes(src.buf[8:12])
            if bom not in (F.BYTE_ORDER_MAGIC_BE, F.BYTE_ORDER_MAGIC_LE):
                return self.fail(at, f"section header has no byte-order magic "
                                     f"(bytes 8-11 are {bom.hex(' ')})")
            self.big = bom == F.BYTE_ORDER_MAGIC_BE
        order = ">" if self.big else "<"
        blen = struct.unpack_from(order + "I", src.buf, 4)[0]
        least = 28 if btype == F.SHB else 20
        kind = "section header" if btype == F.SHB else "interface description"
        if blen < least or blen % 4 or blen > F.MAX_BLOCK:
            return self.fail(at, f"{kind} block's total length {blen} is impossible "
                                 f"(at least {least}, a multiple of 4, at most "
                                 f"{F.MAX_BLOCK})")
        if src.filled < blen:
            src.fill(blen)
            if src.filled < blen:
                return self.fail(at, f"file ends inside a block ({src.filled} of {blen} "
                                     f"bytes present)")
        if struct.unpack_from(order + "I", src.buf, blen - 4)[0] != blen:
            return self.fail(at, f"{kind} block's trailing total length differs from its "
                                 f"leading one ({blen})")
        if btype == F.SHB:
            self.section = []
            for code, v in options(src.buf, 24, blen - 4, order):
                if code == F.OPT_COMMENT:
                    self.section_comments.append(_text(v))
        else:
            iface = read_interface(src.buf, blen, order, len(self.interfaces))
            self.interfaces.append(iface)
            self.section.append(iface)
        src.consume(blen)
        return None

    def _packet_comments(self, pos: int, row: int) -> None:
        order = ">" if self.big else "<"
        blen = struct.unpack_from(order + "I", self.src.buf, pos + 4)[0]
        caplen = struct.unpack_from(order + "I", self.src.buf, pos + 20)[0]
        start = pos + 28 + ((caplen + 3) & ~3)
        for code, v in options(self.src.buf, start, pos + blen - 4, order):
            if code == F.OPT_COMMENT:
                self.packet_comments.setdefault(row, []).append(_text(v))


def _damage(status: int, value: int, n_if: int) -> str:
    if status == K.E_BLOCK_LENGTH:
        return (f"block total length {value} is impossible (under 12, not a multiple of 4, "
                f"or over {F.MAX_BLOCK})")
    if status == K.E_BLOCK_TRAILER:
        return f"block's trailing total length differs from its leading one ({value})"
    if status == K.E_CAPLEN_BEYOND_BLOCK:
        return f"packet block's captured length {value} runs past the end of the block"
    if status == K.E_RECORD_TOO_BIG:
        return f"packet block claims {value} bytes, more than the {F.MAX_PACKET} allowed"
    if status == K.E_UNKNOWN_INTERFACE:
        return (f"packet block refers to interface {value}, but its section describes "
                f"{n_if}")
    if status == K.E_BLOCK_TOO_SHORT:
        return f"block total length {value} is too short for a block of its type"
    return f"damaged block (status {status}, value {value})"


def read_blocks(src: ChunkSource, store: ColumnStore, fail, threads: int | None = None):
    """Decode every block into `store`.

    Returns (interfaces, rows, error, section comments, packet comments)."""
    r = _Reader(src, store, fail, threads)
    error = r.run()
    return (r.interfaces, r.scanner.row, error, r.section_comments, r.packet_comments)
