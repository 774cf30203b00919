"""The endpoints between lab hosts: every mode against every server model across the
router, UDP loss accounting against the kernel's own count of what the link dropped, and a
slow reader's zero window seen in a capture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO
from toolkit import netlab
from toolkit.endpoints.servers import MODELS
from toolkit.netlab import impairment as I
from toolkit.netlab import kernel as K

pytestmark = pytest.mark.root
PY = [sys.executable, "-m", "toolkit.cli"]


def _serve(lab, tmp_path, *args):
    proc = lab.popen("b", [*PY, "serve", "-q", "--json-file", str(tmp_path / "server.json"), *args],
                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "listening" in line, proc.stderr.read()
    return proc


def _send(lab, tmp_path, name, *args, timeout=60):
    out = tmp_path / f"{name}.json"
    done = lab.exec("a", [*PY, "send", lab.addr("b"), "-q", "--json-file", str(out), *args],
                    cwd=REPO, timeout=timeout)
    assert done.returncode == 0, (name, done.stderr)
    return json.loads(out.read_text())


@pytest.mark.parametrize("model", MODELS)
def test_every_mode_against_every_model_across_the_router(lab, model, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    (tmp_path / "in").mkdir()
    server = _serve(lab, tmp_path, "--model", model, "--clients", "7", "-t", "60",
                    "--out-dir", str(tmp_path / "in"))
    runs = {
        "bulk": ["-t", "0.5"],
        "paced": ["--mode", "paced", "-b", "20M", "-t", "0.5"],
        "stream": ["--mode", "stream", "-l", "100,1400,9000", "-n", "500K"],
        "rr": ["--mode", "rr", "-k", "200", "-l", "64", "--response-size", "1K"],
        "echo": ["--mode", "echo", "-k", "200", "-l", "300"],
        "file": ["--file", str(src)],
        "unframed": ["--mode", "stream", "--no-framing", "-l", "1000", "-n", "200000"],
    }
    got, took = {}, {}
    for name, args in runs.items():
        t0 = time.time()
        got[name] = _send(lab, tmp_path, name, *args)
        took[name] = time.time() - t0
    assert server.wait(timeout=30) == 0
    srv = json.loads((tmp_path / "server.json").read_text())
    assert sorted(c["how"] for c in srv["connections"]) == ["half-close"] * 7
    peer = {name: doc["end"]["peer"] for name, doc in got.items()}
    for name in ("bulk", "paced", "stream"):
        m = peer[name]["messages"]
        assert m["lost"] == 0 and m["duplicates"] == 0
        assert m["payload_bytes"] == got[name]["end"]["payload_bytes"]
        # namespaces of one machine share the clock: each message's delay from its send
        # stamp to its reading lies within the send's own run (a delay in the wrong unit
        # or sign fails here)
        owd = m["owd_s"]
        assert 0 < owd["min"] <= owd["mean"] <= owd["max"] < took[name], (name, owd)
    assert got["paced"]["end"]["goodput_bps"] == pytest.approx(20e6, rel=0.1)
    assert peer["rr"]["responses"] == 200 == got["rr"]["end"]["transactions"]
    assert got["echo"]["end"]["corrupted"] == 0 and peer["echo"]["responses"] == 200
    assert got["file"]["end"]["file_result"]["ok"]
    assert (tmp_path / "in" / "payload.bin").read_bytes() == src.read_bytes()
    assert peer["unframed"]["alignment"]["messages"] == 200
    # the sender sampled TCP_INFO across the router: an RTT, a window
    info = got["bulk"]["end"]["tcp_info"]
    assert info["rtt_s"] > 0 and info["snd_cwnd"] > 0


def test_udp_loss_accounting_equals_what_the_link_dropped(lab, tmp_path):
    from toolkit import analyze, capture

    imp = I.from_dict({"a_to_b": {"loss": "5%"}})
    engine = netlab.Executor(prefix=lab.executor.prefix)
    engine.apply(K.plan_kernel(imp, lab.run_id, lab.netns("r"), have_netem=False))
    path = tmp_path / "b.pcapng"
    try:
        server = _serve(lab, tmp_path, "--proto", "udp", "-1", "-t", "60")
        with capture.start(lab.iface("b", "r"), path, prefix=lab.prefix("b"), snaplen=96,
                           bpf_filter="udp port 5201"):
            sent = _send(lab, tmp_path, "udp", "--proto", "udp", "-k", "5000", "-b", "40M",
                         "-l", "1000", "--flow", "77")
        assert server.wait(timeout=30) == 0
        drops = K.parse_nft_drops(lab.exec("r", ["nft", "-j", "list", "table", "inet",
                                                 K.table_name(lab.run_id)]).stdout)
    finally:
        assert engine.unwind() == []
    flow = json.loads((tmp_path / "server.json").read_text())["connections"][0]
    assert sent["end"]["datagrams"] == 5000 == flow["expected"]
    # the link dropped data datagrams and maybe control ones (hello/end are sent 3 times);
    # every data datagram the receiver missed is one nftables dropped, and no more
    assert flow["lost"] <= drops["a_to_b"] <= flow["lost"] + 6
    lo, hi = K.binomial_interval(5000, 0.05)
    assert lo <= flow["lost"] <= hi
    assert flow["duplicates"] == 0 and flow["reordered"] == 0
    # the analyzer, from the capture at b alone, counts the same datagrams lost
    flows = analyze(path).udp_flows
    row = flows[flows["flow"] == 77].iloc[0]
    assert (row["lost"], row["duplicates"]) == (flow["lost"], 0)


def test_slow_reader_shows_zero_window_in_the_capture(lab, tmp_path):
    if not (shutil.which("dumpcap") or shutil.which("tcpdump")):
        pytest.skip("no capture tool (make test installs dumpcap as root)")
    from toolkit import analyze, capture

    path = tmp_path / "a.pcapng"
    server = _serve(lab, tmp_path, "-1", "--pause", "1.5", "--rcvbuf", "8K", "-t", "60")
    with capture.start(lab.iface("a", "r"), path, prefix=lab.prefix("a"), snaplen=128,
                       bpf_filter="tcp port 5201"):
        _send(lab, tmp_path, "slow", "-t", "1", "--sndbuf", "64K")
    assert server.wait(timeout=30) == 0
    packets = analyze(path).packets
    assert packets["zero_window"].sum() > 0
    srv = json.loads((tmp_path / "server.json").read_text())
    assert srv["connections"][0]["how"] == "half-close"
