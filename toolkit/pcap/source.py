"""The bytes of a capture file, a chunk at a time, through one reusable buffer.

Theory of operation
-------------------
`ChunkSource` reads the (possibly gzip-decompressed) stream into a buffer of CHUNK bytes.
A kernel consumes whole records from its front; `consume(n)` moves the partial record
left at the end to the front, and `fill()` tops the buffer up again. A record larger than
the buffer grows it (records are capped at a few MB, so this is bounded). `base` is the
stream offset of buf[0], which is how errors name their byte.

A gzip stream that is cut short or corrupt ends the stream where the damage is: what was
decompressed before it stays readable, and `stream_error` says what happened.
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np

CHUNK = 4 << 20


class ChunkSource:
    def __init__(self, raw, compressed: bool, size: int, progress=None):
        self.raw = raw
        self.stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        # gzip: one decompression step per call, so data before a damaged spot is kept
        # (a plain readinto loops and loses it when the next step raises)
        self.readinto = self.stream.readinto1 if compressed else self.stream.readinto
        self.size = size
        self.progress = progress
        self.buf = bytearray(CHUNK)
        self.filled = 0
        self.base = 0            # stream offset of buf[0]
        self.eof = False
        self.stream_error = ""

    def fill(self, need: int = 0) -> None:
        """Read until the buffer is full (at least `need` bytes) or the stream ends."""
        if need > len(self.buf):
            # a new buffer, not a resize: a decoding thread may still hold a view of the
            # old one for a moment (a bytearray cannot be resized while viewed)
            grown = bytearray(need)
            grown[:self.filled] = self.buf[:self.filled]
            self.buf = grown
        with memoryview(self.buf) as view:
            while not self.eof and self.filled < len(self.buf):
                try:
                    n = self.readinto(view[self.filled:])
                except (EOFError, OSError, zlib.error) as e:
                    # gzip cut short (EOFError) or corrupt (BadGzipFile, zlib.error)
                    self.eof = True
                    self.stream_error = str(e) or type(e).__name__
                    break
                if not n:
                    self.eof = True
                    break
                self.filled += n
        if self.progress is not None:
            self.progress(self.raw.tell(), self.size)

    def consume(self, n: int) -> None:
        """Drop buf[:n]; keep what follows at the front."""
        if n <= 0:
            return
        rest = self.filled - n
        if rest:
            self.buf[:rest] = self.buf[n:self.filled]
        self.filled = rest
        self.base += n

    def array(self) -> np.ndarray:
        """The buffer as uint8 (a view: drop it before the next fill)."""
        return np.frombuffer(self.buf, np.uint8)
