"""The decoded-packet columns: the contract between the readers and the analysis.

A capture is decoded once into parallel numpy arrays, one row per frame (row i is
frame i+1, as Wireshark numbers frames). Nothing downstream sees a Python object per
packet (ARCHITECTURE decision 3). Each column is declared here with its dtype and
meaning; the reader fills them, the analysis reads them.

Addresses are 128 bits in two uint64 halves. IPv4 addresses are stored in their
IPv4-mapped IPv6 form (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2), so one comparison
works for both families and an IPv4 address never equals an IPv6 one.
"""

from __future__ import annotations

import numpy as np

# Values of the l3 column
L3_NONE, L3_IPV4, L3_IPV6 = 0, 4, 6
# Values of the l4 column: which transport header was decoded (and is complete enough
# to trust its fixed part).
L4_NONE, L4_TCP, L4_UDP = 0, 6, 17
# Values of ip_frag
FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2

# TCP flag bits as in the header's 12-bit flags field (RFC 9293 section 3.1, RFC 3168)
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100

# name: (dtype, meaning). One row per frame.
PACKET_COLUMNS: dict[str, tuple[type, str]] = {
    "ts_ns": (np.int64, "capture time, ns since the Unix epoch (if_tsresol/if_tsoffset applied)"),
    "caplen": (np.uint32, "bytes captured"),
    "wirelen": (np.uint32, "bytes on the wire (original length)"),
    "iface": (np.uint16, "index into Capture.interfaces (pcap files: always 0)"),
    "l3": (np.uint8, "0 none/undecodable, 4 IPv4, 6 IPv6"),
    "src_hi": (np.uint64, "source address, high 64 bits"),
    "src_lo": (np.uint64, "source address, low 64 bits"),
    "dst_hi": (np.uint64, "destination address, high 64 bits"),
    "dst_lo": (np.uint64, "destination address, low 64 bits"),
    "ip_proto": (np.uint8, "upper-layer protocol after IPv6 extension headers"),
    "ip_frag": (np.uint8, "0 not a fragment, 1 first fragment, 2 later fragment (no L4 header)"),
    "ip_id": (np.uint32, "fragments only: IPv4 identification or IPv6 fragment id"),
    "frag_off": (np.uint32, "fragments only: byte offset of this fragment's data"),
    "frag_len": (np.int32, "fragments only: bytes of data in this fragment"),
    "frag_more": (np.uint8, "fragments only: 1 when more fragments follow (MF / M flag)"),
    "l4": (np.uint8, "0 none, 6 TCP, 17 UDP: which transport header was decoded"),
    "l4_trunc": (np.uint8, "1 when the transport header (with TCP options) is cut by the snaplen"),
    "sport": (np.uint16, "source port"),
    "dport": (np.uint16, "destination port"),
    "seq": (np.uint32, "TCP sequence number (raw)"),
    "ack": (np.uint32, "TCP acknowledgment number (raw)"),
    "tcp_flags": (np.uint16, "TCP flags, 12 bits (FIN=0x001 ... NS=0x100)"),
    "win": (np.uint16, "TCP window field, unscaled"),
    "tcp_hlen": (np.uint8, "TCP header length in bytes (data offset * 4); under 20 is "
                           "bogus: Wireshark shows tcp.len but no flags or analysis"),
    "paylen": (np.int32, "TCP: payload bytes from the IP length (as Wireshark, not caplen); "
                         "UDP: UDP length - 8; never negative"),
    "opt_mss": (np.int32, "TCP MSS option value, -1 absent"),
    "opt_wscale": (np.int8, "TCP window scale shift, -1 absent"),
    "opt_sackperm": (np.uint8, "1 when SACK-permitted is present"),
    "has_ts": (np.uint8, "1 when the timestamps option is present"),
    "tsval": (np.uint32, "TCP timestamp value"),
    "tsecr": (np.uint32, "TCP timestamp echo reply"),
    "sack_n": (np.uint8, "number of SACK blocks in this segment (0-4)"),
    "opt_sack_empty": (np.uint8, "SACK options without a complete block (Wireshark 4.0 "
                                 "stops the TCP dissection at one, see analysis/"
                                 "tcp_sequence.py): bit 0 such an option before any SACK "
                                 "block, bit 1 a window scale after it, bit 2 SACK blocks "
                                 "after it"),
}

# Sparse side tables: only rows that have them.
#   sack_rows (K,) int64 row numbers; sack_le, sack_re (K, 4) uint32 block edges in the
#   order they appear in the option (unused slots 0).
#   udp_rows (K,) int64 row numbers of decoded UDP datagrams; udp_head (K, UDP_HEAD) uint8
#   the first payload bytes (zero padded); udp_head_len (K,) uint8 how many are real.
UDP_HEAD = 32


def empty_columns(n: int = 0) -> dict[str, np.ndarray]:
    """All packet columns with n rows of zeros (options marked absent)."""
    cols = {name: np.zeros(n, dtype=dt) for name, (dt, _) in PACKET_COLUMNS.items()}
    cols["opt_mss"][:] = -1
    cols["opt_wscale"][:] = -1
    return cols
