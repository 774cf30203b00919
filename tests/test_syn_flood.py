"""The SYN flood scenario's fence: it refuses any destination or spoofed source outside the
lab's subnets, a lab node's own address as a source, and an unbounded count or rate, with
exit status 2 and a message naming the option, before it opens a raw socket or sends a
packet; inside a lab it sends exactly the SYNs asked for, from the spoofed sources."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, network_or_skip
from toolkit.scenarios import syn_flood as F

LAB_DST = "10.201.2.2"
LAB_SOURCES = "10.201.3.128-10.201.3.159"


@pytest.mark.parametrize("dst", ["8.8.8.8", "127.0.0.1", "10.0.0.2", "192.168.1.2",
                                 "10.201.0.2", "10.201.251.2", "10.202.2.2",
                                 "fd00:201:2::2", "::1", "10.201.2.255", "10.201.2.1",
                                 "10.201.2.7", "example.org"])
def test_refuses_destinations_outside_the_lab_hosts(dst):
    with pytest.raises(F.Refused, match="destination"):
        F.plan(dst, F.parse_sources(LAB_SOURCES), 10, 100)


@pytest.mark.parametrize("sources", ["8.8.8.0/29", "10.0.0.0/30", "10.201.0.0/29",
                                     "10.201.251.4-10.201.251.9", "192.168.0.10",
                                     "10.201.3.250-10.201.4.3", "not-an-address",
                                     "fd00:201:3::/126", "10.201.3.0/16"])
def test_refuses_sources_outside_the_lab_subnets(sources):
    with pytest.raises(F.Refused, match="--sources"):
        F.plan(LAB_DST, F.parse_sources(sources), 10, 100)


def test_refuses_a_lab_node_address_as_a_spoofed_source():
    # given one by one, the router's and a host's own address are refused outright
    for used in ("10.201.3.1", "10.201.3.2"):
        with pytest.raises(F.Refused, match="nobody uses"):
            F.plan(LAB_DST, [ipaddress.IPv4Address(used)], 10, 100)
    # inside a range they are skipped, and a range of nothing else is refused
    assert [str(a) for a in F.parse_sources("10.201.3.1-10.201.3.4")] == ["10.201.3.3",
                                                                         "10.201.3.4"]
    with pytest.raises(F.Refused, match="nobody uses"):
        F.parse_sources("10.201.3.1-10.201.3.2")


@pytest.mark.parametrize("count,rate,what", [(0, 100, "--count"), (-5, 100, "--count"),
                                             (F.MAX_COUNT + 1, 100, "--count"),
                                             (10 ** 9, 100, "--count"),
                                             (10, 0, "--rate"), (10, -1, "--rate"),
                                             (10, F.MAX_RATE_PPS + 1, "--rate"),
                                             (10, float("inf"), "--rate"),
                                             (10, float("nan"), "--rate")])
def test_refuses_unbounded_count_or_rate(count, rate, what):
    with pytest.raises(F.Refused, match=what):
        F.plan(LAB_DST, F.parse_sources(LAB_SOURCES), count, rate)


def test_a_plan_inside_the_fence_names_what_it_will_send():
    p = F.plan(LAB_DST, F.parse_sources("10.201.3.128/30"), F.MAX_COUNT, F.MAX_RATE_PPS)
    assert p["destination"] == LAB_DST
    assert p["sources"] == ["10.201.3.129", "10.201.3.130"]     # hosts of the /30
    assert (p["count"], p["rate_pps"]) == (F.MAX_COUNT, F.MAX_RATE_PPS)
    assert F.default_sources("10.201.4.2") == "10.201.4.128-10.201.4.159"


@pytest.mark.parametrize("src,sport,seq", [("10.201.4.130", 40000, 123456789),
                                            ("10.201.3.128", 1024, 0),
                                            ("10.201.250.159", 65535, 2 ** 32 - 1)])
def test_each_syn_is_scapys_template_with_its_own_source_port_and_sequence(src, sport, seq):
    from scapy.layers.inet import IP, TCP
    template = F._syn_template(LAB_DST, 5201)
    ref = bytes(IP(src=src, dst=LAB_DST, ttl=64) /
                TCP(sport=sport, dport=5201, flags="S", seq=seq, window=64240,
                    options=[("MSS", 1460)]))
    assert F._syn_bytes(template, src, sport, seq) == ref      # checksums included


class _NoRawSockets:
    """socket.socket as the flood sees it, recording every socket it asks for."""

    def __init__(self):
        self.asked = []
        self.real = socket.socket

    def __call__(self, family=-1, type=-1, proto=-1, *a, **k):
        self.asked.append((family, type, proto))
        if type == socket.SOCK_RAW:
            raise AssertionError("the flood opened a raw socket before its checks passed")
        return self.real(family, type, proto, *a, **k)


def _run_cli(argv, monkeypatch, tmp_path):
    from toolkit import cli
    guard = _NoRawSockets()
    monkeypatch.setattr(F.socket, "socket", guard)
    sent = []
    monkeypatch.setattr(F, "_syn_bytes", lambda *a: sent.append(a) or b"")
    monkeypatch.setattr(F, "_syn_template", lambda *a: sent.append(a) or b"")
    out = tmp_path / "flood.json"
    status = cli.main(["scenario", "syn-flood", "client", *argv, "-q", "--json-file", str(out)])
    return status, guard, sent, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.parametrize("argv,message", [
    (["8.8.8.8"], "outside the lab's subnets"),
    (["127.0.0.1"], "outside the lab's subnets"),
    ([LAB_DST, "--sources", "8.8.8.0/29"], "--sources"),
    ([LAB_DST, "--sources", "10.201.3.2"], "nobody uses"),
    ([LAB_DST, "--sources", LAB_SOURCES, "--count", "10001"], "--count"),
    ([LAB_DST, "--sources", LAB_SOURCES, "--rate", "5001"], "--rate"),
    ([LAB_DST, "--sources", LAB_SOURCES], "not inside a lab host"),
])
def test_the_command_refuses_with_status_2_before_any_packet(argv, message, monkeypatch,
                                                             tmp_path, capsys):
    status, guard, sent, report = _run_cli(argv, monkeypatch, tmp_path)
    assert status == 2
    assert message in capsys.readouterr().err
    assert not sent, "a packet was crafted before the checks passed"
    assert all(t != socket.SOCK_RAW for _, t, _ in guard.asked)
    assert report["events"][0]["event"] == "refused"
    assert message in report["events"][0]["reason"]
    assert "packets_sent" not in report["end"]


@pytest.mark.root
def test_inside_a_lab_it_sends_exactly_the_spoofed_syns_asked_for(tmp_path):
    network_or_skip()
    from toolkit import netlab
    py = [sys.executable, "-m", "toolkit.cli"]
    topo = netlab.default_topology(("a", "b", "m"),
                                   sysctls={"b": {"tcp_syncookies": 0}})
    with netlab.up(topo) as lab:
        listener = lab.popen("b", [sys.executable, "-c", (
            "import socket,time\ns=socket.socket()\ns.bind(('',5201))\ns.listen(8)\n"
            "print('up',flush=True)\ntime.sleep(30)")], stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "up"
        out = tmp_path / "flood.json"
        # outside the fence from inside the lab: refused too
        bad = lab.exec("m", [*py, "scenario", "syn-flood", "client", "10.201.2.2",
                             "--sources", "10.201.1.2", "-q"], cwd=REPO)
        assert bad.returncode == 2 and "nobody uses" in bad.stderr
        done = lab.exec("m", [*py, "scenario", "syn-flood", "client", lab.addr("b"), "-p",
                              "5201", "--count", "40", "--rate", "2000", "-q", "--json-file",
                              str(out)], cwd=REPO, timeout=60)
        assert done.returncode == 0, done.stderr
        rep = json.loads(out.read_text())
        assert rep["end"]["packets_sent"] == 40
        assert rep["end"]["first_source"] == "10.201.3.128"
        deadline = time.monotonic() + 5
        while True:
            ss = lab.exec("b", ["ss", "-H", "-t", "-n", "state", "syn-recv"]).stdout
            peers = {line.split()[-1].rsplit(":", 1)[0] for line in ss.splitlines()}
            if peers or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # the SYN queue is full at backlog + 1 (9) half-open entries (Linux 6.x compares
        # with >, as it does for the accept queue), all from spoofed sources; the other 31
        # SYNs were dropped (no SYN cookies on b)
        assert len(ss.splitlines()) == 9
        spoofed = ipaddress.ip_network("10.201.3.128/27")
        assert all(ipaddress.ip_address(p) in spoofed for p in peers), peers
        listener.kill()
