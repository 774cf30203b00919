"""Group packets by the unordered pair of endpoints (address, port) they travel between.

Wireshark keys a TCP or UDP conversation by both endpoints, in either direction. Here each
packet's pair is put in a canonical order (the smaller endpoint first), hashed to 64 bits,
and the hashes are numbered with one sort. Hash collisions are checked for, not assumed
away: every packet's full key is compared with its group's first key, and on any mismatch
the exact (slower) grouping on all six key columns is used instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def _mix(h, v):
    # splitmix64 finaliser over a running combination
    h ^= v + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


@njit(inline="always")
def _pair(r, src_hi, src_lo, dst_hi, dst_lo, sport, dport):
    a = (src_hi[r], src_lo[r], np.uint64(sport[r]))
    b = (dst_hi[r], dst_lo[r], np.uint64(dport[r]))
    if b < a:
        return b, a
    return a, b


@njit(cache=True)
def _canonical_hash(rows, src_hi, src_lo, dst_hi, dst_lo, sport, dport):
    n = rows.shape[0]
    out = np.empty(n, np.uint64)
    for k in range(n):
        a, b = _pair(rows[k], src_hi, src_lo, dst_hi, dst_lo, sport, dport)
        h = np.uint64(0)
        h = _mix(h, a[0])
        h = _mix(h, a[1])
        h = _mix(h, a[2])
        h = _mix(h, b[0])
        h = _mix(h, b[1])
        h = _mix(h, b[2])
        out[k] = h
    return out


@njit(cache=True)
def _same_pairs(rows, sample, src_hi, src_lo, dst_hi, dst_lo, sport, dport):
    for k in range(rows.shape[0]):
        if (_pair(rows[k], src_hi, src_lo, dst_hi, dst_lo, sport, dport)
                != _pair(sample[k], src_hi, src_lo, dst_hi, dst_lo, sport, dport)):
            return False
    return True


def _canonical_keys(cols, rows):
    a = np.stack([cols["src_hi"][rows], cols["src_lo"][rows],
                  cols["sport"][rows].astype(np.uint64)], axis=1)
    b = np.stack([cols["dst_hi"][rows], cols["dst_lo"][rows],
                  cols["dport"][rows].astype(np.uint64)], axis=1)
    # lexicographic a > b, decided by the first differing column
    diff = a != b
    first = np.argmax(diff, axis=1)
    idx = np.arange(len(rows))
    swap = diff[idx, first] & (a[idx, first] > b[idx, first])
    lo = np.where(swap[:, None], b, a)
    hi = np.where(swap[:, None], a, b)
    return np.concatenate([lo, hi], axis=1)


def pair_ids(cols: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the endpoint pairs of `rows`: (id per row, number of pairs).

    Ids are dense but in no particular order; callers that need first-appearance order
    (tcp.stream, udp.stream) renumber in their own pass.
    """
    if len(rows) == 0:
        return np.zeros(0, np.int64), 0
    h = _canonical_hash(rows, cols["src_hi"], cols["src_lo"], cols["dst_hi"], cols["dst_lo"],
                        cols["sport"], cols["dport"])
    uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    # collision check: a pair that hashes like another must also equal it
    same = _same_pairs(rows, rows[first[inverse]], cols["src_hi"], cols["src_lo"],
                       cols["dst_hi"], cols["dst_lo"], cols["sport"], cols["dport"])
    if same:
        return inverse.astype(np.int64), len(uniq)
    keys = _canonical_keys(cols, rows)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse.astype(np.int64), int(inverse.max()) + 1
