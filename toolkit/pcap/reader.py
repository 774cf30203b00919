"""read_capture(path): a pcap or pcapng file (optionally gzip-compressed) into columns.

Theory of operation
-------------------
The first bytes say what the file is: gzip (1f 8b: decompressed as a stream), pcap
(pcap.py) or pcapng (pcapng.py). Either reader pulls the file through one reusable chunk
buffer (source.py); for each chunk a compiled kernel (decode.py) first indexes the records,
then decodes their frames straight into the final column arrays (store.py), in parts on
several threads (scanner.py). Memory stays near the size of the columns whatever the
file's size: the packets' bytes are never all in memory at once.

Damage (a length that cannot be, a file that ends inside a record) stops the reading:
every frame before it is kept and `Capture.error` names the byte offset where the first
unreadable record or block starts (in the decompressed stream for gzip files). Only a
file with no readable header at all raises CaptureError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import formats as F
from . import pcap, pcapng
from .errors import CaptureError
from .fragments import reassemble
from .interfaces import Interface
from .source import ChunkSource
from .store import ColumnStore


@dataclass
class Capture:
    path: str
    file_format: str                 # 'pcap' or 'pcapng'
    compressed: bool                 # gzip
    cols: dict[str, np.ndarray]      # PACKET_COLUMNS plus the sparse side tables
    interfaces: list[Interface]
    section_comments: list[str] = field(default_factory=list)
    packet_comments: dict[int, list[str]] = field(default_factory=dict)   # row -> comments
    error: CaptureError | None = None

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])


def read_capture(path: str | os.PathLike, progress=None, threads: int | None = None
                 ) -> Capture:
    """Read a pcap/pcapng file (gzip or not) into packet columns.

    progress, if given, is called as progress(bytes_done, bytes_total) of the file on disk.
    threads: how many threads decode (default: the CPUs available, at most 4); the result
    is the same for any number.
    Raises CaptureError when nothing can be read (no such file, empty, not a capture, a
    damaged file header). A file damaged further on is returned up to the damage, with
    `error` set.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        raw = open(path, "rb")
    except OSError as e:
        raise CaptureError(path, 0, f"cannot open: {e.strerror or e}") from None
    with raw:
        compressed = raw.read(2) == F.GZIP_MAGIC
        raw.seek(0)
        src = ChunkSource(raw, compressed, size, progress)
        note = " (offset in the gzip-decompressed data)" if compressed else ""

        def fail(offset: int, reason: str) -> CaptureError:
            return CaptureError(path, offset, reason + note)

        src.fill(24)
        if src.filled == 0:
            what = "empty file" if not compressed else "gzip file with no data"
            if src.stream_error:
                what = f"gzip stream damaged: {src.stream_error}"
            raise fail(0, what)
        head = bytes(src.buf[:4])
        first = int.from_bytes(head.ljust(4, b"\0"), "little")
        # room for the rows the file can hold (a record takes at least 16 bytes), capped;
        # reserved room costs no memory until written, and the store grows if needed
        store = ColumnStore(min(size // 16 + 1 if not compressed else 1 << 16, 1 << 20))
        if first in F.PCAP_MAGIC:
            fmt = "pcap"
            ifaces, n, error = pcap.read_records(src, store, fail, threads)
            extra = ([], {})
        elif first == F.SHB:
            fmt = "pcapng"
            ifaces, n, error, *extra = pcapng.read_blocks(src, store, fail, threads)
        else:
            raise fail(0, f"not a pcap or pcapng file (starts with {head.hex(' ')}"
                          f"{' ' + repr(head) if head.isascii() else ''})")
    if src.stream_error:
        # the gzip damage is what ended the readable data
        where = src.base + src.filled
        at = error.offset if error else where
        # two offsets, said apart: the record cut short here, the damage further on
        cut = "the record here is cut short: " if at < where else ""
        error = fail(at, f"{cut}gzip stream damaged after {where} bytes: "
                         f"{src.stream_error}")
    cols = store.finish(n)
    reassemble(cols)
    return Capture(path, fmt, compressed, cols, ifaces, extra[0], extra[1], error)
