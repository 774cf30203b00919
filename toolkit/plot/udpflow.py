"""A UDP flow, datagram by datagram: what arrived, what never did, and how late.

UDP (RFC 768) numbers nothing, so the lab header (toolkit.wire) does: every datagram
carries its flow id, a sequence number and the sender's clock (send_ns). The upper panel
plots sequence number against time, like a Stevens graph of TCP: every datagram the
capture on the receiving side (b, or r-b) saw, at its arrival time; a duplicate (a number
seen before) and a reordered one (RFC 4737: it came after a higher number) marked; every
number that never arrived, at the time it was sent (the capture on the sending side, else
its neighbours' send times), marked by where it was lost: the reconciliation's udp_lost
table says dropped by the link (the ledger), missing before the link, or missing only at
the receiving host.

The lower panel: one-way delay per datagram, arrival time at the receiving side's capture
minus the header's send time (meaningful because sender and capture share one machine's
clock, as in the lab), and the RFC 3550 interarrival jitter estimate (section 6.4.1:
J += (|D| - J) / 16 over arrival order), whose last value is the udp_flows table's
jitter_s (in ms here). From a single capture the same figure is drawn with the losses the sequence
numbers show (where: unknown).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import (KIND_CONTROL, PlotInputError, clock, flow_conv, frames as frame_cols,
                      host_point, is_run, open_source, select, summary_row)


def rfc3550_jitter(arrival_ns: np.ndarray, send_ns: np.ndarray) -> np.ndarray:
    """The running jitter estimate (ns) after each datagram, in the order given."""
    r = np.asarray(arrival_ns, np.int64)
    s = np.asarray(send_ns, np.int64)
    out = np.zeros(len(r))
    if len(r) < 2:
        return out
    d = np.abs(np.diff(r - s).astype(float))
    j = 0.0
    for i, x in enumerate(d.tolist(), start=1):
        j += (x - j) / 16.0
        out[i] = j
    return out


def _marks(seq: np.ndarray):
    """Per datagram in arrival order: duplicate (its number came before), reordered
    (RFC 4737: not a duplicate, below the highest number seen before it)."""
    dup = pd.Series(seq).duplicated().to_numpy()
    prev_max = np.maximum.accumulate(np.r_[-1, seq[:-1]]) if len(seq) else seq
    reordered = ~dup & (seq < prev_max)
    return dup, reordered


def udp_data(src, flow: str | int | None = None) -> dict:
    """A UDP flow's datagrams (module doc), as plain data:

    received  one row per data datagram at the receiving side, in arrival order: frame,
              t (arrival, s), seq, t_sent (the header's send time on the same axis),
              owd_ms, jitter_ms (RFC 3550, running), duplicate, reordered
    lost      one row per sequence number that never arrived: seq, t_sent, where,
              t_from ("capture at a" | "interpolated")
    flow, lab_flow, receiver (point), sender (point or None), udp_flows (that table's row
    at the receiver, as a dict: received, lost, duplicates, reordered, jitter_s ...),
    time_label
    """
    src = open_source(src)
    clk = clock(src)
    if is_run(src):
        run = src
        conv = flow_conv(run, flow if isinstance(flow, str) or flow is None else str(flow),
                         proto="udp")
        rp, sp = host_point(run, conv.server), None
        try:
            sp = host_point(run, conv.client)
        except PlotInputError:
            pass
        R = select(frame_cols(run.analysis(rp)), "udp", *conv.ports(True))
        R = R[(R["udp_seq"] >= 0) & (R["udp_kind"] != KIND_CONTROL)]
        if not len(R):
            raise PlotInputError(f"flow {conv.name!r}: no datagram with the lab header "
                                 f"arrived at {rp}")
        fl = run.analysis(rp).udp_flows
        ids = set(R["udp_flow"].unique().tolist())
        fl = fl[(fl["src_port"] == conv.client_port if conv.client_port else True)
                & (fl["dst_port"] == conv.port) & fl["flow"].isin(list(ids))]
        name = conv.name
        rec = run.reconciliation()
        row = summary_row(run, conv, True)
        ul = rec.udp_lost
        ul = ul[(ul["flow"] == conv.name) & (ul["direction"] == row["direction"])] if (
            row is not None and len(ul)) else ul.iloc[0:0]
        lost_seq = ul["udp_seq"].astype("int64").to_numpy() if len(ul) else np.zeros(0,
                                                                                  np.int64)
        where = ul["where"].astype(object).to_numpy() if len(ul) else np.zeros(0, object)
        S = None
        if sp is not None:
            S = select(frame_cols(run.analysis(sp)), "udp", *conv.ports(True))
            S = S[(S["udp_seq"] >= 0) & (S["udp_kind"] != KIND_CONTROL)
                  & S["udp_flow"].isin(list(ids))]
    else:
        a = src
        f = frame_cols(a)
        fl_all = a.udp_flows
        if not len(fl_all):
            raise PlotInputError("no UDP datagram with the lab header in this capture")
        if flow is None:
            fl = fl_all.sort_values("received", ascending=False, kind="stable").iloc[:1]
        else:
            try:
                fid = int(flow)
            except (TypeError, ValueError):
                raise PlotInputError(f"flow {flow!r}: in a capture, a flow is the lab "
                                     f"header's flow id (this one has "
                                     f"{', '.join(str(x) for x in fl_all['flow'])})") from None
            fl = fl_all[fl_all["flow"] == fid].iloc[:1]
            if not len(fl):
                raise PlotInputError(f"no lab flow {fid} in this capture (it has "
                                     f"{', '.join(str(x) for x in fl_all['flow'])})")
        r0 = fl.iloc[0]
        R = select(f, "udp", int(r0["src_port"]), int(r0["dst_port"]))
        R = R[(R["udp_flow"] == int(r0["flow"])) & (R["udp_kind"] != KIND_CONTROL)]
        name = f"lab flow {int(r0['flow'])}"
        lost_seq = _gaps(R["udp_seq"].to_numpy(), r0)
        where = np.full(len(lost_seq), "unknown (one capture)", object)
        rp, sp, S = None, None, None
    arrival = R["ts_ns"].to_numpy()
    send = R["send_ns"].to_numpy()
    seq = R["udp_seq"].to_numpy()
    dup, reordered = _marks(seq)
    received = pd.DataFrame({
        "frame": R["frame"].to_numpy(), "t": clk.from_ns(arrival), "seq": seq,
        "t_sent": clk.from_ns(send), "owd_ms": (arrival - send) / 1e6,
        "jitter_ms": rfc3550_jitter(arrival, send) / 1e6,
        "duplicate": dup, "reordered": reordered})
    # when each lost number was sent: the sending side's capture, else interpolated from
    # the send times of the numbers that arrived
    t_sent = np.full(len(lost_seq), np.nan)
    t_from = np.full(len(lost_seq), "interpolated", object)
    if S is not None and len(S) and len(lost_seq):
        first = S.drop_duplicates("udp_seq").set_index("udp_seq")["ts_ns"]
        got = pd.Series(lost_seq).map(first).to_numpy(float)
        ok = ~np.isnan(got)
        t_sent[ok] = clk.from_ns(got[ok].astype(np.int64))
        t_from[ok] = f"capture at {sp}"
    miss = np.isnan(t_sent)
    if miss.any() and len(received):
        by = received.drop_duplicates("seq").sort_values("seq")
        t_sent[miss] = np.interp(lost_seq[miss], by["seq"].to_numpy(),
                                 by["t_sent"].to_numpy())
    lost = pd.DataFrame({"seq": lost_seq, "t_sent": t_sent, "where": where,
                         "t_from": t_from}).sort_values("seq").reset_index(drop=True)
    uf = fl.iloc[0].to_dict() if len(fl) else {}
    if len(fl) > 1:
        for k in ("received", "lost", "duplicates", "reordered"):
            uf[k] = int(fl[k].sum())
    return {"received": received, "lost": lost, "flow": name,
            "lab_flow": int(R["udp_flow"].iloc[0]) if len(R) else None,
            "receiver": rp, "sender": sp, "udp_flows": uf, "time_label": clk.label}


def _gaps(seq: np.ndarray, r) -> np.ndarray:
    """Numbers missing from one capture's view of a flow, as many as udp_flows counts
    lost: gaps between first and last seen first, then after the last (a sender's end
    marker declares how many it sent), then before the first."""
    got = set(seq.tolist())
    first, last, n_lost = int(r["first_seq"]), int(r["last_seq"]), int(r["lost"])
    out = [q for q in range(first, last + 1) if q not in got]
    q = last + 1
    while len(out) < n_lost and q < last + 1 + n_lost:
        out.append(q)
        q += 1
    q = first - 1
    while len(out) < n_lost and q >= 0:
        out.append(q)
        q -= 1
    return np.array(sorted(out), np.int64)


WHERE_STYLE = {"dropped by the link": ("x", "#d62728"),
               "missing before the link": ("+", "#8c564b"),
               "missing only at the receiving host": ("1", "#9467bd")}


def udp(src, flow: str | int | None = None):
    """A UDP flow datagram by datagram (module doc), as a Figure; its data in
    `fig.labkit_data` (udp_data's dict). flow: a run's UDP flow name (default: its first);
    for one capture, a lab flow id (default: the one with the most datagrams)."""
    from ._mpl import colors, new_figure

    d = udp_data(src, flow)
    c = colors()
    rx, lost = d["received"], d["lost"]
    fig = new_figure((10, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.5, 1]})
    plain = ~(rx["duplicate"] | rx["reordered"])
    at = f" at {d['receiver']}" if d["receiver"] else ""
    top.plot(rx["t"][plain], rx["seq"][plain], ".", ms=2.5, color=c["udp"],
             label=f"received{at} ({int(plain.sum())})")
    if rx["duplicate"].any():
        k = rx[rx["duplicate"]]
        top.plot(k["t"], k["seq"], "D", ms=5, mfc="none", color=c["tcp"],
                 label=f"duplicate ({len(k)})")
    if rx["reordered"].any():
        k = rx[rx["reordered"]]
        top.plot(k["t"], k["seq"], "^", ms=5, mfc="none", color=c["ooo"],
                 label=f"reordered, RFC 4737 ({len(k)})")
    for where, g in lost.groupby("where", sort=False):
        m, col = WHERE_STYLE.get(where, ("x", c["grey"]))
        top.plot(g["t_sent"], g["seq"], m, ms=7, mew=1.5, color=col,
                 label=f"lost: {where} ({len(g)}), at its send time")
    top.set_ylabel("lab sequence number")
    top.grid(color="#eeeeee", lw=0.6)
    top.legend(loc="upper left", fontsize=8, framealpha=0.9)
    bottom.plot(rx["t"], rx["owd_ms"], ".", ms=2.5, color=c["udp"],
                label="one-way delay (arrival - header send time)")
    bottom.set_ylabel("one-way delay (ms)")
    bottom.set_xlabel(d["time_label"])
    bottom.grid(color="#eeeeee", lw=0.6)
    twin = bottom.twinx()
    twin.plot(rx["t"], rx["jitter_ms"], "-", lw=1.2, color=c["tcp"],
              label="RFC 3550 jitter (running estimate)")
    twin.set_ylabel("jitter (ms)")
    # room above the data for the legend
    if len(rx):
        lo, hi = float(rx["owd_ms"].min()), float(rx["owd_ms"].max())
        bottom.set_ylim(lo - 0.05 * (hi - lo + 1e-3), hi + 0.5 * (hi - lo + 1e-3))
        twin.set_ylim(0, max(float(rx["jitter_ms"].max()), 1e-3) * 1.5)
    else:
        twin.set_ylim(bottom=0)
    h1, l1 = bottom.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    bottom.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8, framealpha=0.9)
    uf = d["udp_flows"]
    extra = (f": {int(uf.get('received', len(rx)))} received, {len(lost)} lost"
             if uf else "")
    name = d["flow"] if d["flow"].startswith("lab flow") else \
        f"{d['flow']} (lab flow {d['lab_flow']})"
    fig.suptitle(f"UDP flow {name}{extra}", fontsize=10.5)
    fig.tight_layout()
    fig.labkit_data = d
    return fig
