"""benchmarks/endpoints_vs_iperf3.py runs to its last line, so it cannot rot: on loopback
with short measurements, and as root on the lab path too (where its loss and pacing rows
read iperf3's UDP summary, which once crashed it with KeyError: 'sum')."""

from __future__ import annotations

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
    assert set(ratios) == {"tcp_ratio", "udp64_pps_ratio", "udp1400_pps_ratio", "rr_ratio"}
    assert all(float(v) > 0 for v in ratios.values()), last
    return {"stdout": done.stdout, **ratios}


def test_the_endpoint_benchmark_runs_to_the_end_on_loopback():
    tools_or_skip()
    out = run("--loopback")
    assert "path: loopback (--loopback)" in out["stdout"]


@pytest.mark.root
def test_the_endpoint_benchmark_runs_to_the_end_on_the_lab_path():
    tools_or_skip()
    network_or_skip()
    if not is_root():
        pytest.skip("the loss row sets nftables rules on the lab's router: needs root")
    out = run()
    for tool in ("iperf3", "labkit"):
        assert f"loss 2%   {tool}" in out["stdout"] and f"pacing    {tool}" in out["stdout"]
