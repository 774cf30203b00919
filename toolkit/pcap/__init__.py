"""Capture files in, packet columns out: pcap and pcapng (optionally gzip-compressed)."""

from .errors import CaptureError
from .reader import Capture, Interface, read_capture

__all__ = ["Capture", "CaptureError", "Interface", "read_capture"]
