"""UDP conversations (toolkit.analysis.udp): udp.stream numbering, per-direction statistics,
RFC 3550 jitter, and lab-flow loss, duplicates and RFC 4737 reordering.

Synthetic cases are built from empty_columns(n) and worked out by hand in the comments;
the corpus tests compare udp.stream on every frame with tshark 4.0's saved output.
"""

from __future__ import annotations

import csv
import ipaddress
import math
from pathlib import Path

import numpy as np
import pytest

import toolkit.pcap
from toolkit import wire
from toolkit.analysis.sequence import sequence_metrics
from toolkit.analysis.udp import analyze_udp
from toolkit.pcap.columns import FRAG_FIRST, L3_IPV4, L3_IPV6, L4_TCP, L4_UDP, empty_columns

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _addr(text: str) -> tuple[int, int]:
    a = ipaddress.ip_address(text)
    v = int(ipaddress.IPv6Address(f"::ffff:{a}")) if a.version == 4 else int(a)
    return v >> 64, v & ((1 << 64) - 1)


def _columns(frames: list[dict]) -> dict[str, np.ndarray]:
    """Columns for frames given as dicts: t_ms, src, sport, dst, dport, and optionally
    head (payload bytes), paylen, wirelen, l4 (default UDP), frag."""
    c = empty_columns(len(frames))
    rows, heads, lens = [], [], []
    for i, f in enumerate(frames):
        c["ts_ns"][i] = round(f["t_ms"] * 1e6)
        l4 = f.get("l4", L4_UDP)
        if "src" in f:
            c["l3"][i] = L3_IPV6 if ":" in f["src"] else L3_IPV4
            c["src_hi"][i], c["src_lo"][i] = _addr(f["src"])
            c["dst_hi"][i], c["dst_lo"][i] = _addr(f["dst"])
            c["ip_proto"][i] = l4
            c["l4"][i] = l4
            c["sport"][i], c["dport"][i] = f["sport"], f["dport"]
        c["ip_frag"][i] = f.get("frag", 0)
        head = f.get("head", b"")
        c["paylen"][i] = f.get("paylen", max(len(head), 100))
        c["wirelen"][i] = f.get("wirelen", c["paylen"][i] + 42)
        c["caplen"][i] = c["wirelen"][i]
        if l4 == L4_UDP and "src" in f:
            rows.append(i)
            heads.append(head[:32].ljust(32, b"\0"))
            lens.append(min(len(head), 32))
    c["udp_rows"] = np.array(rows, np.int64)
    c["udp_head"] = np.frombuffer(b"".join(heads), np.uint8).reshape(len(rows), 32).copy()
    c["udp_head_len"] = np.array(lens, np.uint8)
    return c


A, B = ("10.0.0.1", 5000), ("10.0.0.2", 6000)


def _lab_flow(seqs, arrive_ms, send_ms=None, flow=1, src=A, dst=B):
    send_ms = arrive_ms if send_ms is None else send_ms
    return [{"t_ms": t, "src": src[0], "sport": src[1], "dst": dst[0], "dport": dst[1],
             "head": wire.Header(flow, s, round(st * 1e6), 100).pack() + bytes(100)}
            for s, t, st in zip(seqs, arrive_ms, send_ms, strict=True)]


def _flow_row(frames):
    r = analyze_udp(_columns(frames))
    assert len(r.flows) == 1
    return r.flows.iloc[0]


# ---------------------------------------------------------------- udp.stream numbering

def test_stream_numbering_first_appearance_unordered_pair():
    c, d = ("10.0.0.3", 7000), ("2001:db8::1", 5000)
    frames = [
        {"t_ms": 0, "src": A[0], "sport": A[1], "dst": B[0], "dport": B[1]},      # 0
        {"t_ms": 1, "src": A[0], "sport": 80, "dst": B[0], "dport": 81, "l4": L4_TCP},
        {"t_ms": 2, "src": B[0], "sport": B[1], "dst": A[0], "dport": A[1]},      # 0 reply
        {"t_ms": 3, "src": c[0], "sport": c[1], "dst": B[0], "dport": B[1]},      # 1
        {"t_ms": 4},                                                             # not IP
        # a first fragment whose datagram is never completed: no stream, as tshark
        {"t_ms": 5, "src": A[0], "sport": A[1], "dst": B[0], "dport": B[1],
         "frag": FRAG_FIRST},
        {"t_ms": 6, "src": d[0], "sport": d[1], "dst": "2001:db8::2", "dport": 53},  # 2
        {"t_ms": 7, "src": A[0], "sport": A[1], "dst": B[0], "dport": 6001},     # 3: port
        {"t_ms": 8, "src": A[0], "sport": A[1], "dst": B[0], "dport": B[1]},      # 0
    ]
    r = analyze_udp(_columns(frames))
    assert r.stream.tolist() == [0, -1, 0, 1, -1, -1, 2, 3, 0]
    conv = r.conversations
    assert conv["stream"].tolist() == [0, 1, 2, 3]
    assert conv["a_addr"].tolist() == ["10.0.0.1", "10.0.0.3", "2001:db8::1", "10.0.0.1"]
    assert conv["b_addr"][2] == "2001:db8::2" and conv["b_port"][2] == 53


