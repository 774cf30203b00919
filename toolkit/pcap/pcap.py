"""pcap (libpcap) files: a 24-byte file header, then 16-byte record headers and packets.

The magic number gives the byte order (either) and the timestamp fraction (a1b2c3d4:
microseconds, a1b23c4d: nanoseconds). The link type field's upper bits may say that every
frame ends with an FCS (pcap-linktype(7)); Wireshark honours that, and so do we.

Damage, as tshark 4.0 sees it: a record longer than 262144 bytes ("pcap: File has
N-byte packet, bigger than maximum of 262144") and a file cut inside a record. A record
whose captured length exceeds its original length is kept as it is (tshark shows both).
Deliberate difference: on a damaged first few records Wireshark retries the file as one
of the old modified-pcap variants (Nokia, SuSE ...) and may misread it; we do not guess.
"""

from __future__ import annotations

import struct

from . import decode as K
from . import formats as F
from .interfaces import Interface, kernel_table
from .scanner import Scanner
from .source import ChunkSource
from .store import ColumnStore


def read_header(src: ChunkSource, fail) -> tuple[str, int, Interface]:
    """(byte order, ns per tick, the one interface) from the file header."""
    if src.filled < F.PCAP_FILE_HEADER_LEN:
        raise fail(src.filled, "file ends inside the 24-byte pcap file header")
    order, tick_ns = F.PCAP_MAGIC[int.from_bytes(src.buf[:4], "little")]
    fmt = order + "".join(code for _, code in F.PCAP_FILE_HEADER)
    hdr = dict(zip([n for n, _ in F.PCAP_FILE_HEADER], struct.unpack_from(fmt, src.buf, 0),
                   strict=True))
    field = hdr["linktype"]
    iface = Interface(0, field & F.LINKTYPE_MASK, snaplen=hdr["snaplen"])
    if field & F.FCS_PRESENT:
        iface.fcs_len = 2 * (field >> 28)
    iface.set_tsresol(9 if tick_ns == 1 else 6)
    return order, tick_ns, iface


def read_records(src: ChunkSource, store: ColumnStore, fail, threads: int | None = None):
    """Decode every record into `store`. Returns (interfaces, rows, error)."""
    order, tick_ns, iface = read_header(src, fail)
    src.consume(F.PCAP_FILE_HEADER_LEN)
    big = order == ">"
    table = kernel_table([iface])
    scanner = Scanner(store, threads)
    while True:
        pos, status, value = scanner.run(src.array(), 0, src.filled, big, False, tick_ns,
                                         table, 0, src.base)
        src.consume(pos)
        row = scanner.row
        if status == K.NEED_MORE:
            if not src.eof:
                src.fill(value)
                continue
            if src.filled == 0:
                return [iface], row, None
            if src.filled < F.PCAP_RECORD_HEADER_LEN:
                what = f"{src.filled} of its 16-byte header"
            else:
                what = f"{src.filled} of {value} bytes"
            return [iface], row, fail(src.base, f"file ends inside a packet record "
                                                f"({what} present)")
        else:   # E_RECORD_TOO_BIG
            return [iface], row, fail(src.base, f"packet record claims {value} bytes, more "
                                                f"than the {F.MAX_PACKET} allowed")
