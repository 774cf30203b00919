"""TCP_INFO: the kernel's own view of a TCP connection, sampled by the endpoints.

Linux's struct tcp_info (include/uapi/linux/tcp.h) as a table of (name, offset, format);
older kernels return a shorter struct, and only the fields it covers are reported. Times
are in microseconds in the struct and in seconds here (named `_s`: rto_s, rtt_s, ...);
rates in bytes/s in the struct and bits/s here (`_bps`: pacing_rate_bps, delivery_rate_bps).
The other fields keep the struct's names (tcpi_ without the prefix) and values: counts,
segments (snd_cwnd, snd_ssthresh) and bytes (snd_mss, pmtu, bytes_acked, ...).
Not Linux (macOS): `sample` returns None and the reports say so.
"""

from __future__ import annotations

import socket
import struct
import sys

TCP_INFO = getattr(socket, "TCP_INFO", 11)
_SIZE = 232

# name, offset, struct format, scale (seconds for us fields, bits for byte rates)
FIELDS = [
    ("state", 0, "B", None), ("ca_state", 1, "B", None), ("retransmits", 2, "B", None),
    ("rto_s", 8, "I", 1e-6), ("snd_mss", 16, "I", None), ("rcv_mss", 20, "I", None),
    ("unacked", 24, "I", None), ("sacked", 28, "I", None), ("lost", 32, "I", None),
    ("retrans", 36, "I", None), ("pmtu", 60, "I", None), ("rtt_s", 68, "I", 1e-6),
    ("rttvar_s", 72, "I", 1e-6), ("snd_ssthresh", 76, "I", None), ("snd_cwnd", 80, "I", None),
    ("reordering", 88, "I", None), ("rcv_rtt_s", 92, "I", 1e-6), ("rcv_space", 96, "I", None),
    ("total_retrans", 100, "I", None), ("pacing_rate_bps", 104, "Q", 8),
    ("bytes_acked", 120, "Q", None), ("bytes_received", 128, "Q", None),
    ("segs_out", 136, "I", None), ("segs_in", 140, "I", None), ("notsent_bytes", 144, "I", None),
    ("min_rtt_s", 148, "I", 1e-6), ("delivery_rate_bps", 160, "Q", 8),
    ("busy_time_s", 168, "Q", 1e-6), ("rwnd_limited_s", 176, "Q", 1e-6),
    ("sndbuf_limited_s", 184, "Q", 1e-6), ("delivered", 192, "I", None),
    ("bytes_sent", 200, "Q", None), ("bytes_retrans", 208, "Q", None),
    ("dsack_dups", 216, "I", None), ("reord_seen", 220, "I", None),
    ("snd_wnd", 228, "I", None),
]
# ssthresh "infinity" before the first loss (TCP_INFINITE_SSTHRESH)
_INFINITE_SSTHRESH = 0x7FFFFFFF


def parse(raw: bytes) -> dict:
    out = {}
    for name, off, fmt, scale in FIELDS:
        size = struct.calcsize(fmt)
        if off + size > len(raw):
            continue
        (value,) = struct.unpack_from("=" + fmt, raw, off)
        if name == "snd_ssthresh" and value >= _INFINITE_SSTHRESH:
            value = None
        elif scale is not None:
            value = value * scale
        out[name] = value
    return out


def sample(sock: socket.socket) -> dict | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return parse(sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _SIZE))
    except OSError:
        return None


_COUNTS = struct.Struct("=QI")              # bytes_received (offset 128), segs_out (136)


def received_and_sent(sock: socket.socket) -> tuple[int, int] | None:
    """(bytes_received, segs_out) alone, in one call that parses nothing else: a receiver
    checks what its reading costs in segments sent back (ACKs). None where the kernel's
    struct is shorter (before Linux 4.2) or there is no TCP_INFO."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 140)
    except OSError:
        return None
    return _COUNTS.unpack_from(raw, 128) if len(raw) >= 140 else None
