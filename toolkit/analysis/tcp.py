"""TCP per-packet analysis: from decoded columns to streams and Wireshark's verdicts.

Which frames are TCP segments for this analysis: a decoded TCP header (l4 == TCP) that is
not inside an IP fragment. Wireshark reassembles IP fragments before TCP sees them, so a
first fragment is not dissected as TCP on its own (see docs/wireshark-differences.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pcap.columns import FRAG_NONE, L4_TCP
from . import verdicts as V
from .conversation_keys import pair_ids
from .tcp_sequence import ACK, SYN, sequence_analysis

NO_RTT = np.iinfo(np.int64).min


@dataclass
class TcpSegments:
    """Analysis results, one entry per TCP segment (row numbers in `rows`)."""

    rows: np.ndarray            # int64 frame rows (frame number - 1)
    stream: np.ndarray          # int32 tcp.stream
    flow: np.ndarray            # uint8: 0 = Wireshark's flow1 (larger address), 1 = flow2
    analysis: np.ndarray        # uint32 verdict bits (toolkit.analysis.verdicts)
    dupack_num: np.ndarray      # int32, 0 when not a duplicate ACK
    dupack_frame: np.ndarray    # uint32 frame of the original ACK
    acked_frame: np.ndarray     # uint32 frame this segment acknowledges, 0 none
    ack_rtt_ns: np.ndarray      # int64, NO_RTT when none
    bytes_in_flight: np.ndarray  # uint32, 0 when not shown
    rel_seq: np.ndarray         # uint32
    rel_ack: np.ndarray         # uint32
    window: np.ndarray          # int64 calculated (scaled) window
    n_streams: int

    def __len__(self) -> int:
        return len(self.rows)

    def has_ack_rtt(self) -> np.ndarray:
        """Where Wireshark shows tcp.analysis.ack_rtt: an acked frame and a non-zero RTT."""
        return (self.acked_frame != 0) & (self.ack_rtt_ns != NO_RTT) & (self.ack_rtt_ns != 0)


def tcp_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero((cols["l4"] == L4_TCP) & (cols["ip_frag"] == FRAG_NONE))


def analyze_segments(cols: dict[str, np.ndarray]) -> TcpSegments:
    """Number the TCP conversations and give every segment its verdicts."""
    rows = tcp_rows(cols)
    pair, n_pairs = pair_ids(cols, rows)
    flags = cols["tcp_flags"][rows]
    # each conversation beyond the first on a pair starts with a SYN (port reuse)
    n_syn = int(np.count_nonzero((flags & (SYN | ACK)) == SYN))
    sack_rows = cols.get("sack_rows", np.zeros(0, np.int64))
    sack_n = cols.get("sack_n")[sack_rows] if len(sack_rows) else np.zeros(0, np.uint8)
    sack_le = cols.get("sack_le", np.zeros((0, 4), np.uint32))
    sack_re = cols.get("sack_re", np.zeros((0, 4), np.uint32))
    (stream, flow, bits, dupnum, dupframe, acked, rtt, bif, relseq, relack, win,
     n_conv) = sequence_analysis(
        rows, pair, max(n_pairs, 1), max(n_pairs + n_syn, 1),
        cols["ts_ns"], cols["src_hi"], cols["src_lo"], cols["dst_hi"], cols["dst_lo"],
        cols["sport"], cols["dport"], cols["seq"], cols["ack"], cols["tcp_flags"], cols["win"],
        cols["paylen"], cols["opt_wscale"], sack_rows, sack_n, sack_le, sack_re)
    return TcpSegments(rows, stream, flow, bits, dupnum, dupframe, acked, rtt, bif, relseq,
                       relack, win, int(n_conv))


def verdict_columns(seg: TcpSegments, n: int) -> dict[str, np.ndarray]:
    """Per-frame 0/1 columns of every verdict (0 on frames that are not TCP segments)."""
    out = {}
    for name in V.VERDICTS:
        col = np.zeros(n, np.uint8)
        col[seg.rows] = V.verdict_column(seg.analysis, name)
        out[name] = col
    return out
