"""TCP conversations and Wireshark's per-segment verdicts, in one compiled pass.

Theory of operation
-------------------
Wireshark (packet-tcp.c, 4.0) walks the frames in order and keeps, per conversation and
per direction ("flow"), a little state: the next expected sequence number, the last ACK
seen, the duplicate-ACK counter, the advertised window and its scale, and a list of
segments sent but not yet acknowledged. Every verdict (retransmission, duplicate ACK,
zero window, ...) is a test of the current segment against that state, in a fixed order
with early exits. The rules are inherently sequential per conversation, so they run here
as one tight numba loop over the decoded columns (ARCHITECTURE decision 3), with the
state held in flat arrays indexed by flow number (2 * conversation + direction) and the
unacknowledged segments in a pool of nodes linked into one list per flow.

Conversations are numbered as tshark numbers tcp.stream: in order of first appearance of
the unordered (address, port) pair, and a new conversation when a SYN (without ACK) reuses
a pair whose SYN carried another initial sequence number (RFC 9293 section 3.4.1 lets a
connection be reopened with a new ISN; Wireshark flags it "TCP Port numbers reused").

Sequence comparisons are modulo 2**32 (RFC 9293 section 3.4). All state is int64 so the
arithmetic can be masked explicitly instead of relying on integer promotion rules.

Where this follows Wireshark 4.0 deliberately, comments name the rule; the functions and
names are ours.

A segment with a SACK option that holds no complete block (opt_sack_empty) is, to
Wireshark 4.0, a malformed packet whose TCP dissection stops inside the options: the SACK
dissector tests the first block for a D-SACK (RFC 2883 section 4) though there is none and
reads past the option, when the (absent, so zero) first right edge is at or before the ACK
number (relative with the ACK flag, raw without). dissect_tcp prints the SEQ/ACK analysis
after the options, so that frame shows no verdict, no acked frame, RTT, duplicate-ACK number
or bytes in flight; the options after the bad one are not read, and a SYN's window-scaling
check (also after the options) is skipped. The sequence state was updated before the
options, so the frame still counts for the frames after it.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import verdicts as V
from ..pcap.jit import helper, inline, kernel

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF
MAX_UNACKED = 10000           # Wireshark stops tracking beyond this many unacked segments
FAST_RTX_WINDOW_NS = 20_000_000   # a fast retransmission follows the last dup ACK within 20 ms
OOO_DEFAULT_NS = 3_000_000        # out-of-order threshold before the first RTT is known

# columns of the per-flow state table
BASE_SEQ = 0
SFLAGS = 1
WIN_SCALE = 2
WINDOW = 3
FIRST_ACK = 4
VALID_BIF = 5
LASTSEGFLAGS = 6
NEXTSEQ = 7
NEXTSEQFRAME = 8
NEXTSEQTIME = 9
LASTACK = 10
LASTACKTIME = 11
LASTNONDUPACK = 12
DUPACKNUM = 13
MAXSEQTOBEACKED = 14
SEG_COUNT = 15
SEG_HEAD = 16
NSACK = 17
# caches that make Wireshark's list walks cheap without changing their outcome:
SPAN_OK = 18       # SPAN_FIRST/LAST hold min/max of (seq - base) over the unacked list
SPAN_FIRST = 19
SPAN_LAST = 20
SPAN_BASE = 21     # ... relative to this base_seq
WALK_OK = 22       # the list was walked with ack WALK_ACK, and ADDED nodes came since
WALK_ACK = 23
ADDED = 24
N_FIELDS = 25

# flow static flags
BASE_SEQ_SET, SAW_SYN, SAW_SYNACK = 1, 2, 4


@inline
def _s32(x):
    x = x & M32
    return x - (1 << 32) if x >= (1 << 31) else x


@inline
def _gt(x, y):          # GT_SEQ: x after y
    return _s32(y - x) < 0


@inline
def _lt(x, y):          # LT_SEQ: x before y
    return _s32(x - y) < 0


@inline
def _le(x, y):
    return _s32(x - y) <= 0


@helper
def _grow(a, n):
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


# The kernel's result, built by keyword inside it and read by name outside: twenty-odd
# arrays in a positional tuple let a reordering swap two columns without an error.
SequenceResult = namedtuple("SequenceResult", [
    "stream", "flow", "analysis", "dupack_num", "dupack_frame", "acked_frame", "ack_rtt_ns",
    "bytes_in_flight", "rel_seq", "rel_ack", "window", "n_streams"])


@kernel
def sequence_analysis(rows, tuple_id, n_tuples, conv_cap,
                      ts, src_hi, src_lo, dst_hi, dst_lo, sport, dport,
                      seqs, acks, tflags, wins, paylen, wscale,
                      sack_rows, sack_n, sack_le, sack_re, sack_empty, detail):
    """Run Wireshark's sequence analysis over the TCP rows (frame order).

    Returns a SequenceResult: per TCP row stream, flow (0/1: Wireshark's flow1/flow2),
    analysis bits, dupack number, dupack frame, acked frame, ack RTT (ns), bytes in flight,
    relative seq, relative ack, calculated window; and the number of conversations.
    Without `detail`, the arrays from dupack_num on have one meaningless element.
    """
    n = rows.shape[0]
    out_stream = np.empty(n, np.int32)
    out_flow = np.empty(n, np.uint8)
    out_bits = np.zeros(n, np.uint32)
    # the per-segment details (numbers, RTT, bytes in flight ...) only when asked for:
    # otherwise they all go to slot 0 of one-slot arrays, which keeps the loop branch-free
    nd = n if detail else 1
    out_dupnum = np.zeros(nd, np.int32)
    out_dupframe = np.zeros(nd, np.uint32)
    out_acked = np.zeros(nd, np.uint32)
    out_rtt = np.full(nd, np.iinfo(np.int64).min, np.int64)
    out_bif = np.zeros(nd, np.uint32)
    out_relseq = np.zeros(nd, np.uint32)
    out_relack = np.zeros(nd, np.uint32)
    out_win = np.zeros(nd, np.int64)

    conv_of_tuple = np.full(n_tuples, -1, np.int32)
    nf = 2 * conv_cap
    # per-flow state (Wireshark's tcp_flow_t and tcp_analyze_seq_flow_info_t), one row
    # per flow so that a segment's state sits in a few cache lines
    st = np.zeros((nf, N_FIELDS), np.int64)
    st[:, WIN_SCALE] = -1
    st[:, WINDOW] = M32
    st[:, VALID_BIF] = 1
    st[:, SEG_HEAD] = -1
    sack_l = np.zeros((nf, 4), np.int64)
    sack_r = np.zeros((nf, 4), np.int64)
    # per-conversation state
    ts_first_rtt = np.zeros(conv_cap, np.int64)
    ts_mru_syn = np.zeros(conv_cap, np.int64)
    n_conv = 0
    # the unacked-segment pool: singly linked lists, newest first
    cap = 4096
    nd_seq = np.zeros(cap, np.int64)
    nd_next = np.zeros(cap, np.int64)
    nd_frame = np.zeros(cap, np.int64)
    nd_ts = np.zeros(cap, np.int64)
    nd_link = np.full(cap, -1, np.int64)
    free = -1
    used = 0
    sp = 0                        # next entry of the SACK table (rows ascending, as segments)

    # The pool grows between runs of segments that cannot exhaust it (a segment takes at
    # most one node), never inside the per-segment loop: numba counts references to an
    # array variable reassigned in a loop on every turn of it.
    start = 0
    while start < n:
        room = nd_seq.shape[0] - used
        if room < 1:
            m = 2 * used
            nd_seq = _grow(nd_seq, m)
            nd_next = _grow(nd_next, m)
            nd_frame = _grow(nd_frame, m)
            nd_ts = _grow(nd_ts, m)
            nd_link = _grow(nd_link, m)
            continue
        stop = min(n, start + room)
        for k in range(start, stop):
            kd = k if detail else 0
            r = rows[k]
            frame = r + 1
            now = ts[r]
            seq = np.int64(seqs[r])
            ack = np.int64(acks[r])
            flags = np.int64(tflags[r])
            win = np.int64(wins[r])
            seglen = np.int64(paylen[r])
            t = tuple_id[k]
            bits = 0

            # direction: cmp_address(src, dst), ports when the addresses are equal
            if src_hi[r] != dst_hi[r]:
                d = 1 if src_hi[r] > dst_hi[r] else -1
            elif src_lo[r] != dst_lo[r]:
                d = 1 if src_lo[r] > dst_lo[r] else -1
            else:
                d = 1 if sport[r] > dport[r] else -1
            fdir = 0 if d >= 0 else 1

            c = conv_of_tuple[t]
            if c < 0:
                c = n_conv
                n_conv += 1
                conv_of_tuple[t] = c
            fw = 2 * c + fdir
            rv = 2 * c + (1 - fdir)

            # A SYN with another ISN on a known pair opens a new conversation (port reuse).
            if (flags & (SYN | ACK)) == SYN and (st[fw, SFLAGS] & BASE_SEQ_SET):
                if seq != st[fw, BASE_SEQ]:
                    c = n_conv
                    n_conv += 1
                    conv_of_tuple[t] = c
                    fw = 2 * c + fdir
                    rv = 2 * c + (1 - fdir)
                    bits |= V.REUSED_PORTS
                else:
                    # same SYN again: restore nextseq (a RST may carry SEQ = the ACK received,
                    # RFC 9293 section 3.10.7.3), so the SYN is judged a retransmission
                    st[fw, NEXTSEQ] = st[fw, MAXSEQTOBEACKED]
            if (flags & (SYN | ACK)) == (SYN | ACK):
                if (st[fw, SFLAGS] & BASE_SEQ_SET) and seq != st[fw, BASE_SEQ]:
                    st[fw, BASE_SEQ] = seq
                    bits |= V.REUSED_PORTS

            out_stream[k] = c
            out_flow[k] = fdir
            st[fw, NSACK] = 0

            # base sequence numbers, for relative numbers
            if not (st[fw, SFLAGS] & BASE_SEQ_SET):
                if flags & SYN:
                    st[fw, BASE_SEQ] = seq
                    st[fw, SFLAGS] |= SAW_SYNACK if (flags & ACK) else SAW_SYN
                else:
                    st[fw, BASE_SEQ] = (seq - 1) & M32
                st[fw, SFLAGS] |= BASE_SEQ_SET
            if not (st[rv, SFLAGS] & BASE_SEQ_SET) and (flags & ACK):
                st[rv, BASE_SEQ] = (ack - 1) & M32
                st[rv, SFLAGS] |= BASE_SEQ_SET
            # Wireshark 4.0 throws inside this segment's options (see the module notes)
            hidden = False
            if sack_empty[r] & 1:
                ack_shown = ((ack - st[rv, BASE_SEQ]) & M32) if (flags & ACK) else ack
                hidden = _le(0, ack_shown)

            # ---- tcp_analyze_sequence_number -------------------------------------------
            if flags & ACK:
                st[rv, VALID_BIF] = 1
            skip_to_fwd_end = False
            # zero window probe: next expected seq, 1 byte, peer's window is 0
            if seglen == 1 and seq == st[fw, NEXTSEQ] and st[rv, WINDOW] == 0:
                bits |= V.ZERO_WINDOW_PROBE
                skip_to_fwd_end = True
            if not skip_to_fwd_end:
                if win == 0 and (flags & (RST | FIN | SYN)) == 0:
                    bits |= V.ZERO_WINDOW
                # previous segment not captured
                if st[fw, NEXTSEQ] != 0 and _gt(seq, st[fw, NEXTSEQ]) and (flags & RST) == 0:
                    bits |= V.LOST_SEGMENT
                    st[fw, VALID_BIF] = 0
                # keep-alive: 0 or 1 byte at nextseq - 1 (RFC 9293 section 3.8.4)
                if ((seglen == 0 or seglen == 1) and seq == ((st[fw, NEXTSEQ] - 1) & M32)
                        and (flags & (SYN | FIN | RST)) == 0):
                    bits |= V.KEEP_ALIVE
                plain = ((flags & (SYN | FIN | RST)) == 0 and seq == st[fw, NEXTSEQ]
                         and ack == st[fw, LASTACK])
                if seglen == 0 and win != 0 and win != st[fw, WINDOW] and plain:
                    bits |= V.WINDOW_UPDATE
                # window full: the segment reaches the right edge of the peer's window
                if seglen > 0 and st[rv, WIN_SCALE] != -1 and (flags & (SYN | FIN | RST)) == 0:
                    sh = 0
                    if st[rv, FIRST_ACK] == 0 and st[rv, WIN_SCALE] != -2:
                        sh = st[rv, WIN_SCALE]
                    edge = (st[rv, LASTACK] + ((st[rv, WINDOW] << sh) & M32)) & M32
                    if ((seq + seglen) & M32) == edge:
                        bits |= V.WINDOW_FULL
                if (seglen == 0 and win != 0 and win == st[fw, WINDOW] and plain
                        and (st[rv, LASTSEGFLAGS] & V.KEEP_ALIVE)):
                    bits |= V.KEEP_ALIVE_ACK
                    skip_to_fwd_end = True
                elif (seglen == 0 and win == 0 and win == st[fw, WINDOW] and plain
                        and (st[rv, LASTSEGFLAGS] & V.ZERO_WINDOW_PROBE)):
                    bits |= V.ZERO_WINDOW_PROBE_ACK
                    skip_to_fwd_end = True
                elif seglen == 0 and win != 0 and win == st[fw, WINDOW] and plain:
                    # duplicate ACK (RFC 5681 section 2 definition, as Wireshark applies it)
                    if st[fw, DUPACKNUM] == -1:
                        st[fw, DUPACKNUM] = 1
                    else:
                        st[fw, DUPACKNUM] += 1
                    bits |= V.DUPLICATE_ACK
                    out_dupnum[kd] = st[fw, DUPACKNUM]
                    out_dupframe[kd] = st[fw, LASTNONDUPACK]
            # finished_fwd:
            if ack != st[fw, LASTACK]:
                st[fw, LASTNONDUPACK] = frame
                st[fw, DUPACKNUM] = 0

            # ACKed unseen segment: this ACK covers bytes never seen going the other way
            if st[rv, MAXSEQTOBEACKED] != 0 and _gt(ack, st[rv, MAXSEQTOBEACKED]) and (flags & ACK):
                if _lt(st[rv, MAXSEQTOBEACKED], st[rv, NEXTSEQ]):
                    st[rv, MAXSEQTOBEACKED] = st[rv, NEXTSEQ]
                    bits |= V.ACK_LOST_SEGMENT
                else:
                    if st[rv, DUPACKNUM] == 0:
                        bits |= V.ACK_LOST_SEGMENT
                    st[rv, DUPACKNUM] = -1

            # retransmission / fast retransmission / spurious / out-of-order
            if (seglen > 0 or (flags & (SYN | FIN))) and not (bits & V.KEEP_ALIVE):
                not_advanced = st[fw, NEXTSEQ] != 0 and _lt(seq, st[fw, NEXTSEQ])
                if seglen > 1 and ((st[fw, NEXTSEQ] - 1) & M32) == seq:
                    not_advanced = False
                if seglen > 0 and st[rv, LASTACK] != 0 and _le(seq + seglen, st[rv, LASTACK]):
                    bits |= V.SPURIOUS_RETRANSMISSION
                else:
                    done = False
                    # fast retransmission: >= 2 dup ACKs, matching seq, within 20 ms
                    # (Wireshark computes the gap unsigned: a negative gap never qualifies)
                    gap = now - st[rv, LASTACKTIME]
                    if (not_advanced and st[rv, DUPACKNUM] >= 2 and st[rv, LASTACK] == seq
                            and 0 <= gap < FAST_RTX_WINDOW_NS):
                        bits |= V.FAST_RETRANSMISSION
                        done = True
                    if not done:
                        thres = OOO_DEFAULT_NS if ts_first_rtt[c] == 0 else ts_first_rtt[c]
                        end = (seq + seglen + (1 if (flags & (SYN | FIN)) else 0)) & M32
                        gap = now - st[fw, NEXTSEQTIME]
                        if (not_advanced and 0 <= gap < thres
                                and st[fw, NEXTSEQ] != end):
                            bits |= V.OUT_OF_ORDER
                            done = True
                    if not done and not_advanced:
                        bits |= V.RETRANSMISSION

            # remember the segment until it is acknowledged
            nxt = (seq + seglen) & M32
            if seglen or (flags & (SYN | FIN)):
                if flags & (SYN | FIN):
                    nxt = (nxt + 1) & M32
                if st[fw, SEG_COUNT] < MAX_UNACKED:
                    if free >= 0:
                        node = free
                        free = nd_link[node]
                    else:
                        node = used
                        used += 1
                    nd_seq[node] = seq
                    nd_next[node] = nxt
                    nd_frame[node] = frame
                    nd_ts[node] = now
                    nd_link[node] = st[fw, SEG_HEAD]
                    st[fw, SEG_HEAD] = node
                    st[fw, SEG_COUNT] += 1
                    st[fw, ADDED] += 1
                    b = st[fw, BASE_SEQ]
                    lo = (seq - b) & M32
                    hi = (nxt - b) & M32
                    if st[fw, SEG_COUNT] == 1:
                        st[fw, SPAN_OK] = 1
                        st[fw, SPAN_BASE] = b
                        st[fw, SPAN_FIRST] = lo
                        st[fw, SPAN_LAST] = hi
                    elif st[fw, SPAN_OK] and st[fw, SPAN_BASE] == b:
                        st[fw, SPAN_FIRST] = min(st[fw, SPAN_FIRST], lo)
                        st[fw, SPAN_LAST] = max(st[fw, SPAN_LAST], hi)
                    else:
                        st[fw, SPAN_OK] = 0
            is_zwp = (bits & V.ZERO_WINDOW_PROBE) != 0
            if (_gt(nxt, st[fw, NEXTSEQ]) or st[fw, NEXTSEQ] == 0) and not is_zwp:
                st[fw, NEXTSEQ] = nxt
                st[fw, NEXTSEQFRAME] = frame
                st[fw, NEXTSEQTIME] = now
            if (seq == st[fw, MAXSEQTOBEACKED] or st[fw, MAXSEQTOBEACKED] == 0) and not is_zwp:
                st[fw, MAXSEQTOBEACKED] = st[fw, NEXTSEQ]
            st[fw, WINDOW] = win
            st[fw, LASTACK] = ack
            st[fw, LASTACKTIME] = now
            st[fw, LASTSEGFLAGS] = bits

            # drop the peer's segments this ACK covers; an exact match gives the ACK RTT.
            # Walking again with the ACK of the last walk changes nothing in the nodes walked
            # then (all have seq >= ack < next), so only the nodes added since are walked.
            if st[rv, WALK_OK] and st[rv, WALK_ACK] == ack:
                todo = st[rv, ADDED]
            else:
                todo = -1                      # all of them
            full = todo < 0
            changed = False
            prev = -1
            node = st[rv, SEG_HEAD]
            b = st[rv, BASE_SEQ]
            lo_min = M32 + 1
            hi_max = -1
            while node >= 0 and todo != 0:
                if ack == nd_next[node]:
                    out_acked[kd] = nd_frame[node]
                    out_rtt[kd] = now - nd_ts[node]
                elif _gt(ack, nd_seq[node]) and _le(ack, nd_next[node]):
                    nd_seq[node] = ack
                    changed = True
                    continue
                elif _gt(nd_next[node], ack):
                    lo_min = min(lo_min, (nd_seq[node] - b) & M32)
                    hi_max = max(hi_max, (nd_next[node] - b) & M32)
                    prev = node
                    node = nd_link[node]
                    todo -= 1
                    continue
                changed = True
                nxt_node = nd_link[node]
                if prev < 0:
                    st[rv, SEG_HEAD] = nxt_node
                else:
                    nd_link[prev] = nxt_node
                nd_link[node] = free
                free = node
                node = nxt_node
                st[rv, SEG_COUNT] -= 1
                todo -= 1
            st[rv, WALK_OK] = 1
            st[rv, WALK_ACK] = ack
            st[rv, ADDED] = 0
            if full:
                # the walk saw every remaining node: the span is exact
                st[rv, SPAN_OK] = 1 if hi_max >= 0 else 0
                st[rv, SPAN_BASE] = b
                st[rv, SPAN_FIRST] = lo_min
                st[rv, SPAN_LAST] = hi_max
            elif changed:
                st[rv, SPAN_OK] = 0

            # bytes in flight: span of this flow's unacked segments less the peer's SACKs
            if seglen != 0 and st[fw, SEG_HEAD] >= 0 and st[fw, VALID_BIF]:
                b = st[fw, BASE_SEQ]
                if st[fw, SPAN_OK] and st[fw, SPAN_BASE] == b:
                    first = st[fw, SPAN_FIRST]
                    last = st[fw, SPAN_LAST]
                else:
                    node = st[fw, SEG_HEAD]
                    first = (nd_seq[node] - b) & M32
                    last = (nd_next[node] - b) & M32
                    while node >= 0:
                        last = max(last, (nd_next[node] - b) & M32)
                        first = min(first, (nd_seq[node] - b) & M32)
                        node = nd_link[node]
                    st[fw, SPAN_OK] = 1
                    st[fw, SPAN_BASE] = b
                    st[fw, SPAN_FIRST] = first
                    st[fw, SPAN_LAST] = last
                inflight = (last - first) & M32
                for i in range(st[rv, NSACK]):
                    inflight = (inflight - (sack_r[rv, i] - sack_l[rv, i])) & M32
                if inflight > 0 and inflight < 2000000000:
                    if flags & (SYN | FIN):
                        inflight = (inflight - 1) & M32
                    out_bif[kd] = inflight

            # ---- after the analysis: options, then SYN bookkeeping --------------------
            if wscale[r] >= 0 and not (hidden and (sack_empty[r] & 2)):
                # RFC 7323 section 2.3: a shift of at most 14
                st[fw, WIN_SCALE] = min(np.int64(wscale[r]), 14)
            while sp < sack_rows.shape[0] and sack_rows[sp] < r:
                sp += 1
            if (sp < sack_rows.shape[0] and sack_rows[sp] == r
                    and not (hidden and (sack_empty[r] & 4))):
                p = sp
                # Wireshark keeps at most 3 SACK blocks per flow for bytes in flight
                m = min(np.int64(sack_n[p]), 3)
                for i in range(m):
                    sack_l[fw, i] = sack_le[p, i]
                    sack_r[fw, i] = sack_re[p, i]
                st[fw, NSACK] = m
            if flags & SYN:
                # window scaling is used only if both SYNs carry the option (RFC 7323 2.2)
                if hidden:
                    pass                       # the check comes after the options
                elif st[fw, WIN_SCALE] == -1:
                    st[fw, WIN_SCALE] = -2
                    st[rv, WIN_SCALE] = -2
                elif (flags & ACK) and st[rv, WIN_SCALE] == -2:
                    st[fw, WIN_SCALE] = -2
                if not (flags & ACK):
                    ts_mru_syn[c] = now
                st[fw, FIRST_ACK] = 1
            if (flags & (SYN | ACK)) == ACK:
                if ts_mru_syn[c] != 0 and ts_first_rtt[c] == 0:
                    ts_first_rtt[c] = now - ts_mru_syn[c]
                st[fw, FIRST_ACK] = 0

            out_bits[k] = bits
            if hidden:
                # the frame's SEQ/ACK analysis is never shown
                out_bits[k] = 0
                out_dupnum[kd] = 0
                out_dupframe[kd] = 0
                out_acked[kd] = 0
                out_rtt[kd] = np.iinfo(np.int64).min
                out_bif[kd] = 0
            out_relseq[kd] = (seq - st[fw, BASE_SEQ]) & M32
            out_relack[kd] = ((ack - st[rv, BASE_SEQ]) & M32) if (flags & ACK) else ack
            if not (flags & SYN) and st[fw, WIN_SCALE] >= 0:
                out_win[kd] = win << st[fw, WIN_SCALE]
            else:
                out_win[kd] = win
        start = stop
    return SequenceResult(stream=out_stream, flow=out_flow, analysis=out_bits,
                          dupack_num=out_dupnum, dupack_frame=out_dupframe,
                          acked_frame=out_acked, ack_rtt_ns=out_rtt, bytes_in_flight=out_bif,
                          rel_seq=out_relseq, rel_ack=out_relack, window=out_win,
                          n_streams=n_conv)
