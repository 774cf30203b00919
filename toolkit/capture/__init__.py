"""Capture backends behind one interface (first version: dumpcap and tcpdump)."""

from .backends import Capture, CaptureFailed, available_backends, start_capture

__all__ = ["Capture", "CaptureFailed", "available_backends", "start_capture"]
