"""A slow UDP reader (labkit serve --proto udp --pause / --slow-read): the socket's receive
buffer overflows and the kernel drops datagrams inside the receiving host. The receiver
reports them (socket_drops, from /proc/net/udp); they never reach its statistics. On
loopback: no namespaces needed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO
from toolkit.endpoints.report import Report
from toolkit.endpoints.sockopts import SocketOptions
from toolkit.endpoints.udp import UdpReceiver, UdpSendConfig, socket_drops
from toolkit.endpoints.udp import send as udp_send

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="/proc/net/udp is Linux's")

COUNT, SIZE = 300, 1000
CONTROL = 6                      # 3 hello and 3 end marker datagrams per flow
# what a 32K receive buffer (16K asked, doubled by the kernel) can hold of 1000-byte
# datagrams, at most: each costs more than its payload (skb truesize)
BUFFER_HOLDS = (32 << 10) // SIZE


def receiver(**kw) -> UdpReceiver:
    kw.setdefault("options", SocketOptions(rcvbuf=16 << 10))
    return UdpReceiver(0, "127.0.0.1", report=Report("receiver", "udp", "udp", quiet=True),
                       max_flows=1, max_seconds=8.0, idle_end_s=1.0, **kw)


def run_flow(rx: UdpReceiver, count=COUNT, rate_bps=20e6, idle_s=0.0
             ) -> tuple[dict, float, float, float]:
    """Run the receiver in a thread, send `count` datagrams, and return its report, the
    time the sender started, the time it finished and the time the receiver ended
    (monotonic). Bounds read the sender's own times: on a busy machine it may take
    longer than its rate says, which lets a slow reader read more meanwhile."""
    out: dict = {}

    def serve():
        out["doc"] = rx.run()
        out["ended"] = time.monotonic()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    time.sleep(idle_s)
    started = time.monotonic()
    udp_send(UdpSendConfig(host="127.0.0.1", port=rx.port, count=count, lengths=[SIZE],
                           rate_bps=rate_bps, flow=7, gso=False),
             Report("sender", "udp", "bulk", quiet=True))
    sent = time.monotonic()
    t.join(timeout=20)
    assert not t.is_alive()
    return out["doc"], started, sent, out["ended"]


def flow_of(doc: dict) -> dict:
    (conn,) = [c for c in doc["connections"] if c["flow"] == 7]
    return conn


def test_a_reader_that_keeps_up_loses_nothing_and_the_socket_drops_none():
    doc, *_ = run_flow(receiver(options=SocketOptions(rcvbuf=4 << 20)))
    assert flow_of(doc)["packets"] == COUNT
    assert doc["end"]["socket_drops"] == 0
    assert doc["start"]["pause_s"] == 0 and doc["start"]["slow_read_bps"] == 0


def test_a_paused_reader_overflows_its_small_buffer_and_the_kernel_drops_the_rest():
    doc, *_ = run_flow(receiver(pause_s=1.0))
    got = flow_of(doc)["packets"]
    # 16K asked, 32K granted: a few dozen 1000-byte datagrams fit, not 300
    assert 0 < got < COUNT // 2
    drops = doc["end"]["socket_drops"]
    # every datagram not read was dropped by the kernel for this socket (control ones too)
    assert COUNT - got <= drops <= COUNT - got + CONTROL
    assert doc["start"]["pause_s"] == 1.0


def test_a_slow_reader_reads_at_its_rate_and_its_buffer_overflows():
    rate = 800e3
    doc, started, sent, ended = run_flow(receiver(slow_read_bps=rate), rate_bps=4e6)
    conn = flow_of(doc)
    got = conn["packets"]
    # a reader at full speed gets all 300 (the first test); this one gets what its rate
    # allows while the sender sends (0.6 s when the machine keeps time), and what its
    # buffer held
    assert 0 < got < COUNT
    assert got <= (sent - started) * rate / (8 * SIZE) + BUFFER_HOLDS + 1
    assert COUNT - got <= doc["end"]["socket_drops"] <= COUNT - got + CONTROL
    # never faster than its rate: reading `got` datagrams took at least their bits / rate
    assert ended - started >= 0.95 * (got - 1) * SIZE * 8 / rate


def test_a_slow_reader_saves_no_credit_while_it_waits_for_the_first_datagram():
    # a second idle before the sender starts must not buy a burst of fast reads after it
    rate = 800e3
    doc, started, sent, ended = run_flow(receiver(slow_read_bps=rate), rate_bps=4e6,
                                         idle_s=1.0)
    got = flow_of(doc)["packets"]
    assert ended - started >= 0.95 * (got - 1) * SIZE * 8 / rate
    # the sending time (0.6 s when the machine keeps time) at 800 kbit/s is 60 datagrams,
    # plus what the 32K buffer holds: a second's saved credit would add 100 more
    assert got <= (sent - started) * rate / (8 * SIZE) + BUFFER_HOLDS + 1


def test_a_slow_reader_with_room_in_its_buffer_loses_nothing_but_is_late():
    rate = 1e6
    doc, started, _, ended = run_flow(receiver(slow_read_bps=rate, options=SocketOptions(
        rcvbuf=4 << 20)), count=100)
    assert flow_of(doc)["packets"] == 100
    assert doc["end"]["socket_drops"] == 0
    # sent in 40 ms, read at 1 Mbit/s: 0.8 s
    assert ended - started >= 0.95 * 100 * SIZE * 8 / rate


def test_socket_drops_is_none_for_a_socket_not_in_proc_net_udp():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert socket_drops(s) is None


def test_labkit_serve_udp_takes_pause_and_rcvbuf(tmp_path):
    """The bug this fixes: `labkit serve --proto udp` dropped --pause and --slow-read."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = tmp_path / "serve.json"
    p = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "--proto", "udp",
                          "-B", "127.0.0.1", "-p", str(port), "-1", "-t", "6", "-q",
                          "--pause", "1", "--rcvbuf", "16K", "--json-file", str(report)],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("Server listening")
        udp_send(UdpSendConfig(host="127.0.0.1", port=port, count=COUNT, lengths=[SIZE],
                               rate_bps=20e6, flow=7, gso=False),
                 Report("sender", "udp", "bulk", quiet=True))
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    doc = json.loads(report.read_text())
    assert doc["start"]["pause_s"] == 1.0
    assert doc["start"]["options"]["rcvbuf"] == 2 * (16 << 10)     # the kernel doubles it
    got = flow_of(doc)["packets"]
    assert got < COUNT // 2
    assert doc["end"]["socket_drops"] >= COUNT - got


