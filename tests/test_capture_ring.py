"""Ring buffers for long runs: ring=(file_mib, files) on every backend.

Without root: each backend's command line, the checks on ring=, the order of the files
a ring leaves. Live on lo: every backend rotates, keeps the newest `files` files, each a
valid capture of its size, holding the newest datagrams without a gap, and (pcapng) each
carrying the comment; stop() reports them in capture order.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from toolkit import capture
from toolkit.capture import files
from toolkit.capture.backends import BACKENDS, ring_sizes

# --- command lines ------------------------------------------------------------------------


def test_dumpcap_ring_counts_kilobytes_and_takes_no_comment():
    argv = BACKENDS["dumpcap"].argv("dumpcap", "lo", "/r/a.pcapng", 262144, "", None, None,
                                    ring=(64, 10), comment="run 1")
    assert argv[argv.index("-b"):argv.index("-b") + 4] == ["-b", "filesize:67109",
                                                           "-b", "files:10"]
    # dumpcap refuses --capture-comment with a ring buffer: live.py annotates instead
    assert "--capture-comment" not in argv
    single = BACKENDS["dumpcap"].argv("dumpcap", "lo", "/r/a.pcapng", 262144, "", None, None,
                                      comment="run 1")
    assert single[single.index("--capture-comment") + 1] == "run 1"


@pytest.mark.parametrize("file_mib,megabytes", [(64, 68), (0.9, 1), (0.01, 1), (1, 2)])
def test_tcpdump_ring_counts_whole_megabytes_rounded_up(file_mib, megabytes):
    argv = BACKENDS["tcpdump"].argv("tcpdump", "lo", "/r/a.pcap", 262144, "", None, None,
                                    ring=(file_mib, 4))
    assert argv[argv.index("-C") + 1] == str(megabytes)
    assert argv[argv.index("-W") + 1] == "4"


@pytest.mark.parametrize("ring,match", [
    (64, "must be \\(file_mib, files\\)"),
    ((64,), "must be \\(file_mib, files\\)"),
    ((0, 3), "positive number of MiB, got 0"),
    ((-1, 3), "positive number of MiB"),
    ((float("inf"), 3), "positive number of MiB"),
    (("64", 3), "positive number of MiB, got '64'"),
    ((64, 0), "whole number >= 1, got 0"),
    ((64, 2.5), "whole number >= 1, got 2.5"),
    ((64, True), "whole number >= 1"),
])
def test_ring_checks_name_what_is_wrong(ring, match):
    with pytest.raises(ValueError, match=match):
        ring_sizes(ring)


def test_start_checks_ring_before_starting_anything(tmp_path):
    with pytest.raises(ValueError, match="ring file count"):
        capture.start("lo", tmp_path / "a.pcapng", ring=(1, 0))
    assert not (tmp_path / "a.pcapng").exists()


def test_ring_files_in_capture_order(tmp_path):
    for name in ("a_00010_20261122234452.pcapng", "a_00009_20261122234452.pcapng",
                 "a_00011_20261122234453.pcapng", "a.pcapng", "a_1_2.pcapng",
                 "ab_00001_20261122234452.pcapng", "a_00012_20261122234453.pcap"):
        (tmp_path / name).write_bytes(b"")
    got = [p.name for p in capture.ring_files(tmp_path / "a.pcapng", "dumpcap")]
    assert got == ["a_00009_20261122234452.pcapng", "a_00010_20261122234452.pcapng",
                   "a_00011_20261122234453.pcapng"]
    # tcpdump reuses a.pcap0..2 in turn: the last written is the newest
    for i, name in enumerate(("t.pcap1", "t.pcap2", "t.pcap0")):
        p = tmp_path / name
        p.write_bytes(b"")
        os.utime(p, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    (tmp_path / "t.pcapx").write_bytes(b"")
    got = [p.name for p in capture.ring_files(tmp_path / "t.pcap", "tcpdump")]
    assert got == ["t.pcap1", "t.pcap2", "t.pcap0"]


# --- live on lo ------------------------------------------------------------------------------

USABLE = capture.probe("lo").usable

# (ring, datagrams, pace/s, the size a file reaches before the next starts)
CASES = {
    "dumpcap": ((0.05, 3), 600, 0, 52_000),      # filesize:52 kB (x 1,000, measured)
    "tcpdump": ((0.9, 3), 5000, 5000, 1_000_000),    # -C 1: whole millions of bytes
    "scapy": ((0.05, 3), 600, 2000, 52_429),     # 0.05 MiB; paced below its ceiling
}


def _send(port: int, n: int, rate: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        t0 = time.monotonic()
        for i in range(n):
            s.sendto(i.to_bytes(4, "big") * 250, ("127.0.0.1", port))     # 1,000 bytes
            if rate:
                while time.monotonic() < t0 + (i + 1) / rate:
                    time.sleep(0.0005)


def _seq(frame: bytes) -> int:
    return int.from_bytes(frame[42:46], "big")     # after Ethernet, IPv4, UDP headers


@pytest.mark.root
@pytest.mark.parametrize("backend", list(CASES))
def test_ring_keeps_the_newest_files_each_valid(tmp_path, backend):
    if backend not in USABLE:
        pytest.skip(f"{backend} cannot capture here ({capture.probe('lo').explain()})")
    ring, n, rate, limit = CASES[backend]
    port = 30000 + os.getpid() % 30000
    base = tmp_path / f"a.{BACKENDS[backend].file_format}"
    # a file of an earlier ring by the same name must not pass for this capture's
    stale = base.with_name(base.name + "7") if backend == "tcpdump" else \
        base.with_name(f"{base.stem}_00042_20200101000000{base.suffix}")
    stale.write_bytes(b"stale")
    # In immediate mode libpcap uses TPACKET_V2, whose ring slots are each as large as the
    # snapshot length capped at the interface's MTU: lo's 64 KiB MTU left 16 MiB of buffer
    # at about 250 slots, and lo shows every datagram twice (out and in), so 25 ms without
    # the CPU lost frames (78 of 5,000 in CI, with both cores busy). 2,048 bytes holds
    # these 1,042-byte frames whole and gives 30 times the slots.
    with capture.start("lo", base, backend=backend, bpf_filter=f"udp dst port {port}",
                       ring=ring, comment=f"ring test {backend}", buffer_mib=16,
                       snaplen=2048) as cap:
        _send(port, n, rate)
    result = cap.result
    assert not stale.exists()
    assert result.files == tuple(capture.ring_files(base, backend))
    assert len(result.files) == ring[1], [p.name for p in result.files]
    # (seen once with both cores busy: the backend ended by SIGINT's default action, -2,
    # with no counters; what it printed is the clue)
    assert result.counters.captured == n and result.counters.dropped == 0, \
        (result.returncode, cap.stderr[-2000:])
    seqs = []
    for i, path in enumerate(result.files):
        s = capture.summarize(path)
        assert s.good_bytes == s.file_bytes and s.packets > 0, path.name
        if i < len(result.files) - 1:               # full files: at their size, not far past
            assert limit <= s.file_bytes < limit + 2 * 1100 + 4096, (path.name, s)
        file_seqs = [_seq(f) for _, f, _ in files.iter_frames(path)]
        seqs += file_seqs
        if result.file_format == "pcapng":
            assert files.section_comments(path) == [f"ring test {backend}"]
        _tshark_reads(path, len(file_seqs))
    # the newest datagrams, in order, nothing missing between the files
    assert seqs == list(range(n - len(seqs), n)), (seqs[:3], seqs[-3:])
    assert result.comment_in_file == (result.file_format == "pcapng")


def _tshark_reads(path, packets: int) -> None:
    exe = shutil.which("tshark")
    if exe:
        r = subprocess.run([exe, "-r", str(path), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.split()) == packets
