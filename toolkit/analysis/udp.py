"""UDP conversations: numbering, per-direction statistics, jitter, and lab-flow accounting.

Theory of operation
-------------------
A UDP datagram (RFC 768) with its header decoded, outside an IP fragment, belongs to the
conversation of its unordered endpoint pair; conversations are numbered in order of first
appearance, as tshark numbers udp.stream. A = the sender of the conversation's first
datagram (Wireshark's Conversations dialog does the same).

Per direction: datagrams, bytes, rate, inter-arrival statistics, and the RFC 3550 (section
6.4.1, appendix A.8) interarrival jitter when the datagrams carry a send time:
- the lab header (toolkit.wire): send_ns, in ns;
- RTP (RFC 3550 section 5.1): version 2, one SSRC for the direction, a static payload type
  whose clock rate RFC 3551 fixes; the RTP timestamp, in clock ticks.
Otherwise jitter is NaN and `jitter_source` says 'none'.

Flows that carry the lab header are also scored: loss, duplicates, reordering (RFC 4737
section 3: a datagram is reordered when its sequence number is below the next expected,
i.e. the highest seen so far + 1) and one-way delay (arrival - send_ns; meaningful only when
sender and capture share a clock, as on one machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from .. import wire
from ..pcap.columns import FRAG_NONE, L4_UDP
from .addresses import addresses_text
from .conversation_keys import pair_ids

# RFC 3551 section 6: static payload types and their clock rates
RTP_CLOCK = {0: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000, 9: 8000,
             10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
             17: 22050, 18: 8000, 25: 90000, 26: 90000, 28: 90000, 31: 90000, 32: 90000,
             33: 90000, 34: 90000}


@dataclass
class UdpResult:
    stream: np.ndarray               # per frame, -1 when not a UDP datagram
    conversations: pd.DataFrame
    flows: pd.DataFrame              # lab-header flows


@njit(cache=True)
def _direction_stats(order, group, ts, send, rate, n_groups):
    """Inter-arrival statistics and RFC 3550 jitter per group (datagrams in arrival order).

    send: sender timestamps in the group's own unit (ns, or RTP ticks); rate: ticks per
    second of that unit (0: no sender time). Jitter is returned in ns.
    """
    cnt = np.zeros(n_groups, np.int64)
    first = np.zeros(n_groups, np.int64)
    last = np.zeros(n_groups, np.int64)
    gap_sum = np.zeros(n_groups)
    gap_sq = np.zeros(n_groups)
    gap_min = np.full(n_groups, np.inf)
    gap_max = np.zeros(n_groups)
    jitter = np.zeros(n_groups)
    prev_s = np.zeros(n_groups, np.int64)
    for i in range(order.shape[0]):
        k = order[i]
        g = group[k]
        t = ts[k]
        if cnt[g] > 0:
            gap = (t - last[g]) / 1e6
            gap_sum[g] += gap
            gap_sq[g] += gap * gap
            gap_min[g] = min(gap_min[g], gap)
            gap_max[g] = max(gap_max[g], gap)
            r = rate[g]
            if r > 0:
                # D(i-1, i) = (Rj - Ri) - (Sj - Si), both in the sender's clock units
                ds = send[k] - prev_s[g]
                if r != 1_000_000_000:          # RTP timestamps wrap at 2**32
                    ds = ds & 0xFFFFFFFF
                    if ds >= 1 << 31:
                        ds -= 1 << 32
                d = (t - last[g]) * r / 1e9 - ds
                jitter[g] += (abs(d) - jitter[g]) / 16.0
        else:
            first[g] = t
        cnt[g] += 1
        last[g] = t
        prev_s[g] = send[k]
    for g in range(n_groups):
        if rate[g] > 0:
            jitter[g] = jitter[g] / rate[g] * 1e9
        else:
            jitter[g] = np.nan
    return cnt, first, last, gap_sum, gap_sq, gap_min, gap_max, jitter


@njit(cache=True)
def _sequence_stats(order, group, seq, dup, n_groups):
    """RFC 4737 reordering per group, datagrams in arrival order; duplicates (dup) are
    left out, as section 3.3 of the RFC asks."""
    received = np.zeros(n_groups, np.int64)
    lo = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n_groups, -1, np.int64)
    reordered = np.zeros(n_groups, np.int64)
    max_extent = np.zeros(n_groups, np.int64)
    for i in range(order.shape[0]):
        k = order[i]
        g = group[k]
        s = seq[k]
        received[g] += 1
        if dup[k]:
            continue
        if hi[g] >= 0 and s < hi[g] + 1:       # below NextExp: reordered (or duplicate)
            reordered[g] += 1
            max_extent[g] = max(max_extent[g], hi[g] - s)
        hi[g] = max(hi[g], s)
        lo[g] = min(lo[g], s)
    return received, lo, hi, reordered, max_extent


def udp_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero((cols["l4"] == L4_UDP) & (cols["ip_frag"] == FRAG_NONE))


def analyze_udp(cols: dict[str, np.ndarray]) -> UdpResult:
    n = len(cols["ts_ns"])
    rows = udp_rows(cols)
    stream_of = np.full(n, -1, np.int64)
    pair, n_conv = pair_ids(cols, rows)
    stream_of[rows] = pair
    if n_conv == 0:
        return UdpResult(stream_of, _empty_conversations(), _empty_flows())
    m = len(rows)
    first_k = np.full(n_conv, m, np.int64)
    np.minimum.at(first_k, pair, np.arange(m))
    fr = rows[first_k]
    # direction: 0 when this datagram goes the way the conversation's first one went
    same_src = ((cols["src_hi"][rows] == cols["src_hi"][fr[pair]])
                & (cols["src_lo"][rows] == cols["src_lo"][fr[pair]])
                & (cols["sport"][rows] == cols["sport"][fr[pair]]))
    direction = np.where(same_src, 0, 1)
    group = pair * 2 + direction
    ts = cols["ts_ns"][rows]

    # sender clocks: the lab header first, RTP second
    heads = _heads_by_row(cols, rows)
    lab = wire.decode_heads(heads["head"], heads["len"])
    send = np.where(lab["valid"], lab["send_ns"], 0).astype(np.int64)
    rate = np.zeros(2 * n_conv, np.int64)
    source = np.full(2 * n_conv, "none", object)
    lab_groups = np.unique(group[lab["valid"]])
    lab_share = np.bincount(group, weights=lab["valid"], minlength=2 * n_conv)
    counts = np.bincount(group, minlength=2 * n_conv)
    lab_dir = (counts > 0) & (lab_share == counts)
    rate[lab_dir] = 1_000_000_000
    source[lab_dir] = "lab"
    rtp_send, rtp_rate = _rtp_clock(heads, group, 2 * n_conv)
    use_rtp = (~lab_dir) & (rtp_rate > 0)
    rate[use_rtp] = rtp_rate[use_rtp]
    source[use_rtp] = "rtp"
    send = np.where(use_rtp[group], rtp_send, send)

    order = np.arange(m)
    cnt, first, last, gsum, gsq, gmin, gmax, jit = _direction_stats(
        order, group, ts, send, rate, 2 * n_conv)
    wirelen = cols["wirelen"][rows].astype(np.float64)
    payload = cols["paylen"][rows].astype(np.float64)
    frame_bytes = np.bincount(group, weights=wirelen, minlength=2 * n_conv)
    pay_bytes = np.bincount(group, weights=payload, minlength=2 * n_conv)
    conv_first = np.minimum(np.where(cnt[0::2] > 0, first[0::2], np.iinfo(np.int64).max),
                            np.where(cnt[1::2] > 0, first[1::2], np.iinfo(np.int64).max))
    conv_last = np.maximum(np.where(cnt[0::2] > 0, last[0::2], 0),
                           np.where(cnt[1::2] > 0, last[1::2], 0))
    t0 = int(cols["ts_ns"][0])
    dur = (conv_last - conv_first) / 1e9
    gaps = np.maximum(cnt - 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(gaps > 0, gsum / gaps, np.nan)
        std = np.where(gaps > 0, np.sqrt(np.maximum(gsq / gaps - mean ** 2, 0)), np.nan)
        span = (last - first) / 1e9
        bps = np.where(span > 0, pay_bytes * 8 / span, np.nan)
    gmin = np.where(gaps > 0, gmin, np.nan)
    gmax = np.where(gaps > 0, gmax, np.nan)

    def d(a, i):
        return a[i::2]

    conv = pd.DataFrame({
        "stream": np.arange(n_conv),
        "a_addr": addresses_text(cols["src_hi"][fr], cols["src_lo"][fr]),
        "a_port": cols["sport"][fr].astype(np.int64),
        "b_addr": addresses_text(cols["dst_hi"][fr], cols["dst_lo"][fr]),
        "b_port": cols["dport"][fr].astype(np.int64),
        "start": (conv_first - t0) / 1e9, "duration": dur,
    })
    for i, tag in ((0, "a_to_b"), (1, "b_to_a")):
        conv[f"datagrams_{tag}"] = d(cnt, i)
        conv[f"bytes_{tag}"] = d(frame_bytes, i).astype(np.int64)
        conv[f"payload_{tag}"] = d(pay_bytes, i).astype(np.int64)
        conv[f"rate_bps_{tag}"] = d(bps, i)
        conv[f"iat_mean_ms_{tag}"] = d(mean, i)
        conv[f"iat_std_ms_{tag}"] = d(std, i)
        conv[f"iat_min_ms_{tag}"] = d(gmin, i)
        conv[f"iat_max_ms_{tag}"] = d(gmax, i)
        conv[f"jitter_ms_{tag}"] = d(jit, i) / 1e6
        conv[f"jitter_source_{tag}"] = d(source, i)
    flows = _lab_flows(cols, rows, pair, direction, lab, ts) if len(lab_groups) else _empty_flows()
    return UdpResult(stream_of, conv, flows)


def _heads_by_row(cols, rows):
    """The captured payload heads of `rows` (zeros where none)."""
    head_rows = cols.get("udp_rows", np.zeros(0, np.int64))
    heads = cols.get("udp_head", np.zeros((0, 32), np.uint8))
    lens = cols.get("udp_head_len", np.zeros(0, np.uint8))
    pos = np.searchsorted(head_rows, rows)
    pos = np.minimum(pos, max(len(head_rows) - 1, 0))
    ok = (len(head_rows) > 0) & (head_rows[pos] == rows) if len(head_rows) else np.zeros(
        len(rows), bool)
    width = heads.shape[1] if heads.ndim == 2 else 32
    head = np.zeros((len(rows), width), np.uint8)
    hl = np.zeros(len(rows), np.int64)
    if len(head_rows):
        head[ok] = heads[pos[ok]]
        hl[ok] = lens[pos[ok]]
    return {"head": head, "len": hl}


def _rtp_clock(heads, group, n_groups):
    """RTP timestamps and clock rates for directions that are one RTP stream."""
    h = heads["head"]
    k = len(h)
    send = np.zeros(k, np.int64)
    rate = np.zeros(n_groups, np.int64)
    if k == 0:
        return send, rate
    v2 = (heads["len"] >= 12) & ((h[:, 0] >> 6) == 2)
    pt = (h[:, 1] & 0x7F).astype(np.int64)
    ts = (h[:, 4].astype(np.int64) << 24 | h[:, 5].astype(np.int64) << 16
          | h[:, 6].astype(np.int64) << 8 | h[:, 7].astype(np.int64))
    ssrc = (h[:, 8].astype(np.int64) << 24 | h[:, 9].astype(np.int64) << 16
            | h[:, 10].astype(np.int64) << 8 | h[:, 11].astype(np.int64))
    send[:] = ts
    for g in np.unique(group[v2]):
        sel = group == g
        if not v2[sel].all() or sel.sum() < 2:
            continue
        pts, ssrcs = np.unique(pt[sel]), np.unique(ssrc[sel])
        if len(pts) == 1 and len(ssrcs) == 1 and int(pts[0]) in RTP_CLOCK:
            rate[g] = RTP_CLOCK[int(pts[0])]
    return send, rate


def _lab_flows(cols, rows, pair, direction, lab, ts) -> pd.DataFrame:
    valid = lab["valid"]
    k = np.flatnonzero(valid)
    keys = np.stack([pair[k], direction[k], lab["flow"][k]], axis=1)
    uniq, gid = np.unique(keys, axis=0, return_inverse=True)
    gid = gid.reshape(-1)
    g = len(uniq)
    pairs = np.stack([gid, lab["seq"][k]], axis=1)
    unique_seq, first_idx = np.unique(pairs, axis=0, return_index=True)
    dup = np.ones(len(k), bool)
    dup[first_idx] = False            # the first arrival of a sequence number is the original
    received, lo, hi, reordered, extent = _sequence_stats(
        np.arange(len(k)), gid, lab["seq"][k], dup, g)
    distinct = np.bincount(unique_seq[:, 0], minlength=g)
    expected = hi - lo + 1
    owd = (ts[k] - lab["send_ns"][k]) / 1e6
    owd_mean = np.bincount(gid, weights=owd, minlength=g) / np.maximum(received, 1)
    owd_min = np.full(g, np.inf)
    np.minimum.at(owd_min, gid, owd)
    owd_max = np.full(g, -np.inf)
    np.maximum.at(owd_max, gid, owd)
    return pd.DataFrame({
        "stream": uniq[:, 0], "direction": np.where(uniq[:, 1] == 0, "a_to_b", "b_to_a"),
        "flow": uniq[:, 2], "received": received, "distinct": distinct,
        "first_seq": lo, "last_seq": hi, "lost": expected - distinct,
        "loss_ratio": (expected - distinct) / expected, "duplicates": received - distinct,
        "reordered": reordered, "reordered_ratio": reordered / received,
        "reorder_extent_max": extent,
        "owd_ms_mean": owd_mean, "owd_ms_min": owd_min, "owd_ms_max": owd_max,
    })


def _empty_conversations() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("stream", "a_addr", "a_port", "b_addr", "b_port",
                                         "start", "duration")})


def _empty_flows() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("stream", "direction", "flow", "received", "lost",
                                         "duplicates", "reordered")})