def test_ipv4_never_equals_ipv6():
    frames = [{"t_ms": 0, "src": "10.0.0.1", "sport": 1, "dst": "10.0.0.2", "dport": 2},
              {"t_ms": 1, "src": "::a00:1", "sport": 1, "dst": "::a00:2", "dport": 2}]
    assert analyze_udp(_columns(frames)).stream.tolist() == [0, 1]


def test_empty_and_no_udp():
    for c in (empty_columns(0), _columns([{"t_ms": 0, "src": A[0], "sport": 1, "dst": B[0],
                                            "dport": 2, "l4": L4_TCP}])):
        r = analyze_udp(c)
        assert (r.stream == -1).all() and len(r.stream) == len(c["ts_ns"])
        assert r.conversations.empty and "jitter_source_a_to_b" in r.conversations
        assert r.flows.empty and "lost" in r.flows


# ---------------------------------------------------------------- conversation table

def test_conversation_directions_bytes_rates():
    # A sends at 0, 10, 30 ms; B answers at 5 ms. Frame 1 is an unrelated TCP frame at
    # -100 ms, so the conversation starts 0.1 s into the capture.
    frames = [{"t_ms": -100, "src": A[0], "sport": 1, "dst": B[0], "dport": 2, "l4": L4_TCP}]
    for t in (0, 10, 30):
        frames.append({"t_ms": t, "src": A[0], "sport": A[1], "dst": B[0], "dport": B[1],
                       "paylen": 100, "wirelen": 142})
    frames.insert(2, {"t_ms": 5, "src": B[0], "sport": B[1], "dst": A[0], "dport": A[1],
                      "paylen": 50, "wirelen": 92})
    conv = analyze_udp(_columns(frames)).conversations.iloc[0]
    assert (conv["a_addr"], conv["a_port"], conv["b_addr"], conv["b_port"]) == (
        "10.0.0.1", 5000, "10.0.0.2", 6000)
    assert conv["start_s"] == pytest.approx(0.1) and conv["duration_s"] == pytest.approx(0.03)
    assert (conv["datagrams"], conv["bytes"]) == (4, 3 * 142 + 92)
    assert (conv["datagrams_a_to_b"], conv["bytes_a_to_b"], conv["payload_bytes_a_to_b"]) == (
        3, 426, 300)
    assert (conv["datagrams_b_to_a"], conv["bytes_b_to_a"], conv["payload_bytes_b_to_a"]) == (
        1, 92, 50)
    # Wireshark's Bits/s: frame bytes * 8 over the conversation's duration
    assert conv["bitrate_a_to_b_bps"] == pytest.approx(426 * 8 / 0.03)
    assert conv["bitrate_b_to_a_bps"] == pytest.approx(92 * 8 / 0.03)
    # payload rate over the direction's own span (0 .. 30 ms)
    assert conv["goodput_a_to_b_bps"] == pytest.approx(300 * 8 / 0.03)
    assert math.isnan(conv["goodput_b_to_a_bps"])      # one datagram: no span
    # gaps A->B: 10, 20 ms
    assert conv["iat_mean_a_to_b_s"] * 1e3 == pytest.approx(15)
    assert conv["iat_std_a_to_b_s"] * 1e3 == pytest.approx(5)
    assert (conv["iat_min_a_to_b_s"], conv["iat_max_a_to_b_s"]) == pytest.approx((0.010, 0.020))
    assert conv["iat_p50_a_to_b_s"] * 1e3 == pytest.approx(15)
    assert conv["iat_p99_a_to_b_s"] * 1e3 == pytest.approx(19.9)
    assert math.isnan(conv["iat_mean_b_to_a_s"])
    assert conv["jitter_source_a_to_b"] == "none" and math.isnan(conv["jitter_a_to_b_s"])


