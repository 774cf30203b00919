"""Ground truth, reconciled: what the link did, what the captures saw, what the analyzer
concluded and what the endpoints said, side by side for every direction and flow of a run.

    rec = reconcile(run_dir, run, {"a": toolkit.analyze("a.pcapng"), ...})
    rec.summary          # one row per direction x protocol x flow
    rec.drops            # one row per packet the link dropped, with its fate
    rec.notes            # one line per explained disagreement
    rec.unexplained      # how many were not explained (0 on a healthy run)

Theory of operation
-------------------
Truth comes first (ARCHITECTURE: "Ground truth first"). With the userspace engine it is
the ledger (toolkit.netlab.ledger): one record per frame that reached the link, with its
arrival and departure times (CLOCK_REALTIME ns, the captures' clock) and what was done to
it. With the kernel engine there is no ledger: the two captures on either side of the link
are the per-frame truth and the nftables loss counter (run.json engine.stats) checks
their total.

A frame's identity is what the ledger knows of it (frames.Packet.describe): direction,
protocol, ports, and TCP flags, sequence and acknowledgment numbers and payload length, or
a UDP datagram's lab flow and sequence number. Identical frames (a retransmission carrying
the same acknowledgment number, a run of duplicate ACKs) are told apart by their order:

- the capture before the link (r-a for a_to_b) sees the frames in the order they reach
  the engine, so the k-th frame of an identity there is the k-th arrival of it in the
  ledger (sorted by n); the capture after the link (r-b) sees them in departure order, so
  the k-th one there is the k-th departure (sorted by t_out, duplicate copies included);
  before and after are then joined through the ledger's n. A frame seen before and not
  after is `missing_after`; it is matched to the ledger when the ledger dropped it.
  Whatever does not join (a departure nobody saw, a frame the ledger never had) is a
  disagreement;
- without a ledger, each frame after the link is paired with the latest unpaired frame of
  its identity seen before it (a kernel link forwards within microseconds, while TCP
  resends an identical segment an RTT or an RTO later, RFC 6298).

TCP (RFC 9293): a dropped segment that occupies sequence space (payload, SYN or FIN) must
be repaired. Its repair is found by sequence numbers, not by any label: the first segment
of the same connection and direction that reached the link after the drop, got through
(it is in the capture after the link; or, where that capture missed it, the ledger
forwarded it) and whose [seq, seq + len + SYN + FIN) covers the dropped segment's first
sequence number. Beside it stands Wireshark's label on that repair in the sender-side
capture (retransmission, fast_retransmission, spurious_retransmission, out_of_order, or
none): packet-tcp.c calls a resend out_of_order when it comes within the handshake RTT of
the highest segment, and with no link delay that RTT is a fraction of a millisecond, so
Wireshark calls many repairs out_of_order. A frame the link corrupted went on but the
receiver's checksum check discards it (RFC 9293 3.1, RFC 768): it is a row of `drops`
(reason "corrupt") and needs its repair like a drop. A pure ACK the link dropped needs no
repair: a later cumulative ACK covers it (RFC 9293 3.4).

Every segment the sender sent again (its range starts below the highest sequence number
it had sent) is a resend: a repair, a partial repair, itself lost on the link, or
spurious: it repeats a repair that had already got through ("repaired twice"), or resends
data that had arrived because the link held the first copy back (reordering: duplicate
ACKs, RFC 5681 3.2), dropped the ACK covering it, or a tail loss probe or retransmission
timer fired before the ACK came back (RFC 8985 7.3, RFC 6298 5). The sender's TCP_INFO
total_retrans counts the same resends, SYN and FIN included; `labkit send` samples it once
the peer's FIN has arrived.

UDP (RFC 768): a data datagram lost at the receiving side capture was dropped by the link
(in the ledger), was missing already before the link, or was missing only at the receiving
host (`udp_lost`, one row per sequence number); the receiver's report also counts what
the host dropped after its capture (socket buffer) and datagrams the link corrupted.
A datagram the capture on the receiving host saw but the receiving program never got
(`udp_lost_host`: the capture's distinct data datagrams less the receiver's count) was
dropped inside that host, after the capture point: UDP has no flow control, so a reader
slower than the sender overflows its socket's receive buffer. The kernel counts each such
drop in UdpRcvbufErrors (a datagram that came after the socket closed: UdpNoPorts), per
network namespace, so the run's [observe] counters of that host are the evidence: the
host's counter deltas are a budget the flows to it draw on, and what they do not cover
is unexplained. Without observed counters the count stands unchecked (and says so).
Control datagrams (hello, end marker: sent three times) the link dropped are not data.
A sender using UDP GSO puts several datagrams in one frame, of which captures and the
link see only the first lab header: every UDP disagreement then says so.

Every comparison that does not agree is an item: explained in one line (`notes`), or
counted in `unexplained` (and listed in `unexplained_items`).

Summary columns are counts unless their name carries a unit (`_s`). Not obvious from
their names: `duplicate_acks` are the ones answering this direction's data (they travel
the other way), seen at the sender; `retransmissions` ... `out_of_order` are Wireshark's
verdicts at the sender-side capture (`retransmissions` includes fast and spurious ones,
as tshark shows them); `lost_segment_verdicts` at the receiver side; `resends*` the truth
by sequence numbers at the sender; `repair_labelled_*` Wireshark's label on each drop's
repair; `link_*` the ledger (with the kernel engine, what the captures show).
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Reconciliation", "reconcile", "reconcile_frames", "frame_table", "ledger_table",
           "pair_by_occurrence", "pair_across_link", "find_repairs", "SCHEMA", "VERSION"]

SCHEMA, VERSION = "labkit-reconciliation", 1
M32 = 0xFFFFFFFF
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_FLAG_LETTERS = "FSRPAUEC"                      # as frames.flag_letters
TCP_KEY = ["sport", "dport", "flags", "seq", "ack", "plen"]
UDP_KEY = ["sport", "dport", "udp_flow", "udp_seq", "plen"]
REASONS = ("loss", "burst", "queue", "capacity", "fault", "stopped", "other")
LABELS = ("retransmission", "fast_retransmission", "spurious_retransmission", "out_of_order")
VERDICT_COLUMNS = (*LABELS, "lost_segment", "duplicate_ack")
OOO_DEFAULT_S = 0.003           # packet-tcp.c's out-of-order threshold before an RTT is known
KIND_CONTROL = 4                # toolkit.wire.KIND_CONTROL (hello, end marker)
# the capture's time and the ledger's may differ by the kernel's delivery; more is a mismatch
TIME_TOLERANCE_S = 0.05


# ---------------------------------------------------------------- the result

@dataclass
class Reconciliation:
    summary: pd.DataFrame                 # one row per direction x proto x flow
    drops: pd.DataFrame                   # one row per packet the link dropped
    notes: list[str]                      # one line per explained disagreement
    unexplained: int                      # disagreements no line explains
    truth: str                            # where the per-frame truth came from
    unexplained_items: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)      # totals checked (kernel counter)
    # one row per lab sequence number lost at the receiving side, and where it was lost
    udp_lost: pd.DataFrame = field(default_factory=pd.DataFrame)
    # per observed host, the SNMP counters that changed during the run: {host: {name: delta}}
    host_counters: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready (NaN -> null), for analysis.json and run.json."""
        return {"schema": SCHEMA, "version": VERSION, "truth": self.truth,
                "unexplained": int(self.unexplained),
                "unexplained_items": list(self.unexplained_items), "notes": list(self.notes),
                "checks": _plain(self.checks), "summary": _records(self.summary),
                "drops": _records(self.drops), "udp_lost": _records(self.udp_lost)}

    def to_markdown(self) -> str:
        """A compact table per direction: link did / captures saw / analyzer concluded /
        endpoints said, then the notes and the unexplained items."""
        lines = [f"Truth: {self.truth}.", "",
                 "| direction | flow | link did | captures saw | analyzer concluded "
                 "| endpoints said |", "| --- | --- | --- | --- | --- | --- |"]
        for r in self.summary.to_dict("records"):
            lines.append(f"| {r['direction']} | {r['flow']} ({r['proto']}) | {_md_link(r)} | "
                         f"{_md_captures(r)} | {_md_analyzer(r)} | {_md_endpoints(r)} |")
        if self.checks:
            lines.append("")
        for c in self.checks:
            lines.append(f"- check, {c['what']}: expected {c['expected']}, found "
                         f"{c['found']} ({'ok' if c['ok'] else 'MISMATCH'})")
        lines += ["", "Notes:" if self.notes else "Notes: none (every source agrees)."]
        lines += [f"- {n}" for n in self.notes]
        lines += ["", f"Unexplained: {self.unexplained}"]
        lines += [f"- {u}" for u in self.unexplained_items]
        return "\n".join(lines)


