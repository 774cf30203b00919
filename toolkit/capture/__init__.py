"""Capture backends behind one interface: dumpcap (preferred, pcapng), tcpdump (pcap) and
scapy (pcapng, pure Python, a packet-rate ceiling).

    from toolkit import capture
    capture.probe().require()                      # or CaptureUnavailable: what to do
    with capture.start("lo", "run/a.pcapng", bpf_filter="tcp port 5001") as cap:
        ...                                        # the capture is proven running here
    cap.result.counters.dropped, cap.result.files  # backend drop counts; files written

    # one capture per vantage point of a lab (a, r-a, r-b, b), all proven running
    with capture.start_many(lab, capture.vantage_points(lab), run_dir) as caps:
        ...
    caps.results["r-b"].counters

Theory of operation: backends.py (pure: command lines, readiness lines, counter parsers),
live.py (the process: readiness, stop escalation, ring files, comments), files.py (the
file left behind is always readable), scapy_backend.py and writer.py (the pure-Python
backend and the files it writes), vantage.py (where in the lab to capture), probe.py
(privileges, and what to do without them).
"""

from .backends import BACKENDS, CaptureCounters, parse_counters
from .files import FileSummary, annotate, repair, section_comments, summarize
from .live import (Capture, CaptureFailed, CaptureResult, installed_backends, launch,
                   ring_files, start)
from .probe import CaptureProbe, CaptureUnavailable, probe
from .vantage import CaptureSet, VantagePoint, limit_rate, start_many, vantage_points

__all__ = ["BACKENDS", "Capture", "CaptureCounters", "CaptureFailed", "CaptureProbe",
           "CaptureResult", "CaptureSet", "CaptureUnavailable", "FileSummary", "VantagePoint",
           "annotate", "installed_backends", "launch", "limit_rate", "parse_counters",
           "probe", "repair", "ring_files", "section_comments", "start", "start_many",
           "summarize", "vantage_points"]
