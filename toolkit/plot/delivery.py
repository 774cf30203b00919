"""What each flow delivered over time: goodput, and TCP against UDP side by side.

Goodput, after tcptrace's throughput graph and Wireshark's TCP Stream Graphs >
Throughput: the payload bytes the capture on the receiving side saw (b, or r-b when b was
not captured), per flow, as a rate over a moving window of `window_s` seconds (default
0.1 s): at time t, the bytes that arrived in (t - window_s, t], times 8, over window_s.
That is a step function with a step up when a packet arrives and a step down window_s
later, computed exactly, so its integral over time is every byte seen (nothing is lost to
binning). TCP and UDP share the axes: TCP's rate dips where it repairs a loss and backs
off; UDP's holds the sender's pace, less what the link dropped.

Side by side: the TCP-versus-UDP figure of a run on one time axis. Above, the bytes each
flow delivered so far at the receiving side. Below, one lane per flow and kind of packet:
every packet the link dropped (the reconciliation's drops table: ledger time, reason), and
for a TCP segment that occupied sequence space, the retransmission that repaired it (the
drops table's repair_delay_s after the drop, repair_frame in the sender's capture) joined
to it by a line: the time TCP took to repair. UDP drops stay unrepaired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import (PlotInputError, clock, frames as frame_cols, host_point, is_run,
                      need_run, open_source, run_flows, select, summary_row, _conv)

DEFAULT_WINDOW_S = 0.1


def moving_rate(t: np.ndarray, nbytes: np.ndarray, window_s: float) -> pd.DataFrame:
    """The moving-window rate as an exact step function: rows (t, rate_bps), the rate
    holding from each t to the next. Its integral (sum of rate * dt / 8) is sum(nbytes)."""
    t = np.asarray(t, float)
    b = np.asarray(nbytes, np.int64)
    if not len(t):
        return pd.DataFrame({"t": pd.Series([], dtype=float),
                             "rate_bps": pd.Series([], dtype=float)})
    ev_t = np.concatenate([t, t + window_s])
    ev_b = np.concatenate([b, -b])
    order = np.lexsort((ev_b, ev_t))          # at a tie, the step down first
    ev_t, ev_b = ev_t[order], ev_b[order]
    inside = np.cumsum(ev_b)                  # integers: exactly 0 after the last step
    last = np.r_[ev_t[1:] != ev_t[:-1], True]   # one row per distinct time
    return pd.DataFrame({"t": ev_t[last], "rate_bps": inside[last] * 8.0 / window_s})


def integral_bytes(series: pd.DataFrame) -> float:
    """Bytes under a moving_rate step function."""
    t = series["t"].to_numpy()
    r = series["rate_bps"].to_numpy()
    return float(np.sum(r[:-1] * np.diff(t)) / 8.0) if len(t) > 1 else 0.0


def _received(src):
    """Per flow: (label, meta dict, frames seen at the receiving side with payload)."""
    if is_run(src):
        run = src
        out = []
        for f in run_flows(run):
            conv = _conv(f)
            point = host_point(run, conv.server)
            fr = select(frame_cols(run.analysis(point)), conv.proto, *conv.ports(True))
            fr = fr[fr["plen"] > 0]
            out.append((conv.name, {"flow": conv.name, "proto": conv.proto, "point": point,
                                    "direction": f"{conv.client}\u2192{conv.server}"}, fr))
        return out
    a = src
    f = frame_cols(a)
    out = []
    tcp = a.tcp
    for r in tcp.itertuples():
        for d, (sp, dp) in (("A\u2192B", (r.a_port, r.b_port)), ("B\u2192A", (r.b_port,
                                                                          r.a_port))):
            fr = f[(f["tcp_stream"] == r.stream) & (f["sport"] == sp) & (f["dport"] == dp)
                   & (f["plen"] > 0)]
            if len(fr):
                out.append((f"TCP stream {r.stream} {d}", {"flow": f"tcp stream {r.stream}",
                            "proto": "tcp", "point": None, "direction": d}, fr))
    for r in a.udp.itertuples():
        for d, (sp, dp) in (("A\u2192B", (r.a_port, r.b_port)), ("B\u2192A", (r.b_port,
                                                                          r.a_port))):
            fr = f[(f["udp_stream"] == r.stream) & (f["sport"] == sp) & (f["dport"] == dp)
                   & (f["plen"] > 0)]
            if len(fr):
                out.append((f"UDP stream {r.stream} {d}", {"flow": f"udp stream {r.stream}",
                            "proto": "udp", "point": None, "direction": d}, fr))
    return out


def goodput_data(src, window_s: float | None = None) -> dict:
    """Goodput per flow (module doc), as plain data:

    flows    one row per flow: label, flow, proto, direction, point (where it was seen
             arriving), packets, bytes (payload), first_t, last_t, mean_bps
    series   label -> DataFrame (t, rate_bps): the moving-window rate, a step function
    packets  label -> DataFrame (frame, t, bytes): what it is computed from
    window_s, time_label
    """
    w = DEFAULT_WINDOW_S if window_s is None else float(window_s)
    if not w > 0:
        raise PlotInputError(f"window {window_s!r}: a moving window is a positive number "
                             "of seconds")
    src = open_source(src)
    clk = clock(src)
    rows, series, packets = [], {}, {}
    for label, meta, fr in _received(src):
        t = clk.from_ns(fr["ts_ns"].to_numpy())
        b = fr["plen"].to_numpy().astype(np.int64)
        packets[label] = pd.DataFrame({"frame": fr["frame"].to_numpy(), "t": t, "bytes": b})
        series[label] = moving_rate(t, b, w)
        span = float(t.max() - t.min()) if len(t) > 1 else 0.0
        rows.append({"label": label, **meta, "packets": len(b), "bytes": int(b.sum()),
                     "first_t": float(t.min()) if len(t) else np.nan,
                     "last_t": float(t.max()) if len(t) else np.nan,
                     "mean_bps": b.sum() * 8 / span if span > 0 else np.nan})
    cols = ["label", "flow", "proto", "direction", "point", "packets", "bytes", "first_t",
            "last_t", "mean_bps"]
    return {"flows": pd.DataFrame(rows, columns=cols), "series": series, "packets": packets,
            "window_s": w, "time_label": clk.label}


def goodput(src, window_s: float | None = None):
    """Goodput over time per flow, TCP and UDP on the same axes (module doc), as a
    Figure; its data in `fig.labkit_data` (goodput_data's dict)."""
    from ._mpl import flow_color, new_figure

    d = goodput_data(src, window_s)
    if not len(d["flows"]):
        raise PlotInputError("no flow delivered any payload: nothing to draw")
    fig = new_figure((10, 4.8))
    ax = fig.add_subplot()
    seen: dict[str, int] = {}
    for r in d["flows"].itertuples():
        s = d["series"][r.label]
        i = seen.get(r.proto, 0)
        seen[r.proto] = i + 1
        where = f", at {r.point}" if r.point else ""
        ax.step(s["t"], s["rate_bps"] / 1e6, where="post", lw=1.2,
                color=flow_color(r.proto, i),
                label=f"{r.label} ({r.proto.upper()} {r.direction}{where}): "
                      f"{r.bytes:,} B")
    ax.set_xlabel(d["time_label"])
    ax.set_ylabel("goodput (Mbit/s of payload)")
    ax.set_ylim(bottom=0)
    ax.grid(color="#eeeeee", lw=0.6)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9,
              title=f"moving window {d['window_s']:g} s", title_fontsize=8)
    ax.set_title("Goodput per flow: payload seen at the receiving side, moving average over "
                 f"{d['window_s']:g} s (after tcptrace)", fontsize=10)
    fig.tight_layout()
    fig.labkit_data = d
    return fig


