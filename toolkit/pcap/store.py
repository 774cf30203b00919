"""Column storage that grows without copying and holds no more memory than its rows.

Theory of operation
-------------------
Every packet column lives in its own anonymous memory map. A fresh map is zero pages the
kernel has not backed yet, so room reserved ahead costs address space, not memory, and a
row the decoder does not write reads as zero. The decode kernel writes each frame straight
into its row of the final columns: there are no per-chunk parts to concatenate at the end,
so the peak is the columns themselves. When the rows run out, each map grows with mremap
(Linux; elsewhere a copy), and at the end it shrinks to the row count, which gives back the
unused tail.

numpy views hold the map's buffer, and a map cannot be resized while viewed: callers take
the views with `columns()`, drop them before `reserve()`, and get the final arrays from
`finish()`.

The sparse side tables (SACK blocks, UDP payload heads, headers quoted in ICMP errors) are
small: each decoding thread fills its own buffers, and `add_side()` keeps copies of the
entries, in row order, to be joined by `finish()`.
"""

from __future__ import annotations

import mmap

import numpy as np

from .columns import PACKET_COLUMNS, UDP_HEAD

# private anonymous memory: plain pages (a shared anonymous map is shmem, slower to fault)
MAP_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)

# sparse side tables: name, dtype, shape of one entry (decode.py indexes them in this order)
SIDE_TABLES = [("sack_rows", np.int64, ()), ("sack_le", np.uint32, (4,)),
               ("sack_re", np.uint32, (4,)),
               ("udp_rows", np.int64, ()), ("udp_head", np.uint8, (UDP_HEAD,)),
               ("udp_head_len", np.uint8, ()),
               ("icmp_rows", np.int64, ()), ("icmp_proto", np.uint8, ()),
               ("icmp_src_hi", np.uint64, ()), ("icmp_src_lo", np.uint64, ()),
               ("icmp_dst_hi", np.uint64, ()), ("icmp_dst_lo", np.uint64, ()),
               ("icmp_sport", np.uint16, ()), ("icmp_dport", np.uint16, ())]
# which counter of the kernel counts each side table's entries: SACK, UDP, ICMP
SIDE_GROUP = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]


def side_buffers(entries: int) -> tuple[np.ndarray, ...]:
    """Empty side tables with room for `entries` entries each (pages untouched until
    written), for one decoding thread."""
    return tuple(np.zeros((entries,) + tail, dt) for _, dt, tail in SIDE_TABLES)


def _anonymous(size: int) -> mmap.mmap:
    try:
        m = mmap.mmap(-1, size, flags=MAP_FLAGS) if MAP_FLAGS else mmap.mmap(-1, size)
    except (OSError, ValueError):
        return mmap.mmap(-1, size)
    if MADV_HUGEPAGE is not None:
        try:
            # 2 MB pages where the kernel has them to spare: a page fault per 2 MB written
            # instead of per 4 kB (half the reading's system time). The last, partly
            # written page of each column is cut back by the shrink in finish().
            m.madvise(MADV_HUGEPAGE)
        except (AttributeError, OSError, ValueError):
            pass
    return m


class _Column:
    def __init__(self, name: str, dtype, rows: int):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.map = _anonymous(max(rows, 1) * self.dtype.itemsize)

    def view(self, rows: int) -> np.ndarray:
        return np.frombuffer(self.map, self.dtype, count=rows)

    def resize(self, rows: int) -> None:
        size = max(rows, 1) * self.dtype.itemsize
        try:
            self.map.resize(size)           # mremap: no copy, no second set of pages
        except (OSError, SystemError, ValueError):
            new = _anonymous(size)          # no mremap on this platform: copy over
            keep = min(size, len(self.map))
            new[:keep] = self.map[:keep]
            self.map.close()
            self.map = new


class ColumnStore:
    """The packet columns and side tables of one capture, growing as frames are decoded."""

    def __init__(self, rows: int = 1 << 16):
        self.rows = max(int(rows), 16)
        self.main = [_Column(n, dt, self.rows) for n, (dt, _) in PACKET_COLUMNS.items()]
        self.side: list[list[np.ndarray]] = [[] for _ in SIDE_TABLES]

    def columns(self) -> tuple[np.ndarray, ...]:
        """The columns as numpy views (PACKET_COLUMNS order), for a kernel. Drop them after."""
        return tuple(c.view(self.rows) for c in self.main)

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows."""
        if rows <= self.rows:
            return
        while self.rows < rows:
            self.rows *= 2
        for c in self.main:
            c.resize(self.rows)

    def add_side(self, buffers: tuple[np.ndarray, ...], counts: tuple[int, int, int]) -> None:
        """Keep the first entries of a thread's side tables (counts per SIDE_GROUP)."""
        for i, (buf, group) in enumerate(zip(buffers, SIDE_GROUP, strict=True)):
            k = counts[group]
            if k:
                self.side[i].append(buf[:k].copy())

    def finish(self, n: int) -> dict[str, np.ndarray]:
        """The final arrays: n rows, and the side tables' entries."""
        out = {}
        for c in self.main:
            c.resize(n)
            out[c.name] = c.view(n) if n else np.zeros(0, c.dtype)
        for (name, dt, tail), parts in zip(SIDE_TABLES, self.side, strict=True):
            out[name] = (np.concatenate(parts) if len(parts) > 1 else parts[0] if parts
                         else np.zeros((0,) + tail, dt))
        self.main = []
        self.side = []
        return out
