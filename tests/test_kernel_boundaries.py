"""The compiled kernels take and give their arrays by name: with twenty-odd arrays in a
positional tuple, a reordering on one side would swap two columns without an error."""

from __future__ import annotations

import numpy as np

import toolkit
from toolkit.analysis import tcp_sequence
from toolkit.analysis.tcp import TcpSegments

from conftest import REPO


def test_the_sequence_kernel_returns_named_arrays_each_of_its_own_meaning():
    a = toolkit.analyze(REPO / "captures" / "04-loss" / "a.pcapng.gz")
    seg = a.segments
    assert set(TcpSegments.DETAILS) < set(tcp_sequence.SequenceResult._fields)
    # each name holds what it says, checked against the capture itself
    cols = a.capture.cols
    rows = seg.rows
    assert seg.n_streams == len(a.tcp)
    syn = (cols["tcp_flags"][rows] & 0x12) == 0x02          # a SYN starts at relative 0
    assert (seg.rel_seq[syn] == 0).all()
    has = seg.acked_frame > 0                               # acks an earlier frame
    assert (seg.acked_frame[has] - 1 < rows[has]).all()
    rtt = seg.ack_rtt_ns[seg.has_ack_rtt()]
    assert len(rtt) and (rtt > 0).all() and (rtt < 10**10).all()
    assert seg.dupack_num.dtype == np.int32 and seg.bytes_in_flight.dtype == np.uint32


def test_the_conversation_and_zeek_walks_return_named_arrays():
    from toolkit.analysis import tcp_conversations, zeek_conn
    assert {"syn_t", "synack_t", "ack_t", "first_ts", "last_ts", "pk", "fb", "pl"} <= \
        set(tcp_conversations.WalkResult._fields)
    assert zeek_conn.ZeekResult._fields == ("history", "history_len", "conn_state",
                                             "originator", "connections")
    a = toolkit.analyze(REPO / "captures" / "04-loss" / "a.pcapng.gz")
    t = a.tcp
    # each named value lands in its own column: the handshake's times are in order, and a
    # conversation's first and last packet bound them
    done = t.dropna(subset=["ack_time_s"])
    cols = ["syn_time_s", "synack_time_s", "ack_time_s", "start_s"]
    syn, synack, ack, start = (done[c] for c in cols)
    assert len(done) and (start <= syn).all() and (syn < synack).all() and (synack < ack).all()
