#!/usr/bin/env python3
"""labkit analyze against tshark -2 on the same ~1M-packet TCP capture, in the same run.

Records (as root) a bulk TCP transfer between two network namespaces joined by a veth pair,
offloads off so segments are MSS-sized, with 1% of data segments dropped at random by an
nftables rule (so there are retransmissions, dup ACKs, SACK), captured by dumpcap with a
96-byte snaplen; or takes --pcap FILE. Then times `labkit analyze --format json` (once
cold, once warm: numba's compiled kernels are cached on disk after the first run) and
`tshark -2 -T fields` with the tcp.analysis fields, and prints packets/s, the ratio and the
peak memory of each. The last line is machine-readable.

Everything it creates is named lkbench-<pid>-* and removed on every exit path.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = f"lkbench-{os.getpid()}"
NS_A, NS_B = f"{PREFIX}-a", f"{PREFIX}-b"
VETH_A, VETH_B = f"lkb{os.getpid() % 100000}a", f"lkb{os.getpid() % 100000}b"
ADDR_A, ADDR_B = "10.231.0.1", "10.231.0.2"
PORT = 5201
TSHARK_FIELDS = ["frame.number", "tcp.stream", "tcp.analysis.retransmission",
                 "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission",
                 "tcp.analysis.duplicate_ack", "tcp.analysis.lost_segment",
                 "tcp.analysis.ack_lost_segment", "tcp.analysis.out_of_order",
                 "tcp.analysis.zero_window", "tcp.analysis.window_full",
                 "tcp.analysis.keep_alive", "tcp.analysis.ack_rtt",
                 "tcp.analysis.bytes_in_flight"]

SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
buf = bytes(65536); end = time.monotonic() + float(sys.argv[3])
try:
    while time.monotonic() < end:
        s.sendall(buf)
except OSError:
    pass
"""
RECEIVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
print("ready", flush=True)
c, _ = srv.accept()
while c.recv(1 << 20):
    pass
"""


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def ns(name, *cmd, **kw):
    return sh("ip", "netns", "exec", name, *cmd, **kw)


class Lab:
    """Two namespaces, a veth pair, a lossy nftables rule; torn down on every exit."""

    def __init__(self, loss_pct: float):
        self.loss = loss_pct
        self.undo: list[list[str]] = []

    def __enter__(self):
        try:
            for n in (NS_A, NS_B):
                sh("ip", "netns", "add", n)
                self.undo.append(["ip", "netns", "del", n])
            sh("ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name",
               VETH_B, "netns", NS_B)
            for n, dev, addr in ((NS_A, VETH_A, ADDR_A), (NS_B, VETH_B, ADDR_B)):
                ns(n, "ip", "addr", "add", f"{addr}/24", "dev", dev)
                ns(n, "ip", "link", "set", dev, "up")
                ns(n, "ip", "link", "set", "lo", "up")
                # real MSS-sized segments on the wire, not 64 KB super-segments
                ns(n, "ethtool", "-K", dev, "gso", "off", "tso", "off", "gro", "off",
                   check=False)
            rule = (f"table inet {PREFIX.replace('-', '_')} {{\n chain in {{\n"
                    f"  type filter hook input priority 0;\n"
                    f"  tcp dport {PORT} meta length > 100 "
                    f"numgen random mod 1000 < {int(self.loss * 10)} drop\n }}\n}}\n")
            ns(NS_B, "nft", "-f", "-", input=rule)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for cmd in reversed(self.undo):
            sh(*cmd, check=False)
        self.undo.clear()


def record(path: Path, packets: int, seconds: float, loss: float) -> float:
    t0 = time.monotonic()
    with Lab(loss):
        rx = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", RECEIVER,
                               ADDR_B, str(PORT)], stdout=subprocess.PIPE, text=True)
        cap = tx = None
        try:
            rx.stdout.readline()
            cap = subprocess.Popen(["ip", "netns", "exec", NS_B, "dumpcap", "-i", VETH_B, "-s",
                                    "96", "-B", "256", "-n", "-q", "-c", str(packets), "-w",
                                    str(path), "-f", f"tcp port {PORT}"],
                                   stderr=subprocess.PIPE, text=True)
            for line in cap.stderr:
                if "Capturing on" in line:
                    break
            tx = subprocess.Popen(["ip", "netns", "exec", NS_A, sys.executable, "-c", SENDER,
                                   ADDR_B, str(PORT), str(seconds)])
            cap.wait(seconds + 30)
        finally:
            for p in (tx, cap, rx):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGINT if p is cap else signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
    return time.monotonic() - t0


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err[:500]}")
    return elapsed, usage.ru_maxrss * 1024


def count_packets(path: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from toolkit.pcap import read_capture
    return len(read_capture(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", type=Path, help="use this capture instead of recording one")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--loss", type=float, default=1.0, help="percent of data segments dropped")
    ap.add_argument("--seconds", type=float, default=60, help="longest recording time")
    ap.add_argument("--keep", action="store_true", help="keep the recorded capture")
    ap.add_argument("--out", type=Path, help="directory for the recorded capture")
    args = ap.parse_args()
    labkit = shutil.which("labkit") or str(Path(sys.executable).with_name("labkit"))
    tshark = shutil.which("tshark")
    if not tshark:
        raise SystemExit("tshark is needed for the comparison (make test installs it as root)")
    tmp = None
    if args.pcap:
        path = args.pcap
    else:
        if os.geteuid() != 0:
            raise SystemExit("recording needs root (namespaces, nftables, dumpcap); "
                             "or give --pcap FILE")
        out = args.out or Path(tmp := tempfile.mkdtemp(prefix="lkbench-"))
        out.mkdir(parents=True, exist_ok=True)
        path = out / "bench.pcapng"
        secs = record(path, args.packets, args.seconds, args.loss)
        print(f"recorded {path} in {secs:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    try:
        n = count_packets(path)
        cold, _ = timed([labkit, "analyze", str(path), "--format", "json"])
        warm, labkit_rss = timed([labkit, "analyze", str(path), "--format", "json"])
        ts_time, ts_rss = timed([tshark, "-2", "-n", "-r", str(path), "-T", "fields",
                                 *[x for f in TSHARK_FIELDS for x in ("-e", f)]])
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    lk_pps, ts_pps = n / warm, n / ts_time
    print(f"{'tool':<22}{'seconds':>10}{'packets/s':>14}{'peak MB':>10}{'bytes/packet':>14}")
    print(f"{'labkit analyze (cold)':<22}{cold:>10.2f}{n / cold:>14,.0f}")
    print(f"{'labkit analyze':<22}{warm:>10.2f}{lk_pps:>14,.0f}{labkit_rss / 1e6:>10.0f}"
          f"{labkit_rss / n:>14.0f}")
    print(f"{'tshark -2':<22}{ts_time:>10.2f}{ts_pps:>14,.0f}{ts_rss / 1e6:>10.0f}"
          f"{ts_rss / n:>14.0f}")
    print(f"packets={n} labkit_pps={lk_pps:.0f} tshark_pps={ts_pps:.0f} "
          f"ratio={lk_pps / ts_pps:.1f} labkit_peak_bytes_per_packet={labkit_rss / n:.0f}")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
