"""Sequence-number accounting for datagram flows: loss, duplicates, RFC 4737 reordering.

Input is one sequence number per received datagram and the group (flow) it belongs to,
in arrival order. Theory of operation:

- A duplicate is any arrival of a (group, seq) after its first. Duplicates are counted and
  then left out: RFC 4737 scores each packet once, by its first arrival.
- Loss is counted over the span of sequence numbers seen: highest - lowest + 1 - distinct.
  Datagrams lost before the first or after the last one received cannot be seen.
- RFC 4737 section 3: a packet is reordered when its sequence number is below NextExp, the
  next expected number, which is the highest received so far + 1. The reordered ratio is
  reordered / distinct received (section 4.1).
- RFC 4737 section 4.2.1, reordering extent: for a reordered packet at arrival position i,
  e = i - j, where j is the earliest arrival whose sequence number is greater. The running
  maximum of sequence numbers never decreases, so j is found by binary search in it.
- The sequence distance (NextExp - 1 - seq: how far below the highest it arrived, in
  sequence numbers) is kept too; it is what a receiver's reorder buffer must span.

Per-group work is one compiled pass over the datagrams sorted by group (ARCHITECTURE
decision 3): no Python object per datagram.
"""

from __future__ import annotations

import numpy as np
from ..pcap.jit import kernel


@kernel
def _counting_sort(group, n_groups):
    counts = np.zeros(n_groups, np.int64)
    for i in range(group.shape[0]):
        counts[group[i]] += 1
    offsets = np.zeros(n_groups + 1, np.int64)
    for g in range(n_groups):
        offsets[g + 1] = offsets[g] + counts[g]
    fill = offsets[:-1].copy()
    order = np.empty(group.shape[0], np.int64)
    for i in range(group.shape[0]):
        g = group[i]
        order[fill[g]] = i
        fill[g] += 1
    return order, offsets


def group_offsets(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """A stable order that puts each group's members together (in their original order),
    and the offsets of the groups in it: group g is order[offsets[g]:offsets[g + 1]].
    A counting sort: linear in the number of members."""
    if len(group) == 0:
        # nothing to sort: no need to load the compiled kernel
        return np.zeros(0, np.int64), np.zeros(int(n_groups) + 1, np.int64)
    return _counting_sort(np.asarray(group, np.int64), int(n_groups))


@kernel
def _duplicates_sorted(offsets, seq):
    """Over members sorted by group: True for each repeat of a seq within its group."""
    dup = np.zeros(seq.shape[0], np.bool_)
    for g in range(offsets.shape[0] - 1):
        a, b = offsets[g], offsets[g + 1]
        if b - a < 2:
            continue
        idx = np.argsort(seq[a:b], kind="mergesort")      # stable: first arrival first
        for k in range(1, b - a):
            if seq[a + idx[k]] == seq[a + idx[k - 1]]:
                dup[a + idx[k]] = True
    return dup


def duplicates(group: np.ndarray, seq: np.ndarray, n_groups: int | None = None) -> np.ndarray:
    """True for every arrival of a (group, seq) after its first."""
    group = np.asarray(group, np.int64)
    seq = np.asarray(seq, np.int64)
    if n_groups is None:
        n_groups = int(group.max()) + 1 if len(group) else 0
    order, offsets = group_offsets(group, n_groups)
    dup = np.zeros(len(seq), bool)
    dup[order] = _duplicates_sorted(offsets, seq[order])
    return dup


@kernel
def _reordering(offsets, seq, dup):
    """Over datagrams sorted by group (arrival order within): RFC 4737 per group."""
    n_groups = offsets.shape[0] - 1
    m = seq.shape[0]
    reordered = np.zeros(m, np.bool_)
    extent = np.zeros(m, np.int64)
    n_reordered = np.zeros(n_groups, np.int64)
    extent_max = np.zeros(n_groups, np.int64)
    extent_sum = np.zeros(n_groups, np.int64)
    distance_max = np.zeros(n_groups, np.int64)
    runmax = np.empty(m, np.int64)       # running max of seq over the group's unique arrivals
    for g in range(n_groups):
        a = offsets[g]
        p = 0                            # arrival position among unique datagrams
        for i in range(a, offsets[g + 1]):
            if dup[i]:
                continue
            s = seq[i]
            if p > 0 and s < runmax[a + p - 1]:      # below NextExp = max + 1 (not a dup)
                # earliest unique arrival with a greater sequence number (RFC 4737 4.2.1)
                j = np.searchsorted(runmax[a:a + p], s, side="right")
                e = p - j
                reordered[i] = True
                extent[i] = e
                n_reordered[g] += 1
                extent_sum[g] += e
                extent_max[g] = max(extent_max[g], e)
                distance_max[g] = max(distance_max[g], runmax[a + p - 1] - s)
                runmax[a + p] = runmax[a + p - 1]
            else:
                runmax[a + p] = s
            p += 1
    return reordered, extent, n_reordered, extent_max, extent_sum, distance_max


def sequence_metrics(group: np.ndarray, seq: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Loss, duplicates and RFC 4737 reordering per group.

    group: (M,) int64 group of each datagram, seq: (M,) int64 its sequence number, both in
    arrival order. Returns per-group arrays (received, distinct, first_seq, last_seq,
    expected, lost, duplicates, reordered, reorder_extent_max, reorder_extent_mean,
    reorder_distance_max) and per-datagram ones (dup, reordered, extent), the latter in the
    input's order.
    """
    group = np.asarray(group, np.int64)
    seq = np.asarray(seq, np.int64)
    order, offsets = group_offsets(group, n_groups)
    seq_s = seq[order]
    dup_s = _duplicates_sorted(offsets, seq_s)
    dup = np.zeros(len(seq), bool)
    dup[order] = dup_s
    r_s, e_s, n_re, e_max, e_sum, d_max = _reordering(offsets, seq_s, dup_s)
    reordered = np.zeros(len(seq), bool)
    extent = np.zeros(len(seq), np.int64)
    reordered[order] = r_s
    extent[order] = e_s
    received = np.bincount(group, minlength=n_groups)
    distinct = np.bincount(group[~dup], minlength=n_groups)
    lo = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n_groups, np.iinfo(np.int64).min, np.int64)
    np.minimum.at(lo, group, seq)
    np.maximum.at(hi, group, seq)
    has = received > 0
    expected = np.where(has, hi - lo + 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e_mean = np.where(n_re > 0, e_sum / np.maximum(n_re, 1), np.nan)
    return {"received": received, "distinct": distinct, "first_seq": np.where(has, lo, -1),
            "last_seq": np.where(has, hi, -1), "expected": expected,
            "lost": expected - distinct, "duplicates": received - distinct,
            "reordered": n_re, "reorder_extent_max": e_max, "reorder_extent_mean": e_mean,
            "reorder_distance_max": d_max,
            "dup": dup, "reordered_mask": reordered, "extent": extent}