@pytest.mark.parametrize("args, words", [
    (["--pause", "soon"], "--pause"),
    (["--slow-read", "fast"], "--slow-read"),
    (["--slow-read", "0"], "above zero"),
])
def test_bad_slow_reader_options_name_the_option(args, words, tmp_path):
    p = subprocess.run([sys.executable, "-m", "toolkit.cli", "serve", "--proto", "udp",
                        "-B", "127.0.0.1", "-p", "0", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2
    assert words in p.stderr and "Traceback" not in p.stderr


def test_a_flow_whose_end_markers_never_came_ends_after_the_idle_time():
    """`labkit serve --idle S`: a slow reader's full buffer may drop the sender's end
    markers; the flow then ends S seconds after its last datagram, not 5."""
    import socket
    from toolkit import wire
    rx = UdpReceiver(0, "127.0.0.1", report=Report("receiver", "udp", "udp", quiet=True),
                     max_flows=1, max_seconds=8.0, idle_end_s=0.3)
    out = {}
    t = threading.Thread(target=lambda: out.update(doc=rx.run(), ended=time.monotonic()),
                         daemon=True)
    t.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for seq in range(10):                   # data only: no hello, no end marker
            s.sendto(wire.frame(wire.Header(9, seq, time.time_ns(), 0, wire.KIND_DATA),
                                bytes(100)), ("127.0.0.1", rx.port))
        last = time.monotonic()
    t.join(timeout=10)
    assert not t.is_alive()
    (conn,) = out["doc"]["connections"]
    assert conn["ended"] == "idle" and conn["packets"] == 10
    assert 0.3 <= out["ended"] - last < 2.0


@pytest.mark.parametrize("args, words", [
    (["--proto", "udp", "--idle", "0"], "--idle"),
    (["--proto", "tcp", "--idle", "1"], "UDP only"),
])
def test_bad_idle_options_name_the_option(args, words):
    p = subprocess.run([sys.executable, "-m", "toolkit.cli", "serve", "-B", "127.0.0.1",
                        "-p", "0", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    assert words in p.stderr and "Traceback" not in p.stderr
