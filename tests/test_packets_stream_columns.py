"""The packets table as expectations read it: each frame's number and time within its own
TCP conversation (stream_frame, stream_time_s), the same however other conversations
interleave with it; lab 05 names "the 2nd SYN, 1 s after the first" by them, and how many
duplicate ACKs a retransmission had seen (dupacks_seen)."""

from __future__ import annotations

import math

import pandas as pd

import toolkit
from toolkit.labs import expect
from toolkit.labs.folder import analyzer_table, with_stream_columns

from pcapbuild import ether, ipv4, pcap, tcp, udp

T0 = 1_700_000_000_000_000_000


def _capture(tmp_path, gap_ns: int) -> str:
    """Two conversations interleaved, the second starting `gap_ns` after the first, and a
    UDP datagram between them."""
    def seg(sport, dport, flags, src="10.0.0.1", dst="10.0.0.2"):
        return ether(ipv4(tcp(sport, dport, flags=flags), src=src, dst=dst))
    frames = [
        (seg(41001, 5301, 0x02), T0, 0),                                     # A: SYN
        (seg(41002, 5302, 0x02), T0 + gap_ns, 0),                            # B: SYN
        (ether(ipv4(udp(5000, 53, b"x"), proto=17)), T0 + gap_ns + 1, 0),
        (seg(41001, 5301, 0x02), T0 + 1_000_000_000, 0),                     # A: SYN again
        (seg(5302, 41002, 0x12, "10.0.0.2", "10.0.0.1"), T0 + gap_ns + 20_000_000, 0),
        (seg(5301, 41001, 0x12, "10.0.0.2", "10.0.0.1"), T0 + 1_020_000_000, 0),
    ]
    frames = sorted(frames, key=lambda f: f[1])
    path = tmp_path / f"c{gap_ns}.pcap"
    path.write_bytes(pcap([(d, t, len(d)) for d, t, _ in frames], nanos=True))
    return str(path)


def test_frame_and_time_within_the_conversation(tmp_path):
    pk = analyzer_table(toolkit.analyze(_capture(tmp_path, 5_000_000)), "packets")
    a = pk[(pk.sport == 5301) | (pk.dport == 5301)]
    assert a.stream_frame.tolist() == [1, 2, 3]
    assert [round(t, 6) for t in a.stream_time_s] == [0.0, 1.0, 1.02]
    b = pk[(pk.sport == 5302) | (pk.dport == 5302)]
    assert b.stream_frame.tolist() == [1, 2]
    assert [round(t, 6) for t in b.stream_time_s] == [0.0, 0.02]
    other = pk[pk.tcp_stream < 0]
    assert other.stream_frame.tolist() == [0] and math.isnan(other.stream_time_s.iloc[0])


def test_stable_where_the_capture_numbers_are_not(tmp_path):
    """Conversation B starting before or after A's repeated SYN changes every capture frame
    number of A after the first; its conversation numbers stay."""
    early = analyzer_table(toolkit.analyze(_capture(tmp_path, 5_000_000)), "packets")
    late = analyzer_table(toolkit.analyze(_capture(tmp_path, 1_500_000_000)), "packets")
    pick = ["stream_frame", "stream_time_s", "tcp_flags"]

    def conv(pk):
        return pk[(pk.sport == 5301) | (pk.dport == 5301)]
    assert conv(early).frame.tolist() != conv(late).frame.tolist()
    pd.testing.assert_frame_equal(conv(early)[pick].reset_index(drop=True),
                                  conv(late)[pick].reset_index(drop=True))


def test_an_expectation_names_the_second_syn(tmp_path):
    path = _capture(tmp_path, 5_000_000)
    exps = expect.parse([
        {"table": "packets", "where": {"dport": 5301, "tcp_flags": 2, "stream_frame": 2},
         "value": "stream_time_s", "op": "between", "expected": [0.95, 1.25]},
        {"table": "packets", "where": {"dport": 5301, "tcp_flags": 2, "stream_frame": 2},
         "value": "stream_time_s", "op": "between", "expected": [1.5, 2.0]}])
    results = expect.evaluate(exps, lambda name, at: analyzer_table(toolkit.analyze(path),
                                                                     name))
    assert [r.status for r in results] == ["pass", "fail"]


def test_the_table_it_is_given_is_not_changed(tmp_path):
    pk = toolkit.analyze(_capture(tmp_path, 5_000_000)).packets
    before = list(pk.columns)
    out = with_stream_columns(pk)
    assert list(pk.columns) == before
    assert list(out.columns) == before + ["stream_frame", "stream_time_s", "dupacks_seen"]


def test_dupacks_seen_counts_the_other_ends_duplicate_acks_in_a_row(tmp_path):
    """A segment lost, three duplicate ACKs, the retransmission: it left having seen 3;
    the data before them had seen none, and a new ACK starts the count again."""
    a, b = ("10.0.0.1", 41003), ("10.0.0.2", 5303)

    def seg(frm, seq, ack, flags=0x10, size=0):
        (src, sp), (dst, dp) = (a, b) if frm == "a" else (b, a)
        return ether(ipv4(tcp(sp, dp, seq=seq, ack=ack, flags=flags, payload=b"x" * size),
                          src=src, dst=dst))
    frames = [seg("a", 1000, 0, 0x02), seg("b", 5000, 1001, 0x12), seg("a", 1001, 5001),
              seg("a", 1001, 5001, 0x18, 100),            # 4: data; 1101-1200 lost
              seg("a", 1201, 5001, 0x18, 100), seg("a", 1301, 5001, 0x18, 100),
              seg("a", 1401, 5001, 0x18, 100),
              seg("b", 5001, 1101),                       # 8: the ACK of frame 4
              seg("b", 5001, 1101), seg("b", 5001, 1101), seg("b", 5001, 1101),   # 3 dups
              seg("a", 1101, 5001, 0x18, 100),            # 12: the retransmission
              seg("b", 5001, 1501),                       # 13: a new ACK
              seg("a", 1501, 5001, 0x11)]                 # 14: FIN
    path = tmp_path / "dup.pcap"
    path.write_bytes(pcap([(f, T0 + i * 1000, len(f)) for i, f in enumerate(frames)],
                          nanos=True))
    pk = analyzer_table(toolkit.analyze(str(path)), "packets")
    assert pk.duplicate_ack_num.tolist()[8:11] == [1, 2, 3]
    assert pk.dupacks_seen.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]
    assert int(pk.loc[pk.stream_frame == 12, "retransmission"].iloc[0]) == 1
