"""Receiver statistics against hand-computed cases: loss, duplicates, RFC 4737 reordering,
RFC 3550 jitter, one-way delay; and how unframed reads line up with messages."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.endpoints.stats import SequenceStats, align_reads


def _feed(seqs, transit_ms=None, batch=None, send0=1_000_000_000):
    st = SequenceStats()
    n = len(seqs)
    send = np.array([send0 + s * 1_000_000 for s in seqs], np.int64)     # 1 ms apart
    transit = np.array(transit_ms if transit_ms is not None else [5] * n) * 1_000_000
    recv = send + transit.astype(np.int64)
    size = np.full(n, 100)
    batch = batch or n
    for i in range(0, n, batch):
        st.add_batch(np.array(seqs[i:i + batch]), send[i:i + batch], recv[i:i + batch],
                     size[i:i + batch])
    return st


@pytest.mark.parametrize("seqs,unique,dups,lost,reordered,gap", [
    ([0, 1, 2, 3], 4, 0, 0, 0, 0),
    ([0, 2, 1, 3], 4, 0, 0, 1, 1),          # 1 arrives when NextExp is 3
    ([0, 3, 1, 2, 4], 5, 0, 0, 2, 2),       # 1 and 2 both late; 1 came back 2 places
    ([0, 1, 1, 2], 3, 1, 0, 0, 0),          # a duplicate is not a reordering
    ([0, 1, 3], 3, 0, 1, 0, 0),             # 2 missing
    ([0, 1, 3, 2, 2], 4, 1, 0, 1, 1),
    ([5, 6, 7], 3, 0, 5, 0, 0),             # 0..4 never arrived
])
def test_sequence_cases(seqs, unique, dups, lost, reordered, gap):
    for batch in (None, 1, 2):              # batching must not change any answer
        st = _feed(seqs, batch=batch)
        t = st.totals()
        assert (t["packets"], t["duplicates"], t["lost"], t["reordered"],
                t["max_reorder_gap"]) == (unique, dups, lost, reordered, gap), batch


def test_end_marker_reveals_tail_loss():
    st = _feed([0, 1, 2])
    assert st.lost == 0
    st.end_marker(6)
    assert (st.expected, st.lost) == (6, 3)
    assert st.totals()["loss_fraction"] == pytest.approx(0.5)


def test_jitter_rfc3550_by_hand():
    # transit 10, 12, 11, 15 ms: |D| = 2, 1, 4 ms
    st = _feed([0, 1, 2, 3], transit_ms=[10, 12, 11, 15])
    j = 0.0
    for d in (2e-3, 1e-3, 4e-3):
        j += (d - j) / 16
    assert j == pytest.approx(0.000418457, rel=1e-5)
    assert st.jitter_s == pytest.approx(j, rel=1e-12)


def test_jitter_is_the_same_in_any_batching_over_long_runs():
    rng = np.random.default_rng(1)
    transit = list(rng.uniform(1, 9, 5000))
    seqs = list(range(5000))
    one = _feed(seqs, transit, batch=1).jitter_s
    assert _feed(seqs, transit, batch=777).jitter_s == pytest.approx(one, rel=1e-9)
    assert _feed(seqs, transit).jitter_s == pytest.approx(one, rel=1e-9)


def test_one_way_delay_only_when_the_clock_is_shared():
    st = _feed([0, 1, 2], transit_ms=[3, 5, 4])
    assert "owd_s" not in st.totals(same_clock=False)
    owd = st.totals(same_clock=True)["owd_s"]
    assert owd == pytest.approx({"min": 0.003, "max": 0.005, "mean": 0.004})


def test_stray_numbers_keep_memory_bounded():
    st = SequenceStats(window=1000)
    st.add(0, 0, 1, 10)
    st.add(2**62, 0, 1, 10)                 # a hostile or corrupt number
    st.add(-5, 0, 1, 10)
    assert st.stray == 2 and st.unique == 1
    assert st._seen.nbytes < 10_000


def test_intervals_count_since_the_previous_interval():
    st = _feed([0, 1, 3])
    first = st.interval()
    assert (first["packets"], first["lost"]) == (3, 1)
    st.add(2, 0, 1, 100)                    # the late one fills the gap
    st.add(4, 0, 1, 100)
    second = st.interval()
    assert (second["packets"], second["lost"], second["reordered"]) == (2, -1, 1)


@pytest.mark.parametrize("reads,sizes,expect", [
    ([100, 100], [100], dict(exact=2, glued=0, partial=0, split_messages=0, messages=2)),
    ([200], [100], dict(exact=0, glued=1, partial=0, split_messages=0, messages=2)),
    ([50, 50, 100], [100], dict(exact=1, glued=0, partial=2, split_messages=1, messages=2)),
    ([150, 50], [100], dict(exact=0, glued=1, partial=1, split_messages=1, messages=2)),
    ([30, 70, 60], [30, 70, 60], dict(exact=3, glued=0, partial=0, split_messages=0,
                                      messages=3)),
    ([100, 60], [30, 70, 60], dict(exact=1, glued=1, partial=0, split_messages=0, messages=3)),
])
def test_align_reads(reads, sizes, expect):
    got = align_reads(reads, sizes)
    assert {k: got[k] for k in expect} == expect


def test_a_peer_jumping_its_sequence_numbers_costs_bounded_memory():
    st = SequenceStats()                      # window 2**24 ahead, history 2**20 behind
    for k in range(1, 65):                    # each jump within the window: all accepted
        st.add(k << 24, 0, 1, 10)
    st.add_batch([(65 << 24) - 5, 65 << 24], [0, 0], [1, 1], [10, 10])
    assert st.unique == 66 and st.stray == 0
    assert st._seen.nbytes <= (1 << 20) // 8  # 128 KB; a bitmap of every number: 1 GB


def test_the_bitmap_slides_and_numbers_behind_it_are_stray():
    st = SequenceStats(history=4096)
    st.add_batch(list(range(10_000)), [0] * 10_000, [1] * 10_000, [1] * 10_000)
    st.add(9_990, 0, 1, 1)                    # recent: still known, a duplicate
    st.add(100, 0, 1, 1)                      # far behind the bitmap: cannot tell
    st.add_batch([9_999, 10_001, 50], [0] * 3, [1] * 3, [1] * 3)
    assert (st.unique, st.duplicates, st.stray, st.lost) == (10_001, 2, 2, 1)
    assert st._seen.nbytes <= 4096 // 8


def _align_by_bytes(reads, sizes):
    """align_reads the slow way: which message each byte belongs to."""
    total = sum(reads)
    owner, i = [], 0
    while len(owner) < total:
        owner += [i] * sizes[i % len(sizes)]
        i += 1
    owner = owner[:total]
    complete = sum(1 for m in set(owner) if owner.count(m) == sizes[m % len(sizes)])
    out = dict(exact=0, glued=0, partial=0)
    pos, cut_in = 0, set()
    for n in reads:
        ms = owner[pos:pos + n]
        whole = len(set(ms)) == 1 and ms.count(ms[0]) == sizes[ms[0] % len(sizes)]
        out["exact" if whole else "glued" if len(set(ms)) > 1 else "partial"] += 1
        pos += n
        if pos < total and owner[pos - 1] == owner[pos]:
            cut_in.add(owner[pos])
    return {"reads": len(reads), "messages": complete, **out, "split_messages": len(cut_in)}


def test_align_reads_agrees_with_a_byte_by_byte_count():
    rng = np.random.default_rng(3)
    for _ in range(300):
        sizes = [int(x) for x in rng.integers(1, 40, rng.integers(1, 4))]
        reads = [int(x) for x in rng.integers(1, 90, rng.integers(1, 12))]
        assert align_reads(reads, sizes) == _align_by_bytes(reads, sizes), (reads, sizes)


def test_align_reads_costs_memory_per_read_not_per_message():
    import tracemalloc
    tracemalloc.start()
    try:
        got = align_reads([1 << 30] * 4, [1, 2])  # 4 GB of 1- and 2-byte messages
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got["messages"] == (4 << 30) // 3 * 2 + 1 and got["glued"] == 4
    assert peak < 1 << 20, peak
