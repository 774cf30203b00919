"""The runner's extensions for the socket labs: scenario flows (toolkit.scenarios, run in a
lab as `scenario = "NAME"`), [observe] (the kernel's sockets and counters per host) and
faults matched by port: read, checked and turned into tables without a lab."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from conftest import REPO
from toolkit import scenarios
from toolkit.labs import observe, observer
from toolkit.labs import spec as S
from toolkit.labs.folder import RunFolder
from toolkit.netlab import impairment

SS_OUTPUT = """\
tcp   LISTEN     0      5      10.201.2.2:5201       0.0.0.0:*
tcp   SYN-RECV   0      0      10.201.2.2:5201     10.201.3.77:1024  timer:(on,1.2sec,1)
tcp   TIME-WAIT  0      0      10.201.1.2:41000    10.201.2.2:5201   timer:(timewait,59sec,0)
tcp   ESTAB      0      1448   [fd00::2]:5201      [fd00::1]:41001   timer:(on,204ms,0)
tcp   CLOSE-WAIT 1      0      10.201.2.2%lk-b-r:5202 10.201.1.2:41002
udp   UNCONN     0      0      0.0.0.0:5203        0.0.0.0:*
"""


def test_ss_lines_become_records_with_state_queues_and_timer():
    rows = observer.parse_ss(SS_OUTPUT)
    assert [r["state"] for r in rows] == ["LISTEN", "SYN-RECV", "TIME-WAIT", "ESTAB",
                                         "CLOSE-WAIT", "UNCONN"]
    listen, synrecv, tw, estab, cw, udp = rows
    assert (listen["recv_q"], listen["send_q"], listen["peer_port"]) == (0, 5, None)
    assert (synrecv["timer"], synrecv["timer_s"], synrecv["retrans"]) == ("on", 1.2, 1)
    assert (tw["local_addr"], tw["local_port"], tw["timer_s"]) == ("10.201.1.2", 41000, 59.0)
    assert (estab["local_addr"], estab["peer_addr"], estab["send_q"]) == ("fd00::2",
                                                                          "fd00::1", 1448)
    assert cw["local_addr"] == "10.201.2.2" and cw["local_port"] == 5202
    assert udp["proto"] == "udp" and udp["timer"] is None


@pytest.mark.parametrize("text, seconds", [("59sec", 59.0), ("1min2sec", 62.0),
                                           ("204ms", 0.204), ("1.5sec", 1.5), ("", None)])
def test_ss_timer_times_in_seconds(text, seconds):
    assert observer.timer_seconds(text) == seconds


def test_snmp_files_read_with_nstat_names():
    text = ("Udp: InDatagrams NoPorts InErrors RcvbufErrors\nUdp: 10 0 3 3\n"
            "TcpExt: SyncookiesSent ListenOverflows\nTcpExt: 7 12\n")
    assert observer.parse_snmp(text) == {"UdpInDatagrams": 10, "UdpNoPorts": 0,
                                         "UdpInErrors": 3, "UdpRcvbufErrors": 3,
                                         "TcpExtSyncookiesSent": 7, "TcpExtListenOverflows": 12}


def test_the_observer_samples_this_namespace_until_interrupted(tmp_path):
    out = tmp_path / "h.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "toolkit.labs.observer", "--every", "0.05",
                          "--out", str(out)], cwd=REPO)
    try:
        import time
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or
                                                len(out.read_text().splitlines()) < 3):
            time.sleep(0.05)
    finally:
        p.send_signal(2)
        assert p.wait(10) == 0
    recs = list(observe.samples(out))
    assert len(recs) >= 2
    assert isinstance(recs[0]["sockets"], list), recs[0]
    assert "UdpInDatagrams" in recs[0]["counters"]       # the first sample has them all


def _run_folder(tmp_path, samples_by_host: dict) -> RunFolder:
    files = {}
    (tmp_path / "kernel").mkdir()
    for host, recs in samples_by_host.items():
        rel = f"kernel/{host}.jsonl"
        files[host] = rel
        lines = [json.dumps({"every_s": 0.1, "t_unix_s": 999.0})]
        lines += [json.dumps(r) for r in recs]
        (tmp_path / rel).write_text("\n".join(lines) + "\n{\"cut short")
    doc = {"schema": "labkit-run", "version": 1, "started_unix_s": 990.0,
           "phases": [{"name": "traffic", "started_unix_s": 1000.0, "duration_s": 3}],
           "observe": {"every_s": 0.1, "files": files}, "captures": {}, "flows": []}
    (tmp_path / "run.json").write_text(json.dumps(doc))
    return RunFolder(tmp_path)


def test_sockets_and_counters_tables_from_the_samples(tmp_path):
    sock = observer.parse_ss(SS_OUTPUT)
    run = _run_folder(tmp_path, {
        "b": [{"t_unix_s": 1000.5, "sockets": sock[:2], "counters": {"TcpExtListenDrops": 0,
                                                                     "UdpInErrors": 4}},
              {"t_unix_s": 1001.0, "sockets": sock[:1], "counters": {"TcpExtListenDrops": 3}},
              {"t_unix_s": 1001.5, "sockets": None, "counters": {"TcpExtListenDrops": 5},
               "error": "ss: not found"}],
        "a": [{"t_unix_s": 1000.25, "sockets": [sock[2]], "counters": {}}]})
    s = run.table("sockets")
    assert len(s) == 4
    b = s[s.host == "b"]
    assert list(b.t_s) == [0.5, 0.5, 1.0] and list(b.state) == ["LISTEN", "SYN-RECV", "LISTEN"]
    assert str(s.peer_port.dtype) == "Int64"
    tw = s[s.state == "TIME-WAIT"].iloc[0]
    assert (tw.host, tw.t_s, tw.timer_s) == ("a", 0.25, 59.0)
    c = run.table("counters")
    assert c.to_dict("records") == [{"host": "b", "counter": "TcpExtListenDrops", "first": 0,
                                     "last": 5, "delta": 5}]     # UdpInErrors never changed
    assert observe.counter_series(run, "b", "TcpExtListenDrops") == [(0.5, 0), (1.0, 3),
                                                                     (1.5, 5)]


def test_expectations_read_the_sockets_table(tmp_path):
    from toolkit.labs import expect
    run = _run_folder(tmp_path, {"a": [{"t_unix_s": 1000.25,
                                        "sockets": observer.parse_ss(SS_OUTPUT)[2:3],
                                        "counters": {}}]})
    exps = expect.parse([{"table": "sockets", "where": {"host": "a", "state": "TIME-WAIT"},
                          "value": "count", "op": ">=", "expected": 1},
                         {"table": "sockets", "where": {"host": "a", "state": "CLOSE-WAIT"},
                          "value": "count", "op": ">=", "expected": 1}], "expect")
    results = expect.evaluate(exps, run.table)
    assert [r.status for r in results] == ["pass", "fail"]


LAB = """
[lab]
title = "t"
duration = "5s"
[topology]
hosts = ["a", "b", "m"]
{observe}
[[flow]]
name = "x"
scenario = "{scenario}"
client = "m"
server = "b"
{send}
"""


@pytest.fixture()
def fake_scenarios(monkeypatch):
    """Two scenarios of the test's own: one with both roles, one with a client only."""
    def add_server(p):
        p.add_argument("--hold", metavar="S")

    def add_client(p):
        p.add_argument("--count", type=int, default=1)
    both = {"server": scenarios.Role("a server", add_server, lambda a: 0),
            "client": scenarios.Role("a client", add_client, lambda a: 0)}
    only_client = {"client": scenarios.Role("a flood", add_client, lambda a: 0)}
    monkeypatch.setitem(scenarios.REGISTRY, "t-both", "t_both")
    monkeypatch.setitem(scenarios.REGISTRY, "t-client", "t_client")
    monkeypatch.setitem(sys.modules, "toolkit.scenarios.t_both",
                        types.SimpleNamespace(ROLES=both, __doc__="both roles"))
    monkeypatch.setitem(sys.modules, "toolkit.scenarios.t_client",
                        types.SimpleNamespace(ROLES=only_client, __doc__="client only"))
    monkeypatch.setattr(S, "_COMMAND_OPTIONS", {})


