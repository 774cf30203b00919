"""The scapy backend: same interface as dumpcap and tcpdump, a declared ceiling, honest drops.

Without root: its command line, its counters (tcpdump's wording), the message when scapy
is missing. With capture rights: errors named, packet limit, pcap output, SIGTERM. In
the lab: at its declared ceiling nothing is lost, and far above it the kernel's drop
count accounts for every datagram not written (captured + dropped == sent).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from conftest import REPO, is_root
from toolkit import capture
from toolkit.capture import files
from toolkit.capture.backends import BACKENDS, parse_counters

SCAPY = "scapy" in capture.installed_backends()


def test_command_line():
    argv = BACKENDS["scapy"].argv("/venv/python", "lk-b-r", "/r/b.pcapng", 96, "udp", 4, 10,
                                  ring=(0.5, 3), comment="run 1, point b")
    assert argv == ["/venv/python", "-m", "toolkit.capture.scapy_backend", "-i", "lk-b-r",
                    "-w", "/r/b.pcapng", "-s", "96", "-B", "4", "-c", "10",
                    "--ring-bytes", str(512 * 1024), "--ring-files", "3",
                    "--comment", "run 1, point b", "-f", "udp"]


def _capture_set(*backends: str) -> capture.CaptureSet:
    # stand-ins for started captures: a Capture takes its max_pps from its backend's spec
    caps = {f"p{i}": SimpleNamespace(backend=b, max_pps=BACKENDS[b].max_pps)
            for i, b in enumerate(backends)}
    return capture.CaptureSet([], caps)


def test_the_ceiling_caps_traffic_only_where_scapy_captures(monkeypatch):
    """The declared ceiling is what a runner's traffic is held to, with a note naming the
    backend; dumpcap and tcpdump never cap; scapy processes sharing one core share it.
    (That scapy really keeps up at its ceiling is test_at_its_declared_ceiling_...)"""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    for fast in (("dumpcap",), ("tcpdump", "dumpcap")):
        assert _capture_set(*fast).limit_rate(1e7) == (1e7, None)
    one = _capture_set("dumpcap", "scapy")
    ceiling = one.max_pps
    assert ceiling and 1000 <= ceiling <= 9000       # below the ~9,000/s measured on a core
    assert one.limit_rate(ceiling) == (ceiling, None)
    pps, note = one.limit_rate(ceiling * 4)
    assert pps == ceiling and "1 scapy capture" in note and f"{ceiling:,}" in note
    two = _capture_set("scapy", "scapy")
    pps, note = two.limit_rate(ceiling * 4)
    assert pps == ceiling // 2 and "2 scapy captures at once" in note
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert two.limit_rate(ceiling * 4)[0] == ceiling


@pytest.mark.parametrize("text,expected", [
    ("labkit-scapy: listening on lk-b-r (filter: udp), file /r/b.pcapng\n"
     "7500 packets captured\n7500 packets received by filter\n0 packets dropped by kernel\n",
     dict(captured=7500, received=7500, dropped=0, dropped_kernel=0)),
    ("12 packets captured\n30000 packets received by filter\n"
     "29988 packets dropped by kernel\n",
     dict(captured=12, received=30000, dropped=29988)),
    ("labkit-scapy: cannot capture on 'x': no interface with this name\n",
     dict(captured=None, dropped=None)),
])
def test_counters(text, expected):
    c = parse_counters("scapy", text)
    for field, value in expected.items():
        assert getattr(c, field) == value, field


def test_without_scapy_it_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['scapy'] = None; sys.path.insert(0, %r)\n"
            "from toolkit.capture.scapy_backend import main\n"
            "sys.exit(main(['-i', 'lo', '-w', %r]))" % (str(REPO), str(tmp_path / "x")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "scapy is not installed" in r.stderr and "pip install scapy" in r.stderr
    assert "Traceback" not in r.stderr


# --- live -------------------------------------------------------------------------------------

def _usable() -> str:
    if not SCAPY:
        return "scapy is not installed (pip install scapy)"
    p = capture.probe("lo")
    return "" if "scapy" in p.usable else p.problems.get("scapy", "scapy cannot capture")


WHY_NOT = _usable()
live = pytest.mark.skipif(bool(WHY_NOT), reason=f"no scapy capture here: {WHY_NOT}")


def _send_udp(port: int, n: int = 1, size: int = 100) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(i.to_bytes(4, "big") * (size // 4), ("127.0.0.1", port))


@live
@pytest.mark.root
def test_start_exposes_the_ceiling(tmp_path):
    with capture.start("lo", tmp_path / "c.pcapng", backend="scapy",
                       bpf_filter="udp port 9") as cap:
        assert cap.max_pps == BACKENDS["scapy"].max_pps
    assert cap.result.max_pps == cap.max_pps
    assert cap.result.as_dict()["max_pps"] == cap.max_pps


@live
@pytest.mark.root
@pytest.mark.parametrize("kw,match", [
    (dict(interface="lknope0"), "lknope0.*no interface"),
    (dict(bpf_filter="udp port"), "filter 'udp port'.*syntax error"),
])
def test_errors_name_what_and_where(tmp_path, kw, match):
    args = dict(interface="lo", bpf_filter="")
    args.update(kw)
    with pytest.raises(capture.CaptureFailed, match=match) as e:
        capture.start(args["interface"], tmp_path / "e.pcapng", backend="scapy",
                      bpf_filter=args["bpf_filter"])
    assert "Traceback" not in str(e.value)
    assert capture.summarize(tmp_path / "e.pcapng").file_format == "pcapng"


@live
@pytest.mark.root
def test_packet_limit_ends_the_capture_by_itself(tmp_path):
    port = 40000 + os.getpid() % 20000
    path = tmp_path / "limit.pcapng"
    with capture.start("lo", path, backend="scapy", bpf_filter=f"udp port {port}",
                       packet_limit=5) as cap:
        _send_udp(port, 12)
        assert cap.wait(10) == 0
    assert cap.counters.captured == 5
    assert len(list(files.iter_frames(path))) == 5


@live
@pytest.mark.root
def test_sigterm_also_leaves_a_whole_file_with_counters(tmp_path):
    port = 40000 + os.getpid() % 20000
    path = tmp_path / "term.pcapng"
    cap = capture.start("lo", path, backend="scapy", bpf_filter=f"udp port {port}",
                        snaplen=64)
    try:
        _send_udp(port, 3, size=400)
        time.sleep(0.3)
        cap.proc.send_signal(signal.SIGTERM)      # as the lab's teardown stops processes
        assert cap.wait(10) == 0
    finally:
        result = cap.stop()
    assert result.counters.captured == 3 and result.counters.dropped == 0
    assert result.repaired == ()
    frames = list(files.iter_frames(path))
    assert [(len(f), orig) for _, f, orig in frames] == [(64, 442)] * 3   # snaplen kept
    s = capture.summarize(path)
    assert s.good_bytes == s.file_bytes


@live
@pytest.mark.root
def test_writes_pcap_when_asked(tmp_path):
    port = 40000 + os.getpid() % 20000
    path = tmp_path / "x.pcap"
    cmd = [sys.executable, "-m", "toolkit.capture.scapy_backend", "-i", "lo", "-w",
           str(path), "-F", "pcap", "-f", f"udp port {port}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr.readline().startswith("labkit-scapy: listening on lo")
        _send_udp(port, 2)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            err = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()                 # never leave it behind; the test fails below
            err = proc.communicate()[1] + "\n(did not stop on SIGINT within 10 s)"
    assert proc.returncode == 0 and "2 packets captured" in err
    assert capture.summarize(path).file_format == "pcap"
    assert [orig for _, _, orig in files.iter_frames(path)] == [142, 142]


# --- in the lab: the ceiling -------------------------------------------------------------------

SENDER = textwrap.dedent("""
    import socket, sys, time
    dst, port, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.monotonic()
    for i in range(n):
        s.sendto(i.to_bytes(4, "big") * 25, (dst, port))
        if rate:                       # paced: sleep to each datagram's due time
            due = t0 + (i + 1) / rate
            while (d := due - time.monotonic()) > 0:
                time.sleep(d if d > 0.002 else 0)
    print(n / (time.monotonic() - t0))
