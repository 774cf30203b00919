#!/usr/bin/env python3
"""labkit's endpoints against iperf3 (and sockperf for request/response), same path, same run.

Builds the lab (a - r - b, offloads off; root or rootless) and measures, each tool in turn:

    tcp        one TCP stream a->b for --seconds: receiver's goodput (offloads off, as
               in the labs; as root also with offloads on: tcp_offl, 64 KB segments)
    udp64      UDP a->b, 64-byte datagrams, no rate limit: datagrams/s that arrived
    udp1400    the same with 1400-byte datagrams
    rr         request/response, 64-byte messages, back to back: transactions/s
               (iperf3 has no such test; sockperf ping-pong is the C reference),
               each tool's two processes where the scheduler puts them
    rr_split   the same with the client on one CPU and the server on another (taskset),
               as on two hosts; where fewer than two CPUs are usable, not measured
    loss       UDP at 20 Mbit/s over a link that drops 2% (nftables): each tool's loss
               count against the kernel's own count of the packets it dropped
    pacing     UDP paced at 10 Mbit/s, 1000-byte datagrams, captured at b: the rate, and
               the spread of inter-arrival gaps (an even sender's gaps are all 0.8 ms)

Prints each pair and the ratio (labkit / reference); the last line is machine-readable:

    tcp_ratio=R udp64_pps_ratio=R udp1400_pps_ratio=R rr_ratio=R rr_split_ratio=R

With --rounds N each row is N pairs, the two tools taking turns at going first (a machine
that speeds up or slows down during a pair favours neither): each tool's median, and the
median of the N pair ratios, with every pair's ratio listed. On this project's 2-vCPU
machine one pair can differ from the next by 2x, more than the differences sought.

Without privileges for a lab it runs on loopback and says so (no loss or pacing rows).
Everything is bounded in time (--seconds per measurement) and removed on exit.

    sudo .venv/bin/python benchmarks/endpoints_vs_iperf3.py [--seconds 3] [--rounds 1]
                                                             [--loopback]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit import netlab  # noqa: E402
from toolkit.netlab import impairment as I  # noqa: E402
from toolkit.netlab import kernel as K  # noqa: E402

LABKIT = [sys.executable, "-m", "toolkit.cli"]
PORT_IPERF, PORT_LABKIT, PORT_SOCKPERF = 5201, 5301, 5401


class Loopback:
    """The same interface as a Lab, on this host's loopback (no privileges needed)."""

    run_id = "loopback"

    def addr(self, node, family=4):
        return "127.0.0.1"

    def exec(self, node, argv, **kw):
        return subprocess.run(argv, capture_output=True, text=True, **kw)

    def popen(self, node, argv, **kw):
        return subprocess.Popen(argv, **kw)


def _server(lab, argv, ready: str | None = None, settle: float = 0.3):
    proc = lab.popen("b", argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
    if ready:
        line = proc.stdout.readline()
        if ready not in line:
            raise RuntimeError(f"{argv[0]} did not start: {line} {proc.stderr.read()}")
    else:
        time.sleep(settle)
    return proc


def _stop(proc) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _json(done: subprocess.CompletedProcess, what: str) -> dict:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-400:] or done.stdout[-400:]}")
    return json.loads(done.stdout)


def iperf3_tcp(lab, secs):
    srv = _server(lab, ["iperf3", "-s", "-p", str(PORT_IPERF)])
    try:
        doc = _json(lab.exec("a", ["iperf3", "-c", lab.addr("b"), "-p", str(PORT_IPERF), "-t",
                                   str(secs), "-J"], timeout=secs + 30), "iperf3")
    finally:
        _stop(srv)
    end = doc["end"]
    return {"bps": end["sum_received"]["bits_per_second"],
            "retrans": end["sum_sent"].get("retransmits")}