def lab_text(scenario="t-both", send="send = {count = 3}", observe_=""):
    return LAB.replace("{observe}", observe_).replace("{scenario}", scenario) \
        .replace("{send}", send)


def test_a_scenario_flow_is_checked_against_its_roles_own_options(fake_scenarios, tmp_path):
    spec = S.loads(lab_text(send="send = {count = 3}\nserve = {hold = '2s'}"),
                   tmp_path / "lab.toml")
    f = spec.flows[0]
    assert (f.scenario, f.has_server, f.send_args(), f.serve_args()) == \
        ("t-both", True, ["--count", "3"], ["--hold", "2s"])
    with pytest.raises(S.LabError, match=r"flow\[0\]\.send\.speed: .*no such option; known: "
                                         r"count"):
        S.loads(lab_text(send="send = {speed = 3}"), tmp_path / "lab.toml")
    with pytest.raises(S.LabError, match=r"flow\[0\]\.send: .*count.*invalid int"):
        S.loads(lab_text(send="send = {count = 'many'}"), tmp_path / "lab.toml")
    with pytest.raises(S.LabError, match=r"flow\[0\]\.scenario: 'nope'; known: .*t-both"):
        S.loads(lab_text(scenario="nope"), tmp_path / "lab.toml")


def test_a_client_only_scenario_has_no_receiver_and_may_share_a_port(fake_scenarios, tmp_path):
    text = lab_text(scenario="t-client") + """
[[flow]]
name = "y"
scenario = "t-both"
server = "b"
port = 5201
"""
    spec = S.loads(text, tmp_path / "lab.toml")
    assert [f.has_server for f in spec.flows] == [False, True]
    assert spec.flows[0].port == spec.flows[1].port == 5201
    with pytest.raises(S.LabError, match=r"flow\[0\]\.serve: scenario 't-client' has no "
                                         r"server role"):
        S.loads(lab_text(scenario="t-client", send="serve = {hold = '1s'}"),
                tmp_path / "lab.toml")


