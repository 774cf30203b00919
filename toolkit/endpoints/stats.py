"""What a receiver computes from the lab headers it receives: pure, batched, bounded.

SequenceStats takes batches of (seq, send_ns, recv_ns, bytes) in arrival order, as a
receiver gets them from one recvmmsg()-like batch or one read, and keeps, per flow:

- unique packets and bytes; duplicates (a sequence number seen before, or twice in a batch);
- loss: expected - unique, where expected is one past the highest sequence number seen,
  or the sender's own count when its end marker said so (so losses at the tail count too);
- reordering, RFC 4737 section 3.3: a packet is reordered when its sequence number is
  below NextExp, one past the highest number that arrived before it (duplicates excluded);
  with the largest such gap (NextExp - seq - 1 is how far back it came, in packets);
- jitter, RFC 3550 section 6.4.1 and A.8: D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) over
  consecutive arrivals, J += (|D| - J) / 16; in seconds here (RTP uses its clock units);
- one-way delay R - S (min, mean, max): meaningful only when the sender shares the clock
  (same machine, or namespaces of one machine); the caller decides whether to report it.

Memory is bounded whatever arrives: a number more than `window` past the highest so far, or
negative, is counted as `stray`, and the seen-bitmap (one bit per number) covers at most
the `history` numbers up to the highest: it slides forward with it, so a peer that jumps its
sequence numbers costs at most history / 8 bytes (128 KB by default) however far it jumps. A
number that falls behind the bitmap (over a million late) is counted as `stray` too.
Each interval() returns the counts since the previous one, as iperf3's interval lines do.
"""

from __future__ import annotations

import numpy as np

_A = 15.0 / 16.0
_CHUNK = 1024
SMALL_BATCH = 32                 # rows below which add_batch goes one by one
_POW = _A ** np.arange(_CHUNK, -1, -1, dtype=np.float64)   # a^CHUNK ... a^0