# ---------------------------------------------------------------- side by side

DROP_COLUMNS = ["t", "flow", "proto", "direction", "segment", "lane", "reason", "why",
                "frame_bytes", "payload_bytes", "seq", "udp_seq", "repair_t",
                "repair_delay_s", "repair_frame", "repair_label", "needs_repair"]


def side_by_side_data(run) -> dict:
    """The TCP-versus-UDP figure's data (module doc), as plain data:

    delivered  flow -> DataFrame (t, bytes): cumulative payload seen at the receiving side
    flows      goodput_data's flows table
    drops      one row per row of the drops table: t (when it reached the link), flow,
               proto, direction (host names), segment, lane, reason, why, frame_bytes,
               payload_bytes, seq, udp_seq, repair_t / repair_delay_s / repair_frame /
               repair_label (a TCP repair; NaN/<NA>/None: none), needs_repair
    lanes      the lanes, top to bottom; time_label
    """
    run = need_run(run, "side-by-side")
    clk = clock(run)
    g = goodput_data(run)
    delivered = {lab: pd.DataFrame({"t": p["t"].to_numpy(),
                                    "bytes": np.cumsum(p["bytes"].to_numpy())})
                 for lab, p in g["packets"].items()}
    d = run.reconciliation().drops
    hosts = {}
    for f in run_flows(run):
        conv = _conv(f)
        for c2s in (True, False):
            row = summary_row(run, conv, c2s)
            if row is not None:
                hosts[(conv.name, row["direction"])] = \
                    f"{row['src_host']}\u2192{row['dst_host']}"
    direction = [hosts.get((fl, di), di or "?") for fl, di in zip(d["flow"], d["direction"])]
    lane = [f"{fl or 'not a flow'} {di} {seg or ''}".strip()
            for fl, di, seg in zip(d["flow"], direction, d["segment"])]
    t = clk.from_unix_s(d["t_in_unix_s"].to_numpy(float))
    delay = d["repair_delay_s"].to_numpy(float)
    seg = d["segment"].astype(object).fillna("").to_numpy()
    # a TCP segment that occupies sequence space must be repaired (RFC 9293); an ACK not
    needs = (d["proto"].to_numpy() == "tcp") & np.isin(seg, ["data", "data+fin", "syn",
                                                              "fin"])
    drops = pd.DataFrame({
        "t": t, "flow": d["flow"].to_numpy(), "proto": d["proto"].to_numpy(),
        "direction": direction, "segment": d["segment"].to_numpy(), "lane": lane,
        "reason": d["reason"].to_numpy(), "why": d["why"].to_numpy(),
        "frame_bytes": d["frame_bytes"].to_numpy(), "payload_bytes":
        d["payload_bytes"].to_numpy(), "seq": d["seq"].to_numpy(),
        "udp_seq": d["udp_seq"].to_numpy(), "repair_t": t + delay, "repair_delay_s": delay,
        "repair_frame": d["repair_frame"].to_numpy(), "repair_label":
        d["repair_label"].to_numpy(), "needs_repair": needs}, columns=DROP_COLUMNS)
    order = {f["name"]: i for i, f in enumerate(run_flows(run))}
    lanes = sorted(set(lane), key=lambda s: (order.get(s.split(" ")[0], 99), s))
    return {"delivered": delivered, "flows": g["flows"], "drops": drops, "lanes": lanes,
            "time_label": clk.label}


