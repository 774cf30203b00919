"""The conversation table's history and conn_state are Zeek's (conn.log).

Facts from Zeek's btest baselines (zeek/zeek at a13de64fbbdb01f90961c04719b308fbbb6d199e)
for the Zeek captures in ../shared/corpus, and small synthetic captures, one per rule the
table once got wrong (docs/zeek-differences.md).
"""

from __future__ import annotations

import pytest

import toolkit

import pcapbuild as B
from conftest import corpus_file

# (corpus capture, originator address, port, responder address, port, history,
#  conn_state or None where the baseline does not print it, baseline)
BASELINE = [
    # testing/btest/Baseline/core.tcp.tcp-dups/out (zeek -b -C -r tcp/ssh-dups.pcap):
    # "REMOVE:, [orig_h=192.168.0.102, orig_p=53206/tcp, resp_h=192.168.0.112,
    #  resp_p=22/tcp ...], ShADTadtTtFf"
    ("zeek_ssh_dups", "192.168.0.102", 53206, "192.168.0.112", 22, "ShADTadtTtFf", None),
    # testing/btest/Baseline/scripts.base.protocols.syslog.tcp-framing/conn.log
    # (zeek -C -b -r tcp-syslog.pcap): history ShADFf
    ("zeek_tcp_syslog_rawip", "192.168.1.1", 12345, "192.168.1.2", 514, "ShADFf", None),
]


@pytest.mark.parametrize("name,oa,op,ra,rp,history,state", BASELINE,
                         ids=[b[0] for b in BASELINE])
def test_corpus_matches_zeek_baseline(name, oa, op, ra, rp, history, state):
    t = toolkit.analyze(corpus_file(name)).tcp
    row = t[(t.a_addr == oa) & (t.a_port == op) & (t.b_addr == ra) & (t.b_port == rp)]
    assert len(row) == 1, t[["a_addr", "a_port", "b_addr", "b_port"]]
    assert row.history.iloc[0] == history
    if state:
        assert row.conn_state.iloc[0] == state


def test_truncated_header_originator_is_zeeks():
    """testing/btest/Baseline/core.tcp.truncated-header/out: Zeek's first packet is from
    128.3.26.249:25, and from the next one on the originator is 201.186.157.67:60827."""
    t = toolkit.analyze(corpus_file("zeek_tcp_truncated_header")).tcp
    assert (t.a_addr.iloc[0], t.a_port.iloc[0]) == ("201.186.157.67", 60827)
    assert (t.b_addr.iloc[0], t.b_port.iloc[0]) == ("128.3.26.249", 25)


def test_echo_connections_all_closed_cleanly():
    t = toolkit.analyze(corpus_file("zeek_echo_connections")).tcp
    assert len(t) == 500 and set(t.conn_state) == {"SF"}
    assert set(t.zeek_connections) == {1}


# -- synthetic captures ---------------------------------------------------------------

C, S = "10.0.0.1", "10.0.0.2"
CP, SP = 40000, 5201            # 5201 is not one of Zeek's likely server ports
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def seg(t_ms, frm, flags, seq, ack=0, payload=b"", win=65535, sport=None, dport=None):
    """A segment from the client ("c") or the server ("s") at t_ms milliseconds."""
    if frm == "c":
        src, dst, sp, dp = C, S, sport or CP, dport or SP
    else:
        src, dst, sp, dp = S, C, sport or SP, dport or CP
    frame = B.ether(B.ipv4(B.tcp(sp, dp, seq, ack, flags, win, payload=payload), src=src,
                           dst=dst))
    return frame, 1_700_000_000_000_000_000 + t_ms * 1_000_000, len(frame)


def table(tmp_path, segs):
    p = tmp_path / "z.pcap"
    p.write_bytes(B.pcap(segs))
    return toolkit.analyze(p).tcp


def test_flip_when_the_first_packet_is_the_syn_ack(tmp_path):
    """Zeek's missing-syn pattern: SYN-ACK first, then the client's ACK flips the
    connection (history "^h..."), data and FINs both ways: SF, ^hADdFaf."""
    t = table(tmp_path, [
        seg(0, "s", SYN | ACK, 5000, 1001),
        seg(1, "c", ACK, 1001, 5001),
        seg(2, "c", PSH | ACK, 1001, 5001, b"x" * 10),
        seg(3, "s", PSH | ACK, 5001, 1011, b"y" * 20),
        seg(4, "c", FIN | ACK, 1011, 5021),
        seg(5, "s", ACK, 5021, 1012),
        seg(6, "s", FIN | ACK, 5021, 1012),
        seg(7, "c", ACK, 1012, 5022),
    ])
    assert len(t) == 1
    r = t.iloc[0]
    assert (r.history, r.conn_state) == ("^hADdFaf", "SF")
    assert (r.a_addr, r.a_port, r.b_addr, r.b_port) == (C, CP, S, SP)
    assert (r.packets_a_to_b, r.payload_bytes_a_to_b, r.payload_bytes_b_to_a) == (4, 10, 20)


