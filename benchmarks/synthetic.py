"""Synthetic captures for benchmarks and tests: bulk TCP conversations (headers only, MSS
segments, an ACK every second one, now and then a segment lost and sent again) with some
UDP beside them, any number of frames, made with numpy (a million frames in a second).

    python benchmarks/synthetic.py OUT.pcap PACKETS [SEED]
"""

from __future__ import annotations

import struct
import sys

import numpy as np

_REC = np.dtype([("sec", "<u4"), ("nsec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4"),
                 ("eth", "S14"), ("vihl", "u1"), ("tos", "u1"), ("iplen", ">u2"),
                 ("ipid", ">u2"), ("frag", ">u2"), ("ttl", "u1"), ("proto", "u1"),
                 ("ipsum", ">u2"), ("src", ">u4"), ("dst", ">u4"), ("sport", ">u2"),
                 ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("offflags", ">u2"),
                 ("win", ">u2"), ("sum", ">u2"), ("urg", ">u2")])


def _template() -> dict:
    """One conversation's frames as columns: handshake, MSS segments with an ACK every
    second one, a segment lost and sent again now and then, some UDP beside it, the close.
    (fwd, relative seq, relative ack, flags, payload bytes, is UDP)"""
    rows = [(1, 0, 0, 0x002, 0, 0), (0, 0, 1, 0x012, 0, 0), (1, 1, 1, 0x010, 0, 0)]
    seq = 1
    for k in range(1500):
        rows.append((1, seq, 1, 0x010, 1448, 0))
        if k % 997 == 500:
            rows.append((1, seq, 1, 0x010, 1448, 0))
        seq += 1448
        if k % 2:
            rows.append((0, 1, seq, 0x010, 0, 0))
        if k % 300 == 7:
            rows.append((1, 0, 0, 0, 200, 1))
    rows += [(1, seq, 1, 0x011, 0, 0), (0, 1, seq + 1, 0x011, 0, 0),
             (1, seq + 1, 2, 0x010, 0, 0)]
    return {k: np.array(v, np.int64) for k, v in zip(
        ("fwd", "seq", "ack", "flags", "plen", "udp"), zip(*rows))}


def bulk_capture(path, packets: int, seed: int = 1) -> None:
    """A pcap of `packets` frames of bulk TCP conversations (headers only) and some UDP,
    made with numpy (a million frames in a second)."""
    rng = np.random.default_rng(seed)
    t = _template()
    per = len(t["fwd"])
    convs = -(-packets // per)
    rec = np.zeros(convs * per, _REC)
    conv = np.repeat(np.arange(convs), per)
    tile = lambda col: np.tile(t[col], convs)                         # noqa: E731
    fwd, udp, plen = tile("fwd").astype(bool), tile("udp").astype(bool), tile("plen")
    isn = rng.integers(0, 2**32, convs)[conv]
    irs = rng.integers(0, 2**32, convs)[conv]
    a, b = 0x0A000001, 0x0A000002 + ((conv % 50) << 8)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1_000, 20_000, len(rec)))
    rec["sec"], rec["nsec"] = ts // 10**9, ts % 10**9
    rec["caplen"] = 54
    rec["wirelen"] = 54 + plen
    rec["eth"] = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    rec["vihl"], rec["ttl"], rec["frag"] = 0x45, 64, 0x4000
    rec["proto"] = np.where(udp, 17, 6)
    rec["iplen"] = np.where(udp, 28, 40) + plen
    rec["ipid"] = np.arange(len(rec)) & 0xFFFF
    rec["src"] = np.where(fwd, a, b)
    rec["dst"] = np.where(fwd, b, a)
    cport = 40000 + conv
    rec["sport"] = np.where(udp, 5000, np.where(fwd, cport, 5201))
    rec["dport"] = np.where(udp, 5202, np.where(fwd, 5201, cport))
    own, peer = np.where(fwd, isn, irs), np.where(fwd, irs, isn)
    rec["seq"] = np.where(udp, (8 + plen) << 16, (own + tile("seq")) % 2**32)
    rec["ack"] = np.where(udp | (tile("ack") == 0), 0, (peer + tile("ack")) % 2**32)
    rec["offflags"] = np.where(udp, 0, (5 << 12) | tile("flags"))
    rec["win"] = np.where(udp, 0, 502)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 96, 1))
        f.write(rec[:packets].tobytes())


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    bulk_capture(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 1)