def side_by_side(run):
    """TCP against UDP on one time axis (module doc), as a Figure; its data in
    `fig.labkit_data` (side_by_side_data's dict)."""
    from ._mpl import colors, flow_color, new_figure

    d = side_by_side_data(run)
    c = colors()
    lanes = d["lanes"]
    fig = new_figure((11, (6.2 if lanes else 5.0) + 0.25 * max(len(lanes) - 3, 0)))
    top, bottom = fig.subplots(2, 1, sharex=True,
                               gridspec_kw={"height_ratios": [
                                   1.6, max(1.0, 0.35 * len(lanes)) if lanes else 0.35]})
    seen: dict[str, int] = {}
    color_of = {}
    for r in d["flows"].itertuples():
        i = seen.get(r.proto, 0)
        seen[r.proto] = i + 1
        color_of[r.flow] = flow_color(r.proto, i)
        cum = d["delivered"][r.label]
        if not len(cum):
            continue                  # nothing delivered (a scenario's connection): no line
        top.step(np.r_[cum["t"].to_numpy()[:1], cum["t"].to_numpy()],
                 np.r_[0, cum["bytes"].to_numpy()] / 1e6, where="post", lw=1.4,
                 color=color_of[r.flow],
                 label=f"{r.flow} ({r.proto.upper()} {r.direction}, at {r.point}): "
                       f"{r.bytes:,} B")
    top.set_ylabel("payload delivered (MB)")
    top.set_ylim(bottom=0)
    top.grid(color="#eeeeee", lw=0.6)
    top.legend(loc="upper left", fontsize=8, framealpha=0.9)
    dr = d["drops"]
    y = {lane: i for i, lane in enumerate(lanes)}
    if len(dr):
        ys = dr["lane"].map(y).to_numpy(float)
        rep = dr["repair_delay_s"].notna().to_numpy()
        bottom.hlines(ys[rep], dr["t"].to_numpy()[rep], dr["repair_t"].to_numpy()[rep],
                      color=c["repair"], lw=1.2, alpha=0.8)
        bottom.plot(dr["t"], ys, "x", color=c["drop"], ms=7, mew=1.6,
                    label=f"dropped by the link ({len(dr)}): "
                          + ", ".join(f"{k} {v}" for k, v in
                                      dr["reason"].value_counts().items()))
        if rep.any():
            med = float(np.median(dr["repair_delay_s"].to_numpy()[rep])) * 1e3
            labels = dr.loc[rep, "repair_label"].value_counts()
            bottom.plot(dr["repair_t"].to_numpy()[rep], ys[rep], "o", color=c["repair"],
                        ms=5, label=f"TCP retransmission that repaired it ({int(rep.sum())}, "
                                    f"median {med:.1f} ms later; Wireshark: "
                                    + ", ".join(f"{k} {v}" for k, v in labels.items()) + ")")
        left = dr["needs_repair"].to_numpy() & ~rep
        if left.any():
            bottom.plot(dr["t"].to_numpy()[left], ys[left], "s", mfc="none", color="black",
                        ms=9, label=f"TCP data never repaired ({int(left.sum())})")
        bottom.legend(loc="upper left", fontsize=8, framealpha=0.9,
                      bbox_to_anchor=(0, -0.28 if len(lanes) < 4 else -0.18), ncol=1)
    else:
        bottom.text(0.5, 0.5, "the link dropped nothing", transform=bottom.transAxes,
                    ha="center", va="center", color=c["grey"])
    counts = dr["lane"].value_counts()
    fixed = dr[dr["repair_delay_s"].notna()]["lane"].value_counts()
    bottom.set_yticks(range(len(lanes)))
    bottom.set_yticklabels([f"{lane}: {counts.get(lane, 0)} dropped"
                            + (f", {fixed.get(lane, 0)} repaired" if fixed.get(lane, 0) else "")
                            for lane in lanes], fontsize=8)
    bottom.set_ylim(max(len(lanes), 1) - 0.5, -0.5)
    bottom.set_xlabel(d["time_label"])
    bottom.grid(axis="x", color="#eeeeee", lw=0.6)
    fig.suptitle("TCP and UDP through the same link: bytes delivered, every drop and "
                 "TCP's repair", fontsize=10.5)
    fig.tight_layout()
    fig.labkit_data = d
    return fig
