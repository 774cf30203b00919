"""Zeek's connection view of the TCP segments: conn.log's `history` and `conn_state`.

Theory of operation
-------------------
Zeek keeps, per connection, an endpoint state for its originator and its responder
(INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET) and judges the
connection from the pair when it ends (base/protocols/conn/main.zeek, conn_state). This is
our own implementation of the rules Zeek documents and applies (its TCP session adapter,
TCP_Endpoint and TCP_Reassembler), walking the segments in capture order:

- a connection starts with its first packet; its sender is the originator unless that
  packet is not a plain SYN and comes from a likely server port (then Zeek flips at once,
  `^`); it is flipped later when the history is exactly `H` and the other side sends a
  pure ACK or data (history becomes `^h`), and on a SYN answering the originator's SYN-ACK;
- a SYN (or a SYN-ACK while the originator is inactive) whose sequence number is not the
  one the connection started with, or any SYN once either side has closed, starts a new
  Zeek connection on the same 4-tuple (IsReuse); so does any packet after Zeek's timers
  removed the connection (5 s after a complete close or a reset, 5 s after an unanswered
  SYN, the expiry timer's checks every 6 s);
- history letters: S/H/F/R when first seen from a side, again when their sequence number
  differs from the last one of that kind; A/D/I/Q once per side; T (data that does not
  advance the highest sequence number), W (zero window while the peer has not closed and
  the sender has not reset) and G (an acknowledgement skips bytes never seen, while both
  sides are established or cleanly closing) at the 1st, 10th, 100th, ... time.

The Wireshark stream numbering is kept: one table row per tcp.stream. A stream can hold
several Zeek connections; the row's history, conn_state and originator are those of the
first one, and `zeek_connections` counts them.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..pcap.jit import kernel

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
M32 = 0xFFFFFFFF

# endpoint states (Zeek's TCP_ENDPOINT_*)
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# history-seen bits (per role; the responder's are shifted by 16)
HS_SYN, HS_FIN, HS_RST, HS_FINRST, HS_DATA, HS_ACK, HS_MULTI = 1, 2, 4, 8, 16, 32, 64

LETTERS = "SHADFRTWGIQ^"
L_S, L_H, L_A, L_D, L_F, L_R, L_T, L_W, L_G, L_I, L_Q, L_FLIP = range(12)
MAX_HISTORY = 48
NBLK = 8                       # out-of-order data blocks kept per side for gap detection

CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH")
(CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH,
 CS_SHR, CS_OTH) = range(13)

# TCP ports Zeek's base protocol analyzers register (likely_server_ports with the default
# scripts loaded): a first packet other than a SYN from one of these is the responder's.
LIKELY_SERVER_PORTS = (21, 22, 23, 25, 53, 79, 80, 81, 88, 135, 139, 143, 389, 443, 445, 465,
                       502, 513, 514, 563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995,
                       1080, 1434, 1883, 2811, 3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432,
                       6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000)
SERVER_PORT = np.zeros(65536, np.bool_)
SERVER_PORT[list(LIKELY_SERVER_PORTS)] = True

NS = 1_000_000_000
CLOSE_DELAY = 5 * NS           # tcp_close_delay, tcp_reset_delay
ATTEMPT_DELAY = 5 * NS         # tcp_attempt_delay
SYN_TIMEOUT = 5 * NS           # tcp_SYN_timeout: the expiry timer's first check
SESSION_TIMER = 6 * NS         # tcp_session_timer: its later checks
LINGER = 5 * NS                # tcp_connection_linger
INACTIVITY = 300 * NS          # tcp_inactivity_timeout
MAX_ABOVE_HOLE = 16384         # tcp_max_above_hole_without_any_acks


def _s32(x):
    x &= M32
    return x - (1 << 32) if x >= (1 << 31) else x


_s32 = kernel(_s32)


@kernel
def _conn_state(st, size, hist, hlen):
    """main.zeek's conn_state from the two endpoint states (role 0 originator)."""
    os_, rs = st[0], st[1]
    o_in = os_ == INACTIVE or os_ == PARTIAL
    r_in = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ == SYN_SENT or os_ == SYN_ACK_SENT or (os_ == RESET and size[0] == 0
                                                      and size[1] == 0):
            return CS_REJ
        return CS_RSTRH if o_in else CS_RSTR
    if os_ == RESET:
        if r_in:
            # history matches ^?S[^HAFGIQ]*R.*
            i = 0
            if hlen > 0 and hist[0] == L_FLIP:
                i = 1
            if i < hlen and hist[i] == L_S:
                i += 1
                while i < hlen:
                    h = hist[i]
                    if h == L_R:
                        return CS_RSTOS0
                    if h in (L_H, L_A, L_F, L_G, L_I, L_Q):
                        break
                    i += 1
            return CS_OTH
        return CS_RSTO
    if rs == CLOSED and os_ == CLOSED:
        return CS_SF
    if os_ == CLOSED:
        return CS_SH if r_in else CS_S2
    if rs == CLOSED:
        return CS_SHR if o_in else CS_S3
    if os_ == SYN_SENT and rs == INACTIVE:
        return CS_S0
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return CS_S1
    return CS_OTH


