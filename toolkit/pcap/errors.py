"""The one error a capture reader raises or reports: what is wrong, and at which byte."""

from __future__ import annotations


class CaptureError(Exception):
    """A capture file that cannot be read (or can be read only up to `offset`)."""

    def __init__(self, path: str, offset: int, reason: str):
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: at byte {self.offset}: {reason}")
