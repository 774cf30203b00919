"""`labkit analyze --packets` in every format: the same rows as the DataFrame, streamed a
chunk at a time (JSON as JSON Lines), within 300 bytes of memory per packet however large
the capture."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, corpus_file
from synthetic import bulk_capture
from toolkit.analysis import packet_rows, packet_text

import toolkit

CORPUS = ["cs_tcp_retransmissions", "zeek_echo_connections",
          "gop_test_loopback_null", "sv_syn_retransmit_vlan",
          "sipp_g711a_rtp", "zeek_ssh_dups"]
BYTES_PER_PACKET = 300


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
                              na_values={"ack_rtt_s": [""]}), want)
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
    times = [r.split(",")[header.index("time_s")] for r in rows[1:]]
    ns = a.capture.cols["ts_ns"]
    for text, t in zip(times, (ns - ns[0]).tolist()):
        assert text == f"{t // 10**9}.{t % 10**9:09d}"
    rtts = [r.split(",")[header.index("ack_rtt_s")] for r in rows[1:]]
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
    capture. benchmarks/analyze_speed.py reports both on a 1M-packet capture: the whole
    peak (about 200 MB of it the libraries every run loads) and this growth."""
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
    assert pk["retransmission"].sum() > 0 and pk["ack_rtt_s"].notna().sum() > 1000
    assert (pk["proto"] == "UDP").sum() > 0 and pk["tcp_stream"].max() >= 1


def test_text_kernel_handles_negative_times_and_no_frames():
    a = toolkit.analyze(corpus_file("cs_tcp_retransmissions"))
    buf = io.BytesIO()
    assert packet_text.write(a, buf, "csv", stream=99) == 0
    assert buf.getvalue().decode().startswith("frame,time_s,frame_bytes,")
    # a frame stamped before the first: tshark's frame.time_relative is negative
    a.capture.cols["ts_ns"][1] = a.capture.cols["ts_ns"][0] - 1_500_000_000
    buf = io.BytesIO()
    packet_text.write(a, buf, "jsonl")
    second = json.loads(buf.getvalue().decode().splitlines()[1])
    assert second["time_s"] == -1.5


def test_the_speed_benchmark_runs_to_its_machine_readable_lines(tmp_path):
    """benchmarks/analyze_speed.py on a small capture (the figures in the README come from
    it on a 1M-packet one): every row measured, the last two lines parse."""
    from conftest import tshark_or_skip
    tshark_or_skip()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "analyze_speed.py"),
                           "--pcap", str(corpus_file("zeek_echo_connections"))],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    for work in ("per-packet CSV", "per-packet JSON Lines", "per-packet Parquet",
                 "the DataFrame", "tshark -2 -T fields", "conversations (--format json)"):
        assert any(line.startswith(work) for line in lines), (work, done.stdout)
    conv, pkt = lines[-2], lines[-1]
    assert conv.startswith("conversations: packets=")
    fields = dict(kv.split("=") for kv in pkt.split())
    assert int(fields["packets"]) == len(toolkit.analyze(corpus_file("zeek_echo_connections")))
    assert float(fields["ratio"]) > 0 and int(fields["labkit_peak_bytes_per_packet"]) > 0
    int(fields["labkit_marginal_bytes_per_packet"])     # present, a number (may be < 0 here)


def test_stream_limits_every_output_and_the_verdict_line(tmp_path):
    """--stream N: the Parquet tables, the per-packet rows and the text report's verdict
    totals are stream N's, not the whole capture's."""
    many = corpus_file("zeek_echo_connections")
    a = toolkit.analyze(many)
    out = tmp_path / "s3"
    done = run_analyze(str(many), "--stream", "3", "--packets", "--format", "parquet", "-o",
                       str(out))
    assert done.returncode == 0, done.stderr
    assert pd.read_parquet(out / "tcp_conversations.parquet")["stream"].tolist() == [3]
    assert set(pd.read_parquet(out / "tcp_states.parquet")["stream"]) == {3}
    assert len(pd.read_parquet(out / "udp_conversations.parquet")) == 0
    pk = pd.read_parquet(out / "packets.parquet")
    assert set(pk["tcp_stream"]) == {3} and len(pk) == (a.packets.tcp_stream == 3).sum()
    # stream 90 has one retransmission of the capture's many
    assert a.packets["retransmission"].sum() > 1
    assert a.packets[a.packets.tcp_stream == 90]["retransmission"].sum() == 1
    text = run_analyze(str(many), "--packets", "--stream", "90").stdout.decode()
    line = next(x for x in text.splitlines() if x.startswith("Verdicts"))
    assert line.startswith("Verdicts (stream 90): ") and "retransmission 1," in line + ","


def test_json_of_several_files_is_one_document(tmp_path):
    one, two = corpus_file("cs_tcp_retransmissions"), corpus_file("zeek_ssh_dups")
    done = run_analyze(str(one), str(two), "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format_version"] == 2
    assert [c["summary"]["file"] for c in doc["captures"]] == [str(one), str(two)]


def test_address_codes_number_each_pair_in_order_of_first_appearance():
    # the hash table's probing (many pairs, pairs alike but for one half, no IP at all)
    # against a dict doing the same by the definition
    rng = np.random.default_rng(7)
    n = 60_000
    hi = rng.integers(0, 3, n).astype(np.uint64) << np.uint64(60)   # alike in lo, not hi
    cols = {"src_hi": hi, "src_lo": rng.integers(0, 20_000, n).astype(np.uint64),
            "l3": (rng.random(n) < 0.9).astype(np.uint8)}
    for rows in (np.arange(n), np.sort(rng.choice(n, 999, replace=False)),
                 np.zeros(0, np.int64)):
        codes, pairs = packet_rows.address_codes(cols, rows, "src")
        seen: dict = {}
        want = [-1 if not cols["l3"][i] else seen.setdefault(
            (int(cols["src_hi"][i]), int(cols["src_lo"][i])), len(seen)) for i in rows]
        assert codes.tolist() == want and pairs == list(seen)
    assert len(pairs) == 0 and len(packet_rows.address_codes(cols, np.arange(n), "src")[1]) > 30_000
