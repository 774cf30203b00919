"""`labkit demo` for real: capture on loopback, checked by tshark, then by our analysis.

Runs where capturing on lo is possible (root, or CAP_NET_RAW, or a capable dumpcap);
otherwise it skips naming what is missing, and the no-capture path is tested instead.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest

from toolkit import analyze, capture   # ours: an import error fails, never skips
from toolkit.demo import UDP_DATAGRAMS, UDP_REPLY_EVERY, run_demo

PROBE = capture.probe("lo")
live = pytest.mark.skipif(not PROBE.ok, reason=f"capturing on lo is not possible here: "
                                               f"{PROBE.explain()}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    text = io.StringIO()
    status = run_demo(out, stream=text)
    assert status == 0, text.getvalue()
    pcap = out / json.loads((out / "run.json").read_text())["capture"]["file"]
    return out, pcap, text.getvalue()


def tshark_fields(pcap, display_filter: str, *fields: str) -> list[list[str]]:
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("tshark is not installed (`sudo make test` installs it)")
    # -2: two passes, as the analysis verdicts are compared against
    cmd = [exe, "-2", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields"]
    for f in fields or ("frame.number",):
        cmd += ["-e", f]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines()]


@live
def test_demo_file_is_a_valid_capture(demo):
    _, pcap, text = demo
    assert pcap.is_file()
    if PROBE.backend == "dumpcap":
        assert pcap.name == "demo.pcapng"
    frames = tshark_fields(pcap, "")
    assert [int(f[0]) for f in frames] == list(range(1, len(frames) + 1))
    assert str(pcap) in text and f"recorded {len(frames)} packets" in text


@live
def test_demo_tcp_handshake_and_close_from_each_side(demo):
    _, pcap, _ = demo
    rows = tshark_fields(pcap, "tcp", "tcp.stream", "ip.src", "tcp.srcport",
                         "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset")
    assert {r[0] for r in rows} == {"0"}, "one TCP connection"
    flags = [(r[2], r[3] in ("1", "True"), r[4] in ("1", "True"), r[5] in ("1", "True"),
              r[6] in ("1", "True")) for r in rows]
    client, server = flags[0][0], flags[1][0]
    # three-way handshake (RFC 9293 3.5): SYN, SYN-ACK, ACK
    assert flags[0][1:] == (True, False, False, False)
    assert flags[1][1:] == (True, True, False, False) and server != client
    assert flags[2][0] == client and flags[2][1:] == (False, True, False, False)
    # orderly close, client first, then a FIN from the server; no reset
    fins = [f[0] for f in flags if f[3]]
    assert fins == [client, server]
    assert not any(f[4] for f in flags)
    assert flags[-1][0] == client and flags[-1][1:] == (False, True, False, False)


@live
def test_demo_udp_datagrams(demo):
    out, pcap, _ = demo
    run = json.loads((out / "run.json").read_text())
    port = str(run["udp"]["port"])
    to_server = tshark_fields(pcap, f"udp.dstport == {port}", "udp.length")
    replies = tshark_fields(pcap, f"udp.srcport == {port}")
    assert len(to_server) == UDP_DATAGRAMS
    assert len(replies) == UDP_DATAGRAMS // UDP_REPLY_EVERY
    assert run["capture"]["counters"]["dropped"] == 0


@live
def test_demo_analysis_agrees(demo):
    _, pcap, text = demo
    a = analyze(pcap)
    assert len(a.tcp) == 1
    conv = a.tcp.iloc[0]
    assert conv["history"].startswith("ShA") and conv["conn_state"] == "SF"
    assert conv["close"] == "FIN by A first"
    flows = a.udp_flows.set_index("direction")
    assert flows.loc["a_to_b", "received"] == UDP_DATAGRAMS
    assert flows.loc["a_to_b", "lost"] == 0 and flows.loc["b_to_a", "lost"] == 0
    assert "TCP conversations" in text and "SF" in text


@live
def test_demo_capture_agrees_with_tshark_frame_by_frame(demo):
    _, pcap, _ = demo
    rows = tshark_fields(pcap, "", "frame.number", "tcp.stream", "udp.stream", "tcp.seq",
                         "tcp.analysis.bytes_in_flight")
    pk = analyze(pcap).packets
    assert len(rows) == len(pk)
    for row, (_, r) in zip(rows, pk.iterrows(), strict=True):
        frame, tcp_stream, udp_stream, seq, bif = (row + [""] * 5)[:5]
        assert int(tcp_stream or -1) == r["tcp_stream"], frame
        assert int(udp_stream or -1) == r["udp_stream"], frame
        if seq:
            assert int(seq) == r["seq"] and int(bif or 0) == r["bytes_in_flight"], frame


def test_demo_without_capture_rights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "probe", lambda *a, **k: capture.CaptureProbe(
        installed={"dumpcap": "/usr/bin/dumpcap"}, usable=(),
        problems={"dumpcap": "you are not root and your process lacks CAP_NET_RAW"}))
    text = io.StringIO()
    assert run_demo(tmp_path / "d", stream=text) == 2
    out = text.getvalue()
    assert "CAP_NET_RAW" in out and "run as root" in out and "labkit analyze" in out
    assert out.startswith("labkit demo: cannot capture packets here:\n  dumpcap: you are")
    assert out.count("cannot capture") == 1, out
    assert not (tmp_path / "d").exists()


@live
def test_demo_prints_each_udp_flows_loss_and_one_way_delay(demo):
    """The loopback demo's UDP lab-flow table, with the one-way delay it promises (it once
    asked for a column that does not exist, and printed none)."""
    _, pcap, text = demo
    flows = analyze(pcap).udp_flows
    assert "UDP lab flows" in text
    header = text.split("UDP lab flows")[1].splitlines()[1]
    assert "owd_mean_s" in header.split() and "lost" in header.split()
    assert len(flows) >= 1
