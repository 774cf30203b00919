"""Socket choices, exposed as options and recorded in every report.

Each is what a socket-programming course discusses: TCP_NODELAY (Nagle, RFC 896),
SO_RCVBUF/SO_SNDBUF (Linux doubles the value asked for, socket(7); the report shows what
the kernel granted), SO_LINGER with 0 (close sends RST instead of FIN, RFC 9293 3.10.4),
SO_REUSEADDR (bind while old connections sit in TIME-WAIT), the listen backlog, and
TCP_CONGESTION (the congestion control algorithm, per socket).
"""

from __future__ import annotations

import socket
import sys
import struct
from dataclasses import asdict, dataclass

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)
_LINUX = sys.platform.startswith("linux")


@dataclass
class SocketOptions:
    nodelay: bool = False
    rcvbuf: int | None = None
    sndbuf: int | None = None
    linger0: bool = False
    reuseaddr: bool = True
    backlog: int = 128
    congestion: str | None = None
    pacing_bps: float | None = None      # SO_MAX_PACING_RATE (TCP paces by itself since 4.13)

    def as_dict(self) -> dict:
        return asdict(self)


def accepted(sock, opts: SocketOptions) -> None:
    """A connection a server accepted: TCP_NODELAY as asked (-N), set on the connection
    itself. A listener does not pass it on everywhere, and asyncio turns Nagle off on every
    connection it makes, whatever was asked; the other options are the listener's, which
    accept() passes on (buffers, SO_LINGER, TCP_CONGESTION)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(opts.nodelay))
    except OSError:
        pass                     # the client left already: its first read will say how


def apply(sock: socket.socket, opts: SocketOptions, *, listening: bool = False) -> dict:
    """Set what was asked; return what the kernel reports back (for the report)."""
    got: dict = {}
    tcp = sock.type == socket.SOCK_STREAM
    if opts.reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if opts.rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, opts.rcvbuf)
    if opts.sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, opts.sndbuf)
    if tcp and opts.nodelay and not listening:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tcp and opts.congestion and not _LINUX:
        raise OSError(f"congestion control {opts.congestion!r}: choosing it per socket "
                      f"(TCP_CONGESTION) is Linux-only")
    if tcp and opts.congestion:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, opts.congestion.encode())
        except OSError as e:
            raise OSError(f"congestion control {opts.congestion!r} is not available here "
                          f"({e.strerror}; see net.ipv4.tcp_available_congestion_control)"
                          ) from None
    if opts.linger0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if opts.pacing_bps and not _LINUX:
        got["max_pacing_rate_bps"] = None
    elif opts.pacing_bps:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, int(opts.pacing_bps / 8))
            got["max_pacing_rate_bps"] = opts.pacing_bps
        except OSError:
            got["max_pacing_rate_bps"] = None
    got["rcvbuf"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    got["sndbuf"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    if tcp and _LINUX:       # elsewhere these option numbers mean other things, or nothing
        try:
            got["congestion"] = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16
                                                ).split(b"\0")[0].decode()
        except OSError:
            pass
    if tcp:
        got["nodelay"] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    got["linger0"] = opts.linger0
    return got


def kernel_timeout(sock: socket.socket, which: int, seconds: float) -> None:
    """SO_RCVTIMEO or SO_SNDTIMEO (socket(7)) on a socket Python treats as blocking: a call
    waits in the kernel at most `seconds` without progress, then fails with EAGAIN
    (BlockingIOError) or returns what it did. Unlike Python's timeout mode, which polls
    before every call (and whose settimeout() is an ioctl), this costs no system call
    a read or a write: the bulk paths make thousands a second."""
    whole = int(seconds)
    usec = int((seconds - whole) * 1e6)
    if seconds > 0 and not whole and not usec:
        usec = 1                        # {0, 0} would mean no timeout at all
    sock.setsockopt(socket.SOL_SOCKET, which, struct.pack("@ll", whole, usec))
