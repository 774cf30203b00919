"""Capture backends: counters parsed from saved output, files repaired, readiness proven.

The first half needs nothing (tables of saved stderr text and byte literals); the second
captures on lo and runs only where capturing is possible, skipping with what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit import capture
from toolkit.capture import files
from toolkit.capture.backends import (BACKENDS, IMMEDIATE_MAX_MIB, PREFERENCE,
                                      immediate_buffer_mib, permission_hint)

# --- counters, from what the backends printed at exit --------------------------------------

DUMPCAP_4_0 = (
    "Capturing on 'Loopback: lo'\nFile: /tmp/x.pcapng\n\rPackets: 1 \rPackets captured: 1\n"
    "Packets received/dropped on interface 'Loopback: lo': 1/0 "
    "(pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0) (100.0%)\n")
DUMPCAP_DROPS = (
    "Capturing on 'lkb123b'\nFile: /tmp/b.pcapng\nPackets captured: 990000\n"
    "Packets received/dropped on interface 'lkb123b': 1000000/10000 "
    "(pcap:9000/dumpcap:1000/flushed:0/ps_ifdrop:3) (99.0%)\n")
DUMPCAP_TWO_IFACES = (
    "Packets captured: 30\n"
    "Packets received/dropped on interface 'a': 10/1 (pcap:1/dumpcap:0/flushed:0)\n"
    "Packets received/dropped on interface 'b': 20/2 (pcap:2/dumpcap:0/flushed:0)\n")
DUMPCAP_OLD = ("Packets captured: 5\n"
               "Packets received/dropped on interface 'eth0': 5/0 (0.0%)\n")
TCPDUMP_4_99 = ("tcpdump: listening on lo, link-type EN10MB (Ethernet), snapshot length "
                "262144 bytes\n1 packet captured\n2 packets received by filter\n"
                "0 packets dropped by kernel\n")
TCPDUMP_IFDROP = ("120 packets captured\n150 packets received by filter\n"
                  "30 packets dropped by kernel\n4 packets dropped by interface\n")

COUNTER_CASES = [
    ("dumpcap", DUMPCAP_4_0, dict(captured=1, received=1, dropped=0, dropped_kernel=0,
                                  dropped_backend=0, dropped_interface=0, flushed=0)),
    ("dumpcap", DUMPCAP_DROPS, dict(captured=990000, received=1000000, dropped=10000,
                                    dropped_kernel=9000, dropped_backend=1000,
                                    dropped_interface=3)),
    ("dumpcap", DUMPCAP_TWO_IFACES, dict(captured=30, received=30, dropped=3,
                                         dropped_kernel=3, dropped_interface=None)),
    ("dumpcap", DUMPCAP_OLD, dict(captured=5, received=5, dropped=0, dropped_kernel=None)),
    ("dumpcap", "dumpcap: There is no device named \"x\".\n",
     dict(captured=None, received=None, dropped=None)),
    ("tcpdump", TCPDUMP_4_99, dict(captured=1, received=2, dropped=0, dropped_kernel=0,
                                   dropped_interface=None)),
    ("tcpdump", TCPDUMP_IFDROP, dict(captured=120, received=150, dropped=34,
                                     dropped_kernel=30, dropped_interface=4)),
    ("tcpdump", "", dict(captured=None, dropped=None)),
]


@pytest.mark.parametrize("backend,text,expected", COUNTER_CASES)
def test_counters_from_saved_output(backend, text, expected):
    c = capture.parse_counters(backend, text)
    for field, value in expected.items():
        assert getattr(c, field) == value, field


def test_counters_unknown_backend():
    with pytest.raises(ValueError):
        capture.parse_counters("snoop", "")


@pytest.mark.parametrize("text,expect", [
    ("pcap_activate() failed: socket: Operation not permitted", "CAP_NET_RAW"),
    ("tcpdump: lo: You don't have permission to perform this capture", "CAP_NET_RAW"),
    ('setting the network namespace "lkx" failed: Operation not permitted', "CAP_SYS_ADMIN"),
    ('Cannot open network namespace "lkx": No such file or directory', ""),
    ('There is no device named "lknope0"', ""),
    ("tcpdump: Couldn't change to 'tcpdump' uid=104 gid=111: Operation not permitted",
     "dumpcap or scapy"),
    ("tcpdump: Couldn't change ownership of savefile", "dumpcap or scapy"),
])
def test_permission_hint(text, expect):
    hint = permission_hint(text)
    assert (expect in hint) if expect else hint == ""


# --- readiness lines: the one printed after the filter is installed, not before -----------

def test_dumpcap_ready_line_is_the_file_line_not_capturing_on():
    ready = BACKENDS["dumpcap"].ready
    assert not ready.search("Capturing on 'Loopback: lo'\n")
    assert ready.search("Capturing on 'Loopback: lo'\nFile: /tmp/x.pcapng\n")


def test_tcpdump_ready_line():
    assert BACKENDS["tcpdump"].ready.search(TCPDUMP_4_99.splitlines()[0])


def test_command_lines():
    d = BACKENDS["dumpcap"].argv("/usr/bin/dumpcap", "lo", "/r/a.pcapng", 96, "tcp", 64, 10)
    assert d == ["/usr/bin/dumpcap", "-i", "lo", "-w", "/r/a.pcapng", "-n", "-s", "96",
                 "-B", "64", "-c", "10", "-f", "tcp"]
    t = BACKENDS["tcpdump"].argv("/usr/sbin/tcpdump", "lo", "/r/a.pcap", 96, "udp", 1, None)
    assert "--immediate-mode" in t and "-U" in t and t[-1] == "udp"
    assert t[t.index("-B") + 1] == "1024"            # tcpdump counts KiB


def test_tcpdump_buffer_holds_a_thousand_frames_of_up_to_64_kib():
    # 1,024 frames of 64 KiB would be 64 MiB, and the kernel holds twice that: capped
    assert immediate_buffer_mib(262144) == IMMEDIATE_MAX_MIB == 32
    assert immediate_buffer_mib(2048) == 3                  # the snapshot is the slot
    assert immediate_buffer_mib(96) is None                 # tcpdump's 2 MiB holds them


# --- files: every stop leaves a readable file ------------------------------------------------

def _epb(payload: bytes, orig: int | None = None) -> bytes:
    body = struct.pack("<IIIII", 0, 0, 0, len(payload), orig or len(payload))
    body += payload + b"\0" * (-len(payload) % 4)
    n = 12 + len(body)
    return struct.pack("<II", 6, n) + body + struct.pack("<I", n)


def _idb() -> bytes:
    body = struct.pack("<HHI", 1, 0, 262144)
    return struct.pack("<II", 1, 20) + body + struct.pack("<I", 20)


def _pcap_record(payload: bytes) -> bytes:
    return struct.pack("<IIII", 0, 0, len(payload), len(payload) + 10) + payload


PCAPNG = files.empty_pcapng() + _idb() + _epb(b"a" * 60) + _epb(b"b" * 61, orig=1500)
PCAP = files.empty_pcap() + _pcap_record(b"x" * 40) + _pcap_record(b"y" * 50)


@pytest.mark.parametrize("data,fmt,packets,wire", [
    (PCAPNG, "pcapng", 2, 1560),
    (PCAP, "pcap", 2, 110),
    (files.empty_pcapng(), "pcapng", 0, 0),
    (files.empty_pcap(), "pcap", 0, 0),
])
def test_summarize(tmp_path, data, fmt, packets, wire):
    p = tmp_path / "f"
    p.write_bytes(data)
    s = capture.summarize(p)
    assert (s.file_format, s.packets, s.wire_bytes, s.good_bytes) == (fmt, packets, wire,
                                                                      len(data))


@pytest.mark.parametrize("data,fmt,packets_left", [
    (PCAPNG[:-5], "pcapng", 1),                    # torn last block
    (PCAPNG[:-1] + b"\x99", "pcapng", 1),          # trailing length does not match
    (PCAP[:-7], "pcap", 1),                        # torn last record
    (PCAP[:30], "pcap", 0),                        # torn first record header
    (b"", "pcapng", 0),                            # the backend died before its header
    (b"\x0a\x0d", "pcap", 0),
])
def test_repair_leaves_a_readable_file(tmp_path, data, fmt, packets_left):
    p = tmp_path / "f"
    p.write_bytes(data)
    assert capture.repair(p, fmt) is not None
    s = capture.summarize(p)
    assert s.packets == packets_left and s.good_bytes == s.file_bytes > 0
    assert capture.repair(p, fmt) is None           # idempotent: nothing more to do
    _assert_valid_with_tshark(p, packets_left)


def test_repair_of_a_missing_file(tmp_path):
    p = tmp_path / "never-written.pcapng"
    assert capture.repair(p, "pcapng")
    assert capture.summarize(p).file_format == "pcapng"


def _assert_valid_with_tshark(path, packets: int | None = None) -> None:
    exe = shutil.which("tshark")
    if not exe:
        return
    r = subprocess.run([exe, "-r", str(path), "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if packets is not None:
        assert len(r.stdout.split()) == packets


# --- probe -----------------------------------------------------------------------------------

def test_probe_explains_what_is_missing():
    p = capture.CaptureProbe(installed={"dumpcap": "/usr/bin/dumpcap"}, usable=(),
                             problems={"dumpcap": "you are not root and lack CAP_NET_RAW"})
    assert not p.ok and p.backend is None
    with pytest.raises(capture.CaptureUnavailable) as e:
        p.require()
    assert "run as root" in str(e.value) and "wireshark" in str(e.value)
    none = capture.CaptureProbe(installed={}, usable=())
    assert "install dumpcap" in none.explain()


def _captures_one_datagram(backend: str, path: Path) -> bool:
    """Independently of the probe: does `backend` really capture a datagram on lo?"""
    port = random.randint(20000, 60999)
    try:
        with capture.start("lo", path, bpf_filter=f"udp port {port}", backend=backend):
            _send_udp(port, b"probe check")
    except (capture.CaptureFailed, capture.CaptureUnavailable):
        return False
    return any(f.endswith(b"probe check") for _, f, _ in files.iter_frames(path))


def test_probe_runs_here(tmp_path):
    """The probe's answers equal what is found without it: installed is what is on disk,
    and usable, best first, is exactly the installed backends that do capture a datagram."""
    on_disk = {n for n in ("dumpcap", "tcpdump")
               if shutil.which(n) or any(os.access(f"{d}/{n}", os.X_OK)
                                         for d in ("/usr/sbin", "/sbin", "/usr/bin"))}
    if importlib.util.find_spec("scapy"):
        on_disk.add("scapy")
    p = capture.probe("lo")
    assert set(p.installed) == on_disk
    works = [b for b in PREFERENCE if b in on_disk
             and _captures_one_datagram(b, tmp_path / f"{b}.cap")]
    assert p.usable == tuple(works), p.explain()
    assert set(p.problems) == on_disk - set(works)
    assert p.ok == bool(works) and p.backend == (works[0] if works else None)
    # without trying the interface it goes by privileges: with CAP_NET_RAW in our process
    # (root), every installed backend can open lo, so the same answer
    static = capture.probe("lo", live=False)
    assert set(static.installed) == on_disk
    if p.net_raw:
        assert static.usable == p.usable


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run the probe as an unprivileged user")
def test_probe_as_nobody_says_what_to_do(tmp_path):
    code = ("import sys; sys.path.insert(0, %r); from toolkit import capture; "
            "p = capture.probe(); print(p.ok); print(p.explain())"
            % str(Path(__file__).resolve().parents[1]))
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ok, *explain = r.stdout.splitlines()
    if ok == "True":
        pytest.skip("dumpcap carries file capabilities here: nobody can capture")
    text = "\n".join(explain)
    assert "run as root" in text and "CAP_NET_RAW" in text


# --- live captures on lo ---------------------------------------------------------------------

def _can_capture() -> tuple[list[str], str]:
    p = capture.probe("lo")
    return list(p.usable), p.explain()


USABLE, WHY_NOT = _can_capture()
live = pytest.mark.skipif(not USABLE, reason=f"no capture here: {WHY_NOT}")


def _send_udp(port: int, payload: bytes = b"labkit readiness") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, ("127.0.0.1", port))


def _frames(path, display_filter: str = "") -> int:
    exe = shutil.which("tshark")
    if exe:
        cmd = [exe, "-r", str(path), "-T", "fields", "-e", "frame.number"]
        r = subprocess.run(cmd + (["-Y", display_filter] if display_filter else []),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return len(r.stdout.split())
    return capture.summarize(path).packets


@live
@pytest.mark.parametrize("backend", ["dumpcap", "tcpdump", "scapy"])
def test_readiness_proven_over_20_runs(tmp_path, backend):
    """start() returns only when recording: a datagram sent at once is always captured.
    (In the lab, across the router, at four points: test_capture_vantage.py.)"""
    if backend not in USABLE:
        pytest.skip(f"{backend} cannot capture here")
    for run in range(20):
        port = random.randint(20000, 60999)
        path = tmp_path / f"{run}.cap"
        with capture.start("lo", path, bpf_filter=f"udp port {port}", backend=backend) as cap:
            _send_udp(port)
        assert cap.returncode == 0 and cap.escalated is None and cap.repaired is None
        assert _frames(path, f"udp.dstport == {port}") == 1, f"run {run}: datagram missing"
        assert cap.counters.captured == 1 and cap.counters.dropped == 0


@live
def test_tcpdump_on_lo_keeps_a_burst_while_it_waits_for_a_cpu(tmp_path):
    """tcpdump stopped (as a busy machine stops it) while 200 datagrams pass: the kernel's
    ring holds them all. With tcpdump's default buffer on lo it kept 16."""
    if "tcpdump" not in capture.probe("lo").usable:
        pytest.skip(f"tcpdump cannot capture here ({capture.probe('lo').explain()})")
    port = random.randint(20000, 60999)
    path = tmp_path / "burst.pcap"
    with capture.start("lo", path, bpf_filter=f"udp dst port {port}", backend="tcpdump") as cap:
        os.kill(cap.pid, signal.SIGSTOP)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(200):
                    s.sendto(i.to_bytes(4, "big") * 250, ("127.0.0.1", port))
        finally:
            os.kill(cap.pid, signal.SIGCONT)
    assert cap.counters.dropped == 0 and cap.counters.captured == 200, cap.counters
    assert capture.summarize(path).packets == 200