# ---------------------------------------------------------------- RFC 3550 jitter

def test_rfc3550_jitter_lab_header_by_hand():
    # sent every 20 ms; arrivals 5, 27, 44, 64 ms (transit 5, 7, 4, 4 ms).
    # D(i-1,i) = (R_i - R_i-1) - (S_i - S_i-1) = 22-20 = 2, 17-20 = -3, 20-20 = 0 ms.
    # J_1 = 0 + (2 - 0)/16                  = 0.125
    # J_2 = 0.125 + (3 - 0.125)/16          = 0.3046875
    # J_3 = 0.3046875 + (0 - 0.3046875)/16  = 0.28564453125
    send, arrive = [0, 20, 40, 60], [5, 27, 44, 64]
    conv = analyze_udp(_columns(_lab_flow([0, 1, 2, 3], arrive, send))).conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "lab"
    assert conv["jitter_a_to_b_s"] * 1e3 == pytest.approx(0.28564453125, abs=1e-9)
    assert conv["jitter_max_a_to_b_s"] * 1e3 == pytest.approx(0.3046875, abs=1e-9)
    assert conv["jitter_mean_a_to_b_s"] * 1e3 == pytest.approx(
        (0.125 + 0.3046875 + 0.28564453125) / 3, abs=1e-9)
    # gaps 22, 17, 20 ms: mean 59/3; population std sqrt(((7/3)^2+(8/3)^2+(1/3)^2)/3);
    # p99 between the 2nd and 3rd sorted gap: 20 + 0.98 * (22 - 20)
    assert conv["iat_mean_a_to_b_s"] * 1e3 == pytest.approx(59 / 3)
    assert conv["iat_std_a_to_b_s"] * 1e3 == pytest.approx(math.sqrt((49 + 64 + 1) / 27))
    assert conv["iat_p50_a_to_b_s"] * 1e3 == pytest.approx(20)
    assert conv["iat_p99_a_to_b_s"] * 1e3 == pytest.approx(21.96)
    f = analyze_udp(_columns(_lab_flow([0, 1, 2, 3], arrive, send))).flows.iloc[0]
    assert f["jitter_s"] * 1e3 == pytest.approx(0.28564453125, abs=1e-9)
    # one-way delay = arrival - send: 5, 7, 4, 4 ms (meaningful with a shared clock)
    assert (f["owd_min_s"], f["owd_max_s"]) == pytest.approx((0.004, 0.007))
    assert f["owd_mean_s"] * 1e3 == pytest.approx(5)
    assert f["owd_p50_s"] * 1e3 == pytest.approx(4.5)
    assert f["owd_std_s"] * 1e3 == pytest.approx(math.sqrt(1.5))


def _rtp(seq, ts, ssrc=0x11223344, pt=8, version=2):
    return bytes([version << 6, pt]) + seq.to_bytes(2, "big") + (ts % (1 << 32)).to_bytes(
        4, "big") + ssrc.to_bytes(4, "big") + bytes(160)


def _rtp_frames(heads, arrive_ms):
    return [{"t_ms": t, "src": A[0], "sport": 40000, "dst": B[0], "dport": 40002, "head": h}
            for h, t in zip(heads, arrive_ms, strict=True)]


def test_rfc3550_jitter_rtp_by_hand_across_timestamp_wrap():
    # PT 8 (PCMA, 8000 Hz): timestamps 160 ticks (20 ms) apart, starting just below 2**32
    # so they wrap. Arrivals 0, 21, 40, 61 ms = 0, 168, 320, 488 ticks.
    # D = 168-160 = 8, 152-160 = -8, 168-160 = 8 ticks
    # J_1 = 8/16 = 0.5; J_2 = 0.5 + 7.5/16 = 0.96875; J_3 = 0.96875 + 7.03125/16 = 1.408203125
    # ticks -> ms: / 8 = 0.176025390625 ms
    start = (1 << 32) - 200
    heads = [_rtp(65534 + i & 0xFFFF, start + 160 * i) for i in range(4)]
    conv = analyze_udp(_columns(_rtp_frames(heads, [0, 21, 40, 61]))).conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "rtp"
    assert conv["jitter_a_to_b_s"] * 1e3 == pytest.approx(0.176025390625, abs=1e-9)
    assert conv["jitter_max_a_to_b_s"] * 1e3 == pytest.approx(0.176025390625, abs=1e-9)


