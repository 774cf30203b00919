"""benchmarks/endpoints_vs_iperf3.py runs to its last line, so it cannot rot: on loopback
with short measurements, and as root on the lab path too (where its loss and pacing rows
read iperf3's UDP summary, which once crashed it with KeyError: 'sum')."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, is_root, network_or_skip

BENCH = REPO / "benchmarks" / "endpoints_vs_iperf3.py"


def tools_or_skip() -> None:
    missing = [t for t in ("iperf3", "sockperf") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (`make test` as root installs "
                    f"them: Debian packages iperf3, sockperf)")


def run(*args) -> dict:
    done = subprocess.run([sys.executable, str(BENCH), "--seconds", "1", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    ratios = dict(kv.split("=") for kv in last.split())
    want = {"tcp_ratio", "udp64_pps_ratio", "udp1400_pps_ratio", "rr_ratio"}
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        want.add("rr_split_ratio")              # each side on its own CPU
    assert set(ratios) == want, last
    assert all(float(v) > 0 for v in ratios.values()), last
    return {"stdout": done.stdout, **ratios}


def test_the_endpoint_benchmark_runs_to_the_end_on_loopback():
    tools_or_skip()
    out = run("--loopback", "--rounds", "2")
    assert "path: loopback (--loopback); 1 s per measurement; 2 rounds" in out["stdout"]
    rows = [ln.split() for ln in out["stdout"].splitlines()
            if ln.split()[:1] and ln.split()[0] in ("tcp", "udp64", "udp1400", "rr")
            and "sent:" not in ln]
    assert len(rows) == 4 and all(len(r) == 7 for r in rows), rows   # and two pair ratios
    for r in rows:
        pairs = sorted(float(x) for x in r[5:])
        assert pairs[0] <= float(r[4]) <= pairs[1], r                 # their median
    # each sender's retransmissions, from its own TCP_INFO (iperf3's "Retr")
    assert re.search(r"^  retransmitted segments \(tcp, medians\): labkit [\d,]+, "
                     r"iperf3 [\d,]+$", out["stdout"], re.M), out["stdout"]


def _bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("endpoints_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_rounds_take_turns_at_going_first_and_rows_take_medians():
    bench = _bench()
    order = []
    ours, ref = bench.rounds_of(3, lambda: order.append("labkit") or 3.0,
                                lambda: order.append("ref") or 2.0)
    assert order == ["labkit", "ref", "ref", "labkit", "labkit", "ref"]
    assert ours == [3.0] * 3 and ref == [2.0] * 3
    name, unit, o, r, ratio, ratios = bench.row("tcp", "Mbit/s", [1.0, 9.0, 4.0],
                                                [2.0, 3.0, 8.0])
    assert (o, r, ratios) == (4.0, 3.0, [0.5, 3.0, 0.5]) and ratio == 0.5


@pytest.mark.root
def test_the_endpoint_benchmark_runs_to_the_end_on_the_lab_path():
    tools_or_skip()
    network_or_skip()
    if not is_root():
        pytest.skip("the loss row sets nftables rules on the lab's router: needs root")
    out = run()
    for tool in ("iperf3", "labkit"):
        assert f"loss 2%   {tool}" in out["stdout"] and f"pacing    {tool}" in out["stdout"]


def test_iperf3_failing_once_is_run_again_and_failing_always_is_said(monkeypatch, capsys):
    """iperf3 itself once ended a UDP test in an idle CI run with no summary ("unable to
    read from stream socket: Resource temporarily unavailable"): the reference's failure,
    run again; three in a row stop the benchmark with iperf3's errors."""
    import json

    bench = _bench()
    monkeypatch.setattr(bench, "_server", lambda lab, argv, **kw: None)
    monkeypatch.setattr(bench, "_stop", lambda srv: None)
    failed = {"error": "unable to read from stream socket: Resource temporarily unavailable",
              "end": {}}
    good = {"end": {"sum": {"packets": 100, "lost_packets": 3, "seconds": 1.0}}}

    class Lab:
        def __init__(self, docs):
            self.docs, self.runs = list(docs), 0

        def addr(self, host):
            return "10.0.0.2"

        def exec(self, host, argv, timeout=None):
            self.runs += 1
            return subprocess.CompletedProcess(argv, 0, json.dumps(self.docs.pop(0)), "")

    lab = Lab([failed, good])
    assert bench.iperf3_udp(lab, 1, 1000)["received"] == 97 and lab.runs == 2
    assert "running it again" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="in 3 runs.*Resource temporarily unavailable"):
        bench.iperf3_udp(Lab([failed] * 3), 1, 1000)
