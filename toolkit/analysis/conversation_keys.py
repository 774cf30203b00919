"""Group packets by the unordered pair of endpoints (address, port) they travel between.

Wireshark keys a TCP or UDP conversation by both endpoints, in either direction. Each
packet's pair is put in a canonical order (the smaller endpoint first) and looked up in an
open-addressing hash table; a new pair gets the next id, so ids come out in order of first
appearance, the order tshark numbers its streams in. Lookups compare the full key, not only
the hash, so two pairs can never be merged by a hash collision. Packets come in bursts of
one conversation, so a packet whose pair is the previous packet's skips the table.
"""

from __future__ import annotations

import numpy as np
from ..pcap.jit import inline, kernel


@inline
def _mix(h, v):
    # splitmix64 finaliser over a running combination
    h ^= v + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@inline
def _pair(r, src_hi, src_lo, dst_hi, dst_lo, sport, dport):
    a = (src_hi[r], src_lo[r], np.uint64(sport[r]))
    b = (dst_hi[r], dst_lo[r], np.uint64(dport[r]))
    if b < a:
        return b, a
    return a, b


@inline
def _hash(a, b):
    h = np.uint64(0)
    h = _mix(h, a[0])
    h = _mix(h, a[1])
    h = _mix(h, a[2])
    h = _mix(h, b[0])
    h = _mix(h, b[1])
    h = _mix(h, b[2])
    return h


@kernel
def _pair_ids(rows, src_hi, src_lo, dst_hi, dst_lo, sport, dport):
    n = rows.shape[0]
    out = np.empty(n, np.int32)
    cap = 1 << 10
    table = np.full(cap, -1, np.int64)
    id_row = np.empty(cap // 2, np.int64)     # a row that has this pair: the full key
    id_hash = np.empty(cap // 2, np.uint64)
    n_ids = 0
    last_a = last_b = (np.uint64(0), np.uint64(0), np.uint64(0))
    last = -1
    for k in range(n):
        r = rows[k]
        a, b = _pair(r, src_hi, src_lo, dst_hi, dst_lo, sport, dport)
        if last >= 0 and a == last_a and b == last_b:
            out[k] = last
            continue
        h = _hash(a, b)
        slot = np.int64(h & np.uint64(cap - 1))
        while True:
            e = table[slot]
            if e < 0:
                e = n_ids
                n_ids += 1
                id_row[e] = r
                id_hash[e] = h
                table[slot] = e
                break
            if id_hash[e] == h and _pair(id_row[e], src_hi, src_lo, dst_hi, dst_lo,
                                         sport, dport) == (a, b):
                break
            slot = (slot + 1) & (cap - 1)
        out[k] = e
        last, last_a, last_b = e, a, b
        if 2 * n_ids >= cap:
            # keep the load factor under 1/2: double and re-insert
            cap *= 2
            table = np.full(cap, -1, np.int64)
            for i in range(n_ids):
                s = np.int64(id_hash[i] & np.uint64(cap - 1))
                while table[s] >= 0:
                    s = (s + 1) & (cap - 1)
                table[s] = i
            grown_row = np.empty(cap // 2, np.int64)
            grown_row[:n_ids] = id_row[:n_ids]
            id_row = grown_row
            grown_hash = np.empty(cap // 2, np.uint64)
            grown_hash[:n_ids] = id_hash[:n_ids]
            id_hash = grown_hash
    return out, n_ids


def pair_ids(cols: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the endpoint pairs of `rows` in order of first appearance.

    Returns (int32 id per row, number of pairs).
    """
    if len(rows) == 0:
        return np.zeros(0, np.int32), 0
    ids, n = _pair_ids(rows, cols["src_hi"], cols["src_lo"], cols["dst_hi"], cols["dst_lo"],
                       cols["sport"], cols["dport"])
    return ids, int(n)