@live
def test_stop_on_an_exception_leaves_a_valid_file(tmp_path):
    port = random.randint(20000, 60999)
    path = tmp_path / "x.pcapng"
    with pytest.raises(RuntimeError, match="boom"):
        with capture.start("lo", path, bpf_filter=f"udp port {port}") as cap:
            for _ in range(3):
                _send_udp(port)
            raise RuntimeError("boom")
    assert not cap.running
    assert _frames(path) == 3
    _assert_valid_with_tshark(path, 3)


@live
def test_stop_escalates_when_sigint_is_ignored(tmp_path):
    # A backend that ignores SIGINT: SIGTERM must follow, and the file must be readable.
    port = random.randint(20000, 60999)
    path = tmp_path / "y.pcapng"
    cap = capture.start("lo", path, bpf_filter=f"udp port {port}")
    try:
        _send_udp(port)
        time.sleep(0.6)                 # delivered from the ring and flushed
        real_send = cap.proc.send_signal
        cap.proc.send_signal = lambda sig: None if sig == signal.SIGINT else real_send(sig)
        t0 = time.monotonic()
        cap.stop(timeout=0.5, settle=0)
        assert time.monotonic() - t0 < 5
    finally:
        cap.stop()
    assert cap.escalated == "SIGTERM" and not cap.running
    _assert_valid_with_tshark(path)
    assert capture.summarize(path).good_bytes == path.stat().st_size