def iperf3_udp(lab, secs, length, rate="0", tries=3):
    errors = []
    for _ in range(tries):
        srv = _server(lab, ["iperf3", "-s", "-p", str(PORT_IPERF)])
        try:
            doc = _json(lab.exec("a", ["iperf3", "-c", lab.addr("b"), "-p", str(PORT_IPERF),
                                       "-u", "-b", rate, "-l", str(length), "-t", str(secs),
                                       "-J"], timeout=secs + 30), "iperf3")
        finally:
            _stop(srv)
        end = doc.get("end") or {}
        # iperf3 3.12 writes end.sum for UDP; some runs (and versions) have only the
        # sender's and the receiver's sums: the receiver's is the one with the loss in it
        s = end.get("sum_received") or end.get("sum")
        if s:
            break
        # iperf3 itself sometimes ends a UDP test early, its control connection failing
        # ("unable to read from stream socket: Resource temporarily unavailable", seen in
        # an idle CI run): the reference's failure, not a measurement; run it again
        errors.append(doc.get("error"))
        print(f"iperf3 -u failed ({doc.get('error')!r}); running it again", file=sys.stderr)
    else:
        raise RuntimeError(f"iperf3 -u gave no end summary in {tries} runs (errors: "
                           f"{errors!r})")
    got = s["packets"] - s["lost_packets"]
    return {"sent": s["packets"], "received": got, "lost": s["lost_packets"],
            "pps": got / s["seconds"], "seconds": s["seconds"]}


# request/response with the client on the first CPU this process may use and the server
# on the second (None: fewer than two, or no taskset)
_ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SPLIT_CPUS = (tuple(_ALLOWED[:2]) if len(_ALLOWED) >= 2 and shutil.which("taskset")
              else None)


def _on(cpu: int | None, argv: list[str]) -> list[str]:
    """argv run on one CPU (taskset), or where the scheduler puts it (None)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def labkit_run(lab, secs, server_args, send_args, tmp: Path, cpus=(None, None)):
    out_s, out_c = tmp / "server.json", tmp / "client.json"
    srv = _server(lab, _on(cpus[1], [*LABKIT, "serve", "-p", str(PORT_LABKIT), "-1", "-q",
                                     "--json-file", str(out_s), *server_args]),
                  ready="listening")
    try:
        done = lab.exec("a", _on(cpus[0], [*LABKIT, "send", lab.addr("b"), "-p",
                                           str(PORT_LABKIT), "-q", "--json-file", str(out_c),
                                           *send_args]), timeout=secs + 60, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"labkit send failed: {done.stderr.strip()[-400:]}")
        srv.wait(timeout=30)
    finally:
        _stop(srv)
    return json.loads(out_c.read_text()), json.loads(out_s.read_text())


def labkit_tcp(lab, secs, tmp):
    client, _ = labkit_run(lab, secs, [], ["-t", str(secs)], tmp)
    m = client["end"]["peer"]["messages"]
    return {"bps": m["payload_bytes"] * 8 / m["duration_s"],
            "retrans": client["end"].get("tcp_info", {}).get("total_retrans")}


def retransmitted(runs: list[dict]) -> str:
    """The median of the sender's retransmitted segments (TCP_INFO's total_retrans, which
    is iperf3's "Retr" too): a pair's ratio far from the others usually had more."""
    got = [r["retrans"] for r in runs if r["retrans"] is not None]
    return f"{np.median(got):,.0f}" if got else "n/a"


def labkit_udp(lab, secs, length, tmp, rate="0"):
    client, server = labkit_run(lab, secs, ["--proto", "udp"],
                                ["--proto", "udp", "-b", rate, "-l", str(length), "-t",
                                 str(secs)], tmp)
    flow = server["connections"][0]
    return {"sent": client["end"]["datagrams"], "received": flow["packets"],
            "lost": flow["lost"], "pps": flow["packets"] / client["end"]["duration_s"],
            "seconds": client["end"]["duration_s"]}


def sockperf_rr(lab, secs, cpus=(None, None)):
    srv = _server(lab, _on(cpus[1], ["sockperf", "server", "--tcp", "-i", lab.addr("b"), "-p",
                                     str(PORT_SOCKPERF)]), settle=0.5)
    try:
        done = lab.exec("a", _on(cpus[0], ["sockperf", "ping-pong", "--tcp", "-i",
                                           lab.addr("b"), "-p", str(PORT_SOCKPERF), "-t",
                                           str(secs), "-m", "64", "--mps=max"]),
                        timeout=secs + 30)
    finally:
        _stop(srv)
    text = done.stdout + done.stderr
    m = re.search(r"RunTime=([\d.]+) sec; .*?ReceivedMessages=(\d+)", text)
    if not m:
        raise RuntimeError(f"sockperf output not understood: {text[-400:]}")
    return int(m.group(2)) / float(m.group(1))


def labkit_rr(lab, secs, tmp, cpus=(None, None)):
    client, _ = labkit_run(lab, secs, [], ["--mode", "rr", "-t", str(secs), "-l", "64",
                                           "--response-size", "64", "-N"], tmp, cpus)
    return client["end"]["transactions_per_s"]


def loss_pair(lab, secs, tmp):
    """Both tools over a 2% lossy link: their loss counts beside the kernel's."""
    imp = I.from_dict({"a_to_b": {"loss": "2%"}})
    out = {}
    for tool in ("iperf3", "labkit"):
        engine = netlab.Executor(prefix=lab.executor.prefix)
        engine.apply(K.plan_kernel(imp, lab.run_id, lab.netns("r"), have_netem=False))
        try:
            if tool == "iperf3":
                r = iperf3_udp(lab, secs, 1000, rate="20M")
            else:
                r = labkit_udp(lab, secs, 1000, tmp, rate="20M")
            table = lab.exec("r", ["nft", "-j", "list", "table", "inet",
                                   K.table_name(lab.run_id)]).stdout
            r["link_dropped"] = K.parse_nft_drops(table).get("a_to_b", 0)
        finally:
            engine.unwind()
        out[tool] = r
    return out