@pytest.mark.parametrize("name,heads", [
    ("SSRC changes", [_rtp(i, 160 * i, ssrc=1 + (i == 2)) for i in range(4)]),
    ("dynamic payload type", [_rtp(i, 160 * i, pt=96) for i in range(4)]),
    ("payload type changes", [_rtp(i, 160 * i, pt=0 if i < 2 else 8) for i in range(4)]),
    ("version 1", [_rtp(i, 160 * i, version=1) for i in range(4)]),
    ("sequence numbers jump about", [_rtp(s, 160 * i) for i, s in enumerate([1, 900, 7, 50])]),
    ("one datagram", [_rtp(0, 0)]),
    ("short datagram", [_rtp(i, 160 * i)[:11] for i in range(4)]),
])
def test_not_rtp(name, heads):
    frames = _rtp_frames(heads, [20 * i for i in range(len(heads))])
    conv = analyze_udp(_columns(frames)).conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "none" and math.isnan(conv["jitter_a_to_b_s"])


def test_lab_header_wins_and_must_cover_the_direction():
    frames = _lab_flow([0, 1, 2], [0, 20, 40])
    conv = analyze_udp(_columns(frames)).conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "lab" and conv["jitter_a_to_b_s"] == 0
    frames.append({"t_ms": 60, "src": A[0], "sport": A[1], "dst": B[0], "dport": B[1],
                   "head": b"not a lab header"})
    r = analyze_udp(_columns(frames))
    assert r.conversations.iloc[0]["jitter_source_a_to_b"] == "none"
    assert r.flows.iloc[0]["received"] == 3       # the flow is still scored


# ---------------------------------------------------------------- loss, dups, RFC 4737

# (name, seqs in arrival order, expected: lost, duplicates, reordered, extent max,
#  distance max). Extent per RFC 4737 section 4.2.1: e = i - j, i the reordered packet's
#  arrival position, j the earliest arrival with a greater sequence number (duplicates
#  left out of positions). Distance: highest seen before it - its sequence number.
SEQUENCES = [
    ("in order", [0, 1, 2, 3], 0, 0, 0, 0, 0),
    ("loss only: 2 and 5 missing", [0, 1, 3, 4, 6], 2, 0, 0, 0, 0),
    # 0 1 4 2: 2 arrives when the highest is 4 (NextExp 5): reordered; j = position of 4
    # (2), i = 3, e = 1; distance 4 - 2 = 2. 3 and 7 are lost; the second 5 is a dup.
    ("mixed", [0, 1, 4, 2, 5, 5, 6, 8, 9], 2, 1, 1, 1, 2),
    # one packet late: 4 arrives after 5 6 7 8 (positions 3..6), e = 7 - 3 = 4
    ("one late packet", [1, 2, 3, 5, 6, 7, 8, 4, 9, 10], 0, 0, 1, 4, 4),
    # one packet early: 7 jumps ahead; then 4, 5, 6 are each below NextExp = 8:
    # three reordered, extents 1, 2, 3 (all measured back to 7 at position 3)
    ("one early packet", [1, 2, 3, 7, 4, 5, 6, 8, 9, 10], 0, 0, 3, 3, 3),
    # a reordered packet duplicated: the copy is a duplicate, not reordered again
    ("late and duplicated", [1, 3, 2, 2, 4], 0, 1, 1, 1, 1),
    # a duplicate of the highest is not reordered either
    ("duplicate of the highest", [1, 2, 2, 3], 0, 1, 0, 0, 0),
    # fully reversed: every packet after the first is reordered, e = i (j = 0)
    ("reversed", [4, 3, 2, 1, 0], 0, 0, 4, 4, 4),
]


@pytest.mark.parametrize("name,seqs,lost,dups,reord,emax,dmax", SEQUENCES,
                         ids=[s[0] for s in SEQUENCES])
def test_loss_duplicates_reordering(name, seqs, lost, dups, reord, emax, dmax):
    f = _flow_row(_lab_flow(seqs, list(range(len(seqs)))))
    distinct = len(set(seqs))
    assert (f["received"], f["distinct"]) == (len(seqs), distinct)
    assert (f["first_seq"], f["last_seq"]) == (min(seqs), max(seqs))
    assert f["expected"] == max(seqs) - min(seqs) + 1
    assert (f["lost"], f["duplicates"], f["reordered"]) == (lost, dups, reord)
    assert (f["reorder_extent_max"], f["reorder_distance_max"]) == (emax, dmax)
    assert f["loss_ratio"] == pytest.approx(lost / f["expected"])
    assert f["reordered_ratio"] == pytest.approx(reord / distinct)


