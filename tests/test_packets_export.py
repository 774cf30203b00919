"""`labkit analyze --packets` in every format: the same rows as the DataFrame, streamed a
chunk at a time (JSON as JSON Lines), within 300 bytes of memory per packet however large
the capture."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, corpus_file
from toolkit.analysis import packet_rows, packet_text

import toolkit

CORPUS = ["cs_tcp_retransmissions", "zeek_echo_connections",
          "gop_test_loopback_null", "sv_syn_retransmit_vlan",
          "sipp_g711a_rtp", "zeek_ssh_dups"]
BYTES_PER_PACKET = 300


_REC = np.dtype([("sec", "<u4"), ("nsec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4"),
                 ("eth", "S14"), ("vihl", "u1"), ("tos", "u1"), ("iplen", ">u2"),
                 ("ipid", ">u2"), ("frag", ">u2"), ("ttl", "u1"), ("proto", "u1"),
                 ("ipsum", ">u2"), ("src", ">u4"), ("dst", ">u4"), ("sport", ">u2"),
                 ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("offflags", ">u2"),
                 ("win", ">u2"), ("sum", ">u2"), ("urg", ">u2")])


def _template() -> dict:
    """One conversation's frames as columns: handshake, MSS segments with an ACK every
    second one, a segment lost and sent again now and then, some UDP beside it, the close.
    (fwd, relative seq, relative ack, flags, payload bytes, is UDP)"""
    rows = [(1, 0, 0, 0x002, 0, 0), (0, 0, 1, 0x012, 0, 0), (1, 1, 1, 0x010, 0, 0)]
    seq = 1
    for k in range(1500):
        rows.append((1, seq, 1, 0x010, 1448, 0))
        if k % 997 == 500:
            rows.append((1, seq, 1, 0x010, 1448, 0))
        seq += 1448
        if k % 2:
            rows.append((0, 1, seq, 0x010, 0, 0))
        if k % 300 == 7:
            rows.append((1, 0, 0, 0, 200, 1))
    rows += [(1, seq, 1, 0x011, 0, 0), (0, 1, seq + 1, 0x011, 0, 0),
             (1, seq + 1, 2, 0x010, 0, 0)]
    return {k: np.array(v, np.int64) for k, v in zip(
        ("fwd", "seq", "ack", "flags", "plen", "udp"), zip(*rows))}


def bulk_capture(path, packets: int, seed: int = 1) -> None:
    """A pcap of `packets` frames of bulk TCP conversations (headers only) and some UDP,
    made with numpy (a million frames in a second)."""
    rng = np.random.default_rng(seed)
    t = _template()
    per = len(t["fwd"])
    convs = -(-packets // per)
    rec = np.zeros(convs * per, _REC)
    conv = np.repeat(np.arange(convs), per)
    tile = lambda col: np.tile(t[col], convs)                         # noqa: E731
    fwd, udp, plen = tile("fwd").astype(bool), tile("udp").astype(bool), tile("plen")
    isn = rng.integers(0, 2**32, convs)[conv]
    irs = rng.integers(0, 2**32, convs)[conv]
    a, b = 0x0A000001, 0x0A000002 + ((conv % 50) << 8)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1_000, 20_000, len(rec)))
    rec["sec"], rec["nsec"] = ts // 10**9, ts % 10**9
    rec["caplen"] = 54
    rec["wirelen"] = 54 + plen
    rec["eth"] = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    rec["vihl"], rec["ttl"], rec["frag"] = 0x45, 64, 0x4000
    rec["proto"] = np.where(udp, 17, 6)
    rec["iplen"] = np.where(udp, 28, 40) + plen
    rec["ipid"] = np.arange(len(rec)) & 0xFFFF
    rec["src"] = np.where(fwd, a, b)
    rec["dst"] = np.where(fwd, b, a)
    cport = 40000 + conv
    rec["sport"] = np.where(udp, 5000, np.where(fwd, cport, 5201))
    rec["dport"] = np.where(udp, 5202, np.where(fwd, 5201, cport))
    own, peer = np.where(fwd, isn, irs), np.where(fwd, irs, isn)
    rec["seq"] = np.where(udp, (8 + plen) << 16, (own + tile("seq")) % 2**32)
    rec["ack"] = np.where(udp | (tile("ack") == 0), 0, (peer + tile("ack")) % 2**32)
    rec["offflags"] = np.where(udp, 0, (5 << 12) | tile("flags"))
    rec["win"] = np.where(udp, 0, 502)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 96, 1))
        f.write(rec[:packets].tobytes())


def _frames_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        w, g = want[c], got[c]
        if c in ("src", "dst", "proto"):
            norm = lambda s: s.astype(object).where(s.notna(), "").astype(str)  # noqa: E731
            assert (norm(w).to_numpy() == norm(g).to_numpy()).all(), c
        else:
            assert np.allclose(w.to_numpy(float), g.to_numpy(float), rtol=0, atol=1e-9,
                               equal_nan=True), c


@pytest.mark.parametrize("name", CORPUS)
def test_every_format_has_the_dataframes_rows(name, tmp_path):
    path = corpus_file(name)
    a = toolkit.analyze(path)
    want = a.packets
    assert list(want.columns) == list(packet_rows.COLUMNS)
    buf = io.BytesIO()
    assert a.write_packets(buf, "csv") == len(want)
    _frames_equal(pd.read_csv(io.BytesIO(buf.getvalue()), keep_default_na=False,
                              na_values={"ack_rtt": [""]}), want)
    buf = io.BytesIO()
    a.write_packets(buf, "jsonl")
    lines = buf.getvalue().decode().splitlines()
    assert len(lines) == len(want)
    got = pd.DataFrame([json.loads(line) for line in lines], columns=list(want.columns))
    _frames_equal(got, want)
    a.write_packets(tmp_path / "p.parquet", "parquet")
    back = pd.read_parquet(tmp_path / "p.parquet")
    _frames_equal(back, want)
    assert str(back["src"].dtype) == "category"


def test_times_are_tsharks_nine_decimals_exact_from_nanoseconds(tmp_path):
    path = corpus_file("zeek_ssh_dups")
    a = toolkit.analyze(path)
    buf = io.BytesIO()
    a.write_packets(buf, "csv")
    rows = buf.getvalue().decode().splitlines()
    header = rows[0].split(",")
    times = [r.split(",")[header.index("time")] for r in rows[1:]]
    ns = a.capture.cols["ts_ns"]
    for text, t in zip(times, (ns - ns[0]).tolist()):
        assert text == f"{t // 10**9}.{t % 10**9:09d}"
    rtts = [r.split(",")[header.index("ack_rtt")] for r in rows[1:]]
    assert any(rtts) and all(x == "" or len(x.split(".")[1]) == 9 for x in rtts)


def run_analyze(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", "analyze", *args],
                          capture_output=True, cwd=REPO)


def test_cli_json_lines_stream_filter_and_several_files(tmp_path):
    one = corpus_file("cs_tcp_retransmissions")
    two = corpus_file("zeek_ssh_dups")
    done = run_analyze(str(one), "--packets", "--format", "json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == len(toolkit.analyze(one)) and json.loads(lines[0])["frame"] == 1
    many = corpus_file("zeek_echo_connections")
    done = run_analyze(str(many), "--packets", "--format", "json", "--stream", "3")
    recs = [json.loads(x) for x in done.stdout.decode().splitlines()]
    assert recs and {r["tcp_stream"] for r in recs} == {3}
    frames = toolkit.analyze(many).packets
    assert [r["frame"] for r in recs] == frames[frames.tcp_stream == 3]["frame"].tolist()
    pk = toolkit.analyze(two).packets
    out = tmp_path / "both.csv"
    done = run_analyze(str(one), str(two), "--packets", "--format", "csv", "-o", str(out))
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(out)
    assert list(df.columns)[-1] == "file"
    assert df.groupby("file").size().to_dict() == {str(one): len(toolkit.analyze(one)),
                                                    str(two): len(pk)}
    assert not (tmp_path / "both.csv.part").exists()


def test_a_damaged_second_file_keeps_the_first_files_rows(tmp_path):
    one = corpus_file("cs_tcp_retransmissions")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    out = tmp_path / "rows.jsonl"
    done = run_analyze(str(one), str(bad), "--packets", "--format", "json", "-o", str(out))
    assert done.returncode == 2 and b"bad.pcap" in done.stderr
    assert len(out.read_text().splitlines()) == len(toolkit.analyze(one))


_PEAK = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "toolkit.cli", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def peak_bytes(*args) -> int:
    """Peak RSS of `labkit ARGS` in a fresh child (a fork of a small interpreter, so the
    figure is the command's own, not this test process's)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    code, peak = done.stdout.split()
    assert code == "0", done.stderr
    return int(peak)