def pacing_pair(lab, secs, tmp):
    """Paced UDP at 10 Mbit/s, 1000-byte payloads, captured at b: rate and gap spread."""
    from toolkit import analyze, capture

    out = {}
    for tool in ("iperf3", "labkit"):
        path = tmp / f"pacing-{tool}.pcapng"
        port = PORT_IPERF if tool == "iperf3" else PORT_LABKIT
        with capture.start(lab.iface("b", "r"), path, netns=lab.netns("b"), snaplen=96,
                           bpf_filter=f"udp dst port {port} and greater 1000"):
            if tool == "iperf3":
                iperf3_udp(lab, secs, 1000, rate="10M")
            else:
                labkit_udp(lab, secs, 1000, tmp, rate="10M")
        pk = analyze(path).packets
        t = pk["time_s"].to_numpy(dtype=float)
        t = t[len(t) // 10:]                         # skip the start-up
        gaps = (t[1:] - t[:-1]) * 1e3
        payload_bits = 1000 * 8                      # both tools: 1000-byte UDP payloads,
        nominal = payload_bits / 10e6 * 1e3          # and both count the rate in payload
        p10, p50, p90 = np.percentile(gaps, [10, 50, 90])
        rate = (len(t) - 1) * payload_bits / (t[-1] - t[0])
        out[tool] = {"rate_bps": rate, "gap_ms": {"p10": p10, "p50": p50, "p90": p90},
                     "within_10pct": float(np.mean(np.abs(gaps - nominal) < 0.1 * nominal)),
                     "nominal_gap_ms": nominal}
    return out


def rounds_of(n: int, ours, ref) -> tuple[list, list]:
    """Each tool n times, labkit first in the odd rounds and the reference first in the
    even ones: ([labkit's results], [the reference's])."""
    a, b = [], []
    for i in range(n):
        if i % 2 == 0:
            a.append(ours())
            b.append(ref())
        else:
            b.append(ref())
            a.append(ours())
    return a, b


def row(name: str, unit: str, ours: list[float], ref: list[float]) -> tuple:
    """(name, unit, labkit's median, the reference's median, median pair ratio, ratios)."""
    ratios = [o / r for o, r in zip(ours, ref)]
    return (name, unit, float(np.median(ours)), float(np.median(ref)),
            float(np.median(ratios)), ratios)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="pairs per row, alternating which tool goes first; medians "
                         "(default 1)")
    ap.add_argument("--loopback", action="store_true",
                    help="measure on this host's loopback even where a lab can be built")
    args = ap.parse_args()
    secs, n = args.seconds, args.rounds
    if n < 1:
        ap.error(f"--rounds {n}: at least 1")
    if secs < 1:
        # iperf3 reads -t 0.5 as 0, which is "forever"
        ap.error(f"--seconds {secs:g}: at least 1 (iperf3 counts whole seconds)")
    for tool in ("iperf3", "sockperf"):
        if not shutil.which(tool):
            print(f"{tool} is not installed: `sudo make bench-endpoints` installs it",
                  file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="lkbench-"))
    rows = []
    try:
        if args.loopback:
            ctx, lab, where = None, Loopback(), "loopback (--loopback)"
        else:
            try:
                ctx = netlab.up(netlab.default_topology())
                lab = ctx.__enter__()
                where = f"lab namespaces a-r-b ({lab.privilege.mode})"
            except netlab.PrivilegeError as e:
                ctx, lab, where = None, Loopback(), f"loopback ({e})"
        try:
            print(f"path: {where}; {secs:g} s per measurement"
                  + (f"; {n} rounds, medians" if n > 1 else ""))
            tcp_runs = {}               # row name: (labkit's runs, iperf3's)

            def tcp_row(name, path):
                runs = rounds_of(n, lambda: labkit_tcp(path, secs, tmp),
                                 lambda: iperf3_tcp(path, secs))
                rows.append(row(name, "Mbit/s", *([r["bps"] / 1e6 for r in t] for t in runs)))
                tcp_runs[name] = runs

            tcp_row("tcp", lab)
            if ctx is not None:
                # the same with GSO/TSO/GRO on: 64 KB segments, the machine's own speed
                with netlab.up(netlab.default_topology(offloads=True)) as fast:
                    tcp_row("tcp_offl", fast)
            sent = {}
            for length in (64, 1400):
                u = rounds_of(n, lambda length=length: labkit_udp(lab, secs, length, tmp),
                              lambda length=length: iperf3_udp(lab, secs, length))
                rows.append(row(f"udp{length}", "pkt/s", *([r["pps"] for r in tool]
                                                           for tool in u)))
                sent[length] = [float(np.median([r["sent"] / r["seconds"] for r in tool]))
                                for tool in u]
            rows.append(row("rr", "trans/s", *rounds_of(n, lambda: labkit_rr(lab, secs, tmp),
                                                        lambda: sockperf_rr(lab, secs))))
            if SPLIT_CPUS:
                # each side on its own CPU, as on two hosts. Left to the scheduler, the
                # two may share one CPU or not, and which it does decides the rate: on
                # this project's 2-vCPU machine, on loopback (2026-12-04), sockperf made
                # 188-194k/s with both on one CPU, labkit 82-86k/s; each on its own CPU
                # both about 10-12k/s (the wake-ups)
                rows.append(row("rr_split", "trans/s", *rounds_of(
                    n, lambda: labkit_rr(lab, secs, tmp, SPLIT_CPUS),
                    lambda: sockperf_rr(lab, secs, SPLIT_CPUS))))
            print(f"{'':10} {'unit':8} {'labkit':>14} {'reference':>14} {'ratio':>7}"
                  + ("  pair ratios" if n > 1 else ""))
            for name, unit, ours, ref, ratio, ratios in rows:
                print(f"{name:10} {unit:8} {ours:14,.0f} {ref:14,.0f} {ratio:7.2f}"
                      + ("  " + " ".join(f"{r:.2f}" for r in ratios) if n > 1 else ""))
            for name, (ours, ref) in tcp_runs.items():
                print(f"  retransmitted segments ({name}, medians): labkit "
                      f"{retransmitted(ours)}, iperf3 {retransmitted(ref)}")
            for length in (64, 1400):
                print(f"  udp{length} sent: labkit {sent[length][0]:,.0f}/s, iperf3 "
                      f"{sent[length][1]:,.0f}/s")
            if ctx is not None:
                loss = loss_pair(lab, secs, tmp)
                for tool, r in loss.items():
                    print(f"loss 2%   {tool:7} lost {r['lost']} of {r['sent']} "
                          f"({r['lost'] / r['sent']:.2%}); the link dropped {r['link_dropped']}")
                pace = pacing_pair(lab, secs, tmp)
                for tool, r in pace.items():
                    g = r["gap_ms"]
                    print(f"pacing    {tool:7} {r['rate_bps'] / 1e6:.3f} Mbit/s of 10; gaps "
                          f"p10/p50/p90 {g['p10']:.3f}/{g['p50']:.3f}/{g['p90']:.3f} ms "
                          f"(nominal {r['nominal_gap_ms']:.3f}); "
                          f"{r['within_10pct']:.0%} within 10%")
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = {r[0]: r[4] for r in rows}
    if "tcp_offl" in ratio:
        print(f"tcp_offloads_on_ratio={ratio['tcp_offl']:.3f}")
    print(f"tcp_ratio={ratio['tcp']:.3f} udp64_pps_ratio={ratio['udp64']:.3f} "
          f"udp1400_pps_ratio={ratio['udp1400']:.3f} rr_ratio={ratio['rr']:.3f}"
          + (f" rr_split_ratio={ratio['rr_split']:.3f}" if "rr_split" in ratio else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