def test_reorder_extent_mean_and_per_datagram_marks():
    # "one early packet": extents 1, 2, 3 -> mean 2
    m = sequence_metrics(np.zeros(10, np.int64), np.array([1, 2, 3, 7, 4, 5, 6, 8, 9, 10]), 1)
    assert m["reorder_extent_mean"][0] == pytest.approx(2)
    assert m["reordered_mask"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert m["extent"].tolist() == [0, 0, 0, 0, 1, 2, 3, 0, 0, 0]


def test_flows_are_kept_apart():
    # two flow ids interleaved A->B, one flow B->A; each has its own sequence space.
    # flow 1: 0 1 2 3 (in order); flow 2: 0 2 1 (one reordered); B->A flow 1: 0 2 (1 lost)
    f1 = _lab_flow([0, 1, 2, 3], [0, 2, 4, 6], flow=1)
    f2 = _lab_flow([0, 2, 1], [1, 3, 5], flow=2)
    back = _lab_flow([0, 2], [7, 8], flow=1, src=B, dst=A)
    frames = sorted(f1 + f2 + back, key=lambda f: f["t_ms"])
    flows = analyze_udp(_columns(frames)).flows
    got = {(r.direction, r.flow): (r.received, r.lost, r.reordered, r.src_addr, r.dst_port)
           for r in flows.itertuples()}
    assert got == {("a_to_b", 1): (4, 0, 0, "10.0.0.1", 6000),
                   ("a_to_b", 2): (3, 0, 1, "10.0.0.1", 6000),
                   ("b_to_a", 1): (2, 1, 0, "10.0.0.2", 5000)}
    assert (flows["stream"] == 0).all()


def test_many_datagrams_no_python_per_datagram():
    # 200k datagrams over 1000 conversations, every 10th dropped: runs as array work
    n = 200_000
    rng = np.random.default_rng(1)
    c = empty_columns(n)
    c["ts_ns"][:] = np.arange(n) * 1000
    c["l3"][:] = 4
    c["l4"][:] = L4_UDP
    conv = rng.integers(0, 1000, n)
    c["src_lo"][:] = (0xFFFF << 32) | (0x0A000000 + conv).astype(np.uint64)
    c["dst_lo"][:] = (0xFFFF << 32) | 0x0A0000FF
    c["sport"][:] = 4000
    c["dport"][:] = 9
    c["paylen"][:] = 64
    c["wirelen"][:] = 106
    seq = np.zeros(n, np.int64)
    for_each = np.argsort(conv, kind="stable")
    seq[for_each] = np.arange(n) - np.repeat(np.cumsum(np.bincount(conv)) - np.bincount(conv),
                                             np.bincount(conv))
    seq = seq + seq // 9                          # skip every 10th number: 10% loss
    heads = np.zeros((n, 32), np.uint8)
    heads[:, :4] = np.frombuffer(wire.MAGIC, np.uint8)
    heads[:, 4] = wire.VERSION
    heads[:, 8:12] = np.frombuffer(np.uint32(7).byteswap().tobytes(), np.uint8)
    heads[:, 12:20] = seq.astype(">u8").view(np.uint8).reshape(n, 8)
    heads[:, 20:28] = (c["ts_ns"] - 3_000_000).astype(">i8").view(np.uint8).reshape(n, 8)
    c["udp_rows"] = np.arange(n, dtype=np.int64)
    c["udp_head"] = heads
    c["udp_head_len"] = np.full(n, 32, np.uint8)
    r = analyze_udp(c)
    assert len(r.conversations) == 1000 and len(r.flows) == 1000
    assert (r.flows["reordered"] == 0).all() and (r.flows["duplicates"] == 0).all()
    assert np.allclose(r.flows["owd_mean_s"] * 1e3, 3.0)
    lost = r.flows["lost"].to_numpy()
    got = r.flows["received"].to_numpy()
    assert np.all(lost == (got - 1) // 9)
    assert (r.conversations["jitter_source_a_to_b"] == "lab").all()


# ---------------------------------------------------------------- corpus: equal to tshark

def _corpus_or_skip() -> Path:
    if not (CORPUS / "files").is_dir():
        pytest.skip(f"conformance corpus not found at {CORPUS}")
    return CORPUS


def _corpus_files() -> list[Path]:
    return sorted((CORPUS / "files").iterdir()) if (CORPUS / "files").is_dir() else []


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_udp_stream_equals_tshark_on_every_frame(path):
    corpus = _corpus_or_skip()
    with open(corpus / "tshark" / (path.name.split(".")[0] + ".tsv"), newline="") as f:
        expect = [int(r["udp.stream"]) if r["udp.stream"] else -1
                  for r in csv.DictReader(f, delimiter="\t")]
    r = analyze_udp(toolkit.pcap.read_capture(path).cols)
    assert len(r.stream) == len(expect), "frame count differs from tshark's"
    bad = np.flatnonzero(r.stream != np.array(expect))
    assert len(bad) == 0, [(int(i) + 1, expect[i], int(r.stream[i])) for i in bad[:10]]
    assert len(r.conversations) == max(expect, default=-1) + 1


def test_rtp_jitter_equals_wireshark_rtp_streams():
    # tshark 4.0.17 -r sipp_g711a_rtp.pcap -d udp.port==5000,rtp -q -z rtp,streams:
    #   10.1.3.143 5000 -> 10.1.6.18 2006 SSRC 0xDEE0EE8F g711A 236 pkts
    #   Min/Mean/Max Delta 25.112/29.998/34.829 ms; Mean/Max Jitter 0.350/0.829 ms
    path = _corpus_or_skip() / "files" / "sipp_g711a_rtp.pcap"
    conv = analyze_udp(toolkit.pcap.read_capture(path).cols).conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "rtp" and conv["datagrams_a_to_b"] == 236
    assert round(conv["jitter_mean_a_to_b_s"], 6) == 0.000350
    assert round(conv["jitter_max_a_to_b_s"], 6) == 0.000829
    assert (round(conv["iat_min_a_to_b_s"], 6), round(conv["iat_mean_a_to_b_s"], 6),
            round(conv["iat_max_a_to_b_s"], 6)) == (0.025112, 0.029998, 0.034829)
    # tshark -z conv,udp: Duration 7.0496 s, 236 frames, 69 kB A->B
    assert round(conv["duration_s"], 4) == 7.0496 and conv["bytes_a_to_b"] == 69384


# ---------------------------------------------------------------- ICMP errors quoting UDP
#
# tshark 4.0.17 on _icmp_pcap() below (checked live when tshark is installed):
#   frame  udp.stream
#   1      0          UDP 10.0.0.1:5000 -> 10.0.0.2:53
#   2      0          ICMP port unreachable quoting 10.0.0.1:5000 -> 10.0.0.2:53
#   3      1          ICMP port unreachable quoting 10.0.0.1:6000 -> 10.0.0.3:53 (new!)
#   4      2          UDP 10.0.0.9:1 -> 10.0.0.2:2
#   5      1          UDP 10.0.0.1:6000 -> 10.0.0.3:53
ICMP_TSHARK_STREAMS = [0, 0, 1, 2, 1]


def test_icmp_quoted_udp_numbered_like_tshark():
    frames = [
        {"t_ms": 0, "src": "10.0.0.1", "sport": 5000, "dst": "10.0.0.2", "dport": 53},
        {"t_ms": 1, "src": "10.0.0.2", "sport": 0, "dst": "10.0.0.1", "dport": 0, "l4": 0},
        {"t_ms": 2, "src": "10.0.0.3", "sport": 0, "dst": "10.0.0.1", "dport": 0, "l4": 0},
        {"t_ms": 3, "src": "10.0.0.9", "sport": 1, "dst": "10.0.0.2", "dport": 2},
        {"t_ms": 4, "src": "10.0.0.1", "sport": 6000, "dst": "10.0.0.3", "dport": 53},
    ]
    c = _columns(frames)
    assert analyze_udp(c).stream.tolist() == [0, -1, -1, 1, 2]    # without the quoted table
    quoted = [("10.0.0.1", 5000, "10.0.0.2", 53), ("10.0.0.1", 6000, "10.0.0.3", 53)]
    c["icmp_rows"] = np.array([1, 2], np.int64)
    c["icmp_proto"] = np.array([17, 17], np.uint8)
    for side, i_addr, i_port in (("src", 0, 1), ("dst", 2, 3)):
        hl = [_addr(q[i_addr]) for q in quoted]
        c[f"icmp_{side}_hi"] = np.array([h for h, _ in hl], np.uint64)
        c[f"icmp_{side}_lo"] = np.array([lo for _, lo in hl], np.uint64)
        c[f"icmp_{'s' if side == 'src' else 'd'}port"] = np.array([q[i_port] for q in quoted],
                                                                  np.uint16)
    r = analyze_udp(c)
    assert r.stream.tolist() == ICMP_TSHARK_STREAMS
    conv = r.conversations
    # the quoting frames are not datagrams of the conversation
    assert conv["datagrams"].tolist() == [1, 1, 1]
    assert (conv["a_addr"][1], conv["a_port"][1], conv["b_addr"][1]) == (
        "10.0.0.1", 6000, "10.0.0.3")
    # statistics count datagrams only: the conversation starts with frame 5 (4 ms)
    assert conv["datagrams_a_to_b"][1] == 1 and conv["start_s"][1] == pytest.approx(0.004)


def _icmp_pcap() -> bytes:
    """The five frames above as an Ethernet pcap."""
    import socket
    import struct

    def csum(b):
        b += b"\0" * (len(b) % 2)
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF

    def ip(src, dst, proto, payload):
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                        socket.inet_aton(src), socket.inet_aton(dst))
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload

    def udp(sp, dp, data=b"hello"):
        return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data

    def unreachable(inner):
        b = struct.pack("!BBHI", 3, 3, 0, 0) + inner[:28]
        return b[:2] + struct.pack("!H", csum(b)) + b[4:]

    packets = [ip("10.0.0.1", "10.0.0.2", 17, udp(5000, 53)),
               ip("10.0.0.2", "10.0.0.1", 1,
                  unreachable(ip("10.0.0.1", "10.0.0.2", 17, udp(5000, 53)))),
               ip("10.0.0.3", "10.0.0.1", 1,
                  unreachable(ip("10.0.0.1", "10.0.0.3", 17, udp(6000, 53)))),
               ip("10.0.0.9", "10.0.0.2", 17, udp(1, 2, b"x")),
               ip("10.0.0.1", "10.0.0.3", 17, udp(6000, 53))]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, p in enumerate(packets):
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + p
        out.append(struct.pack("<IIII", 1000 + i, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


def test_icmp_quoted_udp_from_a_capture(tmp_path):
    import shutil
    import subprocess

    path = tmp_path / "icmp.pcap"
    path.write_bytes(_icmp_pcap())
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "udp.stream"],
                             capture_output=True, text=True, check=True).stdout
        assert [int(x) for x in out.split()] == ICMP_TSHARK_STREAMS
    cols = toolkit.pcap.read_capture(path).cols
    # the reader provides the quoted-header table (toolkit.analysis.udp.QUOTED_COLUMNS)
    assert cols["icmp_rows"].tolist() == [1, 2]
    assert analyze_udp(cols).stream.tolist() == ICMP_TSHARK_STREAMS


def test_udp_on_its_own_thread_changes_nothing(tmp_path, monkeypatch):
    """toolkit.analyze runs a large UDP analysis beside the TCP one (on a worker thread):
    the tables equal those of one thread."""
    import struct

    import toolkit.api as api

    monkeypatch.setattr(api, "UDP_THREAD_MIN", 1000)

    def frame(src, dst, proto, l4):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
        return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(6000):
        if i % 3:
            seq = struct.pack("!I", i)
            f = frame("10.0.0.1", f"10.0.1.{i % 7}", 17,
                      struct.pack("!HHHH", 4000 + i % 5, 53, 12, 0) + seq)
        else:
            f = frame("10.0.0.2", "10.0.0.3", 6, struct.pack(
                "!HHIIHHHH", 1234, 80, 1000 + i, 0, (5 << 12) | 0x10, 65535, 0, 0))
        out.append(struct.pack("<IIII", 1000 + i // 1000, (i % 1000) * 1000, len(f), len(f))
                   + f)
    path = tmp_path / "mixed.pcap"
    path.write_bytes(b"".join(out))
    one, two = api.analyze(path, threads=1), api.analyze(path, threads=2)
    assert len(one.udp) == 35 and len(one.tcp) == 1
    assert one.udp.equals(two.udp) and one.tcp.equals(two.tcp)
    assert np.array_equal(one.udp_stream, two.udp_stream)
