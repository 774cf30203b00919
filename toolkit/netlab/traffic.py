"""Measurement traffic for `labkit selftest`: tiny stdlib programs run inside lab hosts.

    python -m toolkit.netlab.traffic udp-recv PORT --count N --idle S
    python -m toolkit.netlab.traffic udp-send HOST PORT --count N --pps R [--size B]
    python -m toolkit.netlab.traffic tcp-recv PORT
    python -m toolkit.netlab.traffic tcp-send HOST PORT --seconds S

Receivers print `ready` once bound (the parent starts the sender only then, so nothing is
lost to a socket that did not exist yet) and one JSON line of results at the end. Every
datagram carries a 64-bit sequence number, so loss and duplication are counted, not
guessed. Load is bounded: a count and a rate for UDP, a duration for TCP, and a deadline
on every receiver. (The full senders and receivers are toolkit.endpoints; these stay
small so the link's test depends on nothing else.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

if not __package__:
    # run by path (the selftest's way: no install needed): the package is two levels up
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from toolkit.procnet import udp_socket_drops  # noqa: E402 - after the path, stdlib only

_SEQ = struct.Struct("!Q")


def udp_recv(port: int, count: int, idle: float, deadline: float) -> dict:
    ahead_of_other_work()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    seen = bytearray(count)
    received = duplicates = stray = 0
    first = last = None
    end = time.monotonic() + deadline
    s.settimeout(deadline)
    while time.monotonic() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        now = time.monotonic()
        first = first if first is not None else now
        last = now
        s.settimeout(idle)        # after the first datagram, quiet for `idle` = the end
        if len(data) < _SEQ.size:
            stray += 1
            continue
        seq = _SEQ.unpack_from(data)[0]
        if seq >= count:
            stray += 1
        elif seen[seq]:
            duplicates += 1
        else:
            seen[seq] = 1
            received += 1
            if received == count:
                break
    # datagrams the kernel dropped at this socket (its buffer full: a receiver the busy
    # machine did not run in time): lost in this host, not on the link
    drops = udp_socket_drops(s) or 0
    return {"received": received, "duplicates": duplicates, "stray": stray,
            "lost": count - received, "socket_drops": drops,
            "seconds": (last - first) if first is not None else 0.0}


def ahead_of_other_work() -> bool:
    """A measurement's sender should offer what it is asked to, and its receiver read in
    time, not whatever a busy machine leaves them (with both cores kept busy, a sender
    asked for 3x the link's ceiling once offered less than the ceiling): nice -10 where
    allowed (root); unprivileged they stay as they are, and the caller's judgement reads
    the rate really offered."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return True
    except OSError:
        return False


def udp_send(host: str, port: int, count: int, pps: float, size: int) -> dict:
    ahead_of_other_work()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))        # send() then skips parsing the address every datagram
    payload = bytearray(max(size, _SEQ.size))
    start = time.monotonic()
    for seq in range(count):
        _SEQ.pack_into(payload, 0, seq)
        due = start + seq / pps
        while (wait := due - time.monotonic()) > 0:
            time.sleep(min(wait, 0.001))
        try:
            s.send(payload)
        except ConnectionRefusedError:
            # an ICMP port unreachable for an earlier datagram (a receiver that gave up),
            # reported instead of sending this one, where sendto() would ignore it: again
            try:
                s.send(payload)
            except ConnectionRefusedError:
                pass
    return {"sent": count, "seconds": time.monotonic() - start}


def run_queue_wait_s() -> float | None:
    """Seconds this program has spent runnable but waiting for a CPU (the second field of
    /proc/self/schedstat, in ns): how much a busy machine held it back. None where the
    kernel does not keep it (no CONFIG_SCHED_INFO, not Linux)."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _waited(before: float | None) -> float | None:
    after = run_queue_wait_s()
    return None if before is None or after is None else after - before


def tcp_recv(port: int, deadline: float) -> dict:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(deadline)
    print("ready", flush=True)
    conn, _ = ls.accept()
    waited = run_queue_wait_s()
    conn.settimeout(deadline)
    buf = bytearray(1 << 20)
    total = 0
    first = last = None
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        now = time.monotonic()
        first = first if first is not None else now
        last = now
        total += n
    secs = (last - first) if first is not None else 0.0
    return {"bytes": total, "seconds": secs,
            "goodput_bps": total * 8 / secs if secs > 0 else 0.0, "waited_s": _waited(waited)}


def tcp_send(host: str, port: int, seconds: float) -> dict:
    s = socket.create_connection((host, port), timeout=10)
    waited = run_queue_wait_s()
    chunk = bytes(65536)
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)                      # wait for the receiver's close: everything was delivered
    s.close()
    return {"bytes": sent, "waited_s": _waited(waited)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toolkit.netlab.traffic")
    sub = p.add_subparsers(dest="what", required=True)
    ur = sub.add_parser("udp-recv")
    ur.add_argument("port", type=int)
    ur.add_argument("--count", type=int, required=True)
    ur.add_argument("--idle", type=float, default=1.0)
    ur.add_argument("--deadline", type=float, default=30.0)
    us = sub.add_parser("udp-send")
    us.add_argument("host")
    us.add_argument("port", type=int)
    us.add_argument("--count", type=int, required=True)
    us.add_argument("--pps", type=float, required=True)
    us.add_argument("--size", type=int, default=100)
    tr = sub.add_parser("tcp-recv")
    tr.add_argument("port", type=int)
    tr.add_argument("--deadline", type=float, default=30.0)
    ts = sub.add_parser("tcp-send")
    ts.add_argument("host")
    ts.add_argument("port", type=int)
    ts.add_argument("--seconds", type=float, required=True)
    a = p.parse_args(argv)
    if a.what == "udp-recv":
        out = udp_recv(a.port, a.count, a.idle, a.deadline)
    elif a.what == "udp-send":
        out = udp_send(a.host, a.port, a.count, a.pps, a.size)
    elif a.what == "tcp-recv":
        out = tcp_recv(a.port, a.deadline)
    else:
        out = tcp_send(a.host, a.port, a.seconds)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
