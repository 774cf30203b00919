"""labkit selftest: the judging rules by table, then real runs of the kernel engine, as root
and rootless as an unprivileged user. (The userspace engine's runs are in
test_netlab_emulator.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, as_nobody_or_skip, network_or_skip
from toolkit.netlab.selftest import judge_loss, judge_rate, judge_rtt


@pytest.mark.parametrize("count,lost,dups,p,drops,ok", [
    (10_000, 500, 0, 0.05, None, True),
    (10_000, 429, 0, 0.05, None, False),       # below the 99.9% interval 430..573
    (10_000, 574, 0, 0.05, None, False),       # above it
    (10_000, 430, 0, 0.05, 430, True),
    (10_000, 500, 0, 0.05, 499, False),        # one loss the engine did not decide
    (10_000, 0, 0, 0.0, 0, True),
    (10_000, 1, 0, 0.0, None, False),          # no loss configured: none allowed
    (10_000, 500, 3, 0.05, None, False),       # duplicates are a fault
])
def test_judge_loss(count, lost, dups, p, drops, ok):
    assert judge_loss(count, lost, dups, p, engine_drops=drops).ok is ok


@pytest.mark.parametrize("expected,median,ok", [
    (0.040, 0.0405, True), (0.040, 0.0409, True), (0.040, 0.0411, False),
    (0.040, 0.0389, False), (0.0, 0.00007, True), (0.020, None, False),
])
def test_judge_rtt(expected, median, ok):
    assert judge_rtt(expected, median).ok is ok


@pytest.mark.parametrize("rate,goodput,ok", [
    (20e6, 19.2e6, True), (20e6, 18.1e6, True), (20e6, 17.9e6, False), (20e6, 22.1e6, False),
    (None, 3e9, True), (None, 0.0, False),
])
def test_judge_rate(rate, goodput, ok):
    assert judge_rate(rate, goodput, "kernel").ok is ok


def _selftest(*args, user=None, python=sys.executable, timeout=120):
    argv = [python, "-m", "toolkit.cli", "selftest", "--json", *args]
    if user:
        argv = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={REPO}", *argv]
    done = subprocess.run(argv, cwd=REPO if not user else "/", capture_output=True, text=True,
                          timeout=timeout)
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except json.JSONDecodeError:
        pytest.fail(f"no JSON (status {done.returncode}): {done.stderr[-2000:]}")


@pytest.mark.root
def test_kernel_engine_loss_and_rate_match_the_configuration():
    network_or_skip()
    status, out, err = _selftest("--engine", "kernel", "--loss", "5%", "--rate", "20mbit")
    assert out["engine"] == "kernel" and out["configured"]["loss"] == 0.05
    checks = {c["name"]: c for c in out["checks"]}
    # the bounds: 5% of 10,000 datagrams inside the binomial 99.9% interval, and
    # every lost datagram one that nftables counted; TCP goodput within 10% of the rate
    assert checks["loss a>b"]["ok"], checks
    assert out["measured"]["loss"]["sent"] == 10_000
    assert out["measured"]["loss"]["lost"] == out["engine_stats"]["loss"]["loss_drops"]["a_to_b"]
    assert checks["rate a>b"]["ok"], checks
    assert abs(out["measured"]["goodput"]["goodput_bps"] - 20e6) <= 2e6
    assert status == 0 and out["ok"] is True


@pytest.mark.root
def test_selftest_refuses_what_the_engine_cannot_do_and_bad_values():
    network_or_skip()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "selftest", "--loss", "5"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--loss: percentage '5'" in done.stderr
    assert "Traceback" not in done.stderr
    netem = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem"],
                           capture_output=True, text=True)
    if netem.returncode == 0:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"])
        pytest.skip("this kernel has netem: the kernel engine can delay")
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "selftest", "--engine",
                           "kernel", "--delay", "10ms"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "no netem qdisc" in done.stderr


@pytest.mark.root
def test_rootless_selftest_as_an_unprivileged_user():
    python = as_nobody_or_skip()
    if not shutil.which("tc") and not os.path.exists("/usr/sbin/tc"):
        pytest.skip("tc is not installed")
    status, out, err = _selftest("--engine", "kernel", "--loss", "10%", "--count", "2000",
                                 user="nobody", python=python)
    assert out["privilege"]["mode"] == "rootless", err
    assert status == 0 and out["ok"], out["checks"]


@pytest.mark.root
def test_userspace_engine_loss_delay_and_rate_match_the_configuration():
    network_or_skip()
    status, out, err = _selftest("--engine", "userspace", "--loss", "5%", "--delay", "10ms",
                                 "--rate", "20mbit")
    assert out["engine"] == "userspace"
    checks = {c["name"]: c for c in out["checks"]}
    assert set(checks) == {"loss a>b", "rtt", "rate a>b", "engine"}
    # ground truth, whatever the machine's load: the loss is the configured one, and every
    # datagram lost is one the engine's ledger says it dropped; no overrun ever
    assert checks["loss a>b"]["ok"], checks
    assert out["measured"]["loss"]["lost"] == out["engine_stats"]["loss"]["loss_drops"]["a_to_b"]
    assert checks["engine"]["measured"].startswith("0 overruns"), checks["engine"]
    if checks["engine"]["ok"]:
        # on time: the delay line and the bottleneck are as configured
        assert checks["rtt"]["ok"] and checks["rate a>b"]["ok"], checks
        assert abs(out["measured"]["rtt"]["median_s"] - 0.020) <= 1e-3
        assert abs(out["measured"]["goodput"]["goodput_bps"] - 20e6) <= 2e6
        assert status == 0 and out["ok"] is True
    else:
        # a busy machine made the engine late: the selftest says so and does not pass
        # (the timing figures are then not the link's; the report is what is checked)
        assert " late" in checks["engine"]["measured"] and "late" in checks["engine"]["detail"]
        assert status != 0 and out["ok"] is False


@pytest.mark.root
def test_userspace_engine_refuses_a_rate_beyond_its_capacity():
    network_or_skip()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "selftest", "--engine",
                           "userspace", "--rate", "5gbit"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--rate: 5000 Mbit/s is beyond the userspace engine's capacity" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("stats,ok", [
    ({"loss": {"overruns": 0, "late": {"count": 0, "sent": 10_000, "max_s": 500e-9}}}, True),
    ({"loss": {"overruns": 0, "late": {"count": 100, "sent": 10_000, "max_s": 2e-3}}}, True),
    ({"loss": {"overruns": 0, "late": {"count": 101, "sent": 10_000, "max_s": 2e-3}}}, False),
    ({"loss": {"overruns": 1, "late": {"count": 0, "sent": 10_000, "max_s": 0}}}, False),
    ({"loss": {"overruns": 0, "late": {"count": 0, "sent": 5, "max_s": 0}},
      "rtt": {"engine": "userspace", "error": "the engine died: boom"}}, False),
])
def test_judge_engine(stats, ok):
    from toolkit.netlab.selftest import judge_engine
    assert judge_engine(stats).ok is ok
