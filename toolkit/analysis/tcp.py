"""TCP per-packet analysis: from decoded columns to streams and Wireshark's verdicts.

Which frames are TCP segments for this analysis: a decoded TCP header (l4 == TCP) that is
not inside an IP fragment. Wireshark reassembles IP fragments before TCP sees them, so a
first fragment is not dissected as TCP on its own (see docs/wireshark-differences.md).
"""

from __future__ import annotations

import numpy as np

from ..pcap.columns import FRAG_NONE, L4_TCP
from . import verdicts as V
from .conversation_keys import pair_ids
from .tcp_sequence import ACK, SYN, sequence_analysis

NO_RTT = np.iinfo(np.int64).min


class TcpSegments:
    """Analysis results, one entry per TCP segment (row numbers in `rows`).

    The conversation summaries need only stream, flow and analysis. The other per-segment
    values (what `--packets` shows) cost 42 bytes a segment, so they are computed on first
    access, by the same pass run again with its details kept.
    """

    DETAILS = ("dupack_num", "dupack_frame", "acked_frame", "ack_rtt_ns", "bytes_in_flight",
               "rel_seq", "rel_ack", "window")
    # dupack_num int32 (0 when not a duplicate ACK); dupack_frame uint32 frame of the
    # original ACK; acked_frame uint32 frame this segment acknowledges (0 none); ack_rtt_ns
    # int64 (NO_RTT when none); bytes_in_flight uint32 (0 when not shown); rel_seq, rel_ack
    # uint32; window int64 calculated (scaled) window

    def __init__(self, cols: dict[str, np.ndarray], detail: bool = False):
        self._cols = cols
        self.rows = tcp_rows(cols)          # int64 frame rows (frame number - 1)
        self.stream: np.ndarray             # int32 tcp.stream
        self.flow: np.ndarray               # uint8: 0 = Wireshark's flow1 (larger address)
        self.analysis: np.ndarray           # uint32 verdict bits (toolkit.analysis.verdicts)
        self.n_streams: int
        self._run(detail)

    def _run(self, detail: bool) -> None:
        cols, rows = self._cols, self.rows
        pair, n_pairs = pair_ids(cols, rows)
        flags = cols["tcp_flags"][rows]
        # each conversation beyond the first on a pair starts with a SYN (port reuse)
        n_syn = int(np.count_nonzero((flags & (SYN | ACK)) == SYN))
        del flags
        sack_rows = cols.get("sack_rows", np.zeros(0, np.int64))
        sack_n = cols["sack_n"][sack_rows] if len(sack_rows) else np.zeros(0, np.uint8)
        sack_le = cols.get("sack_le", np.zeros((0, 4), np.uint32))
        sack_re = cols.get("sack_re", np.zeros((0, 4), np.uint32))
        # absent from columns decoded before it existed: no such option then
        sack_empty = cols.get("opt_sack_empty")
        if sack_empty is None:
            sack_empty = np.zeros(len(cols["seq"]), np.uint8)
        out = sequence_analysis(
            rows=rows, tuple_id=pair, n_tuples=max(n_pairs, 1),
            conv_cap=max(n_pairs + n_syn, 1), ts=cols["ts_ns"],
            src_hi=cols["src_hi"], src_lo=cols["src_lo"], dst_hi=cols["dst_hi"],
            dst_lo=cols["dst_lo"], sport=cols["sport"], dport=cols["dport"],
            seqs=cols["seq"], acks=cols["ack"], tflags=cols["tcp_flags"], wins=cols["win"],
            paylen=cols["paylen"], wscale=cols["opt_wscale"], sack_rows=sack_rows,
            sack_n=sack_n, sack_le=sack_le, sack_re=sack_re, sack_empty=sack_empty,
            detail=detail)
        self.stream, self.flow, self.analysis = out.stream, out.flow, out.analysis
        self.n_streams = int(out.n_streams)
        if detail:
            self.__dict__.update({name: getattr(out, name) for name in self.DETAILS})

    def __getattr__(self, name: str):
        # only reached for attributes not set yet: the details, on first use
        if name in TcpSegments.DETAILS:
            self._run(True)
            return self.__dict__[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.rows)

    def has_ack_rtt(self) -> np.ndarray:
        return ack_rtt_shown(self.acked_frame, self.ack_rtt_ns)


def ack_rtt_shown(acked_frame: np.ndarray, ack_rtt_ns: np.ndarray) -> np.ndarray:
    """Where Wireshark shows tcp.analysis.ack_rtt: an acked frame and a non-zero RTT."""
    return (acked_frame != 0) & (ack_rtt_ns != NO_RTT) & (ack_rtt_ns != 0)


def tcp_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero((cols["l4"] == L4_TCP) & (cols["ip_frag"] == FRAG_NONE))


def analyze_segments(cols: dict[str, np.ndarray], detail: bool = False) -> TcpSegments:
    """Number the TCP conversations and give every segment its verdicts (and, with
    `detail`, the other per-segment values at once rather than on first use)."""
    return TcpSegments(cols, detail)


def verdict_columns(seg: TcpSegments, n: int) -> dict[str, np.ndarray]:
    """Per-frame 0/1 columns of every verdict (0 on frames that are not TCP segments)."""
    out = {}
    for name in V.VERDICTS:
        col = np.zeros(n, np.uint8)
        col[seg.rows] = V.verdict_column(seg.analysis, name)
        out[name] = col
    return out
