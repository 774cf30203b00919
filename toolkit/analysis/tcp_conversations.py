"""One row per TCP conversation: who, how much, how it opened and closed, what went wrong.

Theory of operation
-------------------
The per-segment pass (tcp_sequence) has numbered the conversations. Here:
- sums per conversation and direction are bincounts over the stream numbers;
- Zeek's view of the conversation (zeek_conn) gives its history, conn_state and
  originator: "A" is Zeek's originator of the first Zeek connection in the stream (the
  sender of the SYN; for a conversation joined mid-stream, Zeek's guess, see zeek_conn);
- one more compiled walk over the segments builds what is order-dependent: the handshake
  times, zero-window time, and each endpoint's TCP state (RFC 9293 section 3.3.2) as
  inferred from the segments seen.

The state of an endpoint is inferred from this vantage point: a segment changes its
sender's state when it is seen, and its receiver's state at the same moment (the capture
cannot see the receiver's own clock). A conversation first seen mid-stream starts with
both endpoints ESTABLISHED.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import verdicts as V
from .addresses import addresses_text
from .table import Table
from .tcp import TcpSegments
from .zeek_conn import SERVER_PORT, conn_state_text, history_text, zeek_walk
from ..pcap.jit import helper, kernel

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
M32 = 0xFFFFFFFF

# RFC 9293 section 3.3.2 states, in the order of the state diagram
STATES = ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
          "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")
(CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
 CLOSING, LAST_ACK, TIME_WAIT) = range(len(STATES))

# the walk's result by name (built by keyword inside it): twenty-one arrays in a positional
# tuple let a reordering swap two columns without an error
WalkResult = namedtuple("WalkResult", [
    "syn_t", "synack_t", "ack_t", "zw_time", "zw_since", "first_fin", "rst_from", "cflags",
    "tr_c", "tr_s", "tr_k", "tr_v", "pk", "fb", "pl", "fresh", "counts", "first_ts",
    "last_ts", "first_k", "opts"])


@kernel
def _walk(rows, stream, flow, bits, ts, tflags, seqs, acks, paylens, wins, wirelen, mss,
          wscale, sackperm, has_ts, count_bits, orig, n_conv):
    """One pass over the segments (rows: their frame rows; stream, flow, bits: per
    segment) for everything order-dependent, and the sums per conversation and side;
    orig: each conversation's A side as a flow value."""
    n = stream.shape[0]
    syn_t = np.full(n_conv, -1, np.int64)
    synack_t = np.full(n_conv, -1, np.int64)
    ack_t = np.full(n_conv, -1, np.int64)
    zw_since = np.full((n_conv, 2), -1, np.int64)
    zw_time = np.zeros(n_conv, np.int64)
    first_fin = np.full(n_conv, -1, np.int64)       # side (0 = A, 1 = B)
    rst_from = np.zeros(n_conv, np.int64)           # bit 1 = A, bit 2 = B
    cflags = np.zeros((n_conv, 2), np.int64)        # per side: 1 SYN, 2 SYN-ACK, 4 FIN, 8 RST
    state = np.full((n_conv, 2), -1, np.int64)
    fin_end = np.full((n_conv, 2), -1, np.int64)    # seq just past a side's FIN
    # state transitions: conversation, side, row, new state
    tr_c = np.empty(1024, np.int64)
    tr_s = np.empty(1024, np.int64)
    tr_k = np.empty(1024, np.int64)
    tr_v = np.empty(1024, np.int64)
    nt = 0
    # sums per conversation and side, verdict counts, each side's first SYN options
    pk = np.zeros((n_conv, 2), np.int64)
    fb = np.zeros((n_conv, 2), np.int64)
    pl = np.zeros((n_conv, 2), np.int64)
    fresh = np.zeros((n_conv, 2), np.int64)
    counts = np.zeros((n_conv, count_bits.shape[0]), np.int64)
    first_ts = np.full(n_conv, np.iinfo(np.int64).max, np.int64)
    last_ts = np.full(n_conv, np.iinfo(np.int64).min, np.int64)
    first_k = np.full(n_conv, -1, np.int64)
    syn = np.zeros((n_conv, 2), np.int64)       # 1 once a side's first SYN was seen
    opts = np.full((n_conv, 2, 5), -1, np.int64)  # isn, mss, wscale, sackperm, timestamps

    # The transition table grows between runs of segments that cannot fill it (a segment
    # changes at most two states), never inside the per-segment loop: numba counts
    # references to an array variable reassigned in a loop on every turn of it.
    start = 0
    while start < n:
        room = (tr_c.shape[0] - nt) // 2
        if room < 1:
            tr_c = _grow(tr_c, 2 * tr_c.shape[0])
            tr_s = _grow(tr_s, 2 * tr_s.shape[0])
            tr_k = _grow(tr_k, 2 * tr_k.shape[0])
            tr_v = _grow(tr_v, 2 * tr_v.shape[0])
            continue
        stop = min(n, start + room)
        for k in range(start, stop):
            r = rows[k]
            c = stream[k]
            side = 0 if flow[k] == orig[c] else 1
            other = 1 - side
            f = np.int64(tflags[r])
            now = ts[r]
            paylen = np.int64(paylens[r])
            win = np.int64(wins[r])
            b = np.int64(bits[k])

            pk[c, side] += 1
            fb[c, side] += wirelen[r]
            pl[c, side] += paylen
            if (b & V.ANY_RETRANSMISSION) == 0:
                fresh[c, side] += paylen
            if b:
                for j in range(count_bits.shape[0]):
                    if b & count_bits[j]:
                        counts[c, j] += 1
            first_ts[c] = min(first_ts[c], now)
            last_ts[c] = max(last_ts[c], now)
            if first_k[c] < 0:
                first_k[c] = k
            if (f & SYN) and syn[c, side] == 0:
                syn[c, side] = 1
                opts[c, side, 0] = seqs[r]
                opts[c, side, 1] = mss[r]
                opts[c, side, 2] = wscale[r]
                opts[c, side, 3] = sackperm[r]
                opts[c, side, 4] = has_ts[r]

            # handshake times
            if (f & (SYN | ACK)) == SYN and side == 0 and syn_t[c] < 0:
                syn_t[c] = now
            elif (f & (SYN | ACK)) == (SYN | ACK) and side == 1 and synack_t[c] < 0:
                synack_t[c] = now
            elif ((f & (SYN | ACK)) == ACK and side == 0 and synack_t[c] >= 0 and ack_t[c] < 0):
                ack_t[c] = now

            # zero-window time: from a zero window until that side opens it again
            if (f & (SYN | FIN | RST)) == 0:
                if win == 0:
                    if zw_since[c, side] < 0:
                        zw_since[c, side] = now
                elif zw_since[c, side] >= 0:
                    zw_time[c] += now - zw_since[c, side]
                    zw_since[c, side] = -1

            # conn_state ingredients
            if (f & (SYN | ACK)) == SYN:
                cflags[c, side] |= 1
            if (f & (SYN | ACK)) == (SYN | ACK):
                cflags[c, side] |= 2
            if f & FIN:
                cflags[c, side] |= 4
                if first_fin[c] < 0:
                    first_fin[c] = side
            if f & RST:
                cflags[c, side] |= 8
                rst_from[c] |= 1 << side

            # RFC 9293 states of both endpoints, as this segment shows them
            s_old = state[c, side]
            o_old = state[c, other]
            if s_old < 0:
                # first segment of the conversation: a SYN starts from CLOSED/LISTEN,
                # anything else is a conversation joined mid-stream
                if (f & (SYN | ACK)) == SYN:
                    s_old, o_old = CLOSED, LISTEN
                elif (f & (SYN | ACK)) == (SYN | ACK):
                    s_old, o_old = LISTEN, SYN_SENT
                else:
                    s_old, o_old = ESTABLISHED, ESTABLISHED
            s_new, o_new = s_old, o_old
            if f & RST:
                s_new, o_new = CLOSED, CLOSED
            else:
                if (f & (SYN | ACK)) == SYN:
                    s_new = SYN_SENT
                    if o_new == CLOSED:
                        o_new = LISTEN
                elif (f & (SYN | ACK)) == (SYN | ACK):
                    s_new = SYN_RECEIVED
                    o_new = ESTABLISHED if o_new in (SYN_SENT, LISTEN, CLOSED) else o_new
                elif f & ACK:
                    if s_new == SYN_SENT:
                        s_new = ESTABLISHED
                    if o_new == SYN_RECEIVED:
                        o_new = ESTABLISHED
                    # the ACK covers the other side's FIN
                    fe = fin_end[c, other]
                    if fe >= 0 and ((np.int64(acks[r]) - fe) & M32) < (1 << 31):
                        if o_new == FIN_WAIT_1:
                            o_new = FIN_WAIT_2
                        elif o_new == CLOSING:
                            o_new = TIME_WAIT
                        elif o_new == LAST_ACK:
                            o_new = CLOSED
                if f & FIN:
                    fin_end[c, side] = (np.int64(seqs[r]) + paylen + 1) & M32
                    if s_new in (ESTABLISHED, SYN_RECEIVED):
                        s_new = FIN_WAIT_1
                    elif s_new == CLOSE_WAIT:
                        s_new = LAST_ACK
                    if o_new == ESTABLISHED:
                        o_new = CLOSE_WAIT
                    elif o_new == FIN_WAIT_1:
                        o_new = CLOSING
                    elif o_new == FIN_WAIT_2:
                        o_new = TIME_WAIT
            for sd, old, new in ((side, state[c, side], s_new), (other, state[c, other], o_new)):
                if old != new:
                    tr_c[nt] = c
                    tr_s[nt] = sd
                    tr_k[nt] = k
                    tr_v[nt] = new
                    nt += 1
                    state[c, sd] = new
        start = stop
    return WalkResult(syn_t=syn_t, synack_t=synack_t, ack_t=ack_t, zw_time=zw_time,
                      zw_since=zw_since, first_fin=first_fin, rst_from=rst_from,
                      cflags=cflags, tr_c=tr_c[:nt], tr_s=tr_s[:nt], tr_k=tr_k[:nt],
                      tr_v=tr_v[:nt], pk=pk, fb=fb, pl=pl, fresh=fresh, counts=counts,
                      first_ts=first_ts, last_ts=last_ts, first_k=first_k, opts=opts)


