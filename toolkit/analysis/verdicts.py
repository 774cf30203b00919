"""The per-packet TCP verdicts, named as Wireshark's tcp.analysis.* fields.

Each verdict is one bit of the `analysis` column. The names are the column names of
`labkit analyze --packets`; a verdict's exported 0/1 column follows tshark's display:
tshark shows tcp.analysis.retransmission on fast and spurious retransmissions too
(packet-tcp.c adds ei_tcp_analysis_retransmission for both), so the exported
`retransmission` column is the union of the three retransmission bits.
"""

from __future__ import annotations

import numpy as np

RETRANSMISSION = 1 << 0
FAST_RETRANSMISSION = 1 << 1
SPURIOUS_RETRANSMISSION = 1 << 2
DUPLICATE_ACK = 1 << 3
LOST_SEGMENT = 1 << 4          # "Previous segment not captured"
ACK_LOST_SEGMENT = 1 << 5      # "ACKed unseen segment"
OUT_OF_ORDER = 1 << 6
ZERO_WINDOW = 1 << 7
ZERO_WINDOW_PROBE = 1 << 8
ZERO_WINDOW_PROBE_ACK = 1 << 9
WINDOW_FULL = 1 << 10
WINDOW_UPDATE = 1 << 11
KEEP_ALIVE = 1 << 12
KEEP_ALIVE_ACK = 1 << 13
REUSED_PORTS = 1 << 14

ANY_RETRANSMISSION = RETRANSMISSION | FAST_RETRANSMISSION | SPURIOUS_RETRANSMISSION

# Exported column name -> bits that set it (in Wireshark's display order).
VERDICTS: dict[str, int] = {
    "retransmission": ANY_RETRANSMISSION,
    "fast_retransmission": FAST_RETRANSMISSION,
    "spurious_retransmission": SPURIOUS_RETRANSMISSION,
    "duplicate_ack": DUPLICATE_ACK,
    "lost_segment": LOST_SEGMENT,
    "ack_lost_segment": ACK_LOST_SEGMENT,
    "out_of_order": OUT_OF_ORDER,
    "zero_window": ZERO_WINDOW,
    "zero_window_probe": ZERO_WINDOW_PROBE,
    "zero_window_probe_ack": ZERO_WINDOW_PROBE_ACK,
    "window_full": WINDOW_FULL,
    "window_update": WINDOW_UPDATE,
    "keep_alive": KEEP_ALIVE,
    "keep_alive_ack": KEEP_ALIVE_ACK,
    "reused_ports": REUSED_PORTS,
}


# each exported verdict's bits, in VERDICTS' order: what the compiled per-packet writers test
MASKS = np.array(list(VERDICTS.values()), np.int64)


def verdict_column(analysis: np.ndarray, name: str) -> np.ndarray:
    """0/1 uint8 column of one verdict from the packed `analysis` bits."""
    return ((analysis & VERDICTS[name]) != 0).astype(np.uint8)
