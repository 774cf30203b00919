"""UDP conversations: udp.stream numbering, per-direction statistics, jitter, lab flows.

Theory of operation
-------------------
A UDP datagram (RFC 768) whose header was decoded, and that is not an IP fragment, belongs
to the conversation of its unordered pair of endpoints (address, port). Conversations are
numbered in order of first appearance, as tshark 4.0 numbers `udp.stream`:

- a fragmented datagram is counted once, in the frame that completes its reassembly (the
  reader gives that frame the UDP header); the other fragments get no stream, and neither
  does a first fragment whose datagram is never completed;
- an ICMP or ICMPv6 error quoting a UDP header (RFC 792, RFC 4443) gets the stream of the
  quoted datagram's conversation, which it creates if the conversation is new: tshark 4.0
  dissects the quoted header like any other (checked live, see the tests). This needs the
  reader's optional quoted-header table (QUOTED_COLUMNS below); without it those frames
  get -1 where tshark has a number, and later conversations may be numbered lower;
- VLAN tags and capture interfaces are not part of the key (Wireshark 4.0 ignores them).

Known limit: tshark dissects UDP inside tunnels (IP in IP, GRE; and UDP in UDP such as
VXLAN, where a frame gets two udp.stream values); the reader decodes the outer headers only.

Address A is the sender of the conversation's first datagram (or of the datagram an ICMP
error quoted, when that came first), as in Wireshark's Conversations dialog; "a_to_b"
columns count what A sent.

Tables
------
`conversations`, one row per udp.stream: stream, a_addr, a_port, b_addr, b_port,
datagrams, bytes (frame bytes), start_s (since the capture's first frame), duration_s, and
for each direction D in a_to_b, b_to_a: datagrams_D, bytes_D (frame bytes),
payload_bytes_D, bitrate_D_bps (Wireshark's Bits/s: frame bytes * 8 / conversation
duration), goodput_D_bps (payload bits over the direction's own first..last datagram),
iat_{mean,std,min,p50,p99,max}_D_s, jitter_D_s (final RFC 3550 estimate), jitter_max_D_s
and jitter_mean_D_s (as Wireshark's RTP Streams reports them), jitter_source_D ('lab',
'rtp' or 'none'). Every column, with its unit: docs/columns.md.

`flows`, one row per (stream, direction, lab flow id): src/dst addr and port, flow,
received, distinct, first_seq, last_seq, expected, lost, loss_ratio, duplicates,
reordered, reordered_ratio, reorder_extent_max/mean, reorder_distance_max, jitter_s,
jitter_max_s, owd_{mean,std,min,p50,p99,max}_s.

Per direction: datagrams, frame bytes (frame.len) and UDP payload bytes, rates,
inter-arrival statistics (in frame order, as a receiver sees them), and the RFC 3550
interarrival jitter (section 6.4.1, appendix A.8) when the datagrams carry the sender's
clock:

- 'lab': every datagram of the direction starts with the lab header (toolkit.wire); the
  sender clock is send_ns, in ns;
- 'rtp': every datagram is RTP version 2 (RFC 3550 section 5.1) with one SSRC and one
  static payload type whose clock rate RFC 3551 fixes, and the RTP sequence numbers mostly
  step by one; the sender clock is the RTP timestamp, in clock ticks. This is stricter than
  Wireshark's RTP heuristic, so ordinary traffic is not mistaken for RTP;
- 'none': no sender clock, jitter is NaN.

Datagrams carrying the lab header are also scored per (conversation, direction, flow id)
in `flows`: loss, duplicates and RFC 4737 reordering (toolkit.analysis.sequence), jitter,
and one-way delay = capture time - send_ns. One-way delay is only meaningful when the
sender's clock and the capture's clock are the same clock (sender and capture on one
machine, e.g. network namespaces of one host); across machines it includes their clock
offset.

Everything is vector operations over the datagrams sorted by group, plus compiled loops
where the arithmetic is sequential (the jitter recursion, reordering): nothing per datagram
in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import wire
from ..pcap.columns import FRAG_NONE, L4_UDP, UDP_HEAD
from .addresses import addresses_text
from .conversation_keys import pair_ids
from .sequence import group_offsets, sequence_metrics
from .table import Table
from ..pcap.jit import kernel

__all__ = ["UdpResult", "analyze_udp", "udp_datagram_rows", "RTP_CLOCK"]

# RFC 3551 section 6: static payload types and their clock rates (Hz)
RTP_CLOCK = {0: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000, 9: 8000,
             10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
             17: 22050, 18: 8000, 25: 90000, 26: 90000, 28: 90000, 31: 90000, 32: 90000,
             33: 90000, 34: 90000}
_CLOCK_BY_PT = np.zeros(128, np.int64)
for _pt, _hz in RTP_CLOCK.items():
    _CLOCK_BY_PT[_pt] = _hz
RTP_MIN_DATAGRAMS = 2        # jitter needs two; one SSRC over two is already strong evidence
RTP_MIN_STEP_SHARE = 0.9     # share of RTP sequence steps that must be +1 ... +RTP_MAX_STEP
RTP_MAX_STEP = 16
NS = 1_000_000_000
DIRECTIONS = ("a_to_b", "b_to_a")


@dataclass
class UdpResult:
    frames: int                      # frames in the capture
    stream_rows: np.ndarray          # rows (frames - 1) that have a udp.stream ...
    stream_ids: np.ndarray           # ... and that udp.stream
    conversation_table: Table        # one row per conversation, a_to_b / b_to_a columns
    flow_table: Table                # one row per lab-header flow (conversation, direction)

    @cached_property
    def stream(self) -> np.ndarray:
        """Per frame: udp.stream, -1 when the frame has none (built on first use: 8 bytes
        a frame, for what is mostly -1)."""
        out = np.full(self.frames, -1, np.int64)
        out[self.stream_rows] = self.stream_ids
        return out

    @cached_property
    def conversations(self):
        """The conversations as a pandas DataFrame."""
        return self.conversation_table.to_frame()

    @cached_property
    def flows(self):
        """The lab-header flows as a pandas DataFrame."""
        return self.flow_table.to_frame()


def udp_datagram_rows(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Rows that carry a whole UDP datagram's header (fragments excepted)."""
    return np.flatnonzero((cols["l4"] == L4_UDP) & (cols["ip_frag"] == FRAG_NONE))