def test_scenario_flows_run_as_labkit_scenario_with_the_runners_options(fake_scenarios,
                                                                        tmp_path):
    from toolkit.labs.flows import endpoints_for
    spec = S.loads(lab_text(scenario="t-client"), tmp_path / "lab.toml")
    lab = types.SimpleNamespace(addr=lambda h: {"b": "10.0.2.2"}[h])
    serve, send = endpoints_for(spec.flows[0], lab, tmp_path)
    assert serve is None
    assert send.argv[1:] == ["-m", "toolkit.cli", "scenario", "t-client", "client",
                             "10.0.2.2", "--proto", "tcp", "-p", "5201", "--cport", "41000",
                             "--json-file", str(tmp_path / "endpoints" / "x.send.json"),
                             "--count", "3"]


@pytest.mark.parametrize("table, message", [
    ("every = '1ms'", r"observe\.every: 0\.001 s; expected from 0\.02 s"),
    ("hosts = ['a', 'z']", r"observe\.hosts: 'z' is not a host of this lab"),
    ("sockets = true", r"observe\.sockets: unknown key; known: every, hosts"),
    ("every = 'soon'", r"observe\.every: "),
])
def test_a_bad_observe_table_names_its_key(fake_scenarios, tmp_path, table, message):
    with pytest.raises(S.LabError, match=message):
        S.loads(lab_text(observe_=f"[observe]\n{table}"), tmp_path / "lab.toml")
    spec = S.loads(lab_text(observe_="[observe]\nevery = '50ms'"), tmp_path / "lab.toml")
    assert spec.observe == {"every_s": 0.05, "hosts": ["a", "b", "m"]}


def test_a_fault_matches_one_flow_by_port():
    from toolkit.netlab.faults import FaultBook
    from toolkit.netlab.frames import Packet
    imp = impairment.from_dict({"fault": [{"action": "drop", "proto": "tcp", "port": 5302,
                                           "flags": "S", "not_flags": "A"}]})
    assert "port 5302" in imp.faults[0].describe()
    book = FaultBook(imp.faults)

    def syn(dport):
        return Packet(4, b"\x0a\0\0\1", b"\x0a\0\0\2", "tcp", sport=41000, dport=dport,
                      flags="S")
    assert book.decide("a_to_b", syn(5301), 0.1) is None        # another flow's SYN
    assert book.decide("a_to_b", syn(5302), 0.2) is not None    # this flow's first SYN
    assert book.decide("a_to_b", syn(5302), 1.2) is None        # its retry goes through
    for bad, message in [({"port": 70000}, r"fault\[0\]\.port: 70000; expected a port"),
                         ({"port": 80, "proto": "icmp"}, r"fault\[0\]\.port: a port needs "
                                                         r"proto")]:
        with pytest.raises(impairment.SpecError, match=message):
            impairment.from_dict({"fault": [{"action": "drop", "proto": "tcp", **bad}]})


def test_labkit_scenario_lists_the_library():
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "scenario", "--list"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name in scenarios.names():
        assert name in done.stdout
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "scenario"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "--list" in done.stderr
