"""netlab without privileges: specs, topologies, plans, parsers, the run registry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import pytest

from toolkit.netlab import impairment as I
from toolkit.netlab import kernel as K
from toolkit.netlab import registry
from toolkit.netlab.build import plan_topology
from toolkit.netlab.executor import ApplyError, Executor
from toolkit.netlab.plan import Plan, Step
from toolkit.netlab.topology import Names, TopologyError, default_topology, from_dict

# ---- the impairment spec ----


def test_both_applies_first_and_directions_override():
    imp = I.from_dict({"both": {"delay": "20ms", "loss": "1%"},
                       "a_to_b": {"loss": "5%", "rate": "10mbit", "queue": "32kb"}, "seed": 7})
    assert imp.a_to_b == I.Direction(rate_bps=10_000_000, queue_bytes=32768, delay_s=0.02,
                                      loss=0.05)
    assert imp.b_to_a == I.Direction(delay_s=0.02, loss=0.01)
    assert imp.seed == 7 and imp.needs() == {"delay", "loss", "rate"}


def test_faults_from_the_labs_examples():
    imp = I.from_dict({"fault": [
        {"action": "drop", "proto": "tcp", "flags": "S", "not_flags": "A", "note": "first SYN"},
        {"action": "drop", "proto": "tcp", "flags": "sa", "count": 2},
        {"action": "drop", "direction": "a_to_b", "proto": "tcp", "payload": True, "nth": 3},
        {"action": "drop", "direction": "a_to_b", "proto": "tcp", "last": True},
        {"action": "hold", "direction": "a_to_b", "proto": "tcp", "payload": True, "nth": 7},
        {"action": "drop", "nth": None, "start": "1s", "end": "1300ms"},
        {"action": "delay", "delay": "300ms", "proto": "tcp", "flags": "SA"},
    ]})
    f = imp.faults
    assert f[0].describe() == "first SYN"
    assert (f[1].flags, f[1].count) == ("SA", 2)
    assert (f[2].nth, f[2].payload, f[2].direction) == (3, True, "a_to_b")
    assert f[3].last and f[3].payload is True
    assert (f[5].nth, f[5].start_s, f[5].end_s) == (None, 1.0, 1.3)
    assert f[6].delay_s == pytest.approx(0.3)
    # the plain form handed to the userspace engine's process comes back whole
    full = I.from_dict({"seed": 9, "a_to_b": {"rate": "10mbit", "queue": "64kb",
                                              "burst": {"p": "1%", "r": "30%"}},
                        "b_to_a": {"delay": "20ms", "jitter": "2ms", "corrupt": "1%"},
                        "fault": [{"action": "drop", "proto": "tcp", "flags": "S"}]})
    for spec in (imp, full):
        assert I.from_plain(json.loads(json.dumps(spec.as_dict()))) == spec
    assert "faults" in imp.needs()
    assert I.choose_engine(imp, have_netem=True).engine == "userspace"


@pytest.mark.parametrize("table,where", [
    ({"a_to_b": {"loss": "5"}}, "link.a_to_b.loss"),
    ({"a_to_b": {"lose": "5%"}}, "link.a_to_b.lose: unknown setting"),
    ({"b_to_a": {"delay": "10ms", "jitter": "20ms"}}, "link.b_to_a.jitter"),
    ({"a_to_b": {"queue": "64kb"}}, "queue limit needs a rate"),
    ({"fault": [{"action": "explode"}]}, r"link.fault\[0\].action"),
    ({"fault": [{"action": "drop", "flags": "SX"}]}, r"link.fault\[0\].flags"),
    ({"fault": [{"action": "drop", "proto": "udp", "flags": "S"}]}, "TCP flags need proto"),
    ({"fault": [{"action": "drop", "nth": 0}]}, r"link.fault\[0\].nth"),
    ({"fault": [{"action": "delay"}]}, "needs a delay"),
    ({"fault": [{"action": "drop", "start": "2s", "end": "1s"}]}, "ends before it starts"),
    ({"fault": [{"action": "drop", "direction": "up"}]}, "a_to_b or b_to_a"),
    ({"a_to_b": {"burst": {"p": "1%"}}}, "link.a_to_b.burst"),
    ({"seed": -1}, "link.seed"),
])
def test_spec_errors_name_the_key(table, where):
    with pytest.raises(I.SpecError, match=where):
        I.from_dict(table)


def test_burst_loss_mean():
    b = I.BurstLoss(p=0.01, r=0.3)
    assert b.mean_loss() == pytest.approx(0.01 / 0.31)


@pytest.mark.parametrize("spec,netem,asked,engine", [
    ({}, False, "auto", "kernel"),
    ({"a_to_b": {"loss": "5%", "rate": "10mbit"}}, False, "auto", "kernel"),
    ({"a_to_b": {"delay": "20ms"}}, False, "auto", "userspace"),
    ({"a_to_b": {"delay": "20ms"}}, True, "auto", "kernel"),
    ({"a_to_b": {"loss": "5%"}}, False, "userspace", "userspace"),
    ({"fault": [{"action": "drop"}]}, True, "auto", "userspace"),
])
def test_engine_choice(spec, netem, asked, engine):
    assert I.choose_engine(I.from_dict(spec), netem, asked).engine == engine


def test_kernel_engine_refuses_what_it_cannot_do():
    with pytest.raises(I.SpecError, match="no netem"):
        I.choose_engine(I.from_dict({"a_to_b": {"delay": "20ms"}}), False, "kernel")
    with pytest.raises(I.SpecError, match="scripted faults"):
        I.choose_engine(I.from_dict({"fault": [{"action": "drop"}]}), True, "kernel")


def test_describe_names_every_setting():
    imp = I.from_dict({"a_to_b": {"rate": "10mbit", "loss": "5%", "delay": "20ms"}})
    assert imp.describe() == "a>b: 10mbit, 20ms, loss 5%"
    assert I.Impairment().describe() == "no impairment"


# ---- topology and its plan ----


def test_default_plan_builds_three_namespaces_two_links():
    topo = default_topology()
    plan = plan_topology(topo, Names("abc123"))
    text = plan.render()
    for ns in ("lk-abc123-r", "lk-abc123-a", "lk-abc123-b"):
        assert f"ip netns add {ns}" in text
    # veth ends are created inside their namespaces: nothing in the caller's namespace
    adds = [s for s in plan if s.argv[:3] == ("ip", "link", "add")]
    assert len(adds) == 2 and all(s.argv.count("netns") == 2 for s in adds)
    assert "ip -n lk-abc123-a addr add 10.201.1.2/24 dev lk-a-r" in text
    assert "ip -n lk-abc123-b -6 addr add fd00:201:2::2/64 dev lk-b-r nodad" in text
    assert "ip -n lk-abc123-a route add default via 10.201.1.1" in text
    # only the namespaces carry undos; deleting them removes everything inside
    assert [s.undo for s in plan if s.undo] == [("ip", "netns", "del", f"lk-abc123-{n}")
                                                 for n in ("r", "a", "b")]
    # offloads off on all four veth ends, inside their namespaces
    eth = [s for s in plan if s.argv[0] == "ethtool"]
    assert {(s.netns, s.argv[2]) for s in eth} == {
        ("lk-abc123-r", "lk-r-a"), ("lk-abc123-a", "lk-a-r"),
        ("lk-abc123-r", "lk-r-b"), ("lk-abc123-b", "lk-b-r")}
    assert all(s.argv[3:] == ("gso", "off", "tso", "off", "gro", "off") for s in eth)


def test_sysctls_come_before_the_interfaces_and_forwarding_follows_the_topology():
    topo = default_topology(sysctls={"a": {"tcp_congestion_control": "reno", "tcp_sack": 0},
                                     "all": {"net.core.rmem_max": 4194304}})
    steps = list(plan_topology(topo, Names("abc123")))
    first_link = next(i for i, s in enumerate(steps) if s.argv[:3] == ("ip", "link", "add"))
    sysctl = {s.netns: s.argv for s in steps if s.argv[0] == "sysctl"}
    assert all(steps.index(s) < first_link for s in steps if s.argv[0] == "sysctl")
    assert "net.ipv4.tcp_congestion_control=reno" in sysctl["lk-abc123-a"]
    assert "net.ipv4.tcp_sack=0" in sysctl["lk-abc123-a"]
    assert "net.core.rmem_max=4194304" in sysctl["lk-abc123-b"]
    assert "net.ipv4.ip_forward=1" in sysctl["lk-abc123-r"]
    off = plan_topology(topo.with_forwarding(False), Names("abc123"))
    assert "net.ipv4.ip_forward=0" in off.render()


def test_extra_host_gets_its_own_link_and_subnet():
    topo = from_dict({"hosts": ["a", "b", "m"], "mtu": 9000, "offloads": True})
    text = plan_topology(topo, Names("abc123")).render()
    assert "ip -n lk-abc123-m addr add 10.201.3.2/24 dev lk-m-r" in text
    assert "mtu 9000" in text and "ethtool" not in text
    assert topo.link("m").mac(True) == "02:6c:6b:00:03:01"


@pytest.mark.parametrize("table,where", [
    ({"hosts": ["a", "r"]}, "topology.hosts"),
    ({"hosts": ["alpha-1"]}, "topology.hosts"),
    ({"hosts": ["a", "a"]}, "duplicate"),
    ({"mtu": 500}, "topology.mtu"),
    ({"sysctl": {"z": {"tcp_sack": 0}}}, "topology.sysctl.z: no such host"),
    ({"sysctl": {"a": {"sack": 0}}}, "topology.sysctl.a.sack"),
    ({"sysctl": {"a": {"tcp_sack": "0\nnet.x=1"}}}, "not a sysctl value"),
    ({"links": []}, "topology.links: unknown setting"),
])
def test_topology_errors_name_the_key(table, where):
    with pytest.raises(TopologyError, match=where):
        from_dict(table)


# ---- the kernel engine's plan and its counters ----


def test_kernel_plan_without_netem():
    imp = I.from_dict({"a_to_b": {"rate": "10mbit", "loss": "5%"}, "b_to_a": {"loss": "1%"}})
    plan = K.plan_kernel(imp, "abc123", "lk-abc123-r", have_netem=False)
    tc, nft = list(plan)
    assert tc.argv == ("tc", "qdisc", "add", "dev", "lk-r-b", "root", "handle", "1:", "tbf",
                       "rate", "10000000bit", "burst", "5000", "limit", "62500")
    assert tc.netns == "lk-abc123-r" and tc.undo[-1] == "root"
    assert nft.argv == ("nft", "-f", "-") and nft.undo[-1] == "labkit_abc123"
    assert 'oifname "lk-r-b" numgen random mod 1000000 < 50000 counter drop' in nft.stdin
    assert 'oifname "lk-r-a" numgen random mod 1000000 < 10000 counter drop' in nft.stdin


def test_kernel_plan_with_netem_chains_tbf_under_the_delay_line():
    imp = I.from_dict({"a_to_b": {"rate": "10mbit", "delay": "20ms", "jitter": "1ms",
                                  "burst": {"p": "1%", "r": "30%"}}})
    steps = list(K.plan_kernel(imp, "abc123", "lk-abc123-r", have_netem=True))
    assert steps[0].argv[5:] == ("root", "handle", "1:", "netem", "delay", "20000us", "1000us",
                                 "loss", "gemodel", "1%", "30%", "100%", "0%")
    assert steps[1].argv[5:9] == ("parent", "1:1", "handle", "10:")
    with pytest.raises(ValueError, match="netem"):
        K.plan_kernel(imp, "abc123", "lk-abc123-r", have_netem=False)


def test_tbf_queue_defaults_to_50ms_of_the_rate_but_at_least_three_frames():
    assert K.tbf_args(I.Direction(rate_bps=100_000_000))[-1] == str(625_000)
    assert K.tbf_args(I.Direction(rate_bps=100_000))[-1] == str(3 * 1514)
    assert K.tbf_args(I.Direction(rate_bps=100_000, queue_bytes=20000))[-1] == "20000"


NFT_JSON = ('{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, '
            '{"table": {"family": "inet", "name": "labkit_1affe5", "handle": 1}}, '
            '{"rule": {"family": "inet", "table": "labkit_1affe5", "chain": "forward", '
            '"handle": 2, "comment": "loss a_to_b", "expr": [{"match": {"op": "==", "left": '
            '{"meta": {"key": "oifname"}}, "right": "lk-r-b"}}, {"counter": {"packets": 2, '
            '"bytes": 168}}, {"drop": null}]}}]}')
TC_JSON = ('[{"kind":"tbf","handle":"1:","root":true,"refcnt":2,"options":{},"bytes":18178,'
           '"packets":185,"drops":3,"overlimits":7,"requeues":0,"backlog":0,"qlen":0}]')


def test_counter_parsers_on_saved_output():
    assert K.parse_nft_drops(NFT_JSON) == {"a_to_b": 2}
    assert K.parse_tc_stats(TC_JSON) == [{"kind": "tbf", "handle": "1:", "bytes": 18178,
                                          "packets": 185, "drops": 3, "overlimits": 7,
                                          "requeues": 0, "backlog": 0, "qlen": 0}]


def _binomial_cdf(n, p: Fraction, k) -> Fraction:
    # exact, in integers: P(X <= k) for X ~ Binomial(n, p)
    a, b = p.numerator, p.denominator
    total = sum(math.comb(n, i) * a**i * (b - a) ** (n - i) for i in range(k + 1))
    return Fraction(total, b**n)


@pytest.mark.parametrize("n,p", [(10_000, "1/20"), (1000, "1/100"), (200, "1/2"), (50, "1/5")])
def test_binomial_interval_is_the_exact_central_999(n, p):
    p = Fraction(p)
    lo, hi = K.binomial_interval(n, float(p))
    tail = Fraction(5, 10_000)
    assert _binomial_cdf(n, p, lo - 1) <= tail < _binomial_cdf(n, p, lo)
    assert _binomial_cdf(n, p, hi - 1) < 1 - tail <= _binomial_cdf(n, p, hi)


# ---- executor: undo stack ----


def test_executor_unwinds_in_reverse_and_keeps_going_after_errors(tmp_path):
    log = tmp_path / "log"
    ex = Executor()
    plan = Plan()
    for i in range(3):
        plan.add("sh", "-c", f"echo do{i} >> {log}", undo=("sh", "-c", f"echo undo{i} >> {log}"))
    ex.apply(plan)
    ex.push_undo(["sh", "-c", "exit 3"], why="a failing undo")
    errors = ex.unwind()
    assert log.read_text().split() == ["do0", "do1", "do2", "undo2", "undo1", "undo0"]
    assert len(errors) == 1 and "a failing undo" in errors[0] and "status 3" in errors[0]
    assert ex.unwind() == []          # idempotent


def test_a_failed_step_leaves_only_the_undos_of_what_was_done(tmp_path):
    ex = Executor()
    plan = Plan()
    plan.add("true", undo=("true",), why="first")
    plan.add("sh", "-c", "echo boom >&2; exit 2", undo=("true",), why="second")
    plan.add("true", undo=("true",), why="third")
    with pytest.raises(ApplyError, match=r"\(second\) failed with status 2: boom"):
        ex.apply(plan)
    assert [u.why for u in ex.undos] == ["first"]


def test_missing_tool_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # nothing is installed here
    with pytest.raises(ApplyError, match=r"nft: command not found \(install nftables\)"):
        Executor().run(Step(("nft", "list", "tables")))


# ---- registry: what `labkit clean` may remove ----


def test_leftovers_are_dead_runs_only(tmp_path):
    registry.register("aaaaaa", tmp_path)                        # this process: alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "bbbbbb.json").write_text(
        f'{{"run_id": "bbbbbb", "pid": {dead.pid}, "start_time": 1}}')
    # a live pid with another start time is a recycled pid: the run is dead
    (tmp_path / "cccccc.json").write_text(
        f'{{"run_id": "cccccc", "pid": {os.getpid()}, "start_time": 1}}')
    names = ["lk-aaaaaa-a", "lk-aaaaaa-r", "lk-bbbbbb-a", "lk-cccccc-b", "lk-dddddd-a",
             "lkbench-1-a", "lk-capt-a", "other", "lk-aaaaaa-toolongname"]
    found = {x.run_id: (x.netns, x.reason) for x in registry.leftovers(names, tmp_path)}
    assert set(found) == {"bbbbbb", "cccccc", "dddddd"}
    assert found["bbbbbb"][0] == ("lk-bbbbbb-a",)
    assert "no run record" in found["dddddd"][1]
    registry.unregister("aaaaaa", tmp_path)
    assert not (tmp_path / "aaaaaa.json").exists()


# ---- privileges: the error says what is missing and how to get it ----


def test_without_root_or_user_namespaces_the_error_names_the_blocker(monkeypatch, tmp_path):
    from toolkit.netlab import rootless

    monkeypatch.setattr(rootless.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("PATH", str(tmp_path))            # no unshare, no nsenter
    sysctls = {"/proc/sys/kernel/unprivileged_userns_clone": "0",
               "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1"}
    monkeypatch.setattr(rootless, "_read", sysctls.get)
    with pytest.raises(rootless.PrivilegeError) as e:
        rootless.detect()
    msg = str(e.value)
    assert "needs CAP_NET_ADMIN" in msg and "run as root (sudo)" in msg
    assert "sudo sysctl -w kernel.unprivileged_userns_clone=1" in msg
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in msg
    assert "`unshare` is missing: install util-linux" in msg
    with pytest.raises(rootless.PrivilegeError, match="not root: run with sudo"):
        rootless.detect("root")