def test_flip_at_once_from_a_likely_server_port(tmp_path):
    """A first packet other than a SYN from port 80 is the responder's: '^' first."""
    t = table(tmp_path, [
        seg(0, "s", PSH | ACK, 5001, 1001, b"y" * 20, sport=80, dport=CP),
        seg(1, "c", ACK, 1001, 5021, sport=CP, dport=80),
    ])
    r = t.iloc[0]
    assert (r.a_port, r.b_port, r.history, r.conn_state) == (CP, 80, "^dA", "OTH")


def test_rejected_again_and_again_is_one_stream_three_zeek_connections(tmp_path):
    """A SYN after a reset is a new Zeek connection (REJ, Sr) each time, never a T."""
    segs = []
    for i in range(3):
        segs += [seg(1000 * i, "c", SYN, 1000), seg(1000 * i + 1, "s", RST | ACK, 0, 1001)]
    t = table(tmp_path, segs)
    assert len(t) == 1
    r = t.iloc[0]
    assert (r.history, r.conn_state, r.zeek_connections) == ("Sr", "REJ", 3)


def handshake(t0=0):
    return [seg(t0, "c", SYN, 1000), seg(t0 + 1, "s", SYN | ACK, 5000, 1001),
            seg(t0 + 2, "c", ACK, 1001, 5001)]


def test_content_gap_letters(tmp_path):
    """The server acknowledges bytes it was never seen to receive: G for the client's
    data; the client acknowledges past the server's data seen: g."""
    t = table(tmp_path, handshake() + [
        seg(10, "c", PSH | ACK, 1001, 5001, b"a" * 100),
        seg(11, "c", PSH | ACK, 1201, 5001, b"c" * 100),      # 1101..1200 never seen
        seg(12, "s", ACK, 5001, 1301),
        seg(13, "s", PSH | ACK, 5101, 1301, b"e" * 50),       # 5001..5100 never seen
        seg(14, "c", ACK, 1301, 5151),
        seg(20, "c", FIN | ACK, 1301, 5151),
        seg(21, "s", FIN | ACK, 5151, 1302),
        seg(22, "c", ACK, 1302, 5152),
    ])
    r = t.iloc[0]
    assert (r.history, r.conn_state) == ("ShADaGdgFf", "SF")


def test_attempt_removed_after_five_seconds_stays_s0(tmp_path):
    """An unanswered SYN is removed after 5 s (tcp_attempt_delay): a FIN 10 s later is a
    second Zeek connection, so the first stays S0 (not SH)."""
    t = table(tmp_path, [
        seg(0, "c", SYN, 1000),
        seg(100, "c", ACK, 1001, 5001),
        seg(200, "c", PSH | ACK, 1001, 5001, b"x" * 10),
        seg(10_000, "c", FIN | ACK, 1011, 5001),
    ])
    r = t.iloc[0]
    assert (r.history, r.conn_state, r.zeek_connections) == ("SAD", "S0", 2)
    # within the 5 s, the FIN closes the attempt: SH
    t = table(tmp_path, [seg(0, "c", SYN, 1000), seg(100, "c", FIN | ACK, 1001, 5001)])
    assert (t.history.iloc[0], t.conn_state.iloc[0], t.zeek_connections.iloc[0]) == \
        ("SF", "SH", 1)


def test_reset_after_both_fins_is_still_sf(tmp_path):
    """Once both sides closed, a RST changes no state: SF, not RSTR (the R is in the
    history)."""
    t = table(tmp_path, handshake() + [
        seg(10, "c", PSH | ACK, 1001, 5001, b"a" * 10),
        seg(11, "s", ACK, 5001, 1011),
        seg(12, "c", FIN | ACK, 1011, 5001),
        seg(13, "s", FIN | ACK, 5001, 1012),
        seg(14, "s", RST, 5002),
    ])
    r = t.iloc[0]
    assert (r.history, r.conn_state) == ("ShADaFfr", "SF")
    # after one FIN only, the responder's RST is RSTR
    t = table(tmp_path, handshake() + [
        seg(12, "c", FIN | ACK, 1001, 5001),
        seg(14, "s", RST, 5001),
    ])
    r = t.iloc[0]
    assert (r.history, r.conn_state) == ("ShAFr", "RSTR")


def test_retransmitted_syn_with_the_same_sequence_is_one_letter(tmp_path):
    """S, H, F, R repeat only when their sequence number changes; a repeated SYN is no T."""
    t = table(tmp_path, [seg(0, "c", SYN, 1000), seg(1000, "c", SYN, 1000),
                         seg(1001, "s", SYN | ACK, 5000, 1001), seg(1002, "c", ACK, 1001, 5001)])
    r = t.iloc[0]
    assert (r.history, r.conn_state) == ("ShA", "S1")
    # retransmitted data: T at the 1st and the 10th time
    segs = handshake() + [seg(10, "c", PSH | ACK, 1001, 5001, b"a" * 10)]
    segs += [seg(20 + i, "c", PSH | ACK, 1001, 5001, b"a" * 10) for i in range(10)]
    t = table(tmp_path, segs)
    assert t.history.iloc[0] == "ShADTT"