udp_rows = udp_datagram_rows     # older name


def analyze_udp(cols: dict[str, np.ndarray]) -> UdpResult:
    """UDP conversations of a capture's columns (toolkit.pcap.columns). Pure: no I/O."""
    n = len(cols["ts_ns"])
    rows = udp_datagram_rows(cols)
    m = len(rows)
    # endpoints of every frame that gets a udp.stream: datagrams, then ICMP errors quoting
    # a UDP header (when the reader provides them), merged in frame order
    quoted = _quoted_udp(cols)
    key_rows = np.concatenate([rows, quoted["rows"]])
    keys = {name: np.concatenate([cols[name][rows], quoted[name]])
            for name in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport")}
    by_frame = np.argsort(key_rows, kind="stable")
    keys = {name: v[by_frame] for name, v in keys.items()}
    ids, n_conv = pair_ids(keys, np.arange(len(key_rows), dtype=np.int64))
    key_pair = np.empty(len(key_rows), np.int64)
    key_pair[by_frame] = ids
    pair = key_pair[:m]
    n_groups = 2 * n_conv

    # the conversation's first appearance gives A; direction 1 is B -> A
    first = np.full(n_conv, len(key_rows), np.int64)
    np.minimum.at(first, ids, np.arange(len(key_rows)))
    a_hi, a_lo, a_port = keys["src_hi"][first], keys["src_lo"][first], keys["sport"][first]
    b_hi, b_lo, b_port = keys["dst_hi"][first], keys["dst_lo"][first], keys["dport"][first]
    same_src = ((cols["src_hi"][rows] == a_hi[pair]) & (cols["src_lo"][rows] == a_lo[pair])
                & (cols["sport"][rows] == a_port[pair]))
    direction = np.where(same_src, 0, 1).astype(np.int64)
    group = pair * 2 + direction
    ts = cols["ts_ns"][rows].astype(np.int64)
    order, offsets = group_offsets(group, n_groups)
    counts = np.diff(offsets)

    # sender clocks: the lab header first, RTP second
    head, head_len = _heads_by_row(cols, rows)
    lab = wire.decode_heads(head, head_len)
    lab_dir = (counts > 0) & (np.bincount(group[lab["valid"]], minlength=n_groups) == counts)
    rtp_ts, rtp_rate = _rtp_clock(head, head_len, group, order, offsets)
    rtp_dir = ~lab_dir & (rtp_rate > 0)
    rate = np.where(lab_dir, NS, np.where(rtp_dir, rtp_rate, 0)).astype(np.int64)
    source = np.where(lab_dir, "lab", np.where(rtp_dir, "rtp", "none")).astype(object)
    send = np.where(lab_dir[group], lab["send_ns"], rtp_ts).astype(np.int64)

    iat = _gap_stats(ts, group, order, offsets)
    jit = _rfc3550_jitter(offsets, ts[order], send[order], rate, rtp_dir)
    frame_bytes = np.bincount(group, weights=cols["wirelen"][rows], minlength=n_groups)
    payload = np.bincount(group, weights=cols["paylen"][rows], minlength=n_groups)

    big = np.iinfo(np.int64).max
    first_ts = np.full(n_conv, big, np.int64)
    last_ts = np.full(n_conv, -big, np.int64)
    np.minimum.at(first_ts, pair, ts)
    np.maximum.at(last_ts, pair, ts)
    # a conversation seen only inside ICMP errors: from its first quoting frame, duration 0
    no_datagram = np.bincount(pair, minlength=n_conv) == 0
    first_ts[no_datagram] = last_ts[no_datagram] = cols["ts_ns"][key_rows[by_frame][first]][
        no_datagram]
    t0 = int(cols["ts_ns"][0]) if n else 0
    dir_first = np.full(n_groups, big, np.int64)
    dir_last = np.full(n_groups, -big, np.int64)
    np.minimum.at(dir_first, group, ts)
    np.maximum.at(dir_last, group, ts)
    duration = (last_ts - first_ts) / 1e9
    dir_span = np.where(counts > 0, (dir_last - dir_first) / 1e9, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Wireshark's Bits/s A->B: frame bytes over the whole conversation's duration
        bits_per_s = np.where(np.repeat(duration, 2) > 0,
                              frame_bytes * 8 / np.repeat(duration, 2), np.nan)
        # the payload rate over the direction's own span, first to last datagram
        payload_bps = np.where(dir_span > 0, payload * 8 / dir_span, np.nan)

    conv = {
        "stream": np.arange(n_conv, dtype=np.int64),
        "a_addr": addresses_text(a_hi, a_lo),
        "a_port": a_port.astype(np.int64),
        "b_addr": addresses_text(b_hi, b_lo),
        "b_port": b_port.astype(np.int64),
        "datagrams": counts[0::2] + counts[1::2],
        "bytes": (frame_bytes[0::2] + frame_bytes[1::2]).astype(np.int64),
        "start_s": (first_ts - t0) / 1e9,
        "duration_s": duration,
    }
    # (name, unit suffix): the direction goes between them, the unit last
    per_dir = {
        ("datagrams", ""): counts, ("bytes", ""): frame_bytes.astype(np.int64),
        ("payload_bytes", ""): payload.astype(np.int64), ("bitrate", "_bps"): bits_per_s,
        ("goodput", "_bps"): payload_bps,
        **{(f"iat_{k}", "_s"): v for k, v in iat.items()},
        ("jitter", "_s"): jit["final"], ("jitter_max", "_s"): jit["max"],
        ("jitter_mean", "_s"): jit["mean"],
        ("jitter_source", ""): source,
    }
    for d, tag in enumerate(DIRECTIONS):
        for (name, unit), values in per_dir.items():
            conv[f"{name}_{tag}{unit}"] = values[d::2]
    conv = Table(conv)
    flows = _lab_flows(conv, group, lab, ts, n_groups)
    return UdpResult(n, key_rows, key_pair, conv, flows)


# Optional sparse table of UDP headers quoted in ICMP / ICMPv6 errors (RFC 792, RFC 4443
# section 2.4: an error carries the start of the offending datagram). tshark 4.0 dissects
# the quoted UDP header and gives the error frame that conversation's udp.stream, creating
# the conversation if it is new. A reader that decodes quoted headers provides:
#   icmp_rows (Q,) int64 rows of such errors; icmp_proto (Q,) uint8 the quoted protocol;
#   icmp_src_hi/lo, icmp_dst_hi/lo (Q,) uint64 and icmp_sport, icmp_dport (Q,) uint16:
#   the quoted datagram's endpoints, as it was sent (original source first).
# Those frames get a udp.stream; they are not datagrams of the conversation's statistics.
QUOTED_COLUMNS = ("icmp_rows", "icmp_proto", "icmp_src_hi", "icmp_src_lo", "icmp_dst_hi",
                  "icmp_dst_lo", "icmp_sport", "icmp_dport")


def _quoted_udp(cols) -> dict[str, np.ndarray]:
    names = ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport")
    if not all(c in cols for c in QUOTED_COLUMNS):
        out = {name: np.zeros(0, cols[name].dtype) for name in names}
        out["rows"] = np.zeros(0, np.int64)
        return out
    sel = np.asarray(cols["icmp_proto"]) == L4_UDP
    out = {name: np.asarray(cols["icmp_" + name])[sel].astype(cols[name].dtype)
           for name in names}
    out["rows"] = np.asarray(cols["icmp_rows"], np.int64)[sel]
    return out


def _heads_by_row(cols, rows) -> tuple[np.ndarray, np.ndarray]:
    """The captured payload heads of `rows` (zero length where the reader kept none)."""
    head_rows = np.asarray(cols.get("udp_rows", np.zeros(0, np.int64)), np.int64)
    heads = np.asarray(cols.get("udp_head", np.zeros((0, UDP_HEAD), np.uint8)), np.uint8)
    lens = np.asarray(cols.get("udp_head_len", np.zeros(0, np.uint8)))
    if heads.ndim == 2 and len(head_rows) == len(rows) and np.array_equal(head_rows, rows):
        return heads, lens.astype(np.int64)            # every datagram has its head
    width = heads.shape[1] if heads.ndim == 2 else UDP_HEAD
    head = np.zeros((len(rows), width), np.uint8)
    hl = np.zeros(len(rows), np.int64)
    if len(head_rows) and len(rows):
        pos = np.minimum(np.searchsorted(head_rows, rows), len(head_rows) - 1)
        ok = head_rows[pos] == rows
        head[ok] = heads[pos[ok]]
        hl[ok] = lens[pos[ok]]
    return head, hl


def _be(head: np.ndarray, lo: int, n: int) -> np.ndarray:
    v = np.zeros(len(head), np.int64)
    for j in range(lo, lo + n):
        v = (v << 8) | head[:, j].astype(np.int64)
    return v


def _rtp_clock(head, head_len, group, order, offsets):
    """RTP timestamps per datagram, and the clock rate of directions that are one RTP
    stream (0 for the others). See the module docstring for the rule."""
    n_groups = len(offsets) - 1
    k = len(head)
    rate = np.zeros(n_groups, np.int64)
    if k == 0 or head.shape[1] < 12:
        return np.zeros(k, np.int64), rate
    v2 = (head_len >= 12) & ((head[:, 0] >> 6) == 2)
    counts = np.diff(offsets)
    ok = (counts >= RTP_MIN_DATAGRAMS) & (np.bincount(group[v2], minlength=n_groups) == counts)
    if not ok.any():
        return np.zeros(k, np.int64), rate
    pt = (head[:, 1] & 0x7F).astype(np.int64)
    rtp_seq = _be(head, 2, 2)
    rtp_ts = _be(head, 4, 4)
    ssrc = _be(head, 8, 4)
    g = group[order]
    same = g[1:] == g[:-1]                  # consecutive datagrams of one direction
    first = order[offsets[:-1][counts > 0]]
    changed = same & ((ssrc[order][1:] != ssrc[order][:-1]) | (pt[order][1:] != pt[order][:-1]))
    ok &= np.bincount(g[1:][changed], minlength=n_groups) == 0
    step = (rtp_seq[order][1:] - rtp_seq[order][:-1]) & 0xFFFF
    forward = same & (step >= 1) & (step <= RTP_MAX_STEP)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.bincount(g[1:][forward], minlength=n_groups) / np.maximum(counts - 1, 1)
    ok &= share >= RTP_MIN_STEP_SHARE
    clock = np.zeros(n_groups, np.int64)
    clock[counts > 0] = _CLOCK_BY_PT[pt[first]]
    rate[ok] = clock[ok]
    return rtp_ts, rate


def _gap_stats(ts, group, order, offsets) -> dict[str, np.ndarray]:
    """Inter-arrival times per group, in s: mean, std (population), min, p50, p99, max."""
    n_groups = len(offsets) - 1
    g = group[order]
    t = ts[order]
    same = g[1:] == g[:-1]
    gap = ((t[1:] - t[:-1]) / 1e9)[same]
    gg = g[1:][same]
    n = np.bincount(gg, minlength=n_groups)
    has = n > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(has, np.bincount(gg, weights=gap, minlength=n_groups) / n, np.nan)
        var = np.bincount(gg, weights=(gap - mean[gg]) ** 2, minlength=n_groups) / n
    lo = np.full(n_groups, np.inf)
    hi = np.full(n_groups, -np.inf)
    np.minimum.at(lo, gg, gap)
    np.maximum.at(hi, gg, gap)
    p50, p99 = _group_quantiles(gap, gg, n_groups, (0.5, 0.99))
    return {"mean": mean, "std": np.where(has, np.sqrt(var), np.nan),
            "min": np.where(has, lo, np.nan), "p50": p50, "p99": p99,
            "max": np.where(has, hi, np.nan)}


@kernel
def _segment_quantiles(offsets, values, qs):
    """Per segment of `values` (segments at offsets): quantiles, interpolated linearly
    between order statistics as numpy.quantile does; NaN for an empty segment."""
    n_groups = offsets.shape[0] - 1
    out = np.full((qs.shape[0], n_groups), np.nan)
    for g in range(n_groups):
        a, b = offsets[g], offsets[g + 1]
        if b == a:
            continue
        v = np.sort(values[a:b])
        for qi in range(qs.shape[0]):
            pos = qs[qi] * (b - a - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, b - a - 1)
            out[qi, g] = v[lo] + (v[hi] - v[lo]) * (pos - lo)
    return out


def _group_quantiles(values, group, n_groups, qs) -> list[np.ndarray]:
    """Quantiles of values per group."""
    if len(values) == 0:
        return [np.full(n_groups, np.nan) for _ in qs]
    order, offsets = group_offsets(group, n_groups)
    out = _segment_quantiles(offsets, np.asarray(values, np.float64)[order],
                             np.asarray(qs, np.float64))
    return list(out)


@kernel
def _jitter_loop(offsets, arrival_ns, send, rate, wrap32):
    """RFC 3550 interarrival jitter per group, over datagrams sorted by group (arrival order
    within). send: the sender's timestamps in ticks of `rate` per second (0: no clock).
    Returns the final estimate, its maximum and its mean over the datagrams after the
    first, in s."""
    n_groups = offsets.shape[0] - 1
    final = np.full(n_groups, np.nan)
    jmax = np.full(n_groups, np.nan)
    jmean = np.full(n_groups, np.nan)
    for g in range(n_groups):
        a, b = offsets[g], offsets[g + 1]
        r = rate[g]
        if r <= 0 or b - a < 2:
            continue
        j = 0.0
        top = 0.0
        total = 0.0
        for i in range(a + 1, b):
            ds = send[i] - send[i - 1]
            if wrap32[g]:
                # RTP timestamps are 32 bits and wrap (RFC 3550 section 5.1)
                ds = ds & 0xFFFFFFFF
                if ds >= 0x80000000:
                    ds -= 0x100000000
            # D(i-1, i) = (R_i - R_i-1) - (S_i - S_i-1), in sender clock units (6.4.1)
            d = (arrival_ns[i] - arrival_ns[i - 1]) * (r / 1e9) - ds
            j += (abs(d) - j) / 16.0
            top = max(top, j)
            total += j
        scale = 1.0 / r
        final[g] = j * scale
        jmax[g] = top * scale
        jmean[g] = total / (b - a - 1) * scale
    return final, jmax, jmean


def _rfc3550_jitter(offsets, arrival_ns, send, rate, wrap32) -> dict[str, np.ndarray]:
    if len(arrival_ns) == 0:
        nan = np.full(len(offsets) - 1, np.nan)
        return {"final": nan, "max": nan.copy(), "mean": nan.copy()}
    final, jmax, jmean = _jitter_loop(offsets, arrival_ns, send, rate,
                                      np.asarray(wrap32, np.bool_))
    return {"final": final, "max": jmax, "mean": jmean}


FLOW_COLUMNS = ["stream", "direction", "src_addr", "src_port", "dst_addr", "dst_port", "flow",
                "received", "distinct", "first_seq", "last_seq", "expected", "lost",
                "loss_ratio", "duplicates", "reordered", "reordered_ratio",
                "reorder_extent_max", "reorder_extent_mean", "reorder_distance_max",
                "jitter_s", "jitter_max_s", "owd_mean_s", "owd_std_s", "owd_min_s",
                "owd_p50_s", "owd_p99_s", "owd_max_s"]


def _tail_loss(sm: dict, uniq, group, lab) -> None:
    """A sender's end marker (a control datagram whose seq field holds how many data
    datagrams were sent, numbered from 0) makes losses before the first and after the last
    arrival visible from a capture alone: expected becomes that count, as the receiver's."""
    ctrl = np.flatnonzero(lab["valid"] & (lab["kind"] == wire.KIND_CONTROL) & (lab["seq"] > 0))
    if len(ctrl) == 0 or len(uniq) == 0:
        return
    key = group[ctrl] << 32 | (lab["flow"][ctrl] & 0xFFFFFFFF)
    pos = np.minimum(np.searchsorted(uniq, key), len(uniq) - 1)
    ok = uniq[pos] == key
    declared = np.zeros(len(uniq), np.int64)
    np.maximum.at(declared, pos[ok], lab["seq"][ctrl][ok])
    known = declared > 0
    expected = np.asarray(sm["expected"])
    sm["expected"] = np.where(known, np.maximum(np.asarray(sm["last_seq"]) + 1, declared),
                              expected)
    sm["lost"] = sm["expected"] - np.asarray(sm["distinct"])


def _lab_flows(conv: Table, group, lab, ts, n_groups) -> Table:
    """One row per (conversation, direction, lab flow id): loss, duplicates, RFC 4737
    reordering, RFC 3550 jitter over send_ns, one-way delay (shared clock assumed).
    Control datagrams (hello, end: kind KIND_CONTROL) are not numbered data: left out."""
    k = np.flatnonzero(lab["valid"] & (lab["kind"] != wire.KIND_CONTROL))
    if len(k) == 0:
        # no lab flows: an empty table of the same types as a full one (a dataset of many
        # captures' tables needs one schema)
        text = {"direction", "src_addr", "dst_addr"}
        floats = {c for c in FLOW_COLUMNS if c.endswith(("_s", "_ratio", "_mean"))}
        return Table({c: (np.zeros(0, object) if c in text else
                          np.zeros(0, np.float64 if c in floats else np.int64))
                      for c in FLOW_COLUMNS})
    key = group[k] << 32 | (lab["flow"][k] & 0xFFFFFFFF)
    uniq, fid = np.unique(key, return_inverse=True)
    fid = fid.reshape(-1).astype(np.int64)
    nf = len(uniq)
    seq = lab["seq"][k]
    sm = dict(sequence_metrics(fid, seq, nf))
    _tail_loss(sm, uniq, group, lab)
    order, offsets = group_offsets(fid, nf)
    send = lab["send_ns"][k]
    jit = _rfc3550_jitter(offsets, ts[k][order], send[order], np.full(nf, NS, np.int64),
                          np.zeros(nf, bool))
    owd = (ts[k] - send) / 1e9
    received = sm["received"]
    mean = np.bincount(fid, weights=owd, minlength=nf) / received
    std = np.sqrt(np.bincount(fid, weights=(owd - mean[fid]) ** 2, minlength=nf) / received)
    lo = np.full(nf, np.inf)
    hi = np.full(nf, -np.inf)
    np.minimum.at(lo, fid, owd)
    np.maximum.at(hi, fid, owd)
    p50, p99 = _group_quantiles(owd, fid, nf, (0.5, 0.99))
    stream = uniq >> 33
    d = (uniq >> 32) & 1
    a_addr = np.asarray(conv["a_addr"], object)[stream]
    b_addr = np.asarray(conv["b_addr"], object)[stream]
    a_port = conv["a_port"][stream]
    b_port = conv["b_port"][stream]
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_ratio = sm["lost"] / sm["expected"]
        reordered_ratio = sm["reordered"] / sm["distinct"]
    return Table({
        "stream": stream, "direction": np.array(DIRECTIONS, object)[d],
        "src_addr": np.where(d == 0, a_addr, b_addr), "src_port": np.where(d == 0, a_port, b_port),
        "dst_addr": np.where(d == 0, b_addr, a_addr), "dst_port": np.where(d == 0, b_port, a_port),
        "flow": uniq & 0xFFFFFFFF,
        **{c: sm[c] for c in ("received", "distinct", "first_seq", "last_seq", "expected",
                              "lost")},
        "loss_ratio": loss_ratio, "duplicates": sm["duplicates"], "reordered": sm["reordered"],
        "reordered_ratio": reordered_ratio,
        **{c: sm[c] for c in ("reorder_extent_max", "reorder_extent_mean",
                              "reorder_distance_max")},
        "jitter_s": jit["final"], "jitter_max_s": jit["max"],
        "owd_mean_s": mean, "owd_std_s": std, "owd_min_s": lo, "owd_p50_s": p50,
        "owd_p99_s": p99, "owd_max_s": hi,
    })