def _written(cap, path, n: int, timeout: float = 10.0) -> None:
    """Wait until the backend has written n packets to its file: dumpcap flushes when it
    prints its running count (about once a second), the others write each packet."""
    deadline = time.monotonic() + timeout
    while cap.packets_seen < n and capture.summarize(path).packets < n:
        assert time.monotonic() < deadline, f"{cap.backend} wrote fewer than {n} packets"
        time.sleep(0.05)


@live
def test_stop_after_sigkill_leaves_a_valid_file(tmp_path):
    """A backend killed with SIGKILL cannot close its file. Whatever it left is made
    readable by stop(): a block torn by the kill is cut (and `repaired` says so), and every
    packet written before the kill is still there, with its bytes. Checked with our own
    reader; tshark, where installed, must agree (that one sub-check alone needs it)."""
    port = random.randint(20000, 60999)
    path = tmp_path / "z.pcapng"
    payloads = [bytes([65 + i]) * 1000 for i in range(5)]
    with capture.start("lo", path, bpf_filter=f"udp port {port}") as cap:
        for p in payloads:
            _send_udp(port, p)
        _written(cap, path, len(payloads))
        cap.proc.kill()                 # no chance to close the file
        cap.proc.wait()
        # A kill in the middle of a write leaves a torn block. The kill above landed between
        # writes, so tear one as it would: the first half of the file's last block again.
        whole = path.read_bytes()
        before = capture.summarize(path)
        assert before.good_bytes == len(whole) and before.packets == len(payloads)
        (last_len,) = struct.unpack("<I", whole[-4:])
        torn = whole[-last_len:][:last_len // 2]
        path.write_bytes(whole + torn)
    assert cap.returncode == -signal.SIGKILL and cap.escalated is None and not cap.running
    assert cap.repaired == (f"cut a torn tail of {len(torn)} bytes from {path.name} "
                            f"({len(payloads)} whole packets kept)")
    assert cap.result.repaired == (cap.repaired,)
    assert path.read_bytes() == whole                   # exactly the torn tail cut
    s = capture.summarize(path)
    assert s.good_bytes == s.file_bytes and s.packets == len(payloads)
    # the packets sent, in order, each with its own payload (our reader, not the backend's)
    got = []
    for _, frame, orig in files.iter_frames(path):
        assert orig == len(frame) == 14 + 20 + 8 + 1000      # Ethernet, IPv4, UDP, payload
        assert struct.unpack("!H", frame[36:38])[0] == port
        got.append(frame[42:])
    assert got == payloads
    if shutil.which("tshark"):
        assert _frames(path, f"udp.dstport == {port} && data.len == 1000") == len(payloads)


@live
def test_bad_interface_fails_with_the_backend_message(tmp_path):
    with pytest.raises(capture.CaptureFailed, match="lknope0"):
        capture.start("lknope0", tmp_path / "bad.pcapng")
    assert capture.summarize(tmp_path / "bad.pcapng").file_format == "pcapng"


@live
@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root (CAP_SYS_ADMIN)")
def test_capture_inside_a_namespace(tmp_path):
    ns = f"lkt-{os.getpid()}-cap"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        path = tmp_path / "ns.pcapng"
        with capture.start("lo", path, bpf_filter="udp port 9999", netns=ns) as cap:
            assert open(f"/proc/{cap.pid}/comm").read().strip() == cap.backend
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            "import socket; socket.socket(2, 2).sendto(b'x', "
                            "('127.0.0.1', 9999))"], check=True, timeout=30)
        assert _frames(path) == 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                    text=True).stdout
