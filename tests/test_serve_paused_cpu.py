"""A slow reader waits without spinning: `labkit serve --pause` / `--slow-read` costs almost
no CPU while a client's data waits unread, in every TCP server model and over UDP. The
selectors model used to keep asking for read events on a paused connection and then read
nothing: ~18,000 wake-ups in 50 ms, a core burnt for the whole pause."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import REPO
from toolkit import wire
from toolkit.endpoints import control
from toolkit.endpoints.servers import MODELS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="CPU time from /proc/PID/stat")

MEASURE_S = 1.0
# CPU over MEASURE_S beyond what the same server costs idle (its resource sampler reads
# /proc every 20 ms, a few hundredths of a second each second): a spinning server uses ~1.0
MOST_CPU_S = 0.1


def _family(pid: int) -> list[int]:
    """The process and its descendants (the process model serves in forked children)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue                       # it ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _serve(*args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "-p", "0", "-B",
                             "127.0.0.1", "-q", "-t", "20", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    line = proc.stdout.readline()
    assert "listening" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(line.split("port")[1].split()[0])


def _tcp_client(port: int) -> socket.socket:
    """A bulk client whose data waits unread in the server's socket."""
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(control.encode(1, control.hello("tcp", "bulk", 1))
              + b"".join(wire.frame(wire.Header(1, i, time.time_ns()), bytes(4000))
                         for i in range(16)))
    return c


def _udp_client(port: int) -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.connect(("127.0.0.1", port))
    c.send(control.encode(1, control.hello("udp", "bulk", 1)))
    for i in range(32):
        c.send(wire.frame(wire.Header(1, i, time.time_ns()), bytes(1000)))
    return c


@pytest.mark.parametrize("slow", [["--pause", "5"], ["--slow-read", "8K"]],
                         ids=["pause", "slow-read"])
@pytest.mark.parametrize("model", [*MODELS, "udp"])
def test_a_slow_reader_waits_without_spinning(model, slow):
    # --slow-read 8K: 1 KB a second, so after its first read of 4 KB (TCP) the server has
    # seconds to wait with more data ready in its socket; a 1 KB datagram (UDP) likewise
    where = ["--proto", "udp"] if model == "udp" else ["--model", model]
    proc, port = _serve(*where, *slow)
    client = None
    try:
        time.sleep(0.2)
        before = cpu_seconds([proc.pid])
        time.sleep(MEASURE_S)
        idle = cpu_seconds([proc.pid]) - before
        client = (_udp_client if model == "udp" else _tcp_client)(port)
        time.sleep(0.4)                    # connected, read once (slow-read), now waiting
        family = _family(proc.pid)
        if model == "process":
            assert len(family) > 1, "the connection's child process is not there"
        before = cpu_seconds(family)
        time.sleep(MEASURE_S)
        used = cpu_seconds(family) - before
        print(f"\nCPU {model} {slow[0]}: {used:.2f} s waiting, {idle:.2f} s idle")
        assert proc.poll() is None
        assert used - idle < MOST_CPU_S, \
            f"{model} {' '.join(slow)}: {used:.2f} s of CPU in {MEASURE_S} s of waiting " \
            f"(idle: {idle:.2f} s)"
    finally:
        if client is not None:
            if model != "udp":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        for pid in reversed(_family(proc.pid)):      # the report is not needed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)