class SequenceStats:
    def __init__(self, window: int = 1 << 24, history: int = 1 << 20):
        self.window = window
        self.history = max(4096, -(-history // 8) * 8)     # whole bytes of bits
        # bit k: number _base + k seen. A bytearray for the one-at-a-time path (indexing
        # one is several times quicker than a numpy array's), with a numpy view of the same
        # bytes for the batches
        self._set_bitmap(bytearray(512))
        self._base = 0                                      # a multiple of 8
        self.max_seq = -1
        self.unique = 0
        self.bytes = 0
        self.duplicates = 0
        self.reordered = 0
        self.max_reorder_gap = 0
        self.stray = 0
        self.sent_total: int | None = None    # from the sender's end marker
        self.jitter_s = 0.0
        self._last_transit: int | None = None
        self.owd_min_ns: int | None = None
        self.owd_max_ns: int | None = None
        self._owd_sum_ns = 0
        self.first_recv_ns: int | None = None
        self.last_recv_ns: int | None = None
        self._mark = self._counts()

    def _set_bitmap(self, raw: bytearray) -> None:
        self._bits = raw
        self._seen = np.frombuffer(raw, np.uint8)

    def _room_for(self, top: int) -> None:
        """Make the bitmap cover `top`: grow it up to `history` bits, then slide it."""
        have = len(self._bits) * 8
        need = top - self._base + 1
        if need <= have:
            return
        if need <= self.history:
            grown = bytearray(-(-min(self.history, max(2 * have, need)) // 8))
            grown[:len(self._bits)] = self._bits
            self._set_bitmap(grown)
            return
        base = -(-(top - self.history + 1) // 8) * 8        # > self._base, a multiple of 8
        slid = bytearray(self.history // 8)
        skip = (base - self._base) // 8
        if skip < len(self._bits):
            kept = self._bits[skip:]
            slid[:len(kept)] = kept
        self._set_bitmap(slid)
        self._base = base

    # ---- input ----

    def add(self, seq: int, send_ns: int, recv_ns: int, nbytes: int) -> None:
        """One packet, in plain Python: the same rules as add_batch, without numpy's
        per-call cost (a request/response exchange brings one message per read; a bulk
        TCP read a few)."""
        seq, send_ns, recv_ns, nbytes = int(seq), int(send_ns), int(recv_ns), int(nbytes)
        if self.first_recv_ns is None:
            self.first_recv_ns = recv_ns
        self.last_recv_ns = recv_ns
        transit = recv_ns - send_ns
        last = self._last_transit
        if last is not None:
            d = transit - last
            self.jitter_s += ((d if d >= 0 else -d) / 1e9 - self.jitter_s) / 16.0
        self._last_transit = transit
        top = self.max_seq
        if seq < 0 or seq > (top if top > 0 else 0) + self.window:
            self.stray += 1
            return
        k = seq - self._base
        if k >= len(self._bits) * 8:
            self._room_for(seq)
            k = seq - self._base
        if k < 0:                       # behind the bitmap: too late to tell
            self.stray += 1
            return
        bits, i, bit = self._bits, k >> 3, 1 << (k & 7)
        if bits[i] & bit:
            self.duplicates += 1
            return
        bits[i] |= bit
        if seq < top:                   # RFC 4737: below NextExp = max + 1
            self.reordered += 1
            if top - seq > self.max_reorder_gap:
                self.max_reorder_gap = top - seq
        else:
            self.max_seq = seq
        self.unique += 1
        self.bytes += nbytes
        lo, hi = self.owd_min_ns, self.owd_max_ns
        if lo is None or transit < lo:
            self.owd_min_ns = transit
        if hi is None or transit > hi:
            self.owd_max_ns = transit
        self._owd_sum_ns += transit

    def add_batch(self, seq, send_ns, recv_ns, nbytes) -> None:
        if len(seq) <= SMALL_BATCH:
            # a TCP read holds a few messages: one at a time costs microseconds, numpy's
            # per-call overhead on tiny arrays about 0.2 ms (most of a fast receiver's
            # time); the same arithmetic either way
            for x in zip(seq, send_ns, recv_ns, nbytes):
                self.add(*x)
            return
        seq = np.asarray(seq, np.int64)
        send_ns = np.asarray(send_ns, np.int64)
        recv_ns = np.asarray(recv_ns, np.int64)
        nbytes = np.asarray(nbytes, np.int64)
        if len(seq) == 0:
            return
        if self.first_recv_ns is None:
            self.first_recv_ns = int(recv_ns[0])
        self.last_recv_ns = int(recv_ns[-1])
        self._jitter(recv_ns - send_ns)
        ok = (seq >= 0) & (seq <= max(self.max_seq, 0) + self.window)
        if not ok.all():
            self.stray += int((~ok).sum())
            seq, send_ns, recv_ns, nbytes = seq[ok], send_ns[ok], recv_ns[ok], nbytes[ok]
        if len(seq):
            self._count(seq, send_ns, recv_ns, nbytes)

    def _count(self, seq, send_ns, recv_ns, nbytes) -> None:
        """Accepted numbers, in arrival order, into the bitmap and the counts."""
        top = int(seq.max())
        if len(seq) > 1 and int(seq.min()) < top - self.history + 8:
            # the bitmap would slide past some of these: take them in arrival order, in
            # halves, as one at a time would (the sum of the halves' work stays n log n)
            half = len(seq) // 2
            self._count(seq[:half], send_ns[:half], recv_ns[:half], nbytes[:half])
            self._count(seq[half:], send_ns[half:], recv_ns[half:], nbytes[half:])
            return
        self._room_for(top)
        behind = seq < self._base                # too late to tell: stray
        if behind.any():
            self.stray += int(behind.sum())
            keep = ~behind
            seq, send_ns, recv_ns, nbytes = seq[keep], send_ns[keep], recv_ns[keep], nbytes[keep]
            if len(seq) == 0:
                return
        k = seq - self._base
        byte, bit = k >> 3, np.left_shift(1, k & 7).astype(np.uint8)
        first = np.zeros(len(seq), dtype=bool)
        first[np.unique(seq, return_index=True)[1]] = True
        new = first & ((self._seen[byte] & bit) == 0)
        self.duplicates += len(seq) - int(new.sum())
        s = seq[new]
        if len(s) == 0:
            return
        np.bitwise_or.at(self._seen, byte[new], bit[new])
        # RFC 4737: NextExp before each arrival = 1 + the highest number that came before
        before = np.maximum.accumulate(np.concatenate(([self.max_seq], s)))[:-1]
        late = s < before
        if late.any():
            self.reordered += int(late.sum())
            self.max_reorder_gap = max(self.max_reorder_gap, int((before[late] - s[late]).max()))
        self.max_seq = max(self.max_seq, int(s.max()))
        self.unique += len(s)
        self.bytes += int(nbytes[new].sum())
        transit = (recv_ns - send_ns)[new]
        lo, hi = int(transit.min()), int(transit.max())
        self.owd_min_ns = lo if self.owd_min_ns is None else min(self.owd_min_ns, lo)
        self.owd_max_ns = hi if self.owd_max_ns is None else max(self.owd_max_ns, hi)
        self._owd_sum_ns += int(transit.sum())

    def _jitter(self, transit: np.ndarray) -> None:
        # RFC 3550 A.8 over consecutive arrivals (every packet, in arrival order)
        if self._last_transit is None:
            self._last_transit = int(transit[0])
            transit = transit[1:]
        for start in range(0, len(transit), _CHUNK):
            t = transit[start:start + _CHUNK]
            d = np.abs(np.diff(np.concatenate(([self._last_transit], t)))) / 1e9
            n = len(d)
            # J_n = a^n J_0 + (1/16) sum_k a^(n-k) |D_k|, the recurrence in closed form
            self.jitter_s = float(_A ** n * self.jitter_s + (_POW[-n:] * d).sum() / 16.0)
            self._last_transit = int(t[-1])

    def end_marker(self, sent_total: int) -> None:
        """The sender says it sent this many: losses at the tail become visible."""
        self.sent_total = int(sent_total)

    # ---- output ----

    @property
    def expected(self) -> int:
        return max(self.max_seq + 1, self.sent_total or 0)

    @property
    def lost(self) -> int:
        return self.expected - self.unique

    def _counts(self) -> dict:
        return {"packets": self.unique, "payload_bytes": self.bytes, "duplicates": self.duplicates,
                "reordered": self.reordered, "expected": self.expected, "lost": self.lost}

    def totals(self, same_clock: bool = False) -> dict:
        out = {**self._counts(), "stray": self.stray, "max_reorder_gap": self.max_reorder_gap,
               "loss_fraction": self.lost / self.expected if self.expected else 0.0,
               "jitter_s": self.jitter_s}
        if self.first_recv_ns is not None and self.last_recv_ns is not None:
            out["duration_s"] = (self.last_recv_ns - self.first_recv_ns) / 1e9
        if same_clock and self.unique:
            out["owd_s"] = {"min": self.owd_min_ns / 1e9, "max": self.owd_max_ns / 1e9,
                            "mean": self._owd_sum_ns / self.unique / 1e9}
        return out

    def interval(self) -> dict:
        """Counts since the previous call (loss may dip below zero when late packets of an
        earlier interval arrive, as in iperf3), and the jitter now."""
        now = self._counts()
        out = {k: now[k] - self._mark[k] for k in now}
        out["jitter_s"] = self.jitter_s
        self._mark = now
        return out


def align_reads(read_sizes, message_sizes) -> dict:
    """How a receiver's reads lined up with the sender's messages, without framing.

    message_sizes: the sizes the sender wrote, in order (a whole stream's worth, or one
    cycle that repeats). Each read is classified: `exact` (exactly one whole message),
    `glued` (holds bytes of two or more messages) or `partial` (part of one message).
    Messages are `split` when they took more than one read.

    Memory and time go with the number of reads and of sizes, never with the number of
    messages (a peer that promises 1-byte messages and sends a gigabyte must not make the
    receiver list a billion message ends): message i of the repeating cycle c (n sizes,
    S bytes, ends E within the cycle) ends at (i // n) * S + E[i % n].
    """
    reads = np.asarray(read_sizes, np.int64)
    cycle = np.asarray(message_sizes, np.int64)
    total = int(reads.sum())
    if total == 0 or len(cycle) == 0 or (cycle <= 0).any():
        return {"reads": len(reads), "messages": 0, "exact": 0, "glued": 0, "partial": 0,
                "split_messages": 0}
    n, ends_in = len(cycle), np.cumsum(cycle)
    period = int(ends_in[-1])

    def holding(pos):                  # index of the message holding byte `pos`
        q, r = np.divmod(pos, period)
        return q * n + np.searchsorted(ends_in, r, side="right")

    def end_of(i):                     # the stream offset just past message i
        q, r = np.divmod(i, n)
        return q * period + ends_in[r]

    def is_end(pos):                   # whether a message ends at stream offset pos
        r = pos % period
        return (pos > 0) & ((r == 0) | np.isin(r, ends_in))

    r_end = np.cumsum(reads)
    r_start = r_end - reads
    reads_nonempty = reads > 0
    # index of the message holding the first and the last byte of each read
    m_first = holding(r_start)
    m_last = holding(r_end - 1)
    first_end = end_of(m_first)
    first_start = first_end - cycle[m_first % n]
    whole = (r_start == first_start) & (r_end == first_end) & (m_first == m_last)
    glued = (m_last > m_first) & reads_nonempty
    exact = whole & reads_nonempty
    partial = reads_nonempty & ~whole & ~glued
    # a message is split when some read boundary falls strictly inside it
    cuts = r_end[:-1] if len(r_end) > 1 else np.array([], np.int64)
    inner = cuts[~is_end(cuts)]
    split = len(np.unique(holding(inner)))
    q, r = divmod(total, period)
    complete = q * n + int(np.searchsorted(ends_in, r, side="right"))
    return {"reads": int(reads_nonempty.sum()), "messages": complete, "exact": int(exact.sum()),
            "glued": int(glued.sum()), "partial": int(partial.sum()), "split_messages": split}
