"""The lab network for real: build, reach, tear down on every exit path, clean after SIGKILL,
rootless as an unprivileged user, and the kernel engine's loss counted by the kernel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from conftest import REPO, as_nobody_or_skip, dead_runs_lock, is_root, network_or_skip
from toolkit import netlab
from toolkit.netlab import impairment as I
from toolkit.netlab import kernel as K
from toolkit.netlab import registry

pytestmark = pytest.mark.root


def _need_network():
    network_or_skip()
    for tool in ("ip", "ethtool", "ping"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.skip(f"{tool} is not installed (make test installs it as root)")


def _need_root_run():
    """Tests that look for a run's namespaces in this machine's `ip netns` list, where only
    a root run puts them: a rootless run's live in its own user and mount namespaces and
    die with its holder (test_rootless_as_an_unprivileged_user checks that)."""
    if not is_root():
        pytest.skip("looks for a root run's namespaces in the host's list: needs root")
    _need_network()


def _ours(run_id: str) -> list[str]:
    return [n for n in registry.list_netns() if n.startswith(f"lk-{run_id}-")]


def _ping(lab, src, dst, family=4, count=1):
    return lab.exec(src, ["ping", f"-{family}", "-c", str(count), "-i", "0.2", "-W", "2",
                          lab.addr(dst, family)])


def test_build_reach_and_tear_down_fast():
    _need_root_run()
    topo = netlab.default_topology(sysctls={"a": {"tcp_congestion_control": "reno"}})
    with netlab.up(topo) as lab:
        assert sorted(_ours(lab.run_id)) == sorted(lab.netns(n) for n in ("a", "b", "r"))
        assert _ping(lab, "a", "b").returncode == 0
        assert _ping(lab, "b", "a", family=6).returncode == 0
        # the router is in the path: TTL 64 arrives as 63
        assert "ttl=63" in _ping(lab, "a", "b").stdout
        assert lab.exec("a", ["sysctl", "-n", "net.ipv4.tcp_congestion_control"]
                        ).stdout.strip() == "reno"
        offloads = lab.exec("r", ["ethtool", "-k", lab.iface("r", "b")]).stdout
        for feature in ("generic-segmentation-offload", "tcp-segmentation-offload",
                        "generic-receive-offload"):
            assert f"{feature}: off" in offloads
        assert lab.exec("a", ["ip", "link", "show", "lk-a-r"]).stdout.count(
            lab.mac("a", "r")) == 1
        run_id = lab.run_id
        assert (registry.RUNS_DIR / f"{run_id}.json").exists()
    assert _ours(run_id) == []
    assert not (registry.RUNS_DIR / f"{run_id}.json").exists()
    assert lab.teardown_errors == []
    # the budget: setup and teardown of a-r-b in under 0.5 s each
    assert lab.timings["setup_s"] < 0.5, lab.timings
    assert lab.timings["teardown_s"] < 0.5, lab.timings


def test_an_exception_inside_tears_down_and_propagates():
    _need_root_run()
    with pytest.raises(ZeroDivisionError):
        with netlab.up(netlab.default_topology()) as lab:
            run_id = lab.run_id
            proc = lab.popen("b", ["sleep", "30"])
            raise ZeroDivisionError("inside the lab")
    assert _ours(run_id) == []
    assert proc.poll() is not None          # processes in the lab were stopped


def test_a_failing_step_unwinds_what_was_built():
    _need_root_run()
    # an MTU the veth driver refuses (above 65535) makes `ip link add` fail after the
    # namespaces exist; from_dict would refuse it, so the links are made by hand
    topo = netlab.default_topology()
    topo = replace(topo, links=tuple(replace(link, mtu=70000) for link in topo.links))
    run_id = registry.new_run_id()
    with pytest.raises(netlab.ApplyError, match="ip link add"):
        with netlab.up(topo, run_id=run_id):
            pass
    assert _ours(run_id) == []


RUNNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        print(lab.run_id, flush=True)
        time.sleep(60)
""")


