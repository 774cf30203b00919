"""The lab header and framing; UDP loss, duplicates, RFC 4737 reordering, RFC 3550 jitter."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import wire
from toolkit.analysis.udp import analyze_udp
from toolkit.pcap.columns import empty_columns


def test_header_round_trip_and_vector_decode():
    hs = [wire.Header(7, i, 1_700_000_000_000_000_000 + i, 10) for i in range(5)]
    assert [wire.Header.unpack(h.pack()) for h in hs] == hs
    heads = np.frombuffer(b"".join(h.pack() for h in hs), np.uint8).reshape(5, 32)
    d = wire.decode_heads(heads, np.full(5, 32))
    assert d["valid"].all() and list(d["seq"]) == [0, 1, 2, 3, 4]
    assert list(d["flow"]) == [7] * 5 and d["send_ns"][4] == hs[4].send_ns


@pytest.mark.parametrize("cuts", [[1], [5, 40], [31, 32, 33], list(range(1, 200, 7))])
def test_deframer_any_split(cuts):
    msgs = [(wire.Header(1, i, 0), bytes([i]) * (i * 10)) for i in range(6)]
    stream = b"".join(wire.frame(h, b) for h, b in msgs)
    d, got, last = wire.Deframer(), [], 0
    for c in [*cuts, len(stream)]:
        got += d.feed(stream[last:c])
        last = c
    d.close()
    assert [(h.seq, b) for h, b in got] == [(h.seq, b) for h, b in msgs]


@pytest.mark.parametrize("data,words", [
    (b"XXXX" + bytes(28), "bad magic"),
    (wire.Header(1, 0, 0, 1 << 30).pack(), "exceeds the limit"),
])
def test_deframer_rejects(data, words):
    with pytest.raises(wire.FramingError, match=words):
        wire.Deframer(limit=1 << 20).feed(data)


def test_deframer_truncated_at_close():
    d = wire.Deframer()
    d.feed(wire.frame(wire.Header(1, 0, 0), b"abc")[:-1])
    with pytest.raises(wire.FramingError, match="ended inside a message"):
        d.close()


def _udp_cols(arrivals_ms, seqs, send_ms=None):
    """One flow 10.0.0.1:5000 -> 10.0.0.2:6000 carrying the lab header."""
    n = len(seqs)
    c = empty_columns(n)
    c["ts_ns"][:] = (np.array(arrivals_ms) * 1e6).astype(np.int64)
    c["l3"][:] = 4
    c["l4"][:] = 17
    c["src_lo"][:] = (0xFFFF << 32) | 0x0A000001
    c["dst_lo"][:] = (0xFFFF << 32) | 0x0A000002
    c["sport"][:] = 5000
    c["dport"][:] = 6000
    c["paylen"][:] = 100
    c["wirelen"][:] = 142
    send_ms = send_ms if send_ms is not None else arrivals_ms
    heads = [wire.Header(1, s, int(t * 1e6)).pack() for s, t in zip(seqs, send_ms, strict=True)]
    c["udp_rows"] = np.arange(n, dtype=np.int64)
    c["udp_head"] = np.frombuffer(b"".join(heads), np.uint8).reshape(n, 32).copy()
    c["udp_head_len"] = np.full(n, 32, np.uint8)
    c["sack_rows"] = np.zeros(0, np.int64)
    return c


def test_loss_duplicates_reordering():
    # sent 0..9; 3 and 7 lost, 5 duplicated, 2 arrives after 4 (RFC 4737: reordered).
    # Extent (RFC 4737 sec. 4.2.2): 2 arrives at index 3, the earliest arrival with a
    # larger number is 4 at index 2, so the extent is 3 - 2 = 1.
    seqs = [0, 1, 4, 2, 5, 5, 6, 8, 9]
    r = analyze_udp(_udp_cols(list(range(len(seqs))), seqs))
    f = r.flows.iloc[0]
    assert (f["received"], f["distinct"], f["lost"], f["duplicates"]) == (9, 8, 2, 1)
    assert f["reordered"] == 1 and f["reorder_extent_max"] == 1


def test_end_marker_in_the_capture_reveals_head_and_tail_loss():
    # data 1..7 arrive (0, 8 and 9 lost), then the sender's end marker, a control datagram
    # whose seq field says 10 were sent, three times; hello (seq 0) is not data either
    seqs = [0, 1, 2, 3, 4, 5, 6, 7, 10, 10, 10]
    c = _udp_cols(list(range(len(seqs))), seqs)
    heads = c["udp_head"]
    heads[0, wire.OFFSET["kind"]] = wire.KIND_CONTROL               # the hello
    heads[8:, wire.OFFSET["kind"]] = wire.KIND_CONTROL              # the end markers
    f = analyze_udp(c).flows.iloc[0]
    assert (f["distinct"], f["expected"], f["lost"], f["duplicates"]) == (7, 10, 3, 0)
    # without the end marker only the gap between arrivals can be seen
    g = analyze_udp(_udp_cols(list(range(7)), [1, 2, 3, 4, 5, 6, 7])).flows.iloc[0]
    assert (g["expected"], g["lost"]) == (7, 0)


def test_rfc3550_jitter_by_hand():
    # sent every 20 ms; arrivals with transit 5, 7, 4, 4 ms:
    # D = 2, -3, 0 ms -> J = 2/16 = 0.125; J += (3 - 0.125)/16 = 0.3046875;
    # J += (0 - 0.3046875)/16 = 0.2856445...
    send = [0, 20, 40, 60]
    arrive = [5, 27, 44, 64]
    r = analyze_udp(_udp_cols(arrive, [0, 1, 2, 3], send))
    conv = r.conversations.iloc[0]
    assert conv["jitter_source_a_to_b"] == "lab"
    assert conv["jitter_a_to_b_s"] * 1e3 == pytest.approx(0.2856445, abs=1e-6)
    assert conv["iat_mean_a_to_b_s"] * 1e3 == pytest.approx(59 / 3)
    assert conv["datagrams_a_to_b"] == 4 and conv["datagrams_b_to_a"] == 0
