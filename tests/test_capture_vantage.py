"""Vantage points in the lab: a, r-a, r-b, b, captured at once, proven ready, commented.

The first part needs nothing (a stand-in lab object). The rest builds the lab network
(root, or rootless as root) and sends real traffic from a to b through the router:
- readiness over many runs: a TCP connection opened the moment start_many returns has
  its first SYN in all four files, as their first frame;
- the points are where they say: TTL 64 and a's MAC before the router, TTL 63 and r's
  MAC after it;
- each file's section comment names the run, the point and the impairment;
- one point that cannot start stops the others.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, as_nobody_or_skip, network_or_skip
from toolkit import capture
from toolkit.capture import files
from toolkit.capture.vantage import CaptureSet, VantagePoint, comment_for, describe_impairment
from toolkit.netlab import impairment as I

# --- without a lab: names, order, comments ---------------------------------------------------


def _fake_lab(hosts=("a", "b")):
    def iface(node, peer):
        return f"lk-{node}-{peer}"
    return SimpleNamespace(topology=SimpleNamespace(host_names=hosts), iface=iface,
                           run_id="3f9c1a", prefix=lambda node: ["true"])


def test_vantage_points_in_path_order():
    pts = capture.vantage_points(_fake_lab())
    assert [(p.name, p.host, p.interface) for p in pts] == [
        ("a", "a", "lk-a-r"), ("r-a", "r", "lk-r-a"), ("r-b", "r", "lk-r-b"),
        ("b", "b", "lk-b-r")]


def test_vantage_points_chosen_by_name_and_unknown_named():
    lab = _fake_lab()
    assert [p.name for p in capture.vantage_points(lab, ["r-b", "a"])] == ["r-b", "a"]
    with pytest.raises(KeyError, match="'r-c'.*points: a, r-a, r-b, b"):
        capture.vantage_points(lab, ["a", "r-c"])


def test_three_hosts_get_a_router_side_each():
    names = [p.name for p in capture.vantage_points(_fake_lab(("a", "b", "c")))]
    assert names == ["a", "r-a", "r-b", "r-c", "b", "c"]


def test_comment_names_run_point_and_impairment():
    imp = I.from_dict({"a_to_b": {"loss": "5%", "delay": "20ms"}})
    c = comment_for("3f9c1a", VantagePoint("r-b", "r", "lk-r-b"), imp)
    assert c == ("labkit run 3f9c1a, vantage point r-b (r: lk-r-b), impairment: "
                 + imp.describe())
    assert "loss 5%" in c and "20ms" in c
    assert describe_impairment(None) == "not recorded"
    assert describe_impairment("hold the SYN-ACK 300 ms") == "hold the SYN-ACK 300 ms"


@pytest.mark.parametrize("limits,cores,expected", [
    ([None, None], 2, None),                 # dumpcap, tcpdump: no ceiling
    ([2500], 2, 2500),
    ([2500, 2500], 2, 2500),                 # one core each
    ([2500] * 4, 2, 1250),                   # four captures share two cores
    ([2500, None, 2500, None], 1, 1250),
])
def test_capture_set_ceiling_shares_the_cores(monkeypatch, limits, cores, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    caps = {str(i): SimpleNamespace(max_pps=m) for i, m in enumerate(limits)}
    assert CaptureSet([], caps).max_pps == expected


def test_a_runner_caps_its_rate_below_the_ceiling_and_says_so():
    assert capture.limit_rate(5000, None) == (5000, None)
    assert capture.limit_rate(900, 1000) == (900, None)
    rate, note = capture.limit_rate(5000, 1000)
    assert rate == 1000 and note == ("traffic capped at 1,000 packets/s (asked: 5,000): "
                                     "the capture cannot keep up with more")
    caps = {n: SimpleNamespace(max_pps=2500, backend="scapy") for n in "abcd"}
    s = CaptureSet([], caps)
    rate, note = s.limit_rate(10_000)
    assert rate == s.max_pps < 2500
    assert note.endswith(": 4 scapy captures at once cannot keep up with more")


def test_start_many_rejects_bad_arguments(tmp_path):
    lab = _fake_lab()
    with pytest.raises(ValueError, match="at least one"):
        capture.start_many(lab, [], tmp_path)
    p = capture.vantage_points(lab)[0]
    with pytest.raises(ValueError, match="named twice"):
        capture.start_many(lab, [p, p], tmp_path)
    with pytest.raises(ValueError, match="unknown capture backend 'snoop'"):
        capture.start_many(lab, [p], tmp_path, backend="snoop")


# --- in the lab ------------------------------------------------------------------------------

BACKEND_NAMES = ("dumpcap", "tcpdump", "scapy")


def _need_lab():
    network_or_skip()
    for tool in ("ip", "ethtool"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.skip(f"{tool} is not installed (make test installs it as root)")


def _need_backend(name: str):
    if name not in capture.installed_backends():
        pytest.skip(f"{name} is not installed"
                    + (" (pip install scapy)" if name == "scapy" else ""))


SERVER = textwrap.dedent("""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5001))
    s.listen(64)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        c.close()
