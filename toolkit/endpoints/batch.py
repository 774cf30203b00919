"""Many datagrams per system call: recvmmsg(2) in, UDP GSO (UDP_SEGMENT) out.

iperf3 sends and receives one datagram per system call; at small sizes the system call is
the cost. Linux offers both directions in batches, and Python can reach them:

- in: recvmmsg() through ctypes fills up to `batch` datagrams into one preallocated
  buffer, each with its kernel receive timestamp (SO_TIMESTAMPNS, so jitter is measured
  at arrival, not when Python got round to it) and its source address;
- out: with the UDP_SEGMENT socket option (Linux 4.18, udp(7)) one send() of k*size bytes
  leaves as k datagrams of `size` bytes each (at most 64 segments and 64 KB per call).

Elsewhere (macOS) BatchReceiver falls back to recvfrom() one at a time with a user-space
timestamp, and senders send one datagram per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct
import sys
import time

import numpy as np

SOL_UDP = 17
UDP_SEGMENT = 103
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MSG_WAITFORONE = 0x10000
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65507 - 8           # IP total length limit, less the UDP header

_LINUX = sys.platform.startswith("linux")


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_int64)]


_libc = None
if _LINUX:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint,
                               ctypes.c_int, ctypes.POINTER(_Timespec)]
    _libc.recvmmsg.restype = ctypes.c_int

_CMSG_SPACE = 64          # one cmsghdr (16) + struct timespec (16), with room
_NAME = 28                # sockaddr_in6 is the largest we meet


class BatchReceiver:
    """recv_batch(timeout) -> n; then rows 0..n-1 of `buf`, `lengths`, `recv_ns`, and
    sources(n) hold the datagrams. One system call per batch: recvmmsg with
    MSG_WAITFORONE blocks for the first datagram (up to SO_RCVTIMEO) and then takes what is
    queued, up to `batch`."""

    def __init__(self, sock: socket.socket, batch: int = 256, size: int = 65536):
        self.sock, self.batch, self.size = sock, batch, size
        self.buf = np.zeros((batch, size), np.uint8)
        self.lengths = np.zeros(batch, np.int64)
        self.recv_ns = np.zeros(batch, np.int64)
        self.native = _LINUX and _libc is not None
        self._timeout = None
        if self.native:
            sock.setblocking(True)             # SO_RCVTIMEO, not O_NONBLOCK, bounds the wait
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._iov = (_Iovec * batch)()
            self._msgs = (_Mmsghdr * batch)()
            self._ctrl = np.zeros((batch, _CMSG_SPACE), np.uint8)
            self._names = np.zeros((batch, _NAME), np.uint8)
            base = self.buf.ctypes.data
            for i in range(batch):
                self._iov[i].base = base + i * size
                self._iov[i].len = size
                h = self._msgs[i].hdr
                h.iov = ctypes.pointer(self._iov[i])
                h.iovlen = 1
                h.control = self._ctrl.ctypes.data + i * _CMSG_SPACE
                h.controllen = _CMSG_SPACE
                h.name = self._names.ctypes.data + i * _NAME
                h.namelen = _NAME
            # the kernel rewrites namelen, controllen and len: restore them in one copy
            self._pristine = bytes(self._msgs)
            self._msg_words = np.frombuffer(self._msgs, np.uint32).reshape(
                batch, ctypes.sizeof(_Mmsghdr) // 4)
            self._len_word = _Mmsghdr.len.offset // 4

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout == self._timeout:
            return
        t = timeout or 0.0                      # 0 = block without limit
        sec = int(t)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("@ll", sec, int((t - sec) * 1e6)))
        self._timeout = timeout

    def recv_batch(self, timeout: float | None) -> int:
        if not self.native:
            return self._recv_one(timeout)
        self._set_timeout(timeout)
        ctypes.memmove(self._msgs, self._pristine, len(self._pristine))
        n = _libc.recvmmsg(self.sock.fileno(), self._msgs, self.batch, MSG_WAITFORONE, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (11, 4):          # EAGAIN (the timeout), EINTR
                return 0
            raise OSError(err, f"recvmmsg: {os.strerror(err)}")
        self.lengths[:n] = self._msg_words[:n, self._len_word]
        # SCM_TIMESTAMPNS: cmsghdr (len u64, level i32, type i32), then struct timespec
        ctrl = self._ctrl[:n]
        level = ctrl[:, 8:12].copy().view(np.int32).ravel()
        kind = ctrl[:, 12:16].copy().view(np.int32).ravel()
        sec = ctrl[:, 16:24].copy().view(np.int64).ravel()
        nsec = ctrl[:, 24:32].copy().view(np.int64).ravel()
        stamped = (level == socket.SOL_SOCKET) & (kind == SO_TIMESTAMPNS)
        self.recv_ns[:n] = np.where(stamped, sec * 1_000_000_000 + nsec, time.time_ns())
        return n

    def source_keys(self, n: int) -> np.ndarray:
        """(n, 20) bytes identifying each datagram's source (family, port, address)."""
        if not self.native:
            return np.zeros((n, 20), np.uint8)
        return self._names[:n, :20]

    def source(self, i: int) -> tuple[str, int]:
        """The sender's (address, port) of datagram i of the last batch."""
        if not self.native:
            return self._last_addr
        raw = self._names[i].tobytes()
        family = struct.unpack_from("=H", raw)[0]
        port = struct.unpack_from("!H", raw, 2)[0]
        if family == socket.AF_INET6:
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port

    def _recv_one(self, timeout: float | None) -> int:
        self.sock.settimeout(timeout)
        try:
            n, addr = self.sock.recvfrom_into(memoryview(self.buf[0]))
        except (TimeoutError, socket.timeout):
            return 0
        self._last_addr = addr[:2]
        self.lengths[0] = n
        self.recv_ns[0] = time.time_ns()
        return 1


def enable_gso(sock: socket.socket, segment: int) -> bool:
    """Ask the kernel to cut each send() into datagrams of `segment` bytes."""
    if not _LINUX:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, segment)
        return True
    except OSError:
        return False


def disable_gso(sock: socket.socket) -> None:
    if _LINUX:
        try:
            sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        except OSError:
            pass


def gso_batch_limit(segment: int) -> int:
    return max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // segment))