@helper
def _grow(a, n):
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


COUNTED = [("retransmissions", V.ANY_RETRANSMISSION),
           ("fast_retransmissions", V.FAST_RETRANSMISSION),
           ("spurious_retransmissions", V.SPURIOUS_RETRANSMISSION),
           ("out_of_order", V.OUT_OF_ORDER), ("lost_segments", V.LOST_SEGMENT),
           ("ack_lost_segments", V.ACK_LOST_SEGMENT), ("duplicate_acks", V.DUPLICATE_ACK),
           ("zero_windows", V.ZERO_WINDOW), ("keep_alives", V.KEEP_ALIVE)]
COUNT_BITS = np.array([b for _, b in COUNTED], np.int64)


def conversations(cols: dict[str, np.ndarray], seg: TcpSegments, t0_ns: int
                  ) -> tuple[Table, Table]:
    """(one row per TCP conversation, the endpoints' state transitions)."""
    n_conv = seg.n_streams
    rows = seg.rows
    z = zeek_walk(rows=rows, stream=seg.stream, flow=seg.flow, ts=cols["ts_ns"],
                  tflags=cols["tcp_flags"], seqs=cols["seq"], acks=cols["ack"],
                  paylens=cols["paylen"], wins=cols["win"], sport=cols["sport"],
                  dport=cols["dport"], server_port=SERVER_PORT, n_conv=n_conv)
    zhist, zhlen, zcs, orig, n_zeek = (z.history, z.history_len, z.conn_state, z.originator,
                                       z.connections)
    w = _walk(rows=rows, stream=seg.stream, flow=seg.flow, bits=seg.analysis,
              ts=cols["ts_ns"], tflags=cols["tcp_flags"], seqs=cols["seq"], acks=cols["ack"],
              paylens=cols["paylen"], wins=cols["win"], wirelen=cols["wirelen"],
              mss=cols["opt_mss"], wscale=cols["opt_wscale"], sackperm=cols["opt_sackperm"],
              has_ts=cols["has_ts"], count_bits=COUNT_BITS, orig=orig, n_conv=n_conv)
    syn_t, synack_t, ack_t = w.syn_t, w.synack_t, w.ack_t
    zw_time, zw_since, first_fin, rst_from = w.zw_time, w.zw_since, w.first_fin, w.rst_from
    cflags, fresh, counts, opts = w.cflags, w.fresh, w.counts, w.opts
    tr_c, tr_s, tr_k, tr_v = w.tr_c, w.tr_s, w.tr_k, w.tr_v
    pk, fb, pl = w.pk, w.fb, w.pl
    first_ts, last_ts, first_k = w.first_ts, w.last_ts, w.first_k
    # the A side's address: the first segment's source if A sent it, else its destination
    k0 = np.maximum(first_k, 0)
    fr = rows[k0]
    a_is_src = seg.flow[k0] == orig

    def pick(src, dst):
        return np.where(a_is_src, cols[src][fr], cols[dst][fr])

    a_hi, a_lo, a_port = pick("src_hi", "dst_hi"), pick("src_lo", "dst_lo"), pick("sport", "dport")
    b_hi, b_lo, b_port = pick("dst_hi", "src_hi"), pick("dst_lo", "src_lo"), pick("dport", "sport")
    dur_ns = np.maximum(last_ts - first_ts, 0)
    dur_s = dur_ns / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        goodput = np.where(dur_ns[:, None] > 0, fresh * 8 / dur_s[:, None], np.nan)
    isn = opts[:, :, 0]
    opt = {"mss": opts[:, :, 1], "wscale": opts[:, :, 2], "sack": opts[:, :, 3] == 1,
           "ts": opts[:, :, 4] == 1}

    def rel(t):
        return np.where(t >= 0, (t - t0_ns) / 1e9, np.nan)

    zw_open = np.where(zw_since >= 0, last_ts[:, None] - zw_since, 0).sum(axis=1)
    close = []
    side_name = ("A", "B")
    for ff, rf, cs in zip(first_fin.tolist(), rst_from.tolist(), cflags.tolist()):
        if rf:
            close.append("RST by " + "/".join(side_name[i] for i in (0, 1) if rf & (1 << i)))
        elif ff >= 0:
            both = (cs[0] & 4) and (cs[1] & 4)
            close.append(f"FIN by {side_name[ff]} first" + ("" if both else ", half-closed"))
        else:
            close.append("open")
    hs_rtt = np.where((syn_t >= 0) & (ack_t >= 0), (ack_t - syn_t) / 1e9, np.nan)

    df = Table({
        "stream": np.arange(n_conv),
        "a_addr": addresses_text(a_hi, a_lo), "a_port": a_port.astype(np.int64),
        "b_addr": addresses_text(b_hi, b_lo), "b_port": b_port.astype(np.int64),
        "start_s": rel(first_ts), "duration_s": dur_s,
        "packets_a_to_b": pk[:, 0], "packets_b_to_a": pk[:, 1],
        "bytes_a_to_b": fb[:, 0], "bytes_b_to_a": fb[:, 1],
        "payload_bytes_a_to_b": pl[:, 0], "payload_bytes_b_to_a": pl[:, 1],
        "goodput_a_to_b_bps": goodput[:, 0], "goodput_b_to_a_bps": goodput[:, 1],
        "syn_time_s": rel(syn_t), "synack_time_s": rel(synack_t), "ack_time_s": rel(ack_t),
        "handshake_rtt_s": hs_rtt,
        "isn_a": isn[:, 0], "isn_b": isn[:, 1],
        "mss_a": opt["mss"][:, 0], "mss_b": opt["mss"][:, 1],
        "wscale_a": opt["wscale"][:, 0], "wscale_b": opt["wscale"][:, 1],
        "sack_permitted": opt["sack"][:, 0] & opt["sack"][:, 1],
        "timestamps": opt["ts"][:, 0] & opt["ts"][:, 1],
        **{name: counts[:, j] for j, (name, _) in enumerate(COUNTED)},
        "zero_window_time_s": (zw_time + zw_open) / 1e9,
        "close": close,
        "history": history_text(zhist, zhlen),
        "conn_state": conn_state_text(zcs),
        "zeek_connections": n_zeek,
    })
    states = Table({
        "stream": tr_c,
        "endpoint": np.where(tr_s == 0, "A", "B"),
        "frame": rows[tr_k] + 1 if len(tr_k) else np.zeros(0, np.int64),
        "time_s": (cols["ts_ns"][rows[tr_k]] - t0_ns) / 1e9 if len(tr_k) else np.zeros(0),
        "state": [STATES[v] for v in tr_v.tolist()],
    })
    return df, states
