"""`labkit demo` for real: capture on loopback, then our analysis against live tshark."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest

import toolkit
from conftest import is_root
from toolkit.demo import UDP_DATAGRAMS, run_demo

pytestmark = pytest.mark.skipif(
    not is_root() or not (shutil.which("dumpcap") or shutil.which("tcpdump")),
    reason="capturing on lo needs root (CAP_NET_RAW) and dumpcap or tcpdump")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    text = io.StringIO()
    assert run_demo(out, stream=text) == 0
    return out / "demo.pcapng", text.getvalue()


def test_demo_records_handshake_close_and_datagrams(demo):
    pcap, text = demo
    a = toolkit.analyze(pcap)
    assert len(a.tcp) == 1
    conv = a.tcp.iloc[0]
    assert conv["history"].startswith("ShA") and conv["conn_state"] == "SF"
    assert conv["close"] == "FIN by A first"
    flows = a.udp_flows.set_index("direction")
    assert flows.loc["a_to_b", "received"] == UDP_DATAGRAMS
    assert flows.loc["a_to_b", "lost"] == 0 and flows.loc["b_to_a", "lost"] == 0
    assert "TCP conversations" in text and "SF" in text


def test_demo_capture_agrees_with_tshark(demo):
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("tshark not installed")
    pcap, _ = demo
    run = subprocess.run([exe, "-2", "-n", "-r", str(pcap), "-T", "fields", "-e",
                          "frame.number", "-e", "tcp.stream", "-e", "udp.stream", "-e",
                          "tcp.seq", "-e", "tcp.analysis.bytes_in_flight"],
                         capture_output=True, text=True, timeout=60)
    pk = toolkit.analyze(pcap).packets
    lines = run.stdout.splitlines()
    assert len(lines) == len(pk)
    for line, (_, r) in zip(lines, pk.iterrows(), strict=True):
        frame, tcp_stream, udp_stream, seq, bif = (line.split("\t") + [""] * 5)[:5]
        assert int(tcp_stream or -1) == r["tcp_stream"], frame
        assert int(udp_stream or -1) == r["udp_stream"], frame
        if seq:
            assert int(seq) == r["seq"] and int(bif or 0) == r["bytes_in_flight"], frame