# the kernel's result by name (built by keyword inside it): per stream the first Zeek
# connection's history codes and length, conn_state code, originator, and the count
ZeekResult = namedtuple("ZeekResult", ["history", "history_len", "conn_state", "originator",
                                       "connections"])


@kernel
def zeek_walk(rows, stream, flow, ts, tflags, seqs, acks, paylens, wins, sport, dport,
              server_port, n_conv):
    """Per stream: the first Zeek connection's history (letter codes, upper case for
    its originator: + 16 for the responder), its length, its conn_state, its originator
    (as a flow value) and how many Zeek connections the stream holds."""
    out_hist = np.full((n_conv, MAX_HISTORY), -1, np.int8)
    out_hlen = np.zeros(n_conv, np.int64)
    out_cs = np.full(n_conv, -1, np.int64)
    out_orig = np.full(n_conv, -1, np.int64)
    n_zeek = np.zeros(n_conv, np.int64)

    # the current Zeek connection of each stream; per role (0 originator, 1 responder)
    alive = np.zeros(n_conv, np.bool_)
    zorig = np.zeros(n_conv, np.int64)          # flow value of the originator
    hist = np.full((n_conv, MAX_HISTORY), -1, np.int8)
    hlen = np.zeros(n_conv, np.int64)
    seen = np.zeros(n_conv, np.int64)           # history-seen mask (never flipped)
    partial = np.zeros(n_conv, np.bool_)
    first_seen = np.zeros(n_conv, np.int64)     # bit 1 originator, 2 responder
    t_start = np.zeros(n_conv, np.int64)
    t_last = np.zeros(n_conv, np.int64)
    t_delete = np.full(n_conv, -1, np.int64)
    t_attempt = np.full(n_conv, -1, np.int64)
    st = np.zeros((n_conv, 2), np.int64)
    prev = np.zeros((n_conv, 2), np.int64)
    start = np.zeros((n_conv, 2), np.int64)
    last = np.zeros((n_conv, 2), np.int64)
    ackq = np.zeros((n_conv, 2), np.int64)
    closed = np.zeros((n_conv, 2), np.bool_)
    fin_cnt = np.zeros((n_conv, 2), np.int64)
    fin_seq = np.zeros((n_conv, 2), np.int64)
    h_syn = np.zeros((n_conv, 2), np.int64)
    h_fin = np.zeros((n_conv, 2), np.int64)
    h_rst = np.zeros((n_conv, 2), np.int64)
    cnt = np.zeros((n_conv, 2, 3), np.int64)    # T, W, G counts
    thr = np.ones((n_conv, 2, 3), np.int64)     # their next thresholds
    lr = np.ones((n_conv, 2), np.int64)         # reassembled up to (relative)
    trim = np.ones((n_conv, 2), np.int64)
    skip = np.zeros((n_conv, 2), np.bool_)
    blk = np.zeros((n_conv, 2, NBLK, 2), np.int64)
    nblk = np.zeros((n_conv, 2), np.int64)

    for k in range(stream.shape[0]):
        r = rows[k]
        c = stream[k]
        f = np.int64(tflags[r])
        now = ts[r]
        seq = np.int64(seqs[r])
        ack = np.int64(acks[r])
        plen = np.int64(paylens[r])

        # is the current connection gone (timers) or reused by this SYN?
        if alive[c]:
            gone = False
            if t_delete[c] >= 0 and now >= t_delete[c]:
                gone = True
            elif (t_attempt[c] >= 0 and now >= t_attempt[c] and st[c, 1] == INACTIVE
                  and (st[c, 0] == SYN_SENT or st[c, 0] == SYN_ACK_SENT)):
                gone = True
            elif now - t_last[c] > INACTIVITY:
                gone = True
            else:
                # the expiry timer: first at start + 5 s, then every 6 s
                due = t_last[c] + LINGER
                tick = t_start[c] + SYN_TIMEOUT
                if due >= tick:
                    tick += ((due - tick) // SESSION_TIMER + 1) * SESSION_TIMER
                if now >= tick:
                    o, p = 0, 1
                    if closed[c, o] or closed[c, p]:
                        if ((closed[c, o] and closed[c, p]) or st[c, o] == RESET
                                or st[c, p] == RESET or st[c, o] == INACTIVE
                                or st[c, p] == INACTIVE):
                            gone = True
                    if st[c, o] == INACTIVE and st[c, p] == INACTIVE:
                        gone = True
            if not gone and (f & SYN):
                co = 0
                reuse = True
                if f & ACK:
                    if st[c, 0] != INACTIVE:
                        reuse = False
                    co = 1
                if reuse and not (closed[c, 0] or closed[c, 1]):
                    if (seq & M32) == start[c, co]:
                        reuse = False
                    elif ((f & ACK) == 0 and st[c, co] == SYN_ACK_SENT
                          and st[c, 1] == INACTIVE and seq == start[c, 1]):
                        reuse = False
                gone = reuse
            if gone:
                if n_zeek[c] == 1:
                    _record_first(c, st, prev, start, last, ackq, fin_cnt, hist, hlen, zorig,
                                  out_cs, out_hist, out_hlen, out_orig)
                alive[c] = False

        if not alive[c]:
            alive[c] = True
            n_zeek[c] += 1
            zorig[c] = flow[k]
            hist[c, :] = -1
            hlen[c] = 0
            seen[c] = 0
            partial[c] = False
            first_seen[c] = 0
            t_start[c] = now
            t_last[c] = now
            t_delete[c] = -1
            t_attempt[c] = -1
            for ro in range(2):
                st[c, ro] = INACTIVE
                prev[c, ro] = INACTIVE
                start[c, ro] = 0
                last[c, ro] = 0
                ackq[c, ro] = 0
                closed[c, ro] = False
                fin_cnt[c, ro] = 0
                fin_seq[c, ro] = 0
                h_syn[c, ro] = 0
                h_fin[c, ro] = 0
                h_rst[c, ro] = 0
                lr[c, ro] = 1
                trim[c, ro] = 1
                skip[c, ro] = False
                nblk[c, ro] = 0
                for j in range(3):
                    cnt[c, ro, j] = 0
                    thr[c, ro, j] = 1
            if (f & (SYN | ACK)) != SYN and server_port[sport[r]]:
                if not server_port[dport[r]] or ((f & SYN) == 0 and sport[r] < dport[r]):
                    zorig[c] = 1 - flow[k]
                    hist[c, 0] = L_FLIP
                    hlen[c] = 1

        e = 0 if flow[k] == zorig[c] else 1

        # SetPartialStatus
        if e == 0:
            if (first_seen[c] & 1) == 0:
                partial[c] = (f & SYN) == 0 or (f & ACK) != 0
        elif (first_seen[c] & 2) == 0 and not partial[c]:
            partial[c] = (f & SYN) == 0

        seg_len = plen
        if f & SYN:
            seg_len += 1
        if f & FIN:
            seg_len += 1
        if f & RST:
            seg_len -= plen
        past = (seq + seg_len) & M32

        # init_endpoint
        s0 = st[c, e]
        if s0 == INACTIVE:
            if f & SYN:
                start[c, e] = seq
                ackq[c, e] = seq
                last[c, e] = past
            else:
                start[c, e] = (seq - 1) & M32
                ackq[c, e] = start[c, e]
                last[c, e] = seq
        elif s0 == SYN_SENT or s0 == SYN_ACK_SENT:
            if (f & SYN) and seq != start[c, e]:
                start[c, e] = seq
                ackq[c, e] = seq
                last[c, e] = past
        elif s0 == ESTABLISHED or s0 == PARTIAL:
            if f & SYN:
                start[c, e] = seq
                ackq[c, e] = seq
                last[c, e] = past
        elif s0 == RESET:
            if (f & SYN) and prev[c, e] == INACTIVE:
                start[c, e] = seq
                ackq[c, e] = seq
                last[c, e] = past

        rel = _s32(seq - start[c, e])
        underflow = rel < 0

        # update_history
        nbits = (1 if f & SYN else 0) + (1 if f & FIN else 0) + (1 if f & RST else 0)
        if nbits > 1:
            if (f & FIN) and (f & RST):
                _check(c, e, HS_FINRST, L_I, seen, hist, hlen)
            else:
                _check(c, e, HS_MULTI, L_Q, seen, hist, hlen)
        elif nbits == 1:
            if f & SYN:
                code = L_H if f & ACK else L_S
                if _check(c, e, HS_SYN, code, seen, hist, hlen) and rel != h_syn[c, e]:
                    _add(c, e, code, hist, hlen)
                h_syn[c, e] = rel
            if f & FIN:
                if _check(c, e, HS_FIN, L_F, seen, hist, hlen) and rel + plen != h_fin[c, e]:
                    _add(c, e, L_F, hist, hlen)
                h_fin[c, e] = rel + plen
            if f & RST:
                if _check(c, e, HS_RST, L_R, seen, hist, hlen) and rel != h_rst[c, e]:
                    _add(c, e, L_R, hist, hlen)
                h_rst[c, e] = rel
        else:
            code = -1
            if plen:
                code = L_D
            elif f & ACK:
                code = L_A
            if code >= 0:
                if hlen[c] == 1 and hist[c, 0] == L_H:
                    # the SYN-ACK came first: its receiver is the originator
                    _flip(c, zorig, st, prev, start, last, ackq, closed, fin_cnt, fin_seq,
                          h_syn, h_fin, h_rst, cnt, thr, lr, trim, skip, blk, nblk,
                          first_seen)
                    hist[c, 0] = L_FLIP
                    hist[c, 1] = L_H + 16
                    hlen[c] = 2
                    first_seen[c] |= 1
                    e = 1 - e
                _check(c, e, HS_DATA if code == L_D else HS_ACK, code, seen, hist, hlen)
        p = 1 - e

        # update_window: a zero window
        if (wins[r] == 0 and (f & RST) == 0 and st[c, p] != CLOSED and st[c, e] != RESET):
            _scaled(c, e, 1, L_W, cnt, thr, hist, hlen)

        if not (closed[c, 0] and closed[c, 1]):
            t_last[c] = now
        if f & FIN:
            fin_cnt[c, e] += 1
            fin_seq[c, e] = rel + seg_len

        rel_ack = np.int64(0)
        if f & ACK:
            if st[c, p] == INACTIVE:
                rel_ack = 1
                start[c, p] = (ack - 1) & M32
                ackq[c, p] = start[c, p]
                last[c, p] = start[c, p]
            else:
                rel_ack = _s32(ack - start[c, p])
                if rel_ack < 0:
                    rel_ack = 0
                elif (f & RST) == 0:
                    d = _s32(ack - ackq[c, p])
                    if not (ack == 0 and d > 1048576) and d > 0:
                        ackq[c, p] = ack

        # update_last_seq
        dl = _s32(past - last[c, e])
        if (f & (SYN | RST)) and (dl > 1048576 or dl < -1048576):
            pass
        elif (f & FIN) and last[c, e] == ((start[c, e] + 1) & M32):
            last[c, e] = past
        elif st[c, e] == RESET:
            pass
        elif dl > 0:
            last[c, e] = past
        elif plen > 0:
            _scaled(c, e, 0, L_T, cnt, thr, hist, hlen)

        # the state machine
        do_close = False
        se = st[c, e]
        sp = st[c, p]
        if se == INACTIVE:
            if f & SYN:
                if e == 0:
                    _set(c, e, SYN_ACK_SENT if f & ACK else SYN_SENT, st, prev)
                    t_attempt[c] = now + ATTEMPT_DELAY
                else:
                    if (f & ACK) == 0 and sp == SYN_ACK_SENT and seq == start[c, e]:
                        # a SYN answering the originator's SYN-ACK: flip
                        partial[c] = False
                        _flip(c, zorig, st, prev, start, last, ackq, closed, fin_cnt,
                              fin_seq, h_syn, h_fin, h_rst, cnt, thr, lr, trim, skip, blk,
                              nblk, first_seen)
                        if hlen[c] < MAX_HISTORY:
                            hist[c, hlen[c]] = L_FLIP
                            hlen[c] += 1
                        e, p = p, e
                        _set(c, p, ESTABLISHED, st, prev)
                        first_seen[c] |= 1
                    if st[c, p] == SYN_SENT:
                        _set(c, p, ESTABLISHED, st, prev)
                    _set(c, e, ESTABLISHED, st, prev)
            if f & FIN:
                _set(c, e, CLOSED, st, prev)
                do_close = True
            if f & RST:
                _set(c, e, RESET, st, prev)
                do_close = True
            if st[c, e] == INACTIVE:
                if e == 1 and plen == 0 and st[c, 0] == SYN_SENT:
                    pass
                elif (f & ACK) and st[c, p] == ESTABLISHED:
                    _set(c, e, ESTABLISHED, st, prev)
                    partial[c] = False
                    first_seen[c] |= 1 if e == 0 else 2
                else:
                    _set(c, e, PARTIAL, st, prev)
        elif se == SYN_SENT or se == SYN_ACK_SENT:
            if f & FIN:
                _set(c, e, CLOSED, st, prev)
                do_close = True
            if f & RST:
                _set(c, e, RESET, st, prev)
                do_close = True
        elif se == ESTABLISHED or se == PARTIAL:
            if ((f & SYN) and se == PARTIAL and sp == INACTIVE and (f & ACK) == 0):
                _set(c, e, SYN_SENT, st, prev)
            if (f & FIN) and (f & RST) == 0:
                _set(c, e, CLOSED, st, prev)
                if st[c, p] == RESET and prev[c, p] == CLOSED:
                    _set(c, p, CLOSED, st, prev)
                do_close = True
            if f & RST:
                _set(c, e, RESET, st, prev)
                do_close = True
        elif se == CLOSED:
            if (f & RST) and st[c, p] != CLOSED:
                _set(c, e, RESET, st, prev)
                if not closed[c, e]:
                    do_close = True

        # content gaps: the peer's data acknowledged past what was seen
        if f & ACK:
            a = rel_ack
            if fin_cnt[c, p] > 0 and a >= fin_seq[c, p]:
                a = fin_seq[c, p] - 1
            if a > trim[c, p]:
                if a > lr[c, p] and not (a <= 2 and partial[c]) and not skip[c, p]:
                    clean = (_clean(st[c, p], prev[c, p]) and _clean(st[c, e], prev[c, e]))
                    lo = lr[c, p]
                    for j in range(nblk[c, p]):
                        bs, be = blk[c, p, j, 0], blk[c, p, j, 1]
                        if be <= lo:
                            continue
                        if bs >= a:
                            break
                        if bs > lo and clean:
                            _scaled(c, p, 2, L_G, cnt, thr, hist, hlen)
                        lo = max(lo, be)
                    if a > lo and clean:
                        _scaled(c, p, 2, L_G, cnt, thr, hist, hlen)
                    lr[c, p] = max(lo, a)
                # drop the blocks now behind
                m = 0
                for j in range(nblk[c, p]):
                    if blk[c, p, j, 1] > a:
                        blk[c, p, m, 0] = max(blk[c, p, j, 0], a)
                        blk[c, p, m, 1] = blk[c, p, j, 1]
                        m += 1
                nblk[c, p] = m
                trim[c, p] = a

        # data: into the reassembler of its sender
        if plen > 0 and (f & RST) == 0 and not underflow and not skip[c, e]:
            ds = rel + 1 if f & SYN else rel
            de = ds + plen
            acked = _s32(ackq[c, e] - start[c, e])
            if ds < acked:
                ds = acked
            ds = max(ds, trim[c, e])
            if de > ds:
                _insert(c, e, ds, de, blk, nblk, lr)
                held = 0
                for j in range(nblk[c, e]):
                    held += blk[c, e, j, 1] - blk[c, e, j, 0]
                nda = ackq[c, e] == start[c, e] or ackq[c, e] == ((start[c, e] + 1) & M32)
                if nda and held > MAX_ABOVE_HOLE:
                    skip[c, e] = True
                    nblk[c, e] = 0

        if do_close and not closed[c, e]:
            closed[c, e] = True
            if st[c, e] == RESET or closed[c, p] or st[c, p] == INACTIVE:
                t_delete[c] = t_last[c] + CLOSE_DELAY

    for c in range(n_conv):
        if alive[c] and n_zeek[c] == 1:
            _record_first(c, st, prev, start, last, ackq, fin_cnt, hist, hlen, zorig,
                          out_cs, out_hist, out_hlen, out_orig)
    return ZeekResult(history=out_hist, history_len=out_hlen, conn_state=out_cs,
                      originator=out_orig, connections=n_zeek)


@kernel
def _record_first(c, st, prev, start, last, ackq, fin_cnt, hist, hlen, zorig,
                  out_cs, out_hist, out_hlen, out_orig):
    """The stream's first Zeek connection is over (or the capture is): its conn_state from
    both endpoints' final states and sizes, its history and originator."""
    sz0 = _size(st[c], prev[c], start[c], last[c], ackq[c], fin_cnt[c], 0)
    sz1 = _size(st[c], prev[c], start[c], last[c], ackq[c], fin_cnt[c], 1)
    out_cs[c] = _conn_state(st[c], np.array([sz0, sz1]), hist[c], hlen[c])
    out_hist[c] = hist[c]
    out_hlen[c] = hlen[c]
    out_orig[c] = zorig[c]


@kernel
def _clean(s, pv):
    return s == ESTABLISHED or (s == CLOSED and pv == ESTABLISHED)


@kernel
def _size(st, prev, start, last, ackq, fin_cnt, ro):
    peer = 1 - ro
    nda = ackq[ro] == start[ro] or ackq[ro] == ((start[ro] + 1) & M32)
    if prev[ro] == SYN_SENT and st[ro] == RESET and st[peer] == INACTIVE and not nda:
        return 0
    a = (last[ro] - start[ro]) & M32
    b = (ackq[ro] - start[ro]) & M32
    size = max(a, b)
    if size != 0:
        size -= 1
    if fin_cnt[ro] > 0 and size != 0:
        size -= 1
    return size


@kernel
def _set(c, ro, new, st, prev):
    if st[c, ro] != new:
        prev[c, ro] = st[c, ro]
        st[c, ro] = new


@kernel
def _add(c, ro, code, hist, hlen):
    if hlen[c] < MAX_HISTORY:
        hist[c, hlen[c]] = code + (16 if ro else 0)
        hlen[c] += 1


@kernel
def _check(c, ro, mask, code, seen, hist, hlen):
    """Zeek's CheckHistory: True if this letter was seen from this role before, else
    record it (and return False)."""
    m = mask << 16 if ro else mask
    if seen[c] & m:
        return True
    seen[c] |= m
    _add(c, ro, code, hist, hlen)
    return False


@kernel
def _scaled(c, ro, j, code, cnt, thr, hist, hlen):
    cnt[c, ro, j] += 1
    if cnt[c, ro, j] == thr[c, ro, j]:
        _add(c, ro, code, hist, hlen)
        thr[c, ro, j] *= 10


@kernel
def _insert(c, ro, s, e, blk, nblk, lr):
    """Add the bytes [s, e) to a side's reassembler: deliver what continues the stream,
    keep the rest as sorted, merged blocks (the last two merge when full)."""
    n = nblk[c, ro]
    # insert sorted, merging overlaps
    j = 0
    while j < n and blk[c, ro, j, 1] < s:
        j += 1
    if j < n and blk[c, ro, j, 0] <= e:
        blk[c, ro, j, 0] = min(blk[c, ro, j, 0], s)
        blk[c, ro, j, 1] = max(blk[c, ro, j, 1], e)
        while j + 1 < n and blk[c, ro, j + 1, 0] <= blk[c, ro, j, 1]:
            blk[c, ro, j, 1] = max(blk[c, ro, j, 1], blk[c, ro, j + 1, 1])
            for q in range(j + 1, n - 1):
                blk[c, ro, q, 0] = blk[c, ro, q + 1, 0]
                blk[c, ro, q, 1] = blk[c, ro, q + 1, 1]
            n -= 1
    else:
        if n == NBLK:
            blk[c, ro, n - 2, 1] = blk[c, ro, n - 1, 1]
            n -= 1
            if j > n:
                j = n
        for q in range(n, j, -1):
            blk[c, ro, q, 0] = blk[c, ro, q - 1, 0]
            blk[c, ro, q, 1] = blk[c, ro, q - 1, 1]
        blk[c, ro, j, 0] = s
        blk[c, ro, j, 1] = e
        n += 1
    # deliver from the front
    while n > 0 and blk[c, ro, 0, 0] <= lr[c, ro]:
        lr[c, ro] = max(lr[c, ro], blk[c, ro, 0, 1])
        for q in range(n - 1):
            blk[c, ro, q, 0] = blk[c, ro, q + 1, 0]
            blk[c, ro, q, 1] = blk[c, ro, q + 1, 1]
        n -= 1
    nblk[c, ro] = n


@kernel
def _flip(c, zorig, st, prev, start, last, ackq, closed, fin_cnt, fin_seq, h_syn, h_fin,
          h_rst, cnt, thr, lr, trim, skip, blk, nblk, first_seen):
    """Swap originator and responder (the history-seen mask stays as it is, as Zeek's)."""
    zorig[c] = 1 - zorig[c]
    for a in (st, prev, start, last, ackq, fin_cnt, fin_seq, h_syn, h_fin, h_rst, lr, trim,
              nblk):
        x = a[c, 0]
        a[c, 0] = a[c, 1]
        a[c, 1] = x
    for a in (closed, skip):
        y = a[c, 0]
        a[c, 0] = a[c, 1]
        a[c, 1] = y
    for j in range(3):
        x = cnt[c, 0, j]
        cnt[c, 0, j] = cnt[c, 1, j]
        cnt[c, 1, j] = x
        x = thr[c, 0, j]
        thr[c, 0, j] = thr[c, 1, j]
        thr[c, 1, j] = x
    for j in range(NBLK):
        for q in range(2):
            x = blk[c, 0, j, q]
            blk[c, 0, j, q] = blk[c, 1, j, q]
            blk[c, 1, j, q] = x
    fs = first_seen[c]
    first_seen[c] = (2 if fs & 1 else 0) | (1 if fs & 2 else 0)


def history_text(hist: np.ndarray, hlen: np.ndarray) -> list[str]:
    out = []
    for row, m in zip(hist.tolist(), hlen.tolist()):
        out.append("".join(LETTERS[x] if x < 16 else LETTERS[x - 16].lower()
                           for x in row[:m]))
    return out


def conn_state_text(cs: np.ndarray) -> list[str]:
    return [CONN_STATES[x] if x >= 0 else "OTH" for x in cs.tolist()]
