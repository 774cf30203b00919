"""Decode a buffer of records into the columns, split between threads.

Theory of operation
-------------------
A record's row is only known once every record before it has been counted, and a pcapng
block boundary cannot be found from the middle of a buffer. So each buffer is walked
twice by the same compiled kernel (decode.scan):

1. an index pass checks the framing of every record (lengths, trailers, interfaces),
   counts the frames and marks where every MARK_STEP-th frame's record starts. It stops
   where Python must act: the buffer's end, a section or interface block, damage, or
   ROWS_PER_CALL frames (which bounds the side tables and paces the progress bar);
2. the columns get room for exactly those frames, and the decode pass runs in parts that
   start at marked records: the first part on this thread, the others on worker threads.
   The kernel releases the GIL (nogil), so the parts run at once on as many cores.

Each part writes its own rows of the shared columns and its own side-table buffers; the
side entries are kept in part order, which is row order. The result does not depend on
the number of threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import decode as K
from .store import ColumnStore, side_buffers

ROWS_PER_CALL = 1 << 16
MIN_PART_ROWS = 8192            # below this a part is not worth a thread
MAX_THREADS = 4
NOTES = 1024                    # commented packet blocks noted per kernel call

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_threads() -> int:
    """The CPUs this process may run on, at most MAX_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


def executor() -> ThreadPoolExecutor:
    """The worker threads of the decoding (also lent to the analyses)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS - 1, thread_name_prefix="labkit-decode")
        return _pool


def _forget_pool() -> None:
    # a forked child has none of the parent's threads: a pool inherited from it would
    # take work and never run it
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


class Scanner:
    """Runs the index and decode passes over buffers, appending rows to a ColumnStore."""

    def __init__(self, store: ColumnStore, threads: int | None = None):
        self.store = store
        self.threads = max(1, min(int(threads or default_threads()), MAX_THREADS))
        self.side = [side_buffers(ROWS_PER_CALL) for _ in range(self.threads)]
        self.notes = [np.zeros((NOTES, 2), np.int64) for _ in range(self.threads)]
        self.marks = np.zeros(ROWS_PER_CALL // K.MARK_STEP + 1, np.int64)
        self.row = 0
        self.comments: list[tuple[int, int]] = []    # (row, file offset) of commented blocks

    def run(self, buf: np.ndarray, pos: int, end: int, big: bool, pcapng: bool,
            tick_ns: int, ifs: np.ndarray, if_base: int, base: int) -> tuple[int, int, int]:
        """Decode the records of buf[pos:end] (buf[0] at file offset `base`) until one that
        needs Python. Returns (pos, status, value) of the stop, as decode.scan does."""
        while True:
            cols = self.store.columns()
            stop, rows, _, _, _, _, status, value = K.scan(
                False, buf, pos, end, big, pcapng, tick_ns, ifs, if_base, cols, self.side[0],
                self.row, ROWS_PER_CALL, 0, 0, 0, self.notes[0], 0, base, self.marks)
            del cols
            n = rows - self.row
            if n:
                self.store.reserve(rows)
                self._decode(buf, stop, n, big, pcapng, tick_ns, ifs, if_base, base)
                self.row = rows
            pos = stop
            if status != K.FULL:
                return pos, status, value

    def _decode(self, buf, stop, n, big, pcapng, tick_ns, ifs, if_base, base) -> None:
        parts = max(1, min(self.threads, n // MIN_PART_ROWS))
        # part t starts at a marked frame (a multiple of MARK_STEP rows in)
        starts = sorted({(n * t // parts) // K.MARK_STEP * K.MARK_STEP for t in range(parts)})
        bounds = [(k, int(self.marks[k // K.MARK_STEP])) for k in starts] + [(n, stop)]

        def part(t: int):
            # the column views live in this frame only: once every part has returned, no
            # thread holds one, and the store may grow (mremap) again
            cols = self.store.columns()
            (k0, p0), (_, p1) = bounds[t], bounds[t + 1]
            side, notes = self.side[t], self.notes[t]
            p, row, sk, uk, qk, found = p0, self.row + k0, 0, 0, 0, []
            while True:
                p, row, sk, uk, qk, nn, status, _ = K.scan(
                    True, buf, p, p1, big, pcapng, tick_ns, ifs, if_base, cols, side, row, 0,
                    sk, uk, qk, notes, 0, base, self.marks)
                found += [(int(r), int(at)) for r, at in notes[:nn]]
                if status != K.FULL:        # FULL: the notes ran out; go on after them
                    return sk, uk, qk, found

        futures = [executor().submit(part, t) for t in range(1, len(bounds) - 1)]
        try:
            results = [part(0)]
        finally:
            results += [f.result() for f in futures]    # never leave a thread writing
        for t, (sk, uk, qk, found) in enumerate(results):
            self.store.add_side(self.side[t], (sk, uk, qk))
            self.comments += found
