"""Capture backends behind one interface: dumpcap (preferred, pcapng) and tcpdump (pcap).

    from toolkit import capture
    capture.probe().require()                      # or CaptureUnavailable: what to do
    with capture.start("lo", "run/a.pcapng", bpf_filter="tcp port 5001") as cap:
        ...                                        # the capture is proven running here
    cap.counters.dropped, cap.repaired             # backend drop counts; file repairs

Theory of operation: backends.py (pure: command lines, readiness lines, counter parsers),
live.py (the process: readiness, stop escalation), files.py (the file left behind is
always readable), probe.py (privileges, and what to do without them).
"""

from .backends import BACKENDS, CaptureCounters, parse_counters
from .files import FileSummary, repair, summarize
from .live import Capture, CaptureFailed, installed_backends, start
from .probe import CaptureProbe, CaptureUnavailable, probe

__all__ = ["BACKENDS", "Capture", "CaptureCounters", "CaptureFailed", "CaptureProbe",
           "CaptureUnavailable", "FileSummary", "installed_backends", "parse_counters",
           "probe", "repair", "start", "summarize"]