SIZES = (400_000, 800_000)          # beyond the reader's fixed buffers


@pytest.fixture(scope="module")
def bulk_captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    out = {}
    for n in SIZES:
        out[n] = root / f"bulk-{n}.pcap"
        bulk_capture(out[n], n)
    return out


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_memory_per_packet_stays_under_the_bound_whatever_the_size(bulk_captures, tmp_path,
                                                                   fmt):
    """What each further packet costs, from a 400k- and an 800k-packet export: the fixed
    part (the interpreter, numba, pyarrow, the reader's buffers) does not grow with the
    capture. On this kit's 1M-packet benchmark capture the whole peak is under 300 bytes
    a packet too (benchmarks/analyze_speed.py)."""
    sizes = SIZES
    peaks = []
    for n in sizes:
        out = tmp_path / f"out-{n}-{fmt}"
        peaks.append(peak_bytes("analyze", str(bulk_captures[n]), "--packets", "--format",
                                fmt, "-o", str(out)))
    per_packet = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    print(f"{fmt}: {per_packet:.0f} bytes a packet beyond the fixed part")
    assert per_packet <= BYTES_PER_PACKET, (fmt, peaks, per_packet)
    # and the export has every frame
    out = tmp_path / f"out-{sizes[1]}-{fmt}"
    if fmt == "csv":
        assert sum(1 for _ in open(out)) == sizes[1] + 1
    elif fmt == "json":
        assert sum(1 for _ in open(out)) == sizes[1]
    else:
        assert len(pd.read_parquet(out / "packets.parquet", columns=["frame"])) == sizes[1]


def test_the_synthetic_capture_has_what_the_export_must_carry(tmp_path):
    cap = tmp_path / "bulk.pcap"
    bulk_capture(cap, 20_000)
    a = toolkit.analyze(cap)
    assert a.error is None
    pk = a.packets
    assert len(pk) == 20_000
    assert pk["retransmission"].sum() > 0 and pk["ack_rtt"].notna().sum() > 1000
    assert (pk["proto"] == "UDP").sum() > 0 and pk["tcp_stream"].max() >= 1


def test_text_kernel_handles_negative_times_and_no_frames():
    a = toolkit.analyze(corpus_file("cs_tcp_retransmissions"))
    buf = io.BytesIO()
    assert packet_text.write(a, buf, "csv", stream=99) == 0
    assert buf.getvalue().decode().startswith("frame,time,")
    # a frame stamped before the first: tshark's frame.time_relative is negative
    a.capture.cols["ts_ns"][1] = a.capture.cols["ts_ns"][0] - 1_500_000_000
    buf = io.BytesIO()
    packet_text.write(a, buf, "jsonl")
    second = json.loads(buf.getvalue().decode().splitlines()[1])
    assert second["time"] == -1.5