""")
# Waits in a's namespace for a line, then connects at once: the SYN leaves within a
# millisecond of start_many returning (spawning a client per run would give every
# capture ~50 ms of grace, and a readiness bug would pass unseen).
CLIENT = textwrap.dedent("""
    import socket, sys
    for line in sys.stdin:
        s = socket.create_connection((sys.argv[1], 5001), timeout=5)
        print(s.getsockname()[1], flush=True)
        s.close()
""")


def _ip_tcp(frame: bytes):
    """(ttl, source MAC, TCP source port, TCP flags) of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    tcp = frame[14 + ihl:]
    return frame[22], frame[6:12].hex(":"), struct.unpack("!H", tcp[:2])[0], tcp[13]


SYN, ACK = 0x02, 0x10


@pytest.fixture(scope="module")
def lab():
    _need_lab()
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        server = lab.popen("b", [sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                           text=True)
        assert server.stdout.readline().strip() == "listening"
        yield lab


# scapy: 10 runs (each starts four Python processes: ~2.3 s a run on 2 cores)
RUNS = {"dumpcap": 20, "tcpdump": 20, "scapy": 10}


@pytest.mark.root
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_first_syn_seen_at_every_vantage_point_over_many_runs(lab, tmp_path, backend):
    """start_many returns only when all four captures record: the SYN of a connection
    opened at once is the first frame of every file, run after run; and each point is
    where it says (TTL and MAC before and after the router)."""
    _need_backend(backend)
    if backend == "tcpdump" and lab.privilege.mode == "rootless":
        pytest.skip("tcpdump cannot capture in a rootless lab (it gives up root, which a user "
                    "namespace forbids); test_tcpdump_in_a_rootless_lab_says_what_to_use")
    points = capture.vantage_points(lab)
    mac_a, mac_rb = lab.mac("a", "r"), lab.mac("r", "b")
    imp = I.from_dict({"a_to_b": {"delay": "1ms"}})       # named in the comment only
    client = lab.popen("a", [sys.executable, "-c", CLIENT, lab.addr("b")],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for run in range(RUNS[backend]):
        run_dir = tmp_path / str(run)
        with capture.start_many(lab, points, run_dir, backend=backend, impairment=imp,
                                bpf_filter="tcp port 5001") as caps:
            client.stdin.write("connect\n")
            client.stdin.flush()
            port = int(client.stdout.readline() or 0)
            assert port, f"run {run}: the client in a failed (status {client.poll()})"
        expect = {"a": (64, mac_a), "r-a": (64, mac_a), "r-b": (63, mac_rb),
                  "b": (63, mac_rb)}
        for name, result in caps.results.items():
            assert result.returncode == 0 and result.escalated is None, (run, name)
            assert result.counters.dropped == 0, (run, name, result.counters)
            (path,) = result.files
            frames = [_ip_tcp(f) for _, f, _ in files.iter_frames(path)]
            assert frames, f"run {run}: nothing captured at {name} ({backend})"
            ttl, src_mac, sport, flags = frames[0]
            assert (sport, flags & (SYN | ACK)) == (port, SYN), \
                f"run {run}: first frame at {name} ({backend}) is not the SYN: {frames[0]}"
            assert (ttl, src_mac) == expect[name], (run, name)
            assert result.counters.captured == len(frames)
            if result.file_format == "pcapng":
                want = comment_for(lab.run_id, next(p for p in points if p.name == name),
                                   imp)
                assert files.section_comments(path) == [want]
                assert result.comment_in_file
            else:                          # pcap: the comment lives in the metadata
                assert not result.comment_in_file and lab.run_id in result.comment
        assert set(caps.as_dict()) == {"a", "r-a", "r-b", "b"}


@pytest.mark.root
@pytest.mark.tshark
def test_wireshark_shows_the_comment(lab, tmp_path):
    """capinfos (Wireshark's own reader) shows run, point and impairment."""
    exe = shutil.which("capinfos")
    if not exe:
        pytest.skip("capinfos (Wireshark) is not installed")
    imp = I.from_dict({"b_to_a": {"loss": "2%"}})
    points = capture.vantage_points(lab, ["r-a", "r-b"])
    with capture.start_many(lab, points, tmp_path, backend="dumpcap", impairment=imp) as caps:
        lab.exec("a", ["ping", "-c1", "-W2", lab.addr("b")])
    for name, result in caps.results.items():
        out = subprocess.run([exe, "-k", str(result.files[0])], capture_output=True,
                             text=True, timeout=60).stdout
        assert f"Capture comment:     labkit run {lab.run_id}, vantage point {name}" in out
        assert "impairment: b>a: loss 2%" in out
    from toolkit import read_capture
    got = read_capture(caps.results["r-b"].files[0])
    assert got.section_comments == [comment_for(lab.run_id, points[1], imp)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd and "pytest" not in cmd:
                found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.root
@pytest.mark.parametrize("backend", ["dumpcap", "scapy"])
def test_one_point_failing_stops_the_others(lab, tmp_path, backend):
    _need_backend(backend)
    points = capture.vantage_points(lab, ["a", "r-a"]) + [VantagePoint("ghost", "b", "lknope0")]
    t0 = time.monotonic()
    with pytest.raises(capture.CaptureFailed, match="vantage point ghost.*lknope0"):
        capture.start_many(lab, points, tmp_path, backend=backend)
    assert time.monotonic() - t0 < 15
    assert _processes_mentioning(str(tmp_path)) == []
    for name in ("a", "r-a", "ghost"):         # every file left readable
        assert capture.summarize(tmp_path / f"{name}.pcapng").file_format == "pcapng"


# --- rootless: the same captures under the lab's nsenter prefix --------------------------------

@pytest.mark.root
@pytest.mark.parametrize("backend", ["dumpcap", "scapy"])
def test_rootless_lab_captures_under_its_prefix(tmp_path, backend):
    _need_lab()
    _need_backend(backend)
    from toolkit import netlab
    with netlab.up(netlab.default_topology(), privilege="rootless") as lab:
        assert lab.prefix("a")[0] != "ip"            # entered through nsenter first
        with capture.start_many(lab, capture.vantage_points(lab), tmp_path,
                                backend=backend, bpf_filter="icmp") as caps:
            ping = lab.exec("a", ["ping", "-c2", "-i", "0.2", "-W2", lab.addr("b")])
            assert ping.returncode == 0, ping.stderr
    for name, result in caps.results.items():
        assert result.counters.captured == 4, (name, result.counters)     # 2 requests, 2 replies
        assert len(list(files.iter_frames(result.files[0]))) == 4
        assert lab.run_id in files.section_comments(result.files[0])[0]


@pytest.mark.root
def test_tcpdump_in_a_rootless_lab_says_what_to_use(tmp_path):
    _need_lab()
    _need_backend("tcpdump")
    from toolkit import netlab
    with netlab.up(netlab.default_topology(), privilege="rootless") as lab:
        with pytest.raises(capture.CaptureFailed, match="dumpcap or scapy"):
            capture.start_many(lab, capture.vantage_points(lab, ["a"]), tmp_path,
                               backend="tcpdump")


ROOTLESS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from toolkit import capture, netlab
    with netlab.up(netlab.default_topology()) as lab:
        with capture.start_many(lab, capture.vantage_points(lab), {out!r},
                                backend="dumpcap", bpf_filter="icmp",
                                impairment="none") as caps:
            ping = lab.exec("a", ["ping", "-c1", "-W2", lab.addr("b")])
        print(json.dumps({{"mode": lab.privilege.mode, "ping": ping.returncode,
                          "run_id": lab.run_id,
                          "captured": {{n: r.counters.captured
                                       for n, r in caps.results.items()}}}}))
""")


@pytest.mark.root
def test_rootless_as_an_unprivileged_user(tmp_path):
    """As nobody: the lab in a user namespace, dumpcap at all four points."""
    python = as_nobody_or_skip()
    _need_lab()
    _need_backend("dumpcap")
    # pytest's tmp_path sits under a root-only directory: nobody needs its own
    out = Path(tempfile.mkdtemp(prefix="lk-capt-"))
    try:
        os.chown(out, 65534, 65534)
        r = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c",
                            ROOTLESS.format(repo=str(REPO), out=str(out))],
                           capture_output=True, text=True, timeout=120, cwd="/")
        _check_rootless_run(r, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _check_rootless_run(r, out: Path) -> None:
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["mode"] == "rootless" and got["ping"] == 0
    assert got["captured"] == {"a": 2, "r-a": 2, "r-b": 2, "b": 2}
    for name in got["captured"]:
        path = out / f"{name}.pcapng"
        assert path.stat().st_uid == 65534
        assert len(list(files.iter_frames(path))) == 2
        assert files.section_comments(path) == [
            f"labkit run {got['run_id']}, vantage point {name} "
            f"({'r' if name.startswith('r-') else name}: "
            f"lk-{name if name.startswith('r-') else name + '-r'}), impairment: none"]


# --- start(): a generic prefix, or netns= as its shorthand -------------------------------------

def test_netns_and_prefix_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="netns= or prefix=, not both"):
        capture.start("lo", tmp_path / "x.pcapng", netns="lk-x", prefix=["env"])


@pytest.mark.root
def test_failure_under_a_prefix_names_it(tmp_path):
    if not capture.probe("lo").usable:
        pytest.skip("no capture here")
    with pytest.raises(capture.CaptureFailed, match="lknope0 under env LK_PREFIX=1 exited"):
        capture.start("lknope0", tmp_path / "x.pcapng", prefix=["env", "LK_PREFIX=1"])


@pytest.mark.root
def test_the_lab_teardown_stops_captures_left_running(tmp_path):
    _need_lab()
    _need_backend("dumpcap")
    from toolkit import netlab
    with netlab.up(netlab.default_topology()) as lab:
        caps = capture.start_many(lab, capture.vantage_points(lab, ["a", "b"]), tmp_path,
                                  backend="dumpcap", bpf_filter="icmp")
        assert lab.exec("a", ["ping", "-c1", "-W2", lab.addr("b")]).returncode == 0
        pids = [c.pid for c in caps.captures.values()]
    assert lab.teardown_errors == []
    for name in ("a", "b"):
        r = caps.results[name]
        assert r.escalated is None and r.returncode == 0          # SIGINT, not a kill
        assert r.counters.captured == 2 and len(list(files.iter_frames(r.files[0]))) == 2
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
