"""labkit selftest: the judging rules by table, then real runs of the kernel engine, as root
and rootless as an unprivileged user. (The userspace engine's runs are in
test_netlab_emulator.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, as_nobody_or_skip, network_or_skip
from toolkit.netlab.forwarder import MAX_RATE_BPS, timing_report
from toolkit.netlab.traffic import run_queue_wait_s
from toolkit.netlab.selftest import (Check, judge_jitter, judge_loss, judge_rate, judge_rtt,
                                     judge_timing)


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


@pytest.mark.parametrize("lost,drops,decided,ok", [
    # the once-seen 5.94%: 500 configured losses and 94 at the engine's queue; the loss
    # judged is the configured one, and every lost datagram is still one the engine dropped
    (594, 594, 500, True),
    (594, 594, 594, False),       # the model itself losing too much
    (594, 593, 500, False),       # a datagram lost that the engine did not drop
    (429, 429, 429, False),       # below the interval
    (0, 0, 0, True),              # (with p = 0 below)
])
def test_judge_loss_judges_the_configured_decisions_not_queue_drops(lost, drops, decided, ok):
    p = 0.0 if lost == 0 else 0.05
    c = judge_loss(10_000, lost, 0, p, engine_drops=drops, decided=decided, direction="b>a")
    assert c.ok is ok and c.name == "loss b>a", c
    if drops != decided and ok:
        assert f"{drops - decided} at its queue" in c.detail


@pytest.mark.parametrize("lost,host,drops,ok", [
    # the run seen under load: 10% configured, 250 of 2000 not received, of which the
    # receiver's own socket dropped 50 (the kernel's count): 200 on the link
    (250, 50, None, True),
    (250, 0, None, False),        # the same without the host's count: above 156..244
    (1100, 100, 1000, True),      # the userspace engine's drops, plus the host's
    (1100, 0, 1000, False),       # 100 lost that neither the engine nor the host dropped
    (1100, 101, 1000, False),     # the host cannot explain more than it lost
])
def test_judge_loss_leaves_the_receivers_socket_drops_out_of_the_links_loss(lost, host,
                                                                            drops, ok):
    count, p = (2000, 0.10) if drops is None else (10_000, 0.10)
    c = judge_loss(count, lost, 0, p, engine_drops=drops, host_drops=host)
    assert c.ok is ok, c
    if host:
        assert f"{host} more dropped at the receiver's socket" in c.measured, c
        assert "are not the link's" in c.detail


@pytest.mark.parametrize("expected,median,ok", [
    (0.040, 0.0405, True), (0.040, 0.0409, True), (0.040, 0.0411, False),
    (0.040, 0.0389, False), (0.0, 0.00007, True), (0.020, None, False),
])
def test_judge_rtt(expected, median, ok):
    assert judge_rtt(expected, median).ok is ok


@pytest.mark.parametrize("rate,goodput,ok", [
    (20e6, 19.2e6, True), (20e6, 18.1e6, True), (20e6, 17.9e6, False), (20e6, 22.1e6, False),
    (None, 3e9, True), (None, 0.0, False), (None, 50e6, False),    # below the ceiling
])
def test_judge_rate(rate, goodput, ok):
    assert judge_rate(rate, goodput, "kernel").ok is ok


@pytest.mark.parametrize("goodput,ok,late_explains", [
    # with no rate the userspace link runs at its ceiling: the capacity is that, +-10%
    (95e6, True, True), (91e6, True, True), (89e6, False, True), (111e6, False, False),
    (1e6, False, True), (0.0, False, True),
])
def test_judge_capacity_of_the_userspace_engine_is_its_ceiling(goodput, ok, late_explains):
    c = judge_rate(None, goodput, "userspace", "b>a")
    assert c.name == "capacity b>a" and str(MAX_RATE_BPS // 1_000_000) in c.configured
    assert c.ok is ok and c.timing
    if not ok:
        assert c.late_explains is late_explains


def _rtts(center, jitter_each, n=40, seed=3):
    import random
    rng = random.Random(seed)
    return [center + rng.uniform(-jitter_each, jitter_each) + rng.uniform(-jitter_each,
                                                                          jitter_each)
            for _ in range(n)]


@pytest.mark.parametrize("configured,actual,ok", [
    (0.0, 0.0, True),
    (0.002, 0.002, True),
    (0.005, 0.005, True),
    (0.002, 0.0, False),          # jitter configured, none there: the lower bound
    (0.0, 0.002, False),          # none configured, some there: the upper bound
    (0.002, 0.006, False),        # three times the configured: the upper bound
    (0.006, 0.002, False),        # a third of it
])
def test_judge_jitter_has_both_bounds(configured, actual, ok):
    samples = _rtts(0.020, actual)
    c = judge_jitter(configured, configured, 0.020, samples)
    assert c.ok is ok, c
    assert c.timing


def test_judge_jitter_a_few_outliers_are_the_pinger_many_are_the_link():
    samples = [0.020] * 40
    assert judge_jitter(0.0, 0.0, 0.020, samples).ok
    few = samples[:]
    few[5] = few[20] = 0.0215                 # two pings held back: mean |diff| 0.075 ms
    c = judge_jitter(0.0, 0.0, 0.020, few)
    assert c.ok, c
    many = [0.020 + (0.0025 if i % 3 == 0 else 0) for i in range(40)]
    c = judge_jitter(0.0, 0.0, 0.020, many)
    assert not c.ok and c.late_explains            # only ever too long: lateness would do
    short = [0.020 - (0.0025 if i % 3 == 0 else 0) for i in range(40)]
    c = judge_jitter(0.0, 0.0, 0.020, short)
    assert not c.ok and not c.late_explains        # shorter than the delay: never lateness
    assert not judge_jitter(0.0, 0.0, 0.020, samples[:5]).ok


@pytest.mark.parametrize("ok,timing,late_explains,reliable,status", [
    (True, True, True, False, "pass"),
    (False, True, True, True, "fail"),
    (False, True, True, False, "unreliable"),     # the one case a failure is excused
    (False, True, False, False, "fail"),          # failed the way lateness cannot explain
    (False, False, False, False, "fail"),         # loss: not a timing check
])
def test_a_check_is_unreliable_only_when_lateness_explains_it(ok, timing, late_explains,
                                                               reliable, status):
    c = Check("x", "", "", ok, "d", timing=timing, late_explains=late_explains)
    assert c.settle(reliable).status == status


@pytest.mark.parametrize("stats,reliable", [
    ({"loss": {"engine": "userspace", "overruns": 0,
               "late": {"count": 100, "sent": 10_000, "max_s": 2e-3}}}, True),
    ({"loss": {"engine": "userspace", "overruns": 0,
               "late": {"count": 101, "sent": 10_000, "max_s": 2e-3}}}, False),
    ({"loss": {"engine": "userspace", "overruns": 3,
               "late": {"count": 0, "sent": 10_000, "max_s": 0}}}, False),
    ({"loss": {"engine": "kernel", "loss_drops": {}}}, True),
])
def test_judge_timing_from_the_engines_report(stats, reliable):
    t = judge_timing(stats)
    assert t["reliable"] is reliable and bool(t["notes"]) is not reliable
    assert t["reliable"] is all(timing_report(s)["reliable"] for s in stats.values()
                                if s.get("engine") == "userspace")
    assert judge_timing(stats, queue_drops=5)["reliable"] is False


@pytest.mark.parametrize("recv_waited,send_waited,note", [
    (0.01, 0.001, None),
    (0.30, None, None),            # 10% of 3 s is the bound; no count from the sender
    (0.31, 0.0, "rate a>b: the TCP receiver waited 0.31 s for a CPU during its 3.00 s"),
    (0.0, 0.4, "rate a>b: the TCP sender waited 0.40 s for a CPU during its 3.00 s"),
])
def test_judge_timing_from_the_tcp_pairs_wait_for_a_cpu(recv_waited, send_waited, note):
    # the kernel engine keeps its own time; the programs measuring through it may not
    good = {"bytes": 7_500_000, "seconds": 3.0, "goodput_bps": 2e7, "waited_s": recv_waited,
            "sender_waited_s": send_waited}
    t = judge_timing({"rate": {"engine": "kernel"}}, transfers={"a>b": good})
    assert t["reliable"] is (note is None)
    if note:
        assert len(t["notes"]) == 1 and t["notes"][0].startswith(note), t["notes"]


def test_run_queue_wait_counts_time_spent_waiting_for_a_cpu():
    # this process and two busy children on one CPU: it runs about a third of the time and
    # waits the rest on the run queue (more with other load); its CPU time is the rest
    if run_queue_wait_s() is None:
        pytest.skip("this kernel keeps no /proc/self/schedstat (CONFIG_SCHED_INFO)")
    cpu = min(os.sched_getaffinity(0))
    before_affinity = os.sched_getaffinity(0)
    spin = ("import os, time\n"
            f"os.sched_setaffinity(0, {{{cpu}}})\n"
            "end = time.monotonic() + 2\n"
            "while time.monotonic() < end: pass")
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.3)                                  # the children are spinning by now
        before, cpu0 = run_queue_wait_s(), time.process_time()
        t0 = time.monotonic()
        while time.monotonic() < t0 + 0.4:
            pass
        waited, ran = run_queue_wait_s() - before, time.process_time() - cpu0
        wall = time.monotonic() - t0
    finally:
        os.sched_setaffinity(0, before_affinity)
        for p in busy:
            p.kill()
            p.wait()
    assert waited > wall / 2 and ran < wall / 2 and abs(waited + ran - wall) < 0.1, \
        (waited, ran, wall)


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
    # the TCP pair says how long it waited for a CPU; when it waited too long for the
    # goodput to mean the link's, a rate short of the configured one is reported so, not
    # failed (one CI run in ten failed here with loss and rate a>b ok, cause unrecorded)
    timing = out["timing"]
    for g in (out["measured"]["goodput"], out["measured"]["goodput_b_to_a"]):
        assert g["waited_s"] is not None and g["sender_waited_s"] is not None, g
    if timing["reliable"]:
        assert checks["rate a>b"]["ok"] and checks["rate b>a"]["ok"], checks
        assert abs(out["measured"]["goodput"]["goodput_bps"] - 20e6) <= 2e6
    else:
        assert all("waited" in n for n in timing["notes"]), timing
    # which check failed, if one did
    assert status == 0 and out["ok"] is True, [c for c in out["checks"] if not c["ok"]]


@pytest.mark.root
def test_selftest_refuses_what_the_engine_cannot_do_and_bad_values():
    network_or_skip()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "selftest", "--loss", "5"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--loss: percentage '5'" in done.stderr
    assert "Traceback" not in done.stderr
    # probed in a throwaway namespace: a qdisc on this host's lo would sit under every
    # loopback test of the file running beside this one (make test runs two)
    netem = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root",
                            "netem"], capture_output=True, text=True)
    if netem.returncode == 0:
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
    assert set(checks) == {"loss a>b", "loss b>a", "rtt", "jitter", "rate a>b", "rate b>a",
                           "engine"}
    # ground truth, whatever the machine's load: the configured loss each way, every
    # datagram lost one the engine's ledger says it dropped; no overrun, no death
    stats = out["engine_stats"]
    for d, name, m in (("a_to_b", "loss a>b", "loss"), ("b_to_a", "loss b>a", "loss_b_to_a")):
        assert checks[name]["status"] == "pass", checks
        assert out["measured"][m]["lost"] == stats["loss"]["loss_drops"][d]
    assert checks["engine"]["status"] == "pass", checks["engine"]
    assert stats["loss"]["scheduling"] == "fifo 10"       # root: real-time scheduling
    # the timing report is the engines' own count of lateness, and says so when it was bad
    timing = out["timing"]
    late = sum(s["late"]["count"] for s in stats.values())
    sent = sum(s["late"]["sent"] for s in stats.values())
    assert (timing["late"], timing["sent"]) == (late, sent)
    waits = [n for n in timing["notes"] if "for a CPU" in n]
    assert timing["reliable"] is (all(s["timing"]["reliable"] for s in stats.values())
                                  and not waits) and \
        timing["reliable"] is not bool(timing["notes"])
    rtt, good = out["measured"]["rtt"]["median_s"], out["measured"]["goodput"]["goodput_bps"]
    back = out["measured"]["goodput_b_to_a"]["goodput_bps"]
    if timing["reliable"]:
        # on time: the delay line and the bottleneck are as configured, both ways
        assert all(c["status"] == "pass" for c in out["checks"]), checks
        assert abs(rtt - 0.020) <= 1e-3
        assert abs(good - 20e6) <= 2e6 and abs(back - 20e6) <= 2e6
        assert status == 0 and out["ok"] is True
    else:
        # a busy machine made the engine late or the TCP pair wait: the report says so, a
        # timing check may be "unreliable", but only in the direction lateness explains
        # (an RTT never shorter than configured, a rate never above it), and the rest
        # still passes
        assert all("late" in n or "queue" in n or "for a CPU" in n
                   for n in timing["notes"]), timing
        for c in out["checks"]:
            assert c["status"] in ("pass", "unreliable"), c
            assert c["status"] == "pass" or c["timing"]
        assert rtt >= 0.020 - 1e-3 and good <= 22e6 and back <= 22e6
        assert status == 0 and out["ok"] is True


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
    ({"loss": {"overruns": 0, "late": {"count": 0, "sent": 10_000, "max_s": 5e-7}}}, True),
    # late frames do not fail the engine: they make the timing unreliable (judge_timing)
    ({"loss": {"overruns": 0, "late": {"count": 5000, "sent": 10_000, "max_s": 2e-3}}}, True),
    ({"loss": {"overruns": 1, "late": {"count": 0, "sent": 10_000, "max_s": 0}}}, False),
    ({"loss": {"overruns": 0, "late": {"count": 0, "sent": 5, "max_s": 0}},
      "rtt": {"engine": "userspace", "error": "the engine died: boom"}}, False),
])
def test_judge_engine(stats, ok):
    from toolkit.netlab.selftest import judge_engine
    assert judge_engine(stats).ok is ok
