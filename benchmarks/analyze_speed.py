#!/usr/bin/env python3
"""labkit analyze against tshark -2 on the same ~1M-packet TCP capture, in the same run.

Records (as root) a bulk TCP transfer between two network namespaces joined by a veth
pair, offloads off so segments are MSS-sized, with 1% of the data segments arriving at b
dropped at random by an nftables rule (so there are retransmissions, dup ACKs and SACK
blocks), captured by dumpcap at b's veth with a 96-byte snaplen; or takes --pcap FILE.

Then times, each in a fresh process (the first labkit run once more before, cold: the
first run fills numba's cache when the kernels are not compiled ahead of time):
- the conversation analysis: `labkit analyze FILE --format json` (one row a conversation);
- the per-packet output, the work `tshark -T fields` does: `labkit analyze FILE --packets`
  as CSV, as JSON Lines and as Parquet, each written to a file; and the DataFrame
  `toolkit.analyze(FILE).packets` and the Parquet file `.write_packets(PATH, "parquet")`,
  each timed after the analysis (the output's own cost);
- `tshark -n -2 -T fields` with the same per-packet fields (addresses, ports, stream,
  flags, sequence numbers, lengths, window and the tcp.analysis verdicts), written to a
  file as well.
It prints packets/s, the ratio to tshark and the peak memory of each: the whole peak RSS
over the packets, and the part that grows with the capture. That part is the peak above
the same command's on the capture's first BASE_FRAMES frames, which holds what every run
pays once (the interpreter, numpy, pyarrow, the compiled kernels; numba and its LLVM too
when the kernels are not built ahead of time, `make aot`), over the packets beyond them.
The last two lines are machine-readable, the conversation analysis first, the per-packet
CSV last:

    conversations: packets=N labkit_pps=N tshark_pps=N ratio=R \
        labkit_peak_bytes_per_packet=B labkit_marginal_bytes_per_packet=M
    packets=N labkit_pps=N tshark_pps=N ratio=R \
        labkit_peak_bytes_per_packet=B labkit_marginal_bytes_per_packet=M
(each on one line).

Everything it creates is named lk-bench-<pid>-* (veths lkb<pid>a/b, nftables table
inet labkit_bench_<pid> inside b's namespace) and removed on every exit path, SIGTERM included.
The load is bounded three ways: dumpcap stops after --packets packets, the sender after
enough bytes for them, and both after --seconds.

Examples:
    sudo .venv/bin/python benchmarks/analyze_speed.py                 # ~1M packets
    sudo .venv/bin/python benchmarks/analyze_speed.py --packets 100000
    .venv/bin/python benchmarks/analyze_speed.py --pcap big.pcapng    # no root needed
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit import capture  # noqa: E402  (the repository, also when not installed)

PID = os.getpid()
PREFIX = f"lk-bench-{PID}"
NS_A, NS_B = f"{PREFIX}-a", f"{PREFIX}-b"
VETH_A, VETH_B = f"lkb{PID % 10_000_000}a", f"lkb{PID % 10_000_000}b"   # IFNAMSIZ 15
NFT_TABLE = f"labkit_bench_{PID}"
ADDR_A, ADDR_B = "10.231.0.1", "10.231.0.2"
PORT = 5201
MSS = 1448                      # 1500 - 20 (IP) - 20 (TCP) - 12 (timestamps)
SNAPLEN = 96                    # headers only: Ethernet + IP + TCP with options
TSHARK_FIELDS = ["frame.number", "frame.time_relative", "frame.len", "ip.src", "ip.dst",
                 "tcp.srcport", "tcp.dstport", "tcp.stream", "tcp.flags", "tcp.seq",
                 "tcp.ack", "tcp.seq_raw", "tcp.ack_raw", "tcp.len",
                 "tcp.window_size", "tcp.analysis.retransmission",
                 "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission",
                 "tcp.analysis.duplicate_ack", "tcp.analysis.lost_segment",
                 "tcp.analysis.ack_lost_segment", "tcp.analysis.out_of_order",
                 "tcp.analysis.zero_window", "tcp.analysis.zero_window_probe",
                 "tcp.analysis.window_full", "tcp.analysis.window_update",
                 "tcp.analysis.keep_alive", "tcp.analysis.keep_alive_ack",
                 "tcp.analysis.duplicate_ack_num", "tcp.analysis.duplicate_ack_frame",
                 "tcp.analysis.acks_frame", "tcp.analysis.ack_rtt",
                 "tcp.analysis.bytes_in_flight"]

# The endpoints are tiny programs run with `ip netns exec`; both end by themselves
# (byte and time limits) and are terminated by the caller's finally in any case.
SENDER = """
import socket, sys, time
host, port, limit, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=10)
buf, sent, end = bytes(65536), 0, time.monotonic() + seconds
try:
    while sent < limit and time.monotonic() < end:
        sent += s.send(buf)
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass
print(sent, flush=True)
"""
RECEIVER = """
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(float(sys.argv[3]))
print("ready", flush=True)
c, _ = srv.accept(); c.settimeout(30)
while c.recv(1 << 20):
    pass
