"""What the kernel's /proc/net tables say of one socket. Stdlib only: the selftest's small
traffic programs (netlab/traffic.py, run by path, maybe as an unprivileged user with the
system's python) read it too."""

from __future__ import annotations

import os
import socket


def udp_socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (its buffer full, or a bad checksum):
    the `drops` column of its line in /proc/net/udp (udp6), found by the socket's inode.
    Data and control datagrams alike; None where there is no such file (not Linux)."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                next(f, None)                         # the header line
                for line in f:
                    words = line.split()
                    if len(words) >= 13 and words[9] == inode:
                        return int(words[12])
        except (OSError, ValueError):
            continue
    return None
