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
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import verdicts as V

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF
MAX_UNACKED = 10000           # Wireshark stops tracking beyond this many unacked segments
FAST_RTX_WINDOW_NS = 20_000_000   # a fast retransmission follows the last dup ACK within 20 ms
OOO_DEFAULT_NS = 3_000_000        # out-of-order threshold before the first RTT is known

# flow static flags
BASE_SEQ_SET, SAW_SYN, SAW_SYNACK = 1, 2, 4


@njit(inline="always")
def _s32(x):
    x = x & M32
    return x - (1 << 32) if x >= (1 << 31) else x


@njit(inline="always")
def _gt(x, y):          # GT_SEQ: x after y
    return _s32(y - x) < 0


@njit(inline="always")
def _lt(x, y):          # LT_SEQ: x before y
    return _s32(x - y) < 0


@njit(inline="always")
def _le(x, y):
    return _s32(x - y) <= 0


@njit(cache=True)
def _grow(a, n):
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


@njit(cache=True)
def sequence_analysis(rows, tuple_id, n_tuples, conv_cap,
                      ts, src_hi, src_lo, dst_hi, dst_lo, sport, dport,
                      seqs, acks, tflags, wins, paylen, wscale,
                      sack_pos, sack_n, sack_le, sack_re):
    """Run Wireshark's sequence analysis over the TCP rows (frame order).

    Returns per TCP row: stream, flow (0/1: Wireshark's flow1/flow2), analysis bits,
    dupack number, dupack frame, acked frame, ack RTT (ns), bytes in flight, relative
    seq, relative ack, calculated window; and the number of conversations.
    """
    n = rows.shape[0]
    out_stream = np.empty(n, np.int32)
    out_flow = np.empty(n, np.uint8)
    out_bits = np.zeros(n, np.uint32)
    out_dupnum = np.zeros(n, np.int32)
    out_dupframe = np.zeros(n, np.uint32)
    out_acked = np.zeros(n, np.uint32)
    out_rtt = np.full(n, np.iinfo(np.int64).min, np.int64)
    out_bif = np.zeros(n, np.uint32)
    out_relseq = np.zeros(n, np.uint32)
    out_relack = np.zeros(n, np.uint32)
    out_win = np.zeros(n, np.int64)

    conv_of_tuple = np.full(n_tuples, -1, np.int32)
    nf = 2 * conv_cap
    # per-flow state (Wireshark's tcp_flow_t and tcp_analyze_seq_flow_info_t)
    base_seq = np.zeros(nf, np.int64)
    sflags = np.zeros(nf, np.int64)
    win_scale = np.full(nf, -1, np.int64)
    window = np.full(nf, M32, np.int64)
    first_ack = np.zeros(nf, np.int64)
    valid_bif = np.ones(nf, np.int64)
    lastsegflags = np.zeros(nf, np.int64)
    nextseq = np.zeros(nf, np.int64)
    nextseqframe = np.zeros(nf, np.int64)
    nextseqtime = np.zeros(nf, np.int64)
    lastack = np.zeros(nf, np.int64)
    lastacktime = np.zeros(nf, np.int64)
    lastnondupack = np.zeros(nf, np.int64)
    dupacknum = np.zeros(nf, np.int64)
    maxseqtobeacked = np.zeros(nf, np.int64)
    seg_count = np.zeros(nf, np.int64)
    seg_head = np.full(nf, -1, np.int64)
    nsack = np.zeros(nf, np.int64)
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

    for k in range(n):
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
        if (flags & (SYN | ACK)) == SYN and (sflags[fw] & BASE_SEQ_SET):
            if seq != base_seq[fw]:
                c = n_conv
                n_conv += 1
                conv_of_tuple[t] = c
                fw = 2 * c + fdir
                rv = 2 * c + (1 - fdir)
                bits |= V.REUSED_PORTS
            else:
                # same SYN again: restore nextseq (a RST may carry SEQ = the ACK received,
                # RFC 9293 section 3.10.7.3), so the SYN is judged a retransmission
                nextseq[fw] = maxseqtobeacked[fw]
        if (flags & (SYN | ACK)) == (SYN | ACK):
            if (sflags[fw] & BASE_SEQ_SET) and seq != base_seq[fw]:
                base_seq[fw] = seq
                bits |= V.REUSED_PORTS

        out_stream[k] = c
        out_flow[k] = fdir
        nsack[fw] = 0

        # base sequence numbers, for relative numbers
        if not (sflags[fw] & BASE_SEQ_SET):
            if flags & SYN:
                base_seq[fw] = seq
                sflags[fw] |= SAW_SYNACK if (flags & ACK) else SAW_SYN
            else:
                base_seq[fw] = (seq - 1) & M32
            sflags[fw] |= BASE_SEQ_SET
        if not (sflags[rv] & BASE_SEQ_SET) and (flags & ACK):
            base_seq[rv] = (ack - 1) & M32
            sflags[rv] |= BASE_SEQ_SET

        # ---- tcp_analyze_sequence_number -------------------------------------------
        if flags & ACK:
            valid_bif[rv] = 1
        skip_to_fwd_end = False
        # zero window probe: next expected seq, 1 byte, peer's window is 0
        if seglen == 1 and seq == nextseq[fw] and window[rv] == 0:
            bits |= V.ZERO_WINDOW_PROBE
            skip_to_fwd_end = True
        if not skip_to_fwd_end:
            if win == 0 and (flags & (RST | FIN | SYN)) == 0:
                bits |= V.ZERO_WINDOW
            # previous segment not captured
            if nextseq[fw] != 0 and _gt(seq, nextseq[fw]) and (flags & RST) == 0:
                bits |= V.LOST_SEGMENT
                valid_bif[fw] = 0
            # keep-alive: 0 or 1 byte at nextseq - 1 (RFC 9293 section 3.8.4)
            if ((seglen == 0 or seglen == 1) and seq == ((nextseq[fw] - 1) & M32)
                    and (flags & (SYN | FIN | RST)) == 0):
                bits |= V.KEEP_ALIVE
            plain = ((flags & (SYN | FIN | RST)) == 0 and seq == nextseq[fw]
                     and ack == lastack[fw])
            if seglen == 0 and win != 0 and win != window[fw] and plain:
                bits |= V.WINDOW_UPDATE
            # window full: the segment reaches the right edge of the peer's window
            if seglen > 0 and win_scale[rv] != -1 and (flags & (SYN | FIN | RST)) == 0:
                sh = 0
                if first_ack[rv] == 0 and win_scale[rv] != -2:
                    sh = win_scale[rv]
                edge = (lastack[rv] + ((window[rv] << sh) & M32)) & M32
                if ((seq + seglen) & M32) == edge:
                    bits |= V.WINDOW_FULL
            if (seglen == 0 and win != 0 and win == window[fw] and plain
                    and (lastsegflags[rv] & V.KEEP_ALIVE)):
                bits |= V.KEEP_ALIVE_ACK
                skip_to_fwd_end = True
            elif (seglen == 0 and win == 0 and win == window[fw] and plain
                    and (lastsegflags[rv] & V.ZERO_WINDOW_PROBE)):
                bits |= V.ZERO_WINDOW_PROBE_ACK
                skip_to_fwd_end = True
            elif seglen == 0 and win != 0 and win == window[fw] and plain:
                # duplicate ACK (RFC 5681 section 2 definition, as Wireshark applies it)
                if dupacknum[fw] == -1:
                    dupacknum[fw] = 1
                else:
                    dupacknum[fw] += 1
                bits |= V.DUPLICATE_ACK
                out_dupnum[k] = dupacknum[fw]
                out_dupframe[k] = lastnondupack[fw]
        # finished_fwd:
        if ack != lastack[fw]:
            lastnondupack[fw] = frame
            dupacknum[fw] = 0

        # ACKed unseen segment: this ACK covers bytes never seen going the other way
        if maxseqtobeacked[rv] != 0 and _gt(ack, maxseqtobeacked[rv]) and (flags & ACK):
            if _lt(maxseqtobeacked[rv], nextseq[rv]):
                maxseqtobeacked[rv] = nextseq[rv]
                bits |= V.ACK_LOST_SEGMENT
            else:
                if dupacknum[rv] == 0:
                    bits |= V.ACK_LOST_SEGMENT
                dupacknum[rv] = -1

        # retransmission / fast retransmission / spurious / out-of-order
        if (seglen > 0 or (flags & (SYN | FIN))) and not (bits & V.KEEP_ALIVE):
            not_advanced = nextseq[fw] != 0 and _lt(seq, nextseq[fw])
            if seglen > 1 and ((nextseq[fw] - 1) & M32) == seq:
                not_advanced = False
            if seglen > 0 and lastack[rv] != 0 and _le(seq + seglen, lastack[rv]):
                bits |= V.SPURIOUS_RETRANSMISSION
            else:
                done = False
                # fast retransmission: >= 2 dup ACKs, matching seq, within 20 ms
                # (Wireshark computes the gap unsigned: a negative gap never qualifies)
                gap = now - lastacktime[rv]
                if (not_advanced and dupacknum[rv] >= 2 and lastack[rv] == seq
                        and 0 <= gap < FAST_RTX_WINDOW_NS):
                    bits |= V.FAST_RETRANSMISSION
                    done = True
                if not done:
                    thres = OOO_DEFAULT_NS if ts_first_rtt[c] == 0 else ts_first_rtt[c]
                    end = (seq + seglen + (1 if (flags & (SYN | FIN)) else 0)) & M32
                    gap = now - nextseqtime[fw]
                    if (not_advanced and 0 <= gap < thres
                            and nextseq[fw] != end):
                        bits |= V.OUT_OF_ORDER
                        done = True
                if not done and not_advanced:
                    bits |= V.RETRANSMISSION

        # remember the segment until it is acknowledged
        nxt = (seq + seglen) & M32
        if seglen or (flags & (SYN | FIN)):
            if flags & (SYN | FIN):
                nxt = (nxt + 1) & M32
            if seg_count[fw] < MAX_UNACKED:
                if free >= 0:
                    node = free
                    free = nd_link[node]
                else:
                    if used == nd_seq.shape[0]:
                        m = 2 * used
                        nd_seq = _grow(nd_seq, m)
                        nd_next = _grow(nd_next, m)
                        nd_frame = _grow(nd_frame, m)
                        nd_ts = _grow(nd_ts, m)
                        nd_link = _grow(nd_link, m)
                    node = used
                    used += 1
                nd_seq[node] = seq
                nd_next[node] = nxt
                nd_frame[node] = frame
                nd_ts[node] = now
                nd_link[node] = seg_head[fw]
                seg_head[fw] = node
                seg_count[fw] += 1
        is_zwp = (bits & V.ZERO_WINDOW_PROBE) != 0
        if (_gt(nxt, nextseq[fw]) or nextseq[fw] == 0) and not is_zwp:
            nextseq[fw] = nxt
            nextseqframe[fw] = frame
            nextseqtime[fw] = now
        if (seq == maxseqtobeacked[fw] or maxseqtobeacked[fw] == 0) and not is_zwp:
            maxseqtobeacked[fw] = nextseq[fw]
        window[fw] = win
        lastack[fw] = ack
        lastacktime[fw] = now
        lastsegflags[fw] = bits

        # drop the peer's segments this ACK covers; an exact match gives the ACK RTT
        prev = -1
        node = seg_head[rv]
        while node >= 0:
            if ack == nd_next[node]:
                out_acked[k] = nd_frame[node]
                out_rtt[k] = now - nd_ts[node]
            elif _gt(ack, nd_seq[node]) and _le(ack, nd_next[node]):
                nd_seq[node] = ack
                continue
            elif _gt(nd_next[node], ack):
                prev = node
                node = nd_link[node]
                continue
            nxt_node = nd_link[node]
            if prev < 0:
                seg_head[rv] = nxt_node
            else:
                nd_link[prev] = nxt_node
            nd_link[node] = free
            free = node
            node = nxt_node
            seg_count[rv] -= 1

        # bytes in flight: span of this flow's unacked segments less the peer's SACKs
        if seglen != 0 and seg_head[fw] >= 0 and valid_bif[fw]:
            node = seg_head[fw]
            b = base_seq[fw]
            first = (nd_seq[node] - b) & M32
            last = (nd_next[node] - b) & M32
            while node >= 0:
                hi = (nd_next[node] - b) & M32
                lo = (nd_seq[node] - b) & M32
                if hi > last:
                    last = hi
                if lo < first:
                    first = lo
                node = nd_link[node]
            inflight = (last - first) & M32
            for i in range(nsack[rv]):
                inflight = (inflight - (sack_r[rv, i] - sack_l[rv, i])) & M32
            if inflight > 0 and inflight < 2000000000:
                if flags & (SYN | FIN):
                    inflight = (inflight - 1) & M32
                out_bif[k] = inflight

        # ---- after the analysis: options, then SYN bookkeeping ------------------------
        if wscale[r] >= 0:
            win_scale[fw] = min(np.int64(wscale[r]), 14)   # RFC 7323 section 2.3: at most 14
        p = sack_pos[r]
        if p >= 0:
            # Wireshark keeps at most 3 SACK blocks per flow for bytes in flight
            m = min(np.int64(sack_n[p]), 3)
            for i in range(m):
                sack_l[fw, i] = sack_le[p, i]
                sack_r[fw, i] = sack_re[p, i]
            nsack[fw] = m
        if flags & SYN:
            # window scaling is used only if both SYNs carry the option (RFC 7323 2.2)
            if win_scale[fw] == -1:
                win_scale[fw] = -2
                win_scale[rv] = -2
            elif (flags & ACK) and win_scale[rv] == -2:
                win_scale[fw] = -2
            if not (flags & ACK):
                ts_mru_syn[c] = now
            first_ack[fw] = 1
        if (flags & (SYN | ACK)) == ACK:
            if ts_mru_syn[c] != 0 and ts_first_rtt[c] == 0:
                ts_first_rtt[c] = now - ts_mru_syn[c]
            first_ack[fw] = 0

        out_bits[k] = bits
        out_relseq[k] = (seq - base_seq[fw]) & M32
        out_relack[k] = ((ack - base_seq[rv]) & M32) if (flags & ACK) else ack
        if not (flags & SYN) and win_scale[fw] >= 0:
            out_win[k] = win << win_scale[fw]
        else:
            out_win[k] = win
    return (out_stream, out_flow, out_bits, out_dupnum, out_dupframe, out_acked, out_rtt,
            out_bif, out_relseq, out_relack, out_win, n_conv)