"""


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def in_ns(name: str, *cmd, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, **kw)


def plan(loss_pct: float) -> list[tuple[list[str], list[str] | None, str | None]]:
    """The topology as (command, undo, stdin) steps; pure, so it can be read and tested."""
    rule = (f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority 0; policy accept;\n"
            # data segments only (longer than bare headers), so the handshake, the ACKs
            # and the FINs get through and the transfer always completes
            f"    ip daddr {ADDR_B} tcp dport {PORT} meta length > 100 "
            f"numgen random mod 10000 < {round(loss_pct * 100)} counter drop\n"
            f"  }}\n}}\n")
    steps: list[tuple[list[str], list[str] | None, str | None]] = [
        (["ip", "netns", "add", NS_A], ["ip", "netns", "del", NS_A], None),
        (["ip", "netns", "add", NS_B], ["ip", "netns", "del", NS_B], None),
        # deleting a namespace deletes its end of the pair, and with it the peer
        (["ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name", VETH_B,
          "netns", NS_B], None, None),
    ]
    for ns, dev, addr in ((NS_A, VETH_A, ADDR_A), (NS_B, VETH_B, ADDR_B)):
        steps += [
            (["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev], None, None),
            (["ip", "-n", ns, "link", "set", "lo", "up"], None, None),
            (["ip", "-n", ns, "link", "set", dev, "up"], None, None),
            # real MSS-sized segments on the wire and in the capture, not 64 KB aggregates
            (["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gso", "off", "tso", "off",
              "gro", "off"], None, None),
        ]
    if loss_pct > 0:
        steps.append((["ip", "netns", "exec", NS_B, "nft", "-f", "-"], None, rule))
    return steps


class Lab:
    """Two namespaces, a veth pair, a lossy nftables rule; torn down on every exit path."""

    def __init__(self, loss_pct: float):
        self.steps = plan(loss_pct)
        self.undo: list[list[str]] = []

    def __enter__(self) -> Lab:
        try:
            for cmd, undo, stdin in self.steps:
                r = sh(*cmd, check=False, input=stdin)
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
                if undo:
                    self.undo.append(undo)
        except BaseException:
            self.__exit__()
            raise
        return self

    def offloads(self) -> str:
        r = in_ns(NS_B, "ethtool", "-k", VETH_B, check=False)
        keep = ("tcp-segmentation-offload", "generic-segmentation-offload",
                "generic-receive-offload")
        return ", ".join(line.strip() for line in r.stdout.splitlines()
                         if line.split(":")[0].strip() in keep)

    def dropped_by_rule(self) -> int | None:
        r = in_ns(NS_B, "nft", "list", "table", "inet", NFT_TABLE, check=False)
        for word in r.stdout.split("counter packets ")[1:]:
            return int(word.split()[0])
        return None

    def __exit__(self, *exc) -> None:
        while self.undo:
            cmd = self.undo.pop()
            if cmd[:3] == ["ip", "netns", "del"]:
                # a process still inside would keep the namespace (and veth) alive unseen;
                # everything in it is ours, started by this script
                for pid in sh("ip", "netns", "pids", cmd[3], check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
            sh(*cmd, check=False)


def stop_process(p: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def record(path: Path, packets: int, seconds: float, loss: float) -> dict:
    """Record a lossy bulk transfer into `path`; returns what happened."""
    t0 = time.monotonic()
    # data segments are about 2/3 of the packets (an ACK per two segments, RFC 9293
    # 3.8.6.3); the sender may send 50% more than that before its byte limit stops it
    byte_limit = int(packets * MSS)
    with Lab(loss) as lab:
        rx = tx = None
        try:
            rx = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c",
                                   RECEIVER, ADDR_B, str(PORT), str(seconds)],
                                  stdout=subprocess.PIPE, text=True)
            if rx.stdout.readline().strip() != "ready":
                raise RuntimeError("the receiver did not start")
            with capture.start(VETH_B, path, snaplen=SNAPLEN, netns=NS_B,
                               bpf_filter=f"tcp port {PORT}", buffer_mib=256,
                               packet_limit=packets) as cap:
                tx = subprocess.Popen(["ip", "netns", "exec", NS_A, sys.executable, "-c",
                                       SENDER, ADDR_B, str(PORT), str(byte_limit),
                                       str(seconds)], stdout=subprocess.PIPE, text=True)
                end = time.monotonic() + seconds + 15
                while cap.running and tx.poll() is None and time.monotonic() < end:
                    time.sleep(0.1)
                if cap.running:            # the sender finished first: let the tail arrive
                    tx.wait(max(1.0, end - time.monotonic()))
            stop_process(tx)
            stop_process(rx)
        finally:
            stop_process(tx)
            stop_process(rx)
        info = {"seconds": time.monotonic() - t0, "offloads": lab.offloads(),
                "dropped_by_rule": lab.dropped_by_rule(), "counters": cap.counters,
                "repaired": cap.repaired}
    return info


# An installed labkit runs with its bytecode cached, as Python does by default: the cold
# run writes the .pyc files (and numba's compiled kernels), the warm runs use them. A shell
# that sets PYTHONDONTWRITEBYTECODE would make every run compile the sources again.
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# Linux carries a process's peak RSS across exec (exec_mmap keeps the larger of the old
# and new high-water marks), so a tool started straight from this process would report at
# least this process's own peak, which recording and counting a million packets raise to
# ~300 MB. A small fresh interpreter forks and times the tool instead, so the figure is the
# tool's own; it writes them to the file named by LABKIT_BENCH_REPORT.
_LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
with open(os.environ["LABKIT_BENCH_REPORT"], "w") as f:
    f.write(f"{time.perf_counter() - t0} {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process; its stdout is discarded."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        p = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *cmd], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err,
                             env={**RUN_ENV, "LABKIT_BENCH_REPORT": str(report)})
        try:
            p.wait()
        except BaseException:
            p.kill()
            p.wait()
            raise
        elapsed, code, maxrss_kib = report.read_text().split() if report.exists() else (
            "0", str(p.returncode), "0")
        if int(code) != 0 or p.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:3])} ... failed ({code}): "
                             f"{err.read().decode(errors='replace')[-800:]}")
    return float(elapsed), int(maxrss_kib) * 1024      # Linux reports ru_maxrss in KiB


def labkit_command() -> list[str]:
    exe = Path(sys.executable).with_name("labkit")
    if exe.exists():
        return [str(exe)]
    if shutil.which("labkit"):
        return [shutil.which("labkit")]
    return [sys.executable, "-m", "toolkit.cli"]


def _raise_on_sigterm(signum, frame):
    # turn a polite kill into an exception, so every finally (namespaces, captures) runs
    raise KeyboardInterrupt(f"signal {signum}")


DATAFRAME = """
import sys, time
import toolkit
a = toolkit.analyze(sys.argv[1])
t = time.perf_counter()
if len(sys.argv) > 2:
    a.write_packets(sys.argv[2], "parquet")