def _start_runner():
    # a shell's background job inherits SIGINT ignored, and Python keeps it so: give the
    # runner the default handling a user's terminal gives it
    proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(repo=str(REPO))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    assert len(_ours(run_id)) == 3
    return proc, run_id


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_tear_down(sig):
    _need_root_run()
    proc, run_id = _start_runner()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert _ours(run_id) == []
    assert not (registry.RUNS_DIR / f"{run_id}.json").exists()


def test_sigkill_then_clean_removes_the_dead_run_and_nothing_else():
    _need_root_run()
    with dead_runs_lock(), netlab.up(netlab.default_topology()) as live:
        proc, dead_id = _start_runner()
        proc.kill()
        proc.wait(timeout=10)
        assert len(_ours(dead_id)) == 3                # SIGKILL: nothing could run
        out = subprocess.run([sys.executable, "-m", "toolkit.cli", "clean"], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"removed run {dead_id} (process {proc.pid} is gone)" in out.stdout
        assert _ours(dead_id) == []
        assert len(_ours(live.run_id)) == 3            # the live run is untouched
        assert _ping(live, "a", "b").returncode == 0
        again = subprocess.run([sys.executable, "-m", "toolkit.cli", "clean"], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
        assert again.stdout.strip() == "nothing to clean"


def test_rootless_path_as_root():
    _need_network()
    with netlab.up(netlab.default_topology(), privilege="rootless") as lab:
        assert lab.privilege.mode == "rootless"
        assert _ping(lab, "a", "b").returncode == 0
        # the lab lives in its own user namespace: the host sees none of it
        assert _ours(lab.run_id) == []
        holder = lab.holder.proc
    assert holder.poll() is not None


ROOTLESS = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {repo!r})
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        ping = lab.exec("a", ["ping", "-c1", "-W2", lab.addr("b")])
        six = lab.exec("b", ["ping", "-6", "-c1", "-W2", lab.addr("a", 6)])
        print(json.dumps({{"uid": os.getuid(), "mode": lab.privilege.mode,
                          "ping": ping.returncode, "ping6": six.returncode,
                          "holder": lab.holder.proc.pid}}), flush=True)
        if {kill}:
            time.sleep(60)
    print(json.dumps(lab.timings))
""")


@pytest.mark.parametrize("kill", [False, True])
def test_rootless_as_an_unprivileged_user(kill):
    python = as_nobody_or_skip()
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", python, "-c",
                             ROOTLESS.format(repo=str(REPO), kill=kill)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")
    first = json.loads(proc.stdout.readline() or "{}") or pytest.fail(proc.stderr.read())
    assert first["uid"] == 65534 and first["mode"] == "rootless"
    assert first["ping"] == 0 and first["ping6"] == 0
    if kill:
        # SIGKILL the python process itself (runuser's child): nothing can run its cleanup
        child = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                   text=True).stdout.split()[0])
        os.kill(child, signal.SIGKILL)
        proc.wait(timeout=10)
    else:
        timings = json.loads(proc.stdout.readline())
        assert proc.wait(timeout=10) == 0
        assert timings["setup_s"] < 0.5 and timings["teardown_s"] < 0.5, timings
    # the holder died with its parent, and with it every namespace of the run
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{first['holder']}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{first['holder']}")


def test_kernel_engine_loss_is_counted_by_the_kernel():
    _need_network()
    imp = I.from_dict({"a_to_b": {"loss": "20%"}})
    with netlab.up(netlab.default_topology()) as lab:
        lab.apply(K.plan_kernel(imp, lab.run_id, lab.netns("r"), have_netem=False))
        out = lab.exec("a", ["ping", "-c", "300", "-i", "0.002", "-W", "1", "-q",
                             lab.addr("b")], timeout=30).stdout
        received = int(out.split(" received")[0].split()[-1])
        table = lab.exec("r", ["nft", "-j", "list", "table", "inet",
                               K.table_name(lab.run_id)]).stdout
        drops = K.parse_nft_drops(table)
        # every lost echo request is one the rule dropped, and only a->b lost any
        assert drops == {"a_to_b": 300 - received}
        lo, hi = K.binomial_interval(300, 0.2)
        assert lo <= drops["a_to_b"] <= hi
