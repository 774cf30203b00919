"""Column storage that grows without copying and holds no more memory than its rows.

Theory of operation
-------------------
Every column lives in its own anonymous memory map. A fresh map is zero pages the kernel
has not backed yet, so room reserved ahead costs address space, not memory. The decode
kernel fills a small scratch matrix (one uint64 row per column, CHUNK_ROWS frames: one
array to index, which keeps the compiled loop tight); `put()` casts each of its rows into
the final columns, so there are no per-chunk parts to concatenate at the end and the peak
is the columns themselves, not twice them. The sparse side tables are written by the
kernel directly. When the rows run out, each map grows with mremap (Linux; elsewhere a
copy), and at the end it shrinks to the row count, which gives back the unused tail.

numpy views hold the map's buffer, and a map cannot be resized while viewed: callers take
the side tables' views with `side_arrays()`, drop them before `reserve()`, and get the
final arrays from `finish()`.
"""

from __future__ import annotations

import mmap

import numpy as np

from .columns import PACKET_COLUMNS, UDP_HEAD

CHUNK_ROWS = 1 << 15

# sparse side tables: name, dtype, shape of one entry
SIDE_TABLES = [("sack_rows", np.int64, ()), ("sack_le", np.uint32, (4,)),
               ("sack_re", np.uint32, (4,)), ("udp_rows", np.int64, ()),
               ("udp_head", np.uint8, (UDP_HEAD,)), ("udp_head_len", np.uint8, ())]


class _Column:
    def __init__(self, name: str, dtype, tail: tuple, rows: int):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.tail = tail
        self.row_bytes = self.dtype.itemsize * int(np.prod(tail, dtype=np.int64))
        self.map = mmap.mmap(-1, max(rows, 1) * self.row_bytes)

    def view(self, rows: int) -> np.ndarray:
        a = np.frombuffer(self.map, self.dtype, count=rows * self.row_bytes
                          // self.dtype.itemsize)
        return a.reshape((rows,) + self.tail)

    def resize(self, rows: int) -> None:
        size = max(rows, 1) * self.row_bytes
        try:
            self.map.resize(size)           # mremap: no copy, no second set of pages
        except (OSError, SystemError, ValueError, BufferError):
            new = mmap.mmap(-1, size)       # no mremap on this platform: copy over
            keep = min(size, len(self.map))
            new[:keep] = self.map[:keep]
            self.map.close()
            self.map = new


class ColumnStore:
    """The packet columns and side tables of one capture, growing as frames are decoded."""

    def __init__(self, rows: int = 1 << 16):
        self.rows = max(int(rows), 16)
        self.main = [_Column(n, dt, (), self.rows) for n, (dt, _) in PACKET_COLUMNS.items()]
        self.side = [_Column(n, dt, tail, self.rows) for n, dt, tail in SIDE_TABLES]

        self.scratch = np.zeros((len(self.main), CHUNK_ROWS), np.uint64)

    def side_arrays(self) -> tuple:
        """The side tables as numpy views, for a kernel call. Drop them after."""
        return tuple(c.view(self.rows) for c in self.side)

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows (every side table can take one entry per row)."""
        if rows <= self.rows:
            return
        while self.rows < rows:
            self.rows *= 2
        for c in self.main + self.side:
            c.resize(self.rows)

    def put(self, row0: int, n: int) -> None:
        """Move the scratch matrix's first n frames into rows row0.. of the columns."""
        if n <= 0:
            return
        m = self.scratch
        for i, c in enumerate(self.main):
            c.view(self.rows)[row0:row0 + n] = m[i, :n]     # a cast: -1 stays -1
        m[:, :n] = 0

    def finish(self, n: int, n_sack: int, n_udp: int) -> dict[str, np.ndarray]:
        """The final arrays: n rows, and n_sack / n_udp side-table entries."""
        out = {}
        counts = {"sack": n_sack, "udp_": n_udp}
        for c in self.main + self.side:
            k = n if c in self.main else counts[c.name[:4]]
            if k == 0:
                out[c.name] = np.zeros((0,) + c.tail, c.dtype)
                c.map.close()
                continue
            c.resize(k)
            out[c.name] = c.view(k)
        self.main = self.side = []
        self.scratch = None
        return out