""")


@pytest.fixture(scope="module")
def lab():
    if WHY_NOT:
        pytest.skip(f"no scapy capture here: {WHY_NOT}")
    if not is_root():
        pytest.skip("the lab network needs root (CAP_NET_ADMIN for namespaces)")
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        yield lab


def _send(lab, n: int, rate: float) -> float:
    r = lab.exec("a", [sys.executable, "-c", SENDER, lab.addr("b"), "7000", str(n),
                       str(rate)], timeout=120)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


@pytest.mark.root
def test_at_its_declared_ceiling_nothing_is_lost(lab, tmp_path):
    path = tmp_path / "b.pcapng"
    with capture.start(lab.iface("b", "r"), path, prefix=lab.prefix("b"), backend="scapy",
                       bpf_filter="udp dst port 7000") as cap:
        n = cap.max_pps * 3                     # three seconds at the ceiling
        rate = _send(lab, n, cap.max_pps)
    assert rate > cap.max_pps * 0.95            # the sender really kept the pace
    c = cap.result.counters
    assert (c.captured, c.received, c.dropped) == (n, n, 0)
    seqs = [int.from_bytes(f[42:46], "big") for _, f, _ in files.iter_frames(path)]
    assert seqs == list(range(n))               # every datagram, in order


@pytest.mark.root
def test_far_above_it_the_drops_are_counted(lab, tmp_path):
    """Unpaced, Python sends far faster than the backend writes: the socket's queue
    overflows, and the kernel's count of what it dropped closes the books exactly."""
    path = tmp_path / "b.pcapng"
    n = 40000
    with capture.start(lab.iface("b", "r"), path, prefix=lab.prefix("b"), backend="scapy",
                       bpf_filter="udp dst port 7000") as cap:
        _send(lab, n, 0)
    c = cap.result.counters
    assert c.dropped > 0, c
    assert c.received == n and c.captured + c.dropped == n, c
    assert len(list(files.iter_frames(path))) == c.captured
