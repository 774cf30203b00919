"""Capture files we write or touch: the scapy backend's writer, comments added to a
file another backend wrote, and frames read back. All byte literals and temp files."""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading

import pytest

from toolkit import capture, read_capture
from toolkit.capture import files, writer

T0 = 1_795_391_235_123_456_789        # a timestamp with every nanosecond digit set


def _frame(i: int, size: int = 100) -> bytes:
    return bytes(range(6)) * 2 + b"\x08\x00" + i.to_bytes(4, "big") * (size // 4)


def _tshark_count(path) -> int | None:
    exe = shutil.which("tshark")
    if not exe:
        return None
    r = subprocess.run([exe, "-r", str(path), "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return len(r.stdout.split())


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_writer_round_trip(tmp_path, fmt):
    path = tmp_path / f"w.{fmt}"
    w = writer.CaptureWriter(path, fmt, "lk-b-r", snaplen=60, bpf_filter="udp",
                             comment="labkit run 3f9c1a, vantage point b")
    for i in range(3):
        w.packet(T0 + i, _frame(i, 100 + 4 * i))
    w.close(received=5, dropped=2)
    got = list(files.iter_frames(path))
    assert [ts for ts, _, _ in got] == [T0, T0 + 1, T0 + 2]      # nanoseconds kept
    assert [(len(f), orig) for _, f, orig in got] == [(60, 114), (60, 118), (60, 122)]
    assert got[1][1] == _frame(1, 104)[:60]
    cap = read_capture(path)                    # the analyzer's reader agrees
    assert len(cap) == 3 and list(cap.cols["wirelen"]) == [114, 118, 122]
    if fmt == "pcapng":
        assert cap.section_comments == ["labkit run 3f9c1a, vantage point b"]
        assert files.section_comments(path) == cap.section_comments
        assert cap.interfaces[0].name == "lk-b-r"
    else:
        assert files.section_comments(path) == []
    assert _tshark_count(path) in (None, 3)
    s = capture.summarize(path)
    assert s.good_bytes == s.file_bytes and s.packets == 3


def test_statistics_block_carries_the_counts(tmp_path):
    """The closing interface statistics block: received and dropped, where Wireshark's
    Capture File Properties reads "Dropped packets" (isb_ifdrop)."""
    path = tmp_path / "s.pcapng"
    w = writer.CaptureWriter(path, "pcapng", "lo", snaplen=262144)
    w.packet(T0, _frame(0))
    w.close(received=10, dropped=9)
    data = path.read_bytes()
    pos, isb = 0, None
    while pos < len(data):
        btype, blen = struct.unpack("<II", data[pos:pos + 8])
        if btype == writer.ISB:
            isb = data[pos + 8:pos + blen - 4]
        pos += blen
    assert isb is not None and pos == len(data)
    opts = dict(files._options(isb[12:], "<"))
    assert struct.unpack("<Q", opts[writer.ISB_IFRECV])[0] == 10
    assert struct.unpack("<Q", opts[writer.ISB_IFDROP])[0] == 9
    assert struct.unpack("<Q", opts[writer.ISB_OSDROP])[0] == 9
    exe = shutil.which("capinfos")
    if exe:
        out = subprocess.run([exe, str(path)], capture_output=True, text=True).stdout
        assert "Number of stat entries = 1" in out


def test_writer_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="'pcapx'"):
        writer.CaptureWriter(tmp_path / "x", "pcapx", "lo", 100)


def test_ring_writer_rotates_and_keeps_the_newest(tmp_path):
    base = tmp_path / "b.pcapng"
    w = writer.RingWriter(base, file_bytes=2000, files=3, file_format="pcapng",
                          interface="lo", snaplen=262144, comment="ring")
    for i in range(60):                      # ~128 bytes a block: a new file every ~15
        w.packet(T0 + i, _frame(i))
    w.close(received=60, dropped=0)
    kept = capture.ring_files(base, "scapy")
    assert kept == w.kept and len(kept) == 3
    assert [int(p.name.split("_")[1]) for p in kept] == list(range(w.index - 2, w.index + 1))
    seqs = []
    for p in kept:
        s = capture.summarize(p)
        assert s.good_bytes == s.file_bytes and files.section_comments(p) == ["ring"]
        seqs += [int.from_bytes(f[14:18], "big") for _, f, _ in files.iter_frames(p)]
    assert seqs == list(range(60 - len(seqs), 60))      # the newest, without a gap
    for p in kept[:-1]:
        assert 2000 <= p.stat().st_size < 2000 + 200


def test_ring_writer_flushes_safely_while_another_thread_rotates(tmp_path):
    # the scapy backend's main thread flushes once in a while as the sniffer thread writes;
    # a flush that read `current` just before a rotation closed it raised "flush of closed
    # file" (CI, stop 22), ending the capture with a traceback and no counters
    w = writer.RingWriter(tmp_path / "t.pcapng", file_bytes=300, files=4,
                          file_format="pcapng", interface="lo", snaplen=262144)
    errors, done = [], threading.Event()

    def flusher():
        try:
            while not done.is_set():
                w.flush()
        except Exception as e:             # noqa: BLE001 -- the failure under test
            errors.append(e)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        for i in range(3_000):             # a new file every second packet
            w.packet(T0 + i, _frame(i))
    finally:
        done.set()
        t.join(10)
    w.close()
    assert errors == [] and w.index > 1_000


@pytest.mark.parametrize("file_bytes,files_", [(0, 3), (100, 0)])
def test_ring_writer_refuses_nonsense(tmp_path, file_bytes, files_):
    with pytest.raises(ValueError, match="positive"):
        writer.RingWriter(tmp_path / "x.pcapng", file_bytes, files_, file_format="pcapng",
                          interface="lo", snaplen=100)


# --- annotate: a comment added to a file another backend wrote ---------------------------------

def _written(tmp_path, comment=""):
    path = tmp_path / "d.pcapng"
    w = writer.CaptureWriter(path, "pcapng", "lo", 262144, comment=comment)
    for i in range(4):
        w.packet(T0 + i, _frame(i))
    w.close()
    return path


def test_annotate_adds_once_and_keeps_everything_else(tmp_path):
    path = _written(tmp_path, comment="from the backend")
    before = path.read_bytes()
    shb_len = struct.unpack("<I", before[4:8])[0]
    assert capture.annotate(path, "labkit run 1, vantage point r-a") is True
    assert capture.annotate(path, "labkit run 1, vantage point r-a") is False
    after = path.read_bytes()
    assert files.section_comments(path) == ["labkit run 1, vantage point r-a",
                                            "from the backend"]
    new_len = struct.unpack("<I", after[4:8])[0]
    assert after[new_len:] == before[shb_len:]                  # blocks after it untouched
    assert after[new_len - 4:new_len] == after[4:8]             # trailing length agrees
    assert list(files.iter_frames(path)) == list(files.iter_frames(tmp_path / "d.pcapng"))
    assert len(read_capture(path)) == 4
    assert _tshark_count(path) in (None, 4)


def test_annotate_a_big_endian_section(tmp_path):
    def be_block(btype, body):
        n = 12 + len(body)
        return struct.pack(">II", btype, n) + body + struct.pack(">I", n)
    shb = be_block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = be_block(1, struct.pack(">HHI", 1, 0, 262144))
    frame = _frame(7)
    epb = be_block(6, struct.pack(">IIIII", 0, 0, 1_000_000, len(frame), len(frame))
                   + frame + b"\0" * (-len(frame) % 4))
    path = tmp_path / "be.pcapng"
    path.write_bytes(shb + idb + epb)
    assert capture.annotate(path, "é comment")
    assert files.section_comments(path) == ["é comment"]
    assert [(ts, f) for ts, f, _ in files.iter_frames(path)] == [(1_000_000_000, frame)]
    assert capture.summarize(path).packets == 1
    assert _tshark_count(path) in (None, 1)


def test_annotate_refuses_pcap(tmp_path):
    path = tmp_path / "t.pcap"
    path.write_bytes(files.empty_pcap())
    with pytest.raises(ValueError, match="not a pcapng file"):
        capture.annotate(path, "x")
    assert path.read_bytes() == files.empty_pcap()


# --- frames read back: every timestamp encoding ----------------------------------------------

def _pcap(magic: bytes, frac: int) -> bytes:
    return magic + struct.pack("<HHiIII", 2, 4, 0, 0, 65535, 1) + \
        struct.pack("<IIII", 1_700_000_000, frac, 3, 3) + b"abc"


def _pcapng_with_resol(resol: int | None, units: int) -> bytes:
    opts = b"" if resol is None else writer.options([(9, bytes([resol]))])
    return (writer.section_header() + writer.block(1, struct.pack("<HHI", 1, 0, 100) + opts)
            + writer.block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, 3, 3)
                           + b"abc\0"))


@pytest.mark.parametrize("data,ns", [
    (_pcap(b"\xd4\xc3\xb2\xa1", 250_000), 1_700_000_000_250_000_000),       # microseconds
    (_pcap(b"\x4d\x3c\xb2\xa1", 250_000), 1_700_000_000_000_250_000),       # nanoseconds
    (_pcapng_with_resol(None, 1_700_000_000_250_000), 1_700_000_000_250_000_000),   # 10^-6
    (_pcapng_with_resol(9, T0), T0),
    (_pcapng_with_resol(0x80 | 10, 3 * 1024 + 512), 3_500_000_000),         # 2^-10 s
])
def test_iter_frames_timestamps(tmp_path, data, ns):
    path = tmp_path / "f"
    path.write_bytes(data)
    assert list(files.iter_frames(path)) == [(ns, b"abc", 3)]