else:
    a.packets
print(time.perf_counter() - t)
"""


BASE_FRAMES = 1000


def measure(args, path: Path, n: int, tshark: str, work: Path) -> dict:
    """{work: (seconds, peak RSS bytes, peak RSS bytes on the first BASE_FRAMES frames)},
    each the best of --repeat runs."""
    lk = labkit_command()
    small = work / "base.pcapng"
    subprocess.run([shutil.which("editcap") or "editcap", "-r", str(path), str(small),
                    f"1-{BASE_FRAMES}"], check=True, capture_output=True)

    def best(cmd):
        secs, rss = min((timed(cmd) for _ in range(args.repeat)), key=lambda r: r[0])
        return secs, rss, timed([str(small) if x == str(path) else x for x in cmd])[1]
    if args.labkit:                                   # a stand-in for the conversations
        conv = args.labkit.split() + [str(path)]
    else:
        conv = lk + ["analyze", str(path), "--format", "json", "-o", str(work / "c.json")]
    rows = {}
    rows["conversations, cold (first run)"] = (*timed(conv), 0)
    rows["conversations (--format json)"] = best(conv)
    for label, fmt, out in (("per-packet CSV (--packets --format csv)", "csv", "p.csv"),
                            ("per-packet JSON Lines (--format json)", "json", "p.jsonl"),
                            ("per-packet Parquet (--format parquet)", "parquet", "pq")):
        shutil.rmtree(work / out, ignore_errors=True)
        rows[label] = best(lk + ["analyze", str(path), "--packets", "--format", fmt,
                                 "-o", str(work / out)])
        if fmt == "parquet":
            shutil.rmtree(work / out, ignore_errors=True)
        else:
            (work / out).unlink()
    def after_analysis(*extra):
        return min(float(subprocess.run([sys.executable, "-c", DATAFRAME, str(path), *extra],
                                        capture_output=True, text=True, check=True, cwd=REPO,
                                        env=RUN_ENV).stdout.split()[-1])
                   for _ in range(args.repeat))
    rows["the DataFrame .packets (after the analysis)"] = (after_analysis(), 0, 0)
    # the same start as the DataFrame's: what the per-packet Parquet output itself costs
    rows["Parquet .write_packets (after the analysis)"] = (
        after_analysis(str(work / "after.parquet")), 0, 0)
    (work / "after.parquet").unlink()
    ts_cmd = [tshark, "-n", "-2", "-r", str(path), "-T", "fields",
              *[x for f in TSHARK_FIELDS for x in ("-e", f)]]
    rows["tshark -2 -T fields"] = best(ts_cmd)
    return rows


def kernels_used() -> str:
    """How the labkit runs got their kernels: ahead of time (`make aot`) or numba's cache."""
    from toolkit.pcap import jit
    status = jit.aot_status()
    return f"ahead of time ({status})" if "compiled functions" in status else \
        f"just in time, numba ({status})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pcap", type=Path, help="use this capture instead of recording one")
    ap.add_argument("--packets", type=int, default=1_000_000,
                    help="packets to record (default 1,000,000)")
    ap.add_argument("--loss", type=float, default=1.0,
                    help="percent of data segments dropped at b (default 1)")
    ap.add_argument("--seconds", type=float, default=120,
                    help="longest recording time (default 120)")
    ap.add_argument("--keep", action="store_true", help="keep the recorded capture")
    ap.add_argument("--out", type=Path, help="directory for the recorded capture")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each tool this many times and keep the fastest (default 1)")
    ap.add_argument("--labkit", help="command to time instead of labkit (a stand-in); "
                    "the capture path is appended")
    args = ap.parse_args(argv)
    tshark = shutil.which("tshark")
    if not tshark:
        raise SystemExit("tshark is needed for the comparison (`sudo make test` installs it)")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGHUP, _raise_on_sigterm)
    tmp = None
    try:
        if args.pcap:
            path = args.pcap
        else:
            if os.geteuid() != 0:
                raise SystemExit("recording needs root (namespaces, nftables, capture); "
                                 "or give --pcap FILE")
            out = args.out or Path(tmp := tempfile.mkdtemp(prefix="lkbench-"))
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"bench-{args.packets}.pcapng"
            info = record(path, args.packets, args.seconds, args.loss)
            c = info["counters"]
            print(f"recorded {path} in {info['seconds']:.1f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB); capture dropped "
                  f"{c.dropped}, received {c.received}; nft dropped "
                  f"{info['dropped_by_rule']} data segments; offloads at b: {info['offloads']}"
                  + (f"; {info['repaired']}" if info["repaired"] else ""))
        n = capture.summarize(path).packets
        if n == 0:
            raise SystemExit(f"{path}: no packets")
        work = Path(tempfile.mkdtemp(prefix="lkbench-out-"))
        try:
            rows = measure(args, path, n, tshark, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"kept {tmp}")
    print(f"\n{path}: {n:,} packets; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; kernels: {kernels_used()}")
    ts_time = rows["tshark -2 -T fields"][0]
    print(f"{'work':<44}{'seconds':>9}{'packets/s':>12}{'x tshark':>10}{'peak MB':>9}"
          f"{'bytes/pkt':>11}{'base MB':>9}{'growth B/pkt':>14}")
    extra = max(n - BASE_FRAMES, 1)
    for label, (secs, rss, base) in rows.items():
        peak = f"{rss / 1e6:>9.0f}{rss / n:>11.0f}" if rss else f"{'':>9}{'':>11}"
        if base:
            peak += f"{base / 1e6:>9.0f}{(rss - base) / extra:>14.0f}"
        print(f"{label:<44}{secs:>9.2f}{n / secs:>12,.0f}{ts_time / secs:>10.1f}{peak}")
    for prefix, key in (("conversations: ", "conversations (--format json)"),
                        ("", "per-packet CSV (--packets --format csv)")):
        secs, rss, base = rows[key]
        print(f"{prefix}packets={n} labkit_pps={n / secs:.0f} tshark_pps={n / ts_time:.0f} "
              f"ratio={ts_time / secs:.2f} labkit_peak_bytes_per_packet={rss / n:.0f} "
              f"labkit_marginal_bytes_per_packet={(rss - base) / extra:.0f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        # the finally blocks have already removed namespaces, captures and temp files
        print(f"interrupted ({e or 'Ctrl-C'}); everything created was removed",
              file=sys.stderr)
        sys.exit(130)