def _n(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _md_link(r: dict) -> str:
    if r.get("truth") != "ledger":
        return (f"dropped {_n(r.get('link_dropped'))} of {_n(r.get('link_frames'))} "
                "(by the captures; no ledger)")
    reasons = ", ".join(f"{k} {int(r[f'link_dropped_{k}'])}" for k in REASONS
                        if _num(r.get(f"link_dropped_{k}")) > 0)
    out = f"{_n(r['link_frames'])} frames, dropped {_n(r['link_dropped'])}"
    out += f" ({reasons})" if reasons else ""
    for k, label in (("link_duplicated", "duplicated"), ("link_reordered", "held"),
                     ("link_delayed", "delayed by a fault"), ("link_corrupted", "corrupted")):
        if _num(r.get(k)) > 0:
            out += f", {label} {int(r[k])}"
    return out


def _md_captures(r: dict) -> str:
    out = (f"{r['before_point']} {_n(r['before_frames'])} -> {r['after_point']} "
           f"{_n(r['after_frames'])}, missing {_n(r['missing_after'])}")
    if _n(r.get("matched_to_ledger")) != "-" and _num(r.get("missing_after")) > 0:
        out += " (all matched to ledger drops)" if r["matched_to_ledger"] == r[
            "missing_after"] else f" ({_n(r['matched_to_ledger'])} matched to ledger drops)"
    return out


def _md_analyzer(r: dict) -> str:
    if r["proto"] == "tcp":
        labels = ", ".join(f"{k} {int(r[f'repair_labelled_{k}'])}" for k in LABELS
                           if _num(r.get(f"repair_labelled_{k}")) > 0)
        if _num(r.get("repair_unlabelled")) > 0:
            labels += (", " if labels else "") + f"none {int(r['repair_unlabelled'])}"
        acks = (f"{int(r['tcp_acks_dropped'])} dropped ACKs need no repair; "
                if _num(r.get("tcp_acks_dropped")) > 0 else "")
        repairs = (f"{_n(r['tcp_drops_repaired'])}/{_n(r['tcp_data_dropped'])} drops "
                   f"repaired{' (labelled ' + labels + ')' if labels else ''}; "
                   if _num(r.get("tcp_data_dropped")) > 0 else "")
        return (f"{repairs}{acks}resends {_n(r['resends'])}"
                f" (spurious {_n(r['resends_spurious'])}); Wireshark: retransmission "
                f"{_n(r['retransmissions'])}, spurious {_n(r['spurious_retransmissions'])}, "
                f"out_of_order {_n(r['out_of_order'])}, lost_segment "
                f"{_n(r['lost_segment_verdicts'])}, dup ACKs {_n(r['duplicate_acks'])}")
    return (f"lost {_n(r['udp_lost_at_receiver'])} at {r['receiver_point']} (link "
            f"{_n(r['udp_lost_link'])}, before link {_n(r['udp_lost_before_link'])}, "
            f"at host {_n(r['udp_lost_receiving_interface'])}), duplicates "
            f"{_n(r['udp_duplicates_at_receiver'])}, reordered "
            f"{_n(r['udp_reordered_at_receiver'])}")


def _md_endpoints(r: dict) -> str:
    if r["proto"] == "tcp":
        return f"TCP_INFO total_retrans {_n(r['tcpinfo_total_retrans'])}"
    out = f"receiver lost {_n(r['udp_lost_reported_by_receiver'])}"
    if _num(r.get("dropped_in_host")) > 0:
        out += f" (in host {int(r['dropped_in_host'])})"
    if _num(r.get("udp_lost_host")) > 0:
        out += (f"; {int(r['udp_lost_host'])} seen at {r['receiver_point']} never reached "
                f"the program")
        if _n(r.get("host_udp_rcvbuf_errors")) != "-":
            out += f" (UdpRcvbufErrors +{_n(r['host_udp_rcvbuf_errors'])})"
    return out


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if x is pd.NA:
        return None
    return x


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records", double_precision=15))


# ---------------------------------------------------------------- tables

_FRAME_DEFAULTS = {"frame": 0, "ts_ns": 0, "l4": 0, "sport": 0, "dport": 0, "flags": 0,
                   "seq": 0, "ack": 0, "plen": 0, "wirelen": 0, "udp_flow": -1,
                   "udp_seq": -1, "udp_kind": -1, "src_hi": 0, "src_lo": 0, "dst_hi": 0,
                   "dst_lo": 0, **{v: 0 for v in VERDICT_COLUMNS}}


def frame_table(analysis=None, **columns) -> pd.DataFrame:
    """One row per frame of a capture, with the identity the ledger knows (see the module
    doc) and the analyzer's verdicts. From a toolkit.api.Analysis, or (tests) from
    columns given by name, the others defaulted."""
    if analysis is None:
        n = len(next(iter(columns.values()))) if columns else 0
        out = {}
        for name, default in _FRAME_DEFAULTS.items():
            out[name] = np.asarray(columns.get(name, np.full(n, default)), np.int64) if (
                name not in ("src_hi", "src_lo", "dst_hi", "dst_lo")) else np.asarray(
                columns.get(name, np.zeros(n)), np.uint64)
        if "frame" not in columns:
            out["frame"] = np.arange(1, n + 1)
        return pd.DataFrame(out)
    from .. import wire
    from ..analysis import verdicts as V
    from ..analysis.udp import _heads_by_row, udp_datagram_rows

    cols = analysis.capture.cols
    n = len(cols["ts_ns"])
    l4 = cols["l4"].astype(np.int64)
    tcp = l4 == 6
    out = {
        "frame": np.arange(1, n + 1, dtype=np.int64),
        "ts_ns": cols["ts_ns"].astype(np.int64),
        "l4": l4,
        "sport": np.where(l4 != 0, cols["sport"], 0).astype(np.int64),
        "dport": np.where(l4 != 0, cols["dport"], 0).astype(np.int64),
        "flags": np.where(tcp, cols["tcp_flags"] & 0xFF, 0).astype(np.int64),
        "seq": np.where(tcp, cols["seq"], 0).astype(np.int64),
        "ack": np.where(tcp, cols["ack"], 0).astype(np.int64),
        "plen": np.where(l4 != 0, cols["paylen"], 0).astype(np.int64),
        "wirelen": cols["wirelen"].astype(np.int64),
        "src_hi": cols["src_hi"], "src_lo": cols["src_lo"],
        "dst_hi": cols["dst_hi"], "dst_lo": cols["dst_lo"],
    }
    for name in ("udp_flow", "udp_seq", "udp_kind"):
        out[name] = np.full(n, -1, np.int64)
    rows = udp_datagram_rows(cols)
    if len(rows):
        head, head_len = _heads_by_row(cols, rows)
        lab = wire.decode_heads(head, head_len)
        ok = lab["valid"]
        out["udp_flow"][rows[ok]] = lab["flow"][ok]
        out["udp_seq"][rows[ok]] = lab["seq"][ok]
        out["udp_kind"][rows[ok]] = lab["kind"][ok]
    seg = analysis.segments
    for name in VERDICT_COLUMNS:
        v = np.zeros(n, np.int64)
        v[seg.rows] = V.verdict_column(seg.analysis, name)
        out[name] = v
    return pd.DataFrame(out)


def _flag_bits(letters: str | None) -> int:
    return sum(1 << i for i, c in enumerate(_FLAG_LETTERS) if c in (letters or ""))


def flag_letters(bits: int) -> str:
    return "".join(c for i, c in enumerate(_FLAG_LETTERS) if int(bits) >> i & 1)


def _reason(why: str) -> str:
    why = why or ""
    for r in ("loss", "burst", "queue", "capacity"):
        if why == r:
            return r
    if why.startswith("fault"):
        return "fault"
    if why.startswith("stopped"):
        return "stopped"
    return "other"


def ledger_table(records: list[dict]) -> pd.DataFrame:
    """The ledger's records as columns: n, copy, dir, t_in, t_out (-1: dropped), len,
    proto, the identity (sport, dport, flags as bits, seq, ack, plen, udp_flow, udp_seq),
    action, why, reason (loss, burst, queue, capacity, fault, stopped, other)."""
    n = len(records)
    pkts = [r.get("pkt") or {} for r in records]
    pk = pd.DataFrame.from_records(pkts) if n else pd.DataFrame()

    def col(name, fill=0):
        if name not in pk:
            return np.full(n, fill, np.int64)
        return pk[name].fillna(fill).to_numpy().astype(np.int64)

    proto = pk["proto"].fillna("").to_numpy().astype(object) if "proto" in pk else \
        np.full(n, "", object)
    tcp, udp = proto == "tcp", proto == "udp"
    lab = udp & (pk["flow"].notna().to_numpy() if "flow" in pk else np.zeros(n, bool))
    letters = pk["flags"].fillna("").to_numpy() if "flags" in pk else np.full(n, "", object)
    bits = {v: _flag_bits(v) for v in set(letters.tolist())}
    # times stay integers: nanoseconds since 1970 do not fit a float exactly
    df = pd.DataFrame({
        "n": np.fromiter((r["n"] for r in records), np.int64, n),
        "copy": np.fromiter((r.get("copy", 1) for r in records), np.int64, n),
        "dir": np.array([r["dir"] for r in records], object),
        "t_in": np.fromiter((r["t_in"] for r in records), np.int64, n),
        "t_out": np.fromiter((-1 if r.get("t_out") is None else r["t_out"] for r in records),
                             np.int64, n),
        "len": np.fromiter((r.get("len", 0) for r in records), np.int64, n),
        "proto": proto,
        "sport": col("sport"), "dport": col("dport"),
        "flags": np.where(tcp, [bits[v] for v in letters.tolist()], 0).astype(np.int64),
        "seq": np.where(tcp, col("seq"), 0), "ack": np.where(tcp, col("ack"), 0),
        "plen": col("len"),
        "udp_flow": np.where(lab, col("flow", -1), -1),
        "udp_seq": np.where(lab, col("seq", -1), -1),
        "action": np.array([r.get("action", "") for r in records], object),
        "why": np.array([r.get("why", "") or "" for r in records], object),
    })
    drop = df["action"].to_numpy() == "drop"
    df["reason"] = np.where(drop, [_reason(w) if d else "" for w, d in
                                   zip(df["why"].tolist(), drop.tolist())], "")
    return df


# ---------------------------------------------------------------- pairing

def pair_by_occurrence(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """For each row of `left` (in its order), the position in `right` of the row with the
    same identity and the same occurrence number (k-th of that identity on both sides),
    or -1. Both tables must already be in the order the frames passed one point."""
    if len(left) == 0:
        return np.zeros(0, np.int64)
    if len(right) == 0:
        return np.full(len(left), -1, np.int64)
    lk = left[keys].reset_index(drop=True).copy()
    rk = right[keys].reset_index(drop=True).copy()
    lk["_occ"] = lk.groupby(keys, sort=False).cumcount()
    rk["_occ"] = rk.groupby(keys, sort=False).cumcount()
    lk["_i"] = np.arange(len(lk))
    rk["_j"] = np.arange(len(rk))
    m = lk.merge(rk, on=[*keys, "_occ"], how="left")
    out = np.full(len(left), -1, np.int64)
    ok = m["_j"].notna().to_numpy()
    out[m["_i"].to_numpy()[ok]] = m["_j"].to_numpy()[ok].astype(np.int64)
    return out


def pair_across_link(before: pd.DataFrame, after: pd.DataFrame, keys: list[str],
                     slack_ns: int = 1_000_000) -> np.ndarray:
    """Without a ledger: for each row of `after`, the row of `before` it is (or -1): the
    latest not yet paired one of the same identity seen no later than it (plus `slack_ns`
    for clocks read at two interfaces). Several after rows may pair with one before row
    only when the link duplicated it (no unpaired earlier one is left)."""
    out = np.full(len(after), -1, np.int64)
    if len(after) == 0 or len(before) == 0:
        return out
    b = before[keys].reset_index(drop=True).copy()
    a = after[keys].reset_index(drop=True).copy()
    b["_t"] = before["ts_ns"].to_numpy()
    a["_t"] = after["ts_ns"].to_numpy() + slack_ns
    b["_side"], a["_side"] = 0, 1
    b["_i"], a["_i"] = np.arange(len(b)), np.arange(len(a))
    both = pd.concat([b, a], ignore_index=True)
    both["_g"] = both.groupby(keys, sort=False).ngroup()
    sizes = both.groupby("_g")["_side"].agg(["size", "sum"])
    simple = sizes.index[(sizes["size"] == 2) & (sizes["sum"] == 1)]
    # the common case, one frame of an identity on each side: vectorized
    s = both[both["_g"].isin(simple)].sort_values(["_g", "_side"])
    bi = s["_i"].to_numpy()[0::2]
    ai = s["_i"].to_numpy()[1::2]
    bt = s["_t"].to_numpy()[0::2]
    at = s["_t"].to_numpy()[1::2]
    ok = bt <= at
    out[ai[ok]] = bi[ok]
    rest = both[~both["_g"].isin(simple)].sort_values(["_g", "_t", "_side"], kind="stable")
    g_arr, side, idx = rest["_g"].to_numpy(), rest["_side"].to_numpy(), rest["_i"].to_numpy()
    start = 0
    while start < len(rest):
        end = start
        while end < len(rest) and g_arr[end] == g_arr[start]:
            end += 1
        pending: list[int] = []           # unpaired before rows, latest last
        last = -1
        for k in range(start, end):
            if side[k] == 0:
                pending.append(int(idx[k]))
            elif pending:
                last = pending.pop()
                out[idx[k]] = last
            elif last >= 0:
                out[idx[k]] = last        # a duplicate of the one just paired
        start = end
    return out


# ---------------------------------------------------------------- TCP sequence space

def _span(df: pd.DataFrame) -> np.ndarray:
    """Sequence numbers a segment occupies: payload, plus one for SYN and one for FIN."""
    f = df["flags"].to_numpy()
    return df["plen"].to_numpy() + ((f & SYN) > 0) + ((f & FIN) > 0)


def find_repairs(drops: pd.DataFrame, after: pd.DataFrame) -> np.ndarray:
    """For each dropped TCP segment (columns sport, dport, seq, t_in), the row of `after`
    that repaired it, or -1: the first segment of the same connection and direction that
    reached the link after the drop (`after.t_link`, ns) and got through, whose
    [seq, seq + len + SYN + FIN) covers the dropped segment's first sequence number."""
    out = np.full(len(drops), -1, np.int64)
    if len(drops) == 0 or len(after) == 0:
        return out
    a_sp, a_dp = after["sport"].to_numpy(), after["dport"].to_numpy()
    a_seq, a_span = after["seq"].to_numpy(), _span(after)
    a_t = after["t_link"].to_numpy()
    for i, (sp, dp, s, t) in enumerate(zip(drops["sport"].to_numpy(), drops["dport"].to_numpy(),
                                           drops["seq"].to_numpy(), drops["t_in"].to_numpy())):
        cand = np.flatnonzero((a_sp == sp) & (a_dp == dp) & (a_t > t)
                              & (((s - a_seq) & M32) < a_span))
        if len(cand):
            out[i] = cand[np.argmin(a_t[cand])]
    return out


def _rel(seq: np.ndarray, base: np.ndarray) -> np.ndarray:
    return (np.asarray(seq, np.int64) - np.asarray(base, np.int64)) & M32


def _conn_bases(frames: pd.DataFrame) -> dict[tuple[int, int], int]:
    """Per connection (sport, dport) of one direction: its initial sequence number (the
    SYN's), else the first segment's."""
    out = {}
    if len(frames) == 0:
        return out
    syn = frames[(frames["flags"] & SYN) > 0]
    for (sp, dp), g in frames.groupby(["sport", "dport"], sort=False):
        s = syn[(syn["sport"] == sp) & (syn["dport"] == dp)]
        out[(int(sp), int(dp))] = int((s if len(s) else g)["seq"].iloc[0])
    return out


def _with_rel(df: pd.DataFrame, bases: dict) -> pd.DataFrame:
    base = np.array([bases.get((int(a), int(b)), s) for a, b, s in
                     zip(df["sport"], df["dport"], df["seq"])], np.int64) if len(df) else \
        np.zeros(0, np.int64)
    df = df.copy()
    df["rel"] = _rel(df["seq"].to_numpy(), base)
    df["rel_end"] = df["rel"].to_numpy() + _span(df)
    return df


def _resends(sender: pd.DataFrame) -> pd.DataFrame:
    """The sender-side frames with `resend` (bool: its range starts below the highest
    sequence number sent before it on its connection) and `since_highest_s` (time since
    the last segment that advanced the highest sequence number: Wireshark's nextseqtime)."""
    df = sender.copy()
    span = _span(df)
    df["span"] = span
    if len(df) == 0:
        df["resend"] = np.zeros(0, bool)
        df["since_highest_s"] = np.zeros(0)
        return df
    key = [df["sport"], df["dport"]]
    # the highest sequence number sent before each frame (frames without sequence space
    # carry the previous value forward)
    prev_high = df["rel_end"].where(span > 0).groupby(key).transform(
        lambda s: s.cummax().ffill().shift(1))
    df["resend"] = (span > 0) & prev_high.notna().to_numpy() & (
        df["rel"].to_numpy() < prev_high.fillna(0).to_numpy())
    advanced = (span > 0) & ~df["resend"].to_numpy()
    t_adv = pd.Series(np.where(advanced, df["ts_ns"].to_numpy(), np.nan), index=df.index)
    last_adv = t_adv.groupby(key).transform(lambda s: s.ffill().shift(1))
    df["since_highest_s"] = (df["ts_ns"].to_numpy() - last_adv.to_numpy()) / 1e9
    return df


def _first_rtt_s(frames_both: pd.DataFrame) -> dict[frozenset, float]:
    """Per connection (its two ports): packet-tcp.c's ts_first_rtt at this capture, the
    time from the most recent SYN (without ACK) to the first segment with ACK and no SYN,
    either way."""
    out: dict[frozenset, float] = {}
    f = frames_both.sort_values("frame", kind="stable")
    conn = [frozenset((int(a), int(b))) for a, b in zip(f["sport"], f["dport"])]
    hs = (f["flags"] & (SYN | ACK)).to_numpy()
    mru: dict[frozenset, int] = {}
    for c, h, t in zip(conn, hs, f["ts_ns"].to_numpy()):
        if h == SYN:
            mru[c] = int(t)
        elif h == ACK and c in mru and c not in out:
            out[c] = (int(t) - mru[c]) / 1e9
    return out


def _back_ack_drops(ctx: _Ctx, bases: dict) -> dict:
    """Per connection (as this direction's sport, dport): the times (ns) and acknowledged
    relative sequence numbers of the ACKs the link dropped on their way back."""
    led = ctx.ledger
    if led is None or len(led) == 0:
        return {}
    back = led[(led["dir"] == ctx.reverse) & (led["proto"] == "tcp") & (led["t_out"] < 0)
               & ((led["flags"] & ACK) > 0)]
    out = {}
    for (sp, dp), base in bases.items():
        g = back[(back["sport"] == dp) & (back["dport"] == sp)]
        if len(g):
            out[(sp, dp)] = (g["t_in"].to_numpy(), _rel(g["ack"].to_numpy(), base))
    return out


def _held(ctx, bases: dict) -> dict:
    """Per connection: the times (ns) and relative ranges [start, end) of the segments the
    link held back (reordered) in this direction."""
    led = ctx.ledger
    if led is None or len(led) == 0:
        return {}
    h = led[(led["dir"] == ctx.direction) & (led["proto"] == "tcp")
            & (led["action"] == "hold") & (led["copy"] == 1)]
    out = {}
    for (sp, dp), base in bases.items():
        g = h[(h["sport"] == sp) & (h["dport"] == dp)]
        if len(g):
            start = _rel(g["seq"].to_numpy(), base)
            out[(sp, dp)] = (g["t_in"].to_numpy(), start, start + _span(g))
    return out


def _range_ms(v: np.ndarray) -> str:
    lo, hi = float(np.nanmin(v)) * 1e3, float(np.nanmax(v)) * 1e3
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"


def _label(row) -> str:
    if row["spurious_retransmission"]:
        return "spurious_retransmission"
    if row["fast_retransmission"]:
        return "fast_retransmission"
    if row["retransmission"]:
        return "retransmission"
    if row["out_of_order"]:
        return "out_of_order"
    return "none"


# ---------------------------------------------------------------- one run

@dataclass
class _Item:
    """One disagreement (or a group of alike ones): explained by `note`, or not."""
    where: str
    count: int
    what: str
    note: str = ""

    @property
    def explained(self) -> bool:
        return bool(self.note)

    def line(self) -> str:
        text = f"{self.where}: {self.count} {self.what}"
        return f"{text}: {self.note}" if self.note else text


def _host_addresses(flows: list[dict]) -> dict[str, set[tuple[int, int]]]:
    out: dict[str, set] = {}
    for f in flows:
        for role in ("client", "server"):
            addr = f.get(f"{role}_addr")
            if not addr or not f.get(role):
                continue
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            # the reader keeps IPv4 addresses IPv4-mapped (toolkit.pcap.columns)
            v = int(ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip)
            out.setdefault(f[role], set()).add((v >> 64, v & ((1 << 64) - 1)))
    return out


def _link_direction(src: str, dst: str, pair: tuple[str, str] | None) -> str:
    if pair and (src, dst) == tuple(pair):
        return "a_to_b"
    if pair and (dst, src) == tuple(pair):
        return "b_to_a"
    return f"{src}_to_{dst}"


def _read_report(run_dir: Path, flow: dict, side: str) -> dict | None:
    rel = (flow.get(side) or {}).get("report")
    if not rel:
        return None
    p = Path(run_dir) / rel
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    from ..endpoints.report import upgrade
    return upgrade(doc) if isinstance(doc, dict) else None


def _tcpinfo(report: dict | None) -> float:
    """total_retrans of a TCP report: a sender's end.tcp_info (a server's connection's,
    when there is one); NaN when there is none."""
    if not report:
        return math.nan
    end = report.get("end") or {}
    info = end.get("tcp_info")
    if not info:
        for c in report.get("connections") or []:
            if (c.get("tcp_info") or {}).get("total_retrans") is not None:
                info = c["tcp_info"]
                break
    if not info or info.get("total_retrans") is None:
        return math.nan
    return float(info["total_retrans"])


def _udp_reported_lost(report: dict | None, flow_ids: set[int]) -> float:
    """Data datagrams the UDP receiver counted lost: its connections[] entry of the lab
    flow (labkit serve --proto udp), or end.lost."""
    if not report:
        return math.nan
    conns = [c for c in report.get("connections") or []
             if c.get("lost") is not None and (not flow_ids or c.get("flow") in flow_ids)]
    if conns:
        return float(sum(c["lost"] for c in conns))
    lost = (report.get("end") or {}).get("lost")
    return math.nan if lost is None else float(lost)


def _frames_of_flow(flow: dict, frames: dict, host_addrs: dict, pair, items: list) -> dict:
    """Each point's frames, less those of the flow's port that belong to another flow: a
    frame to (from) the flow's server port belongs to it when its other end is the flow's
    client or, when the client forges its sources (a SYN flood: its own capture shows
    frames to the server from addresses no lab host has), such an address. The server's
    answers to forged addresses go to nobody: no capture after the link can see them, so
    they are set aside with a note."""
    server = host_addrs.get(flow["server"])
    client = host_addrs.get(flow["client"]) or set()
    if not server:
        return frames
    known = set().union(*host_addrs.values())
    port, l4 = int(flow["port"]), 6 if flow["proto"] == "tcp" else 17

    def parts(f):
        src = pd.Series(list(zip(f["src_hi"].tolist(), f["src_lo"].tolist())))
        dst = pd.Series(list(zip(f["dst_hi"].tolist(), f["dst_lo"].tolist())))
        mine = (f["l4"] == l4).to_numpy()
        c2s = mine & (f["dport"] == port).to_numpy() & dst.isin(server).to_numpy()
        s2c = mine & (f["sport"] == port).to_numpy() & src.isin(server).to_numpy()
        return src, dst, mine, c2s, s2c

    forging = False
    for point in (flow["client"], f"r-{flow['client']}"):
        f = frames.get(point)
        if f is not None and len(f):
            src, _, _, c2s, _ = parts(f)
            forging |= bool((c2s & ~src.isin(known).to_numpy()).any())
    out, answered = {}, 0
    for point, f in frames.items():
        if f is None or len(f) == 0:
            out[point] = f
            continue
        src, dst, mine, c2s, s2c = parts(f)
        from_client = src.isin(client).to_numpy().copy()
        if forging:
            from_client |= ~src.isin(known).to_numpy()
        forged = s2c & ~dst.isin(known).to_numpy() if forging else np.zeros(len(f), bool)
        if point in (flow["server"], f"r-{flow['server']}") and forged.any():
            answered = max(answered, int(forged.sum()))
        keep = (c2s & from_client) | (s2c & dst.isin(client).to_numpy())
        other = mine & ((f["dport"] == port).to_numpy() | (f["sport"] == port).to_numpy())
        out[point] = f[~other | keep].reset_index(drop=True)
    if answered:
        where = f"{_link_direction(flow['server'], flow['client'], pair)} {flow['name']} " \
                f"({flow['proto']})"
        items.append(_Item(where, answered, "answers to addresses no lab host has",
                           "the client forged those sources (SYN flood): the server's "
                           "SYN-ACKs go to nobody, and no capture after the link sees them"))
    return out


def _client_ports(flow: dict):
    """The client's source ports: its client_port, or client_port to client_port + N - 1
    for a client of N connections (`labkit send --parallel N`, a scenario's
    --connections N), each from the next port."""
    cport = flow.get("client_port")
    n = flow.get("connections") or 1
    return (cport, cport + n - 1) if cport and isinstance(n, int) and n > 1 else cport


def _select(frames: pd.DataFrame | None, proto: str, port: int, client_port, c2s: bool):
    """Frames of one flow and direction (by protocol and the server's port; the client's
    port too when the capture has it)."""
    if frames is None:
        return None
    l4 = 6 if proto == "tcp" else 17
    f = frames[frames["l4"] == l4]
    mine = f["dport"] == port if c2s else f["sport"] == port
    f = f[mine]
    if client_port:
        lo, hi = client_port if isinstance(client_port, tuple) else (client_port, client_port)
        cp = f["sport"].between(lo, hi) if c2s else f["dport"].between(lo, hi)
        if cp.any():
            f = f[cp]
    return f.reset_index(drop=True)


def _select_ledger(led: pd.DataFrame | None, direction: str, proto: str, port: int,
                   client_port, c2s: bool):
    if led is None:
        return None
    f = led[(led["dir"] == direction) & (led["proto"] == proto)]
    f = f[(f["dport"] == port) if c2s else (f["sport"] == port)]
    if client_port:
        lo, hi = client_port if isinstance(client_port, tuple) else (client_port, client_port)
        cp = f["sport"].between(lo, hi) if c2s else f["dport"].between(lo, hi)
        if cp.any():
            f = f[cp]
    return f.reset_index(drop=True)


def reconcile(run_dir: Path, run: dict, analyses: dict) -> Reconciliation:
    """Ground truth of one run folder, reconciled (see the module doc).

    run: the run.json dict (flows, engine, captures); analyses: vantage point name ->
    toolkit.analyze() of that point's capture (only the points captured). The ledger is
    read from run_dir/link.jsonl when the engine was the userspace one."""
    from ..netlab import ledger as ledger_mod

    run_dir = Path(run_dir)
    engine = run.get("engine") or {}
    led_records, pair, header, trailer, led_note = None, None, {}, None, ""
    path = run_dir / ((run.get("files") or {}).get("ledger") or "link.jsonl")
    if engine.get("name") in ("userspace", None) and path.exists():
        try:
            led = ledger_mod.read(path)
        except (OSError, ledger_mod.LedgerError):
            led = None              # reconciled from the captures; the truth line says so
        if led is not None:
            led_records, header, trailer, led_note = (led.records, led.header, led.trailer,
                                                      led.note)
            pair = tuple(header.get("pair") or ()) or None
    if pair is None:
        hosts = ((run.get("spec") or {}).get("topology") or {}).get("hosts")
        pair = tuple(hosts[:2]) if hosts and len(hosts) >= 2 else ("a", "b")
    frames = {p: frame_table(a) for p, a in analyses.items()}
    flows = _with_connections(run)
    reports = {}
    for f in run.get("flows") or []:
        reports[f["name"]] = {"send": _read_report(run_dir, f, "send"),
                              "serve": _read_report(run_dir, f, "serve")}
    udp_flows = {p: a.udp_flows for p, a in analyses.items()}
    return reconcile_frames(
        flows=flows, engine=engine, frames=frames, udp_flows=udp_flows,
        ledger=ledger_table(led_records) if led_records is not None else None,
        reports=reports, captures=run.get("captures") or {}, pair=pair,
        ledger_info={"header": header, "trailer": trailer, "note": led_note},
        host_counters=host_counters(run_dir, run))


def _with_connections(run: dict) -> list[dict]:
    """run.json's flows, each with `connections`: how many the client opened, one source
    port after the other (the lab's send.parallel, or a scenario's send.connections)."""
    spec_flows = {f.get("name"): f for f in (run.get("spec") or {}).get("flow") or []
                  if isinstance(f, dict)}
    out = []
    for f in run.get("flows") or []:
        send = (spec_flows.get(f.get("name")) or {}).get("send") or {}
        n = send.get("parallel") or send.get("connections") or 1
        out.append({**f, "connections": n if isinstance(n, int) and n > 0 else 1})
    return out


def host_counters(run_dir: Path, run: dict) -> dict[str, dict[str, int]]:
    """Per host the run observed ([observe]), the SNMP counters that changed and by how
    much ({} for a host observed with none changed); hosts not observed are absent."""
    from types import SimpleNamespace

    from . import observe
    folder = SimpleNamespace(doc=run, path=Path(run_dir))
    try:
        out = {h: {} for h in observe._files(folder)}
        for r in observe.counter_rows(folder):
            out.setdefault(r["host"], {})[r["counter"]] = int(r["delta"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return out


def reconcile_frames(*, flows: list[dict], engine: dict, frames: dict[str, pd.DataFrame],
                     ledger: pd.DataFrame | None, reports: dict | None = None,
                     captures: dict | None = None, pair: tuple[str, str] = ("a", "b"),
                     ledger_info: dict | None = None,
                     udp_flows: dict | None = None,
                     host_counters: dict | None = None) -> Reconciliation:
    """The pure part of `reconcile`: frame tables per vantage point (frame_table), the
    ledger as a table (ledger_table, or None), the endpoint reports per flow name
    ({"send": doc, "serve": doc}), the analyzer's udp_flows per vantage point, and the
    observed hosts' counter deltas ({host: {"UdpRcvbufErrors": n, ...}}). No I/O."""
    reports = reports or {}
    host_counters = host_counters or {}
    # what each observed host's drop counters can still explain, drawn on flow by flow
    budget = {h: {k: int(c.get(k, 0)) for k in HOST_DROP_COUNTERS}
              for h, c in host_counters.items()}
    udp_flows = udp_flows or {}
    captures = captures or {}
    rows, drop_tables, items, checks, udp_lost = [], [], [], [], []
    seen_n: set[int] = set()
    host_addrs = _host_addresses(flows)
    for flow in flows:
        c, s = flow["client"], flow["server"]
        flow_frames = _frames_of_flow(flow, frames, host_addrs, pair, items)
        for src, dst in ((c, s), (s, c)):
            res = _direction(flow, src, dst, flow_frames, ledger,
                             reports.get(flow["name"]) or {},
                             captures, pair, udp_flows, engine, budget, host_counters)
            if res is None:
                continue
            row, drops, its, ns, lost = res
            udp_lost += lost
            rows.append(row)
            drop_tables.append(drops)
            items += its
            seen_n |= ns
    if ledger is not None:
        other = ledger[(ledger["t_out"] < 0) & ~ledger["n"].isin(seen_n)]
        if len(other):
            drop_tables.append(_drop_rows(other, None, None, "", note="not part of a flow of "
                                          "the run (the link drops every kind of frame)"))
        truth = "ledger of the userspace engine"
        info = ledger_info or {}
        if info.get("note"):
            items.append(_Item("ledger", 1, "ledger incomplete", f"{info['note']}; every "
                               "complete record was used"))
    else:
        checks = _kernel_checks(engine, frames, flows, pair, captures, items)
        name = engine.get("name")
        p0, p1 = pair[0], pair[1]
        bp = f"r-{p0}" if f"r-{p0}" in frames else p0 if p0 in frames else None
        ap = f"r-{p1}" if f"r-{p1}" in frames else p1 if p1 in frames else None
        seen = f"captures {bp} and {ap}" if bp and ap else None
        if seen is None:
            truth = "none: no capture on each side of the link, and no ledger"
        elif name == "kernel":
            truth = f"{seen}, total checked by nftables counter"
        elif name == "userspace":
            truth = f"{seen} (the userspace engine left no ledger)"
            items.append(_Item("ledger", 1, "userspace run without its ledger (link.jsonl)"))
        else:
            truth = f"{seen} (no link engine: the router's kernel forwarded)"
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS) if rows else pd.DataFrame(
        columns=SUMMARY_COLUMNS)
    drops = (pd.concat([d for d in drop_tables if len(d)], ignore_index=True)
             if any(len(d) for d in drop_tables) else _empty_drops())
    drops = drops[DROP_COLUMNS].sort_values(["t_in_unix_s"], kind="stable").reset_index(drop=True)
    notes = [it.line() for it in items if it.explained]
    unexplained = [it.line() for it in items if not it.explained]
    lost = (pd.concat(udp_lost, ignore_index=True) if udp_lost else
            pd.DataFrame({c: pd.Series([], dtype=object) for c in UDP_LOST_COLUMNS}))
    lost["udp_seq"] = pd.to_numeric(lost["udp_seq"]).astype("Int64")
    return Reconciliation(summary=_typed_summary(summary), drops=_typed_drops(drops),
                          notes=notes, unexplained=int(sum(it.count for it in items
                                                           if not it.explained)),
                          truth=truth, unexplained_items=unexplained, checks=checks,
                          udp_lost=lost[UDP_LOST_COLUMNS], host_counters=dict(host_counters))


UDP_LOST_COLUMNS = ["direction", "flow", "udp_flow", "udp_seq", "where"]
# the kernel's counters of datagrams it dropped inside a host after every capture saw them
# (/proc/net/snmp): the socket's receive buffer was full; no socket had the port (any more)
HOST_DROP_COUNTERS = ("UdpRcvbufErrors", "UdpNoPorts")


SUMMARY_COLUMNS = [
    "direction", "proto", "flow", "src_host", "dst_host", "truth", "before_point",
    "after_point", "sender_point", "receiver_point",
    # what the link did (ledger)
    "link_frames", "link_dropped", *[f"link_dropped_{r}" for r in REASONS],
    "link_duplicated", "link_reordered", "link_delayed", "link_corrupted",
    "link_delay_mean_s", "link_delay_max_s",
    # what the captures saw
    "before_frames", "after_frames", "missing_after", "matched_to_ledger",
    "ledger_drops_unseen_before", "ledger_drops_seen_after", "after_unknown_to_ledger",
    "ledger_time_offset_max_s",
    # TCP: what the analyzer concluded, beside the truth by sequence numbers
    "tcp_data_dropped", "tcp_acks_dropped", "tcp_drops_repaired",
    *[f"repair_labelled_{k}" for k in LABELS], "repair_unlabelled", "repair_delay_max_s",
    "resends", "resends_data", "resends_syn", "resends_fin", "resends_repair",
    "resends_partial", "resends_dropped", "resends_spurious",
    "retransmissions", "fast_retransmissions", "spurious_retransmissions", "out_of_order",
    "lost_segment_verdicts", "duplicate_acks",
    # UDP
    "udp_flow_ids", "udp_sent", "udp_received_at_receiver", "udp_lost_at_receiver",
    "udp_lost_link", "udp_lost_before_link", "udp_lost_receiving_interface",
    "udp_lost_host", "host_udp_rcvbuf_errors", "udp_link_dropped", "udp_control_dropped",
    "udp_duplicates_at_receiver",
    "udp_reordered_at_receiver",
    # what the endpoints said
    "tcpinfo_total_retrans", "udp_lost_reported_by_receiver", "dropped_in_host",
    "explained", "unexplained"]

DROP_COLUMNS = ["n", "direction", "proto", "flow", "segment", "t_in_unix_s", "frame_bytes",
                "flags", "seq", "ack", "payload_bytes", "udp_flow", "udp_seq", "reason", "why",
                "before_frame", "after_seen", "repair_frame", "repair_delay_s", "repair_label",
                "explained", "note"]

_TEXT_SUMMARY = ("direction", "proto", "flow", "src_host", "dst_host", "truth", "before_point",
                 "after_point", "sender_point", "receiver_point", "udp_flow_ids")


def _typed_summary(df: pd.DataFrame) -> pd.DataFrame:
    for c in df.columns:
        if c in _TEXT_SUMMARY:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
        elif c.endswith("_s"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df


def _typed_drops(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("n", "frame_bytes", "seq", "ack", "payload_bytes", "udp_flow", "udp_seq",
              "before_frame", "repair_frame"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in ("t_in_unix_s", "repair_delay_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("after_seen", "explained"):
        df[c] = df[c].astype("boolean")
    for c in ("direction", "proto", "flow", "segment", "flags", "reason", "why",
              "repair_label", "note"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _empty_drops() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in DROP_COLUMNS})


def _segment_kind(proto: str, flags: int, plen: int, udp_kind: int = -1) -> str:
    if proto == "tcp":
        if flags & SYN:
            return "syn"
        if flags & RST:
            return "rst"
        if plen > 0:
            return "data+fin" if flags & FIN else "data"
        return "fin" if flags & FIN else "ack"
    if proto == "udp":
        return "control" if udp_kind == KIND_CONTROL else "datagram"
    return proto


def _drop_rows(led: pd.DataFrame, direction: str | None, proto: str | None, flow: str | None,
               note: str = "") -> pd.DataFrame:
    """Drops-table rows for ledger drops (the fate columns filled in later)."""
    df = pd.DataFrame({
        "n": led["n"].to_numpy(),
        "direction": led["dir"].to_numpy() if direction is None else direction,
        "proto": led["proto"].to_numpy() if proto is None else proto,
        "flow": flow or None,
        "segment": [_segment_kind(p, f, n) for p, f, n in
                    zip(led["proto"], led["flags"], led["plen"])],
        "t_in_unix_s": led["t_in"].to_numpy() / 1e9,
        "frame_bytes": led["len"].to_numpy(),
        "flags": [flag_letters(f) if p == "tcp" else None
                  for p, f in zip(led["proto"], led["flags"])],
        "seq": np.where(led["proto"] == "tcp", led["seq"], pd.NA),
        "ack": np.where(led["proto"] == "tcp", led["ack"], pd.NA),
        "payload_bytes": led["plen"].to_numpy(),
        "udp_flow": np.where(led["udp_flow"] >= 0, led["udp_flow"], pd.NA),
        "udp_seq": np.where(led["udp_seq"] >= 0, led["udp_seq"], pd.NA),
        "reason": led["reason"].to_numpy(), "why": led["why"].to_numpy(),
        "before_frame": pd.NA, "after_seen": pd.NA, "repair_frame": pd.NA,
        "repair_delay_s": np.nan, "repair_label": None, "explained": True, "note": note,
    })
    return df


def _capture_dropped(captures: dict, point: str | None) -> int:
    c = (captures.get(point) or {}).get("counters") or {}
    try:
        return int(c.get("dropped") or 0)
    except (TypeError, ValueError):
        return 0


def _span_of_capture(frames: pd.DataFrame | None) -> tuple[int, int]:
    if frames is None or len(frames) == 0:
        return 0, 0
    return int(frames["ts_ns"].min()), int(frames["ts_ns"].max())


@dataclass
class _Ctx:
    """What one direction of one flow is reconciled with."""
    flow: dict
    where: str
    direction: str
    reverse: str
    c2s: bool
    frames: dict
    udp_flows: dict
    ledger: pd.DataFrame | None
    reports: dict
    captures: dict
    before_p: str | None
    after_p: str | None
    sender_p: str | None
    receiver_p: str | None
    keys: list
    udp_lost: list = field(default_factory=list)
    host_budget: dict = field(default_factory=dict)       # shared by every flow of the run
    host_counters: dict = field(default_factory=dict)


def _direction(flow: dict, src: str, dst: str, frames: dict, ledger: pd.DataFrame | None,
               reports: dict, captures: dict, pair, udp_flows: dict, engine: dict,
               host_budget: dict | None = None, host_counters: dict | None = None):
    """One direction of one flow: its summary row, its drops rows, its items, and the
    ledger numbers it claimed."""
    proto, port, cport = flow["proto"], int(flow["port"]), _client_ports(flow)
    c2s = src == flow["client"]
    direction = _link_direction(src, dst, pair)
    where = f"{direction} {flow['name']} ({proto})"
    pick = lambda *names: next((p for p in names if p in frames), None)  # noqa: E731
    before_p, after_p = pick(f"r-{src}", src), pick(f"r-{dst}", dst)
    sender_p, receiver_p = pick(src, f"r-{src}"), pick(dst, f"r-{dst}")
    sel = lambda p: _select(frames.get(p), proto, port, cport, c2s) if p else None  # noqa: E731
    B, A, S, R = sel(before_p), sel(after_p), sel(sender_p), sel(receiver_p)
    L = _select_ledger(ledger, direction, proto, port, cport, c2s)
    keys = TCP_KEY if proto == "tcp" else UDP_KEY
    nothing = all(x is None or len(x) == 0 for x in (B, A, S, R, L))
    if nothing and not c2s:
        return None                        # e.g. a UDP stream: nothing comes back
    items: list[_Item] = []
    row = {c: np.nan for c in SUMMARY_COLUMNS}
    row.update(direction=direction, proto=proto, flow=flow["name"], src_host=src,
               dst_host=dst, before_point=before_p, after_point=after_p,
               sender_point=sender_p, receiver_point=receiver_p,
               truth="ledger" if ledger is not None else "captures")
    if B is not None:
        row["before_frames"] = len(B)
    if A is not None:
        row["after_frames"] = len(A)

    # --- the link's own record, and frames joined through it ---
    if L is not None:
        arr = L[L["copy"] == 1].sort_values("n", kind="stable").reset_index(drop=True)
        dep = L[L["t_out"] >= 0].sort_values(["t_out", "copy"], kind="stable").reset_index(
            drop=True)
        dropped = arr[arr["t_out"] < 0]
        row["link_frames"] = len(arr)
        row["link_dropped"] = len(dropped)
        for r in REASONS:
            row[f"link_dropped_{r}"] = int((dropped["reason"] == r).sum())
        row["link_duplicated"] = int((L["copy"] > 1).sum())
        row["link_reordered"] = int((arr["action"] == "hold").sum())
        row["link_delayed"] = int((arr["action"] == "delay").sum())
        row["link_corrupted"] = int((arr["action"] == "corrupt").sum())
        fwd = arr[arr["t_out"] >= 0]
        if len(fwd):
            d = (fwd["t_out"] - fwd["t_in"]) / 1e9
            row["link_delay_mean_s"], row["link_delay_max_s"] = float(d.mean()), float(d.max())
        arr_n = arr["n"].to_numpy()
        if B is not None:
            bi = pair_by_occurrence(B, arr, keys)
            B["n"] = np.where(bi >= 0, arr_n[np.maximum(bi, 0)], -1)
            B["t_link"] = np.where(bi >= 0, arr["t_in"].to_numpy()[np.maximum(bi, 0)],
                                   B["ts_ns"].to_numpy())
        damaged = set(arr.loc[arr["action"] == "corrupt", "n"].tolist())
        if B is not None:
            B["damaged"] = B["n"].isin(damaged).to_numpy()
        if A is not None:
            ai = _pair_damaged(A, dep, pair_by_occurrence(A, dep, keys))
            A["n"] = np.where(ai >= 0, dep["n"].to_numpy()[np.maximum(ai, 0)], -1)
            A["damaged"] = A["n"].isin(damaged).to_numpy()
            A["t_link"] = np.where(ai >= 0, dep["t_in"].to_numpy()[np.maximum(ai, 0)],
                                   A["ts_ns"].to_numpy())
            A["t_out"] = np.where(ai >= 0, dep["t_out"].to_numpy()[np.maximum(ai, 0)], -1)
        offsets = []
        if B is not None and (B["n"] >= 0).any():
            m = B[B["n"] >= 0]
            offsets.append(np.abs(m["ts_ns"].to_numpy() - m["t_link"].to_numpy()).max())
        if A is not None and (A["n"] >= 0).any():
            m = A[A["n"] >= 0]
            offsets.append(np.abs(m["ts_ns"].to_numpy() - m["t_out"].to_numpy()).max())
        if offsets:
            row["ledger_time_offset_max_s"] = float(max(offsets)) / 1e9
            if row["ledger_time_offset_max_s"] > TIME_TOLERANCE_S:
                items.append(_Item(where, 1, f"capture and ledger times differ by up to "
                                   f"{row['ledger_time_offset_max_s'] * 1e3:.1f} ms (more than "
                                   f"{TIME_TOLERANCE_S * 1e3:.0f} ms)"))
    elif B is not None and A is not None:
        bi = pair_across_link(B, A, keys)
        A["b"] = bi
        A["t_link"] = np.where(bi >= 0, B["ts_ns"].to_numpy()[np.maximum(bi, 0)],
                               A["ts_ns"].to_numpy())

    # --- before vs after, per frame ---
    drops = _empty_drops()
    if B is not None and A is not None:
        if L is not None:
            seen = A[A["n"] >= 0].groupby("n").size()
            after_count = B["n"].map(seen).fillna(0).astype(int).where(B["n"] >= 0, 0)
            first_after = A[A["n"] >= 0].drop_duplicates("n").set_index("n")["frame"]
            B["after_frame"] = B["n"].map(first_after).fillna(-1).astype(np.int64)
        else:
            counts = np.bincount(A["b"][A["b"] >= 0], minlength=len(B)) if len(B) else \
                np.zeros(0, int)
            after_count = pd.Series(counts[:len(B)])
            B["after_frame"] = -1
            ok = A[A["b"] >= 0].drop_duplicates("b")
            B.loc[ok["b"].to_numpy(), "after_frame"] = ok["frame"].to_numpy()
        B["after_count"] = after_count.to_numpy()
        missing = B[B["after_count"] == 0]
        row["missing_after"] = len(missing)
    else:
        missing = None

    if L is not None:
        # one row per frame the link dropped, and per frame it corrupted (it went on, but
        # the receiver's checksum check discards it: lost all the same)
        lost = L[(L["t_out"] < 0) | ((L["action"] == "corrupt") & (L["copy"] == 1))]
        lost = lost.sort_values("n").reset_index(drop=True)
        is_drop = (lost["t_out"] < 0).to_numpy()
        dropped = lost[is_drop]
        drops = _drop_rows(lost, direction, proto, flow["name"])
        drops["_t_in"] = lost["t_in"].to_numpy()
        for k in ("sport", "dport", "flags", "seq", "plen"):
            drops["_" + k] = lost[k].to_numpy()
        drops["_kind"] = -1
        drops["_drop"] = is_drop
        if (~is_drop).any():
            drops.loc[~is_drop, "reason"] = "corrupt"
            drops.loc[~is_drop, "note"] = ("corrupted by the link (one bit flipped): the "
                                           "receiver's checksum check discards it")
        if B is not None:
            # where each drop was in the capture before the link
            pos = B.reset_index().set_index("n")
            nb = pos[pos.index >= 0]
            drops["before_frame"] = drops["n"].map(nb["frame"]).astype("Int64")
            drops["_kind"] = drops["n"].map(nb["udp_kind"]).fillna(-1).astype(int).to_numpy()
            if proto == "udp":
                drops["segment"] = [_segment_kind("udp", 0, 0, k) for k in drops["_kind"]]
            drops["after_seen"] = ~is_drop
            miss = missing if missing is not None else B.iloc[0:0]
            row["matched_to_ledger"] = int(miss["n"].isin(dropped["n"]).sum()) if len(miss) \
                else 0
            # drops the capture before the link never showed
            unseen = drops["before_frame"].isna()
            row["ledger_drops_unseen_before"] = int(unseen.sum())
            if unseen.any():
                lo, hi = _span_of_capture(frames.get(before_p))
                t = drops.loc[unseen, "_t_in"]
                outside = int(((t < lo) | (t > hi)).sum())
                cap_drop = _capture_dropped(captures, before_p)
                n_un = int(unseen.sum())
                if outside:
                    items.append(_Item(where, outside, f"ledger drops outside the time the "
                                       f"capture at {before_p} ran", "the capture before the "
                                       "link had stopped or not yet started"))
                if n_un - outside:
                    items.append(_Item(where, n_un - outside, f"ledger drops the capture at "
                                       f"{before_p} did not record",
                                       f"that capture counted {cap_drop} frames it dropped"
                                       if cap_drop >= n_un - outside else ""))
                drops.loc[unseen, "explained"] = bool(outside or cap_drop)
                drops.loc[unseen, "note"] = f"not in the capture at {before_p}"
        if A is not None:
            # a frame the ledger dropped must not appear after the link: one more frame of
            # its identity after the link than the ledger sent would be it
            extra = A[A["n"] < 0]
            row["after_unknown_to_ledger"] = len(extra)
            seen_after = np.zeros(len(drops), bool)
            if len(extra) and is_drop.any():
                ek = extra[keys].astype(np.int64)
                dk = dropped[keys].astype(np.int64)
                hit = dk.merge(ek.drop_duplicates(), on=keys, how="left", indicator=True)
                seen_after[is_drop] = (hit["_merge"] == "both").to_numpy()
            drops["after_seen"] = seen_after | ~is_drop
            row["ledger_drops_seen_after"] = int(seen_after.sum())
            if seen_after.any():
                items.append(_Item(where, int(seen_after.sum()), "frames the ledger dropped "
                                   f"appear in the capture at {after_p}"))
                drops.loc[seen_after, "explained"] = False
                drops.loc[seen_after, "note"] = "the ledger dropped it, yet it was seen after"
            n_extra = len(extra) - int(seen_after.sum())
            if n_extra > 0:
                lo, hi = int(L["t_in"].min()) if len(L) else 0, int(L["t_in"].max()) if len(
                    L) else 0
                outside = int(((extra["ts_ns"] < lo) | (extra["ts_ns"] > hi + 10**9)).sum()) \
                    if len(L) else n_extra
                outside = min(outside, n_extra)
                if outside:
                    items.append(_Item(where, outside, f"frames at {after_p} outside the "
                                       "engine's time", "forwarded by the router's kernel "
                                       "before the engine started or after it stopped"))
                if n_extra - outside:
                    items.append(_Item(where, n_extra - outside, f"frames at {after_p} the "
                                       "ledger never sent (corrupted on the link?)",
                                       "the link corrupted a frame's header bytes"
                                       if row["link_corrupted"] else ""))
            # departures nobody saw after the link
            dep_n = L[L["t_out"] >= 0]
            unseen_dep = len(dep_n) - int((A["n"] >= 0).sum())
            if unseen_dep > 0:
                cap_drop = _capture_dropped(captures, after_p)
                lo, hi = _span_of_capture(frames.get(after_p))
                t = dep_n["t_out"]
                outside = min(unseen_dep, int(((t < lo) | (t > hi)).sum()))
                if outside:
                    items.append(_Item(where, outside, f"frames the link sent outside the "
                                       f"time the capture at {after_p} ran", "the capture "
                                       "after the link had stopped or not yet started"))
                if unseen_dep - outside:
                    items.append(_Item(where, unseen_dep - outside, "frames the link sent "
                                       f"that the capture at {after_p} did not record",
                                       f"that capture counted {cap_drop} frames it dropped"
                                       if cap_drop >= unseen_dep - outside else ""))
        if missing is not None and len(missing):
            not_dropped = missing[~missing["n"].isin(dropped["n"])]
            if len(not_dropped):
                # a frame unknown to the ledger, or one it says it sent: counted above
                # when it was a departure nobody saw; unknown ones are new here
                unknown = int((not_dropped["n"] < 0).sum())
                if unknown:
                    lo = int(L["t_in"].min()) if len(L) else 0
                    items.append(_Item(where, unknown, f"frames seen at {before_p}, not "
                                       f"after the link and not in the ledger",
                                       "they crossed before the engine started"
                                       if (not_dropped["ts_ns"] < lo).all() else ""))
    elif missing is not None:
        # kernel engine: the captures are the truth, one row per frame missing after
        drops = _kernel_drop_rows(missing, direction, proto, flow["name"])
        stats = engine.get("stats") or {}
        queue = _qdisc_drops(stats, direction)
        row["link_frames"] = len(B)
        row["link_dropped"] = len(missing)
        if not queue:
            # no tbf queue dropped anything that way: every drop was the nftables loss rule
            row["link_dropped_loss"] = len(missing)
            drops["reason"] = "loss"
        else:
            drops["reason"] = "loss or queue"
        unknown_after = int((A["b"] < 0).sum()) if A is not None else 0
        row["after_unknown_to_ledger"] = unknown_after
        if unknown_after:
            items.append(_Item(where, unknown_after, f"frames at {after_p} never seen at "
                               f"{before_p}", "the capture before the link counted drops"
                               if _capture_dropped(captures, before_p) else ""))

    # --- protocol specifics ---
    ctx = _Ctx(flow, where, direction, _link_direction(dst, src, pair), c2s, frames,
               udp_flows, ledger, reports, captures, before_p, after_p, sender_p, receiver_p,
               keys, host_budget=host_budget if host_budget is not None else {},
               host_counters=host_counters or {})
    (_tcp if proto == "tcp" else _udp)(ctx, row, drops, items, B, A, S, R, L)

    row["explained"] = int(sum(it.count for it in items if it.explained))
    row["unexplained"] = int(sum(it.count for it in items if not it.explained))
    claimed = set(L["n"].tolist()) if L is not None else set()
    drops = drops[[c for c in drops.columns if not c.startswith("_")]]
    return row, drops, items, claimed, ctx.udp_lost


def _pair_damaged(A: pd.DataFrame, dep: pd.DataFrame, ai: np.ndarray) -> np.ndarray:
    """A frame the link corrupted may have had a bit of its identity flipped (a UDP
    datagram's lab header is payload): such departures are paired by time instead, with
    an after-link frame no departure claimed, within 2 ms of it."""
    bad = np.flatnonzero((dep["action"] == "corrupt").to_numpy())
    if len(bad) == 0 or len(A) == 0:
        return ai
    taken = set(ai[ai >= 0].tolist())
    free = np.flatnonzero(ai < 0)
    ts = A["ts_ns"].to_numpy()
    for j in bad:
        if j in taken or len(free) == 0:
            continue
        gap = np.abs(ts[free] - int(dep["t_out"].iloc[j]))
        k = int(np.argmin(gap))
        if gap[k] <= 2_000_000:
            ai[free[k]] = j
            free = np.delete(free, k)
    return ai


def _kernel_drop_rows(missing: pd.DataFrame, direction, proto, flow) -> pd.DataFrame:
    tcp = proto == "tcp"
    return pd.DataFrame({
        "n": pd.NA, "direction": direction, "proto": proto, "flow": flow,
        "segment": [_segment_kind(proto, f, p, k) for f, p, k in
                    zip(missing["flags"], missing["plen"], missing["udp_kind"])],
        "t_in_unix_s": missing["ts_ns"].to_numpy() / 1e9,
        "frame_bytes": missing["wirelen"].to_numpy(),
        "flags": [flag_letters(f) if tcp else None for f in missing["flags"]],
        "seq": missing["seq"].to_numpy() if tcp else pd.NA,
        "ack": missing["ack"].to_numpy() if tcp else pd.NA,
        "payload_bytes": missing["plen"].to_numpy(),
        "udp_flow": np.where(missing["udp_flow"] >= 0, missing["udp_flow"], pd.NA),
        "udp_seq": np.where(missing["udp_seq"] >= 0, missing["udp_seq"], pd.NA),
        "reason": "kernel", "why": "seen before the link, not after (kernel engine)",
        "before_frame": missing["frame"].to_numpy(), "after_seen": False,
        "repair_frame": pd.NA, "repair_delay_s": np.nan, "repair_label": None,
        "explained": True, "note": "", "_drop": True,
        "_t_in": missing["ts_ns"].to_numpy(), "_sport": missing["sport"].to_numpy(),
        "_dport": missing["dport"].to_numpy(), "_flags": missing["flags"].to_numpy(),
        "_seq": missing["seq"].to_numpy(), "_plen": missing["plen"].to_numpy(),
        "_kind": missing["udp_kind"].to_numpy(), "_b": missing.index.to_numpy(),
    })


# ---------------------------------------------------------------- TCP

def _tcp(ctx: _Ctx, row, drops, items, B, A, S, R, L):
    where, frames, c2s, keys = ctx.where, ctx.frames, ctx.c2s, ctx.keys
    sender_p, before_p, after_p = ctx.sender_p, ctx.before_p, ctx.after_p
    port, cport = int(ctx.flow["port"]), _client_ports(ctx.flow)
    back = _select(frames.get(sender_p), "tcp", port, cport, not c2s) if sender_p else None
    # Wireshark's verdicts as they stand, at the sender and at the receiver
    if S is not None:
        row["retransmissions"] = int(S["retransmission"].sum())
        row["fast_retransmissions"] = int(S["fast_retransmission"].sum())
        row["spurious_retransmissions"] = int(S["spurious_retransmission"].sum())
        row["out_of_order"] = int(S["out_of_order"].sum())
        row["duplicate_acks"] = int(back["duplicate_ack"].sum())   # answering this data
    if R is not None:
        row["lost_segment_verdicts"] = int(R["lost_segment"].sum())
    tcpinfo = _tcpinfo(ctx.reports.get("send" if c2s else "serve"))
    row["tcpinfo_total_retrans"] = tcpinfo
    nd = len(drops)
    f = drops["_flags"].to_numpy().astype(np.int64) if nd else np.zeros(0, np.int64)
    span = (drops["_plen"].to_numpy().astype(np.int64) + ((f & SYN) > 0) + ((f & FIN) > 0)
            if nd else np.zeros(0, np.int64))
    has_span = span > 0
    if L is not None or B is not None:
        row["tcp_data_dropped"] = int(has_span.sum())
        row["tcp_acks_dropped"] = int((~has_span).sum())

    # the sender-side capture, each frame placed at the link through the capture before it
    bases = _conn_bases(S if S is not None and len(S) else B if B is not None else A
                        if A is not None else pd.DataFrame(columns=TCP_KEY))
    first_rtt: dict = {}
    if S is not None:
        first_rtt = _first_rtt_s(pd.concat([S, back], ignore_index=True))
        S = _place_at_link(S, B, L, keys, same=sender_p == before_p)
        S = _resends(_with_rel(S, bases))

    # repairs, by sequence numbers: among the frames seen after the link; failing that
    # (the capture there dropped frames), among the ones the ledger says it forwarded
    rep_t = np.full(nd, np.iinfo(np.int64).max, np.int64)
    rep_id = np.full(nd, -1, np.int64)            # the repair's ledger n, or before-row
    rep_src = np.array([""] * nd, object)
    d = pd.DataFrame({"sport": drops["_sport"], "dport": drops["_dport"],
                      "seq": drops["_seq"], "t_in": drops["_t_in"]}) if nd else None
    if nd and A is not None and len(A):
        good = A[~A["damaged"]] if "damaged" in A else A
        at = find_repairs(d, good)
        ok = (at >= 0) & has_span
        pos = np.maximum(at, 0)
        rep_t[ok] = good["t_link"].to_numpy()[pos][ok]
        rep_id[ok] = (good["n"] if L is not None else good["b"]).to_numpy()[pos][ok]
        rep_src[ok] = "after"
    if nd and L is not None and (has_span & (rep_id < 0)).any():
        seen = set(A["n"].tolist()) if A is not None else set()
        fwd = L[(L["copy"] == 1) & (L["t_out"] >= 0) & (L["action"] != "corrupt")
                & ~L["n"].isin(seen)].rename(columns={"t_in": "t_link"})
        if len(fwd):
            at = find_repairs(d, fwd)
            ok = (at >= 0) & has_span & (rep_id < 0)
            pos = np.maximum(at, 0)
            rep_t[ok] = fwd["t_link"].to_numpy()[pos][ok]
            rep_id[ok] = fwd["n"].to_numpy()[pos][ok]
            rep_src[ok] = "ledger"
    repaired = rep_id >= 0
    row["tcp_drops_repaired"] = int(repaired.sum()) if (L is not None or B is not None) \
        else np.nan
    delay = np.where(repaired, (rep_t - drops["_t_in"].to_numpy()) / 1e9 if nd else 0,
                     np.nan) if nd else np.zeros(0)

    # the repair as the sender-side capture saw it, and Wireshark's label on it there
    labels = np.array(["unknown"] * nd, object)
    repair_frame = np.full(nd, -1, np.int64)
    since = np.full(nd, np.nan)
    if S is not None and nd:
        by = S["n"] if L is not None else S["b"]
        first = pd.Series(np.arange(len(S)), index=by.to_numpy())
        first = first[~first.index.duplicated()]
        first = first[first.index >= 0]
        for i in np.flatnonzero(repaired):
            k = first.get(rep_id[i])
            if k is None:
                continue
            srow = S.iloc[int(k)]
            repair_frame[i] = int(srow["frame"])
            labels[i] = _label(srow)
            since[i] = srow["since_highest_s"]
    if nd:
        drops["repair_frame"] = np.where(repair_frame >= 0, repair_frame, pd.NA)
        drops["repair_delay_s"] = delay
        drops["repair_label"] = np.where(repaired & (repair_frame >= 0), labels, None)
    if S is not None:
        for k in LABELS:
            row[f"repair_labelled_{k}"] = int((repaired & (labels == k)).sum())
        row["repair_unlabelled"] = int((repaired & (labels == "none")).sum())
    if repaired.any():
        row["repair_delay_max_s"] = float(np.nanmax(delay[repaired]))

    notes = drops["note"].to_numpy().astype(object) if nd else np.zeros(0, object)
    expl = drops["explained"].to_numpy().astype(bool) if nd else np.zeros(0, bool)
    # a scripted fault that cut the flow (a vanished host): the link forwarded nothing of
    # this direction after the drop, so neither a repair nor a later ACK got through
    cut = np.zeros(nd, bool)
    if L is not None and nd:
        fwd_t = L[(L["copy"] == 1) & (L["t_out"] >= 0)]["t_in"].to_numpy()
        last_fwd = int(fwd_t.max()) if len(fwd_t) else -1
        cut = (drops["reason"].to_numpy() == "fault") & (drops["_t_in"].to_numpy() > last_fwd)
    for i in np.flatnonzero(~has_span):
        notes[i] = notes[i] or ("a RST occupies no sequence space: nothing to repair"
                                if f[i] & RST else "no sequence space, nothing to repair "
                                "(a fault cut the flow after it)" if cut[i] else
                                "no sequence space: a later cumulative ACK covers it")
    missed = repaired & (rep_src == "ledger")
    if missed.any() and A is not None:
        cap = _capture_dropped(ctx.captures, after_p)
        items.append(_Item(where, int(missed.sum()), f"repairs the ledger forwarded that "
                           f"the capture at {after_p} did not record",
                           f"that capture counted {cap} frames it dropped" if cap else ""))
        for i in np.flatnonzero(missed):
            notes[i] = (notes[i] + "; " if notes[i] else "") + \
                f"repair forwarded per the ledger, not in the capture at {after_p}"
            expl[i] = expl[i] and bool(cap)

    # dropped segments with no repair at all
    unrepaired = np.flatnonzero(has_span & ~repaired)
    if len(unrepaired) and (A is not None or L is not None):
        stopped = drops["reason"].to_numpy()[unrepaired] == "stopped"
        ends = [int(x["ts_ns"].max()) for x in (A, B) if x is not None and len(x)]
        late = drops["_t_in"].to_numpy()[unrepaired] > (min(ends) if ends else 0)
        rst = any(x is not None and bool(((x["flags"] & RST) > 0).any()) for x in (A, B, S))
        why = np.where(stopped, "dropped when the engine stopped: the run was over",
                       np.where(cut[unrepaired], "a fault cut the flow: the link forwarded "
                                "nothing of this direction after it (a vanished host), so "
                                "no repair could get through",
                                np.where(late, "dropped after a capture had stopped: its "
                                         "repair is not on record", "the connection was "
                                         "reset (RST) before a repair" if rst else "")))
        for i, w in zip(unrepaired, why):
            notes[i] = w or "no repair found by sequence numbers"
            expl[i] = expl[i] and bool(w)
        for w in sorted(set(why.tolist())):
            items.append(_Item(where, int((why == w).sum()), "dropped segments never "
                               "repaired", w))

    # repairs Wireshark did not label a retransmission
    if S is not None and repaired.any():
        ooo = repaired & (labels == "out_of_order")
        if ooo.any():
            thr = np.array([first_rtt.get(frozenset((int(a), int(b))), OOO_DEFAULT_S)
                            for a, b in zip(drops["_sport"], drops["_dport"])])
            within = ooo & (since < thr)
            if within.any():
                items.append(_Item(
                    where, int(within.sum()), "repairs Wireshark labels out_of_order, not "
                    "retransmission",
                    f"each came {_range_ms(since[within])} ms after the highest segment, "
                    f"under the handshake RTT ({float(np.max(thr[within])) * 1e3:.2f} ms) "
                    "packet-tcp.c takes as its out-of-order threshold; their sequence numbers "
                    "show they repair drops"))
                for i in np.flatnonzero(within):
                    notes[i] = (f"repair labelled out_of_order: {since[i] * 1e3:.2f} ms after "
                                f"the highest segment, under the {thr[i] * 1e3:.2f} ms RTT")
            rest = ooo & ~within
            if rest.any():
                items.append(_Item(where, int(rest.sum()), "repairs Wireshark labels "
                                   "out_of_order though they came later than its threshold"))
                expl[rest] = False
        for label, what in (("spurious_retransmission", "repairs Wireshark labels "
                             "spurious_retransmission"),
                            ("none", "repairs Wireshark gives no label")):
            odd = repaired & (labels == label)
            if odd.any():
                items.append(_Item(where, int(odd.sum()), what))
                expl[odd] = False
        nomap = repaired & (repair_frame < 0)
        if nomap.any():
            cap = _capture_dropped(ctx.captures, sender_p)
            items.append(_Item(where, int(nomap.sum()), f"repairs not found in the capture "
                               f"at {sender_p} (no label to compare)",
                               f"that capture counted {cap} frames it dropped" if cap else ""))
            expl[nomap] = expl[nomap] & bool(cap)
    if nd:
        drops["note"] = notes
        drops["explained"] = expl
    if S is None:
        return
    _tcp_resends(ctx, row, drops, items, S, A, span, rep_t, rep_id, bases, back, tcpinfo)


def _syn_answered(back: pd.DataFrame | None, conn: tuple[int, int], before_ns) -> bool:
    """Whether the server's SYN-ACK on this connection came before `before_ns`."""
    if back is None or len(back) == 0:
        return False
    f = back["flags"].to_numpy()
    return bool(((back["sport"].to_numpy() == conn[1]) & (back["dport"].to_numpy() == conn[0])
                 & ((f & (SYN | ACK)) == (SYN | ACK))
                 & (back["ts_ns"].to_numpy() < before_ns)).any())


def _place_at_link(S: pd.DataFrame, B: pd.DataFrame | None, L: pd.DataFrame | None,
                   keys: list[str], same: bool):
    """The sender-side frames with `n` (the ledger's record), `b` (their row in the capture
    before the link), `t_link` (when they reached the link, ns) and `got_through`. The
    capture at the sending host and the one before the link are the same wire, so the
    k-th frame of an identity there is the k-th arrival of it at the link."""
    S = S.copy()
    S["n"], S["b"], S["t_link"], S["got_through"] = -1, -1, S["ts_ns"], True
    if B is not None and len(B):
        si = np.arange(len(S)) if same else pair_by_occurrence(S, B, keys)
        ok, pos = si >= 0, np.maximum(si, 0)
        S["b"] = si
        t_b = (B["t_link"] if "t_link" in B else B["ts_ns"]).to_numpy()
        S["t_link"] = np.where(ok, t_b[pos], S["ts_ns"].to_numpy())
        if "after_count" in B:
            through = B["after_count"].to_numpy() > 0
            S["got_through"] = np.where(ok, through[pos], True)
    if L is not None and len(L):
        arr = L[L["copy"] == 1].sort_values("n", kind="stable").reset_index(drop=True)
        li = pair_by_occurrence(S, arr, keys)
        ok, pos = li >= 0, np.maximum(li, 0)
        S["n"] = np.where(ok, arr["n"].to_numpy()[pos], -1)
        S["t_link"] = np.where(ok, arr["t_in"].to_numpy()[pos], S["t_link"].to_numpy())
        passed = (arr["t_out"].to_numpy() >= 0) & (arr["action"].to_numpy() != "corrupt")
        S["got_through"] = np.where(ok, passed[pos], S["got_through"].to_numpy())
    return S


def _tcp_resends(ctx, row, drops, items, S, A, span, rep_t, rep_id, bases, back, tcpinfo):
    """Every resend at the sender: a repair, a partial one, itself lost on the link, or
    spurious (with what made it so); then the sender's TCP_INFO against them."""
    where, sender_p = ctx.where, ctx.sender_p
    res = S[S["resend"]]
    row["resends"] = len(res)
    f = res["flags"].to_numpy()
    row["resends_syn"] = int(((f & SYN) > 0).sum())
    row["resends_fin"] = int((((f & FIN) > 0) & (res["plen"].to_numpy() == 0)).sum())
    row["resends_data"] = int((res["plen"].to_numpy() > 0).sum())
    nd = len(drops)
    repair_ids = set(rep_id[rep_id >= 0].tolist())
    if nd:
        d_base = np.array([bases.get((int(a), int(b)), q) for a, b, q in
                           zip(drops["_sport"], drops["_dport"], drops["_seq"])], np.int64)
        d_rel = _rel(drops["_seq"].to_numpy(), d_base)
        d_conn = [(int(a), int(b)) for a, b in zip(drops["_sport"], drops["_dport"])]
        d_t = drops["_t_in"].to_numpy()
    else:
        d_rel, d_conn, d_t = np.zeros(0, np.int64), [], np.zeros(0, np.int64)
    d_end = d_rel + span
    acks = _back_ack_drops(ctx, bases)
    held = _held(ctx, bases)
    kinds = dict.fromkeys(("repair", "partial", "lost", "repeat", "reorder", "ack_dropped",
                           "syn_unanswered", "probe", "timer"), 0)
    highest_end = S.groupby(["sport", "dport"])["rel_end"].transform("max")
    ident = (res["n"] if ctx.ledger is not None else res["b"]).to_numpy()
    for (idx, r), rid in zip(res.iterrows(), ident):
        if not r["got_through"]:
            kinds["lost"] += 1
        elif rid >= 0 and int(rid) in repair_ids:
            kinds["repair"] += 1
        else:
            conn = (int(r["sport"]), int(r["dport"]))
            hit = [i for i in range(nd) if d_conn[i] == conn and d_t[i] < r["t_link"]
                   and d_rel[i] < r["rel_end"] and r["rel"] < d_end[i]]
            if any(rep_t[i] >= r["t_link"] for i in hit):
                kinds["partial"] += 1
            elif hit:
                kinds["repeat"] += 1
            elif conn in held and ((held[conn][0] < r["t_link"]) & (held[conn][1] <= r["rel"])
                                   & (r["rel"] < held[conn][2])).any():
                kinds["reorder"] += 1
            elif conn in acks and ((acks[conn][0] < r["t_link"])
                                   & (acks[conn][1] >= r["rel_end"])).any():
                kinds["ack_dropped"] += 1
            elif int(r["flags"]) & (SYN | ACK) == SYN and not _syn_answered(back, conn,
                                                                            r["ts_ns"]):
                kinds["syn_unanswered"] += 1
            elif r["rel_end"] >= highest_end.loc[idx]:
                kinds["probe"] += 1
            else:
                kinds["timer"] += 1
    row["resends_repair"] = kinds["repair"]
    row["resends_partial"] = kinds["partial"]
    row["resends_dropped"] = kinds["lost"]
    row["resends_spurious"] = (kinds["repeat"] + kinds["reorder"] + kinds["ack_dropped"]
                               + kinds["syn_unanswered"] + kinds["probe"] + kinds["timer"])
    for kind, what, note in (
            ("repeat", "resends of data already repaired", "a segment dropped and then "
             "repaired twice: one spurious retransmission each"),
            ("reorder", "resends of data that had arrived late", "the link held its first "
             "transmission (reordering); the duplicate ACKs meanwhile made the sender resend "
             "it (RFC 5681 3.2): spurious"),
            ("ack_dropped", "resends of data that had arrived", "the link dropped the ACK "
             "that covered it: spurious"),
            ("syn_unanswered", "SYNs sent again that the server had received and not "
             "answered", "its listener dropped them (SYN or accept queue full: "
             "TcpExtListenDrops), so the client's SYN timer fired (1 s, RFC 6298; Linux "
             "6.5+ retries every second at first, then doubles)"),
            ("probe", "resends of the highest segment, which had arrived", "a tail loss "
             "probe (RFC 8985 7.3) or an RTO (RFC 6298 5) while its ACK was on the way: "
             "spurious"),
            ("timer", "resends of data that had arrived", "resent before its ACK reached the "
             "sender (RTO, RFC 6298 5.4, or RACK, RFC 8985): spurious")):
        if kinds[kind]:
            items.append(_Item(where, kinds[kind], what, note))

    # what the sender's kernel counted. `labkit send` samples TCP_INFO once the peer's
    # report and FIN have arrived (toolkit.endpoints.tcp.send), so a resend the capture
    # shows after that FIN reached the sender is not in it.
    if math.isnan(tcpinfo):
        return
    after_sample = 0
    fins = back["ts_ns"][(back["flags"] & FIN) > 0] if back is not None else []
    if ctx.c2s and len(fins):
        after_sample = int((res["ts_ns"].to_numpy() > int(fins.min())).sum())
    if int(tcpinfo) == row["resends_data"] and not after_sample:
        return
    if row["resends_syn"]:
        items.append(_Item(where, row["resends_syn"], "TCP_INFO retransmissions beyond the "
                           "data resends", "TCP_INFO counts the retransmitted SYN, which "
                           "carries no payload"))
    if row["resends_fin"]:
        items.append(_Item(where, row["resends_fin"], "TCP_INFO retransmissions beyond the "
                           "data resends", "TCP_INFO counts the retransmitted FIN, which "
                           "carries no payload"))
    if after_sample:
        items.append(_Item(where, after_sample, "resends TCP_INFO does not count", "sent "
                           "after the peer's FIN arrived, when the sender had sampled "
                           "TCP_INFO"))
    left = int(tcpinfo) - (row["resends"] - after_sample)
    if left:
        cap = _capture_dropped(ctx.captures, sender_p)
        how = "TCP_INFO counts beyond" if left > 0 else "missing from TCP_INFO against"
        items.append(_Item(where, abs(left), f"retransmissions {how} the resends seen at "
                           f"{sender_p}", f"the capture at {sender_p} counted {cap} frames "
                           "it dropped" if left > 0 and cap >= left else ""))


# ---------------------------------------------------------------- UDP

def _udp(ctx: _Ctx, row, drops, items, B, A, S, R, L):
    send_rep, serve_rep = ctx.reports.get("send"), ctx.reports.get("serve")
    c2s = ctx.c2s
    first_item = len(items)
    try:
        _udp_direction(ctx, row, drops, items, B, A, S, R, L)
    finally:
        # UDP GSO (UDP_SEGMENT): one frame on the wire of the captures and through the
        # link carries several datagrams, of which only the first's lab header is read
        gso = ((send_rep if c2s else serve_rep) or {}).get("end", {}).get("gso_batch") or 1
        if isinstance(gso, (int, float)) and gso > 1:
            for it in items[first_item:]:
                it.note = (
                    f"the sender sent up to {int(gso)} datagrams per frame (UDP GSO, "
                    "gso_batch in its report): captures and the link see one frame per "
                    "batch and only its first lab header; send with --no-gso for "
                    "per-datagram truth")


def _udp_direction(ctx: _Ctx, row, drops, items, B, A, S, R, L):
    where, reports, flow, c2s = ctx.where, ctx.reports, ctx.flow, ctx.c2s
    before_p, sender_p, receiver_p = ctx.before_p, ctx.sender_p, ctx.receiver_p
    send_rep, serve_rep = reports.get("send"), reports.get("serve")
    ids: set[int] = set()
    for rep in (send_rep, serve_rep):
        fid = ((rep or {}).get("start") or {}).get("flow")
        if fid is not None and rep is send_rep:
            ids.add(int(fid))
    if not ids:
        for x in (S, B, R):
            if x is not None and len(x):
                ids |= set(x.loc[(x["udp_flow"] >= 0) & (x["udp_kind"] != KIND_CONTROL),
                                 "udp_flow"].astype(int).tolist())
    row["udp_flow_ids"] = ",".join(str(i) for i in sorted(ids)) or None
    data = lambda x: None if x is None else x[(x["udp_flow"].isin(ids))  # noqa: E731
                                              & (x["udp_kind"] != KIND_CONTROL)]
    Sd, Bd, Ad, Rd = data(S), data(B), data(A), data(R)
    # the link's drops: data, or control datagrams (hello / end, sent three times)
    if len(drops):
        ctrl = drops["_kind"].to_numpy() == KIND_CONTROL
        row["udp_control_dropped"] = int(ctrl.sum())
        data_rows = ~ctrl & drops["udp_flow"].isin(ids).to_numpy()
        is_data = data_rows & drops["_drop"].to_numpy().astype(bool)
        corrupted = int((data_rows & ~drops["_drop"].to_numpy().astype(bool)).sum())
        row["udp_link_dropped"] = int(is_data.sum())
        if ctrl.any():
            drops.loc[ctrl, "note"] = "a control datagram (hello or end marker, sent three " \
                                      "times): not data"
    else:
        is_data, corrupted = np.zeros(0, bool), 0
        row["udp_control_dropped"] = 0 if L is not None or B is not None else np.nan
        row["udp_link_dropped"] = 0 if L is not None or B is not None else np.nan
    if Sd is not None:
        row["udp_sent"] = int(Sd["udp_seq"].nunique())
    if Rd is None:
        return
    row["udp_received_at_receiver"] = len(Rd)
    # the analyzer's per-flow loss at the receiving side
    analysis_lost = np.nan
    fl = _udp_flow_rows(ctx.udp_flows.get(receiver_p), ids, flow, c2s)
    if fl is not None and len(fl):
        analysis_lost = float(fl["lost"].sum())
        row["udp_duplicates_at_receiver"] = int(fl["duplicates"].sum())
        row["udp_reordered_at_receiver"] = int(fl["reordered"].sum())
    row["udp_lost_at_receiver"] = analysis_lost
    # which seqs were lost, and where
    # the numbers sent: what the captures on the sender's side saw, what the receiver's
    # side saw in between, and the count the sender reported (numbered from 0)
    universe = set()
    for x in (Sd, Bd):
        if x is not None:
            universe |= set(x["udp_seq"].tolist())
    if len(Rd):
        universe |= set(range(int(Rd["udp_seq"].min()), int(Rd["udp_seq"].max()) + 1))
    sent = ((send_rep if c2s else serve_rep) or {}).get("end", {}).get("datagrams")
    if isinstance(sent, int) and 0 < sent <= 10_000_000:
        universe |= set(range(sent))
    got = set(Rd["udp_seq"].tolist())
    lost = np.array(sorted(universe - got), np.int64)
    at_before = set(Bd["udp_seq"].tolist()) if Bd is not None else None
    at_after = set(Ad["udp_seq"].tolist()) if Ad is not None else None
    at_sender = set(Sd["udp_seq"].tolist()) if Sd is not None else None
    link_seqs = set(drops.loc[is_data, "udp_seq"].dropna().astype(int).tolist()) \
        if len(drops) else set()
    where_lost = {"link": 0, "before": 0, "host": 0, "unknown": 0}
    place = []
    before_sender = 0
    for q in lost.tolist():
        if q in link_seqs and (at_after is None or q not in at_after):
            w = "link"
        elif at_before is not None and q not in at_before:
            w = "before"
            if at_sender is not None and q not in at_sender:
                before_sender += 1
        elif at_after is not None and q in at_after:
            w = "host"
        else:
            w = "unknown"
        where_lost[w] += 1
        place.append(w)
    names = {"link": "dropped by the link", "before": "missing before the link",
             "host": "missing only at the receiving host", "unknown": "unknown"}
    ctx.udp_lost.append(pd.DataFrame({
        "direction": ctx.direction, "flow": flow["name"], "udp_flow": row["udp_flow_ids"],
        "udp_seq": lost, "where": [names[w] for w in place]}))
    row["udp_lost_link"] = where_lost["link"]
    row["udp_lost_before_link"] = where_lost["before"]
    row["udp_lost_receiving_interface"] = where_lost["host"]
    if not math.isnan(analysis_lost) and int(analysis_lost) != len(lost):
        items.append(_Item(where, abs(int(analysis_lost) - len(lost)), "datagrams the "
                           "analyzer counts lost at the receiver against the sequence numbers "
                           "seen before it"))
    if where_lost["before"]:
        items.append(_Item(where, where_lost["before"], "datagrams lost before the link",
                           (f"{before_sender} never left the sending host (not in the capture "
                            f"at {sender_p}), " if before_sender else "")
                           + "missing already at " + str(before_p)))
    cap_r = _capture_dropped(ctx.captures, receiver_p)
    if where_lost["host"]:
        items.append(_Item(where, where_lost["host"], "datagrams lost after the link",
                           f"the link sent them and the capture at {ctx.after_p} saw them; "
                           + (f"the capture at {receiver_p} dropped {cap_r} frames"
                              if cap_r >= where_lost["host"] else
                              "the receiving host dropped them before its own capture")))
    if where_lost["unknown"]:
        items.append(_Item(where, where_lost["unknown"], "datagrams lost at the receiver "
                           "whose place of loss no capture or ledger shows"))
    # a link drop of data the receiver did get (a duplicate's twin?) is a disagreement
    if len(drops):
        delivered = is_data & drops["udp_seq"].isin(list(got)).to_numpy()
        if delivered.any():
            items.append(_Item(where, int(delivered.sum()), "datagrams the link dropped that "
                               "reached the receiver all the same",
                               "the link duplicated them first" if _num(
                                   row.get("link_duplicated")) else ""))
            drops.loc[delivered, "explained"] = bool(_num(row.get("link_duplicated")))
        note = drops["note"].to_numpy().astype(object)
        note[is_data & ~drops["udp_seq"].isin(list(got)).to_numpy()] = \
            "lost at the receiver: the link dropped it"
        drops["note"] = note
    # duplicates at the receiver against the link's duplicates
    dup = row.get("udp_duplicates_at_receiver")
    if L is not None and B is not None and not _isnan(dup):
        copies = L.loc[L["copy"] > 1, "n"]
        kind = B[B["n"] >= 0].set_index("n")
        data_copies = int(copies.map(kind["udp_kind"]).ne(KIND_CONTROL).sum()) if len(
            kind) else len(copies)
        if int(dup) != data_copies:
            items.append(_Item(where, abs(int(dup) - data_copies), "duplicates at the "
                               "receiver against the data datagrams the link duplicated"))
    # what the receiver said
    reported = _udp_reported_lost(serve_rep if c2s else send_rep, ids)
    row["udp_lost_reported_by_receiver"] = reported
    in_host = where_lost["host"]
    host_lost = _udp_host_share(ctx, row, items, Rd, serve_rep if c2s else None, ids,
                                corrupted)
    if not math.isnan(reported) and not math.isnan(analysis_lost):
        diff = int(reported) - int(analysis_lost)
        if host_lost is not None:
            diff = min(diff, 0)         # the host's share above counts these (and the tail)
        if diff > 0 and corrupted:
            k = min(diff, corrupted)
            items.append(_Item(where, k, "datagrams the receiver counts lost that the capture "
                               f"at {receiver_p} shows arriving", "corrupted by the link: "
                               "the receiving host's UDP checksum check discarded them "
                               "(RFC 768)"))
            diff -= k
        if diff > 0:
            in_host += diff
            items.append(_Item(where, diff, "datagrams the receiver counts lost beyond the "
                               f"capture at {receiver_p}", "dropped inside the receiving host "
                               "after its interface (socket receive buffer)"))
        elif diff < 0:
            items.append(_Item(where, -diff, "datagrams the capture shows lost that the "
                               "receiver did not count", f"the capture at {receiver_p} "
                               f"dropped {cap_r} frames" if cap_r >= -diff else ""))
    row["dropped_in_host"] = in_host if host_lost is None else in_host + host_lost


def _udp_host_share(ctx: _Ctx, row, items, Rd, receiver_rep, ids, corrupted: int):
    """Datagrams the capture on the receiving host saw that the receiving program never
    got (row udp_lost_host), placed on that host by its kernel's drop counters (see the
    module doc). None where that cannot be told: no capture on the host itself, or no
    receiver report counting what it got (a scenario, the reverse of an rr flow)."""
    host, where = row["dst_host"], ctx.where
    if receiver_rep is None or ctx.receiver_p != host or Rd is None:
        return None
    conns = [c for c in receiver_rep.get("connections") or []
             if c.get("flow") in ids and isinstance(c.get("packets"), int)]
    if not conns:
        return None
    got = sum(c["packets"] for c in conns)
    seen = int(Rd["udp_seq"].nunique())
    counters = ctx.host_counters.get(host)
    if counters is not None:
        row["host_udp_rcvbuf_errors"] = int(counters.get("UdpRcvbufErrors", 0))
    if got > seen:
        cap = _capture_dropped(ctx.captures, host)
        items.append(_Item(where, got - seen, f"datagrams the receiver got that the capture "
                           f"at {host} did not record", f"that capture counted {cap} frames "
                           "it dropped" if cap >= got - seen else ""))
        row["udp_lost_host"] = 0
        return 0
    lost = seen - got
    row["udp_lost_host"] = lost
    left = lost
    if left and corrupted:
        # a corrupted datagram is in the capture; the host's checksum check discards it
        k = min(left, corrupted)
        items.append(_Item(where, k, f"datagrams seen at {host} that the program never got",
                           "corrupted by the link: the receiving host's UDP checksum check "
                           "discarded them (RFC 768)"))
        left -= k
    if left and counters is None:
        items.append(_Item(where, left, f"datagrams seen at {host} that the program never got",
                           f"dropped inside {host} after its capture (socket receive buffer); "
                           f"not checked against its kernel's counters: the lab does not "
                           f"observe {host} ([observe])"))
        return lost
    budget = ctx.host_budget.setdefault(host, {k: 0 for k in HOST_DROP_COUNTERS})
    for name, why in (("UdpRcvbufErrors", "its socket's receive buffer was full (a reader "
                       "slower than the sender; UDP has no flow control)"),
                      ("UdpNoPorts", "they came after the receiver had closed its socket")):
        k = min(left, budget.get(name, 0))
        if k:
            budget[name] -= k
            items.append(_Item(where, k, f"datagrams seen at {host} that the program never "
                               "got", f"dropped inside {host}: {why}; {host}'s kernel "
                               f"counted {counters.get(name, 0)} in {name}"))
            left -= k
    if left:
        items.append(_Item(where, left, f"datagrams seen at {host} that the program never got, "
                           f"beyond what {host}'s kernel counted as dropped "
                           f"(UdpRcvbufErrors +{counters.get('UdpRcvbufErrors', 0)}, "
                           f"UdpNoPorts +{counters.get('UdpNoPorts', 0)})"))
    return lost


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _udp_flow_rows(fl, ids, flow, c2s):
    """The analyzer's udp_flows rows (loss, duplicates, reordering) of this flow at the
    receiving side."""
    if fl is None or len(fl) == 0:
        return None
    port = int(flow["port"])
    mine = fl["dst_port"] == port if c2s else fl["src_port"] == port
    return fl[mine & fl["flow"].isin(list(ids))]


# ---------------------------------------------------------------- kernel engine

def _kernel_counts(stats: dict) -> dict[str, int] | None:
    """Packets the kernel engine's nftables loss rules dropped, per direction."""
    if not stats:
        return None
    for key in ("loss_drops", "nft_drops", "drops"):
        v = stats.get(key)
        if isinstance(v, dict):
            return {k: int(x) for k, x in v.items()}
    raw = stats.get("nft")
    if raw:
        from ..netlab.kernel import parse_nft_drops
        return parse_nft_drops(raw if isinstance(raw, str) else json.dumps(raw))
    return None


def _qdisc_drops(stats: dict, direction: str) -> int:
    q = (stats or {}).get("qdiscs") or {}
    return int(sum(int(x.get("drops") or 0) for x in q.get(direction) or []))


def _between(f: pd.DataFrame, src: set, dst: set) -> pd.DataFrame:
    """Frames from one host's addresses to another's, with a transport header."""
    s = pd.Series(list(zip(f["src_hi"].tolist(), f["src_lo"].tolist()))).isin(src)
    d = pd.Series(list(zip(f["dst_hi"].tolist(), f["dst_lo"].tolist()))).isin(dst)
    return f[(s & d).to_numpy() & (f["l4"] > 0).to_numpy()].reset_index(drop=True)


def _kernel_checks(engine, frames, flows, pair, captures, items) -> list[dict]:
    """With the kernel engine: every frame between the hosts missing after the link,
    against the nftables counter (and the tbf queue's drops)."""
    stats = engine.get("stats") or {}
    counted = _kernel_counts(stats)
    addrs = _host_addresses(flows)
    checks = []
    hosts = list(pair)
    for src, dst in ((hosts[0], hosts[1]), (hosts[1], hosts[0])):
        direction = _link_direction(src, dst, pair)
        bp = f"r-{src}" if f"r-{src}" in frames else src if src in frames else None
        ap = f"r-{dst}" if f"r-{dst}" in frames else dst if dst in frames else None
        if bp is None or ap is None or src not in addrs or dst not in addrs:
            continue

        B = _between(frames[bp], addrs[src], addrs[dst])
        A = _between(frames[ap], addrs[src], addrs[dst])
        key = ["l4", *TCP_KEY, "udp_flow", "udp_seq"]
        bi = pair_across_link(B, A, key)
        missing = len(B) - len(set(bi[bi >= 0].tolist()))
        if engine.get("name") != "kernel":
            expected, what = 0, f"{direction}: frames lost between {bp} and {ap} (no engine)"
        elif counted is None:
            items.append(_Item(direction, missing, "frames missing after the link, with no "
                               "nftables counter in run.json to check them against",
                               "the captures are the truth"))
            continue
        else:
            expected = counted.get(direction, 0) + _qdisc_drops(stats, direction)
            what = (f"{direction}: frames missing at {ap} against the nftables loss counter"
                    + (" and tbf drops" if _qdisc_drops(stats, direction) else ""))
        ok = expected == missing
        checks.append({"what": what, "expected": expected, "found": missing, "ok": ok})
        if not ok:
            cap = _capture_dropped(captures, ap) + _capture_dropped(captures, bp)
            items.append(_Item(direction, abs(expected - missing), "frames between the "
                               "kernel's drop count and the captures",
                               f"the captures counted {cap} frames they dropped"
                               if cap >= abs(expected - missing) else ""))
    return checks
