"""The ladder (sequence) diagram of one conversation, seen from both ends of the link.

After Wireshark's Flow Graph (Statistics > Flow Graph, "TCP flows"), drawn on a time axis
and from two captures at once: the left line is the client host (its own capture, a, or
the router's side facing it, r-a), the right line the server host (b, or r-b), the dashed
line between them the link. Each frame is one arrow, from the time the capture on the
sending host's side saw it to the time the capture on the receiving host's side saw it:
its slope is the one-way delay. It is labelled as Wireshark labels it: its number in the
ladder, flags, relative Seq/Ack and Len (a UDP datagram: the lab header's sequence number).

A frame the link dropped ends at the link, at the time the ledger says it arrived there,
with an X and the ledger's reason (the reconciliation's drops table). A frame that did not
arrive and that no drop explains ends at the link with a "?"; a frame that arrived but was
never seen leaving (a copy the link made) starts at the link.

Frames are matched across the two captures by identity, in order of occurrence, as
toolkit.labs.reconcile does: TCP ports, raw seq and ack, payload length and flags (UDP:
ports, lab flow and sequence number, length); the k-th frame of an identity on the sending
side is the k-th on the receiving side, once the link's drops are taken out. The drops are
placed in the sending side's capture through the capture before the link (the drop's
`before_frame`), so a dropped duplicate ACK is the one that is missing, not the last one.

Long conversations are drawn in windows: by default the first 40 frames; `frames=(first,
last)` numbers the frames of the whole conversation 1, 2, ... in the order they were sent
(the number in each label), `time_window=(t0, t1)` takes the frames sent in that span of
the run's time axis.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._common import (TCP_KEY, UDP_KEY, KIND_CONTROL, PlotInputError, clock, drops_of,
                      flag_names, flow_conv, frames as frame_cols, host_point, need_run,
                      select, stream_conv, summary_row)

DEFAULT_FRAMES = 40
ARROW_COLUMNS = ["n", "direction", "c2s", "src_point", "dst_point", "frame_sent",
                 "frame_received", "t_sent", "t_received", "t_link", "fate", "reason", "why",
                 "flags", "seq", "ack", "length", "udp_seq", "label"]


def _conv_of(run, stream, flow):
    if flow is not None and stream is not None:
        raise PlotInputError("give a flow or a stream, not both")
    if flow is not None:
        conv = flow_conv(run, flow)
        if conv.client_port is None:
            # a SYN flood: one flow of many streams, one a SYN, each from its own port
            raise PlotInputError(f"flow {flow!r} has no client port of its own (each of its "
                                 f"packets has its own): draw one of its streams instead "
                                 f"(--stream N)")
        return conv
    if stream is not None:
        return stream_conv(run, stream)
    try:
        return flow_conv(run, proto="tcp")
    except PlotInputError:
        return flow_conv(run)


def ladder_data(run, stream: int | None = None, flow: str | None = None,
                frames: tuple[int, int] | None = None,
                time_window: tuple[float, float] | None = None) -> dict:
    """The arrows of a ladder diagram (see the module doc), as plain data:

    arrows   DataFrame, one row per frame in the window: n (its number in the
             conversation), direction ("a->b" as host names), c2s, src_point, dst_point,
             frame_sent / frame_received (frame numbers in those captures, <NA>: not
             there), t_sent / t_received (s on the run's time axis, NaN: not seen),
             t_link (when it reached the link, for a frame that ended there), fate
             (delivered | dropped | unseen | from_link), reason / why (the ledger's, for a
             drop), flags, seq, ack (relative), length, udp_seq, label
    total    frames of the whole conversation; window (first, last) numbers shown
    flow, proto, left / right ({host, point}), time_label
    """
    run = need_run(run, "ladder")
    if frames is not None and time_window is not None:
        raise PlotInputError("give frames=(first, last) or time_window=(t0, t1), not both")
    conv = _conv_of(run, stream, flow)
    left, right = host_point(run, conv.client), host_point(run, conv.server)
    clk = clock(run)
    parts = [_direction(run, conv, c2s, left, right, clk) for c2s in (True, False)]
    allrows = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
        len(p) for p in parts) else pd.DataFrame(columns=ARROW_COLUMNS + ["_order"])
    if not len(allrows):
        raise PlotInputError(f"no frame of {conv.title()} in the captures at {left} and "
                             f"{right}")
    order = np.where(allrows["t_sent"].notna(), allrows["t_sent"], allrows["t_link"])
    allrows["_order"] = order
    allrows = allrows.sort_values(["_order", "c2s"], ascending=[True, False],
                                  kind="stable").reset_index(drop=True)
    allrows["n"] = np.arange(1, len(allrows) + 1)
    allrows["label"] = [f"{n}: {body}" for n, body in zip(allrows["n"], allrows["label"])]
    total = len(allrows)
    if time_window is not None:
        t0, t1 = (float(x) for x in time_window)
        if not t1 >= t0:
            raise PlotInputError(f"time_window=({t0}, {t1}): the end comes before the start")
        win = allrows[(allrows["_order"] >= t0) & (allrows["_order"] <= t1)]
        if not len(win):
            span = f"{allrows['_order'].min():.6f} to {allrows['_order'].max():.6f} s"
            raise PlotInputError(f"time_window=({t0}, {t1}): no frame of {conv.name} was "
                                 f"sent then (it sends from {span})")
    else:
        first, last = frames if frames is not None else (1, DEFAULT_FRAMES)
        first, last = int(first), int(last)
        if first < 1 or last < first:
            raise PlotInputError(f"frames=({first}, {last}): expected 1 <= first <= last")
        if first > total:
            raise PlotInputError(f"frames=({first}, {last}): {conv.name} has {total} "
                                 f"frames")
        win = allrows.iloc[first - 1:min(last, total)]
    arrows = win.drop(columns="_order").reset_index(drop=True)[ARROW_COLUMNS]
    return {"arrows": arrows, "total": total,
            "window": (int(arrows["n"].iloc[0]), int(arrows["n"].iloc[-1])),
            "flow": conv.name, "proto": conv.proto, "title": conv.title(),
            "left": {"host": conv.client, "point": left},
            "right": {"host": conv.server, "point": right},
            "time_label": clk.label, "ledger": run.ledger_path is not None}


def _direction(run, conv, c2s: bool, left: str, right: str, clk) -> pd.DataFrame:
    from ..labs.reconcile import pair_by_occurrence

    sp, rp = (left, right) if c2s else (right, left)
    src, dst = (conv.client, conv.server) if c2s else (conv.server, conv.client)
    tcp = conv.proto == "tcp"
    key = TCP_KEY if tcp else UDP_KEY
    ports = conv.ports(c2s)
    S = select(frame_cols(run.analysis(sp)), conv.proto, *ports).reset_index(drop=True)
    R = select(frame_cols(run.analysis(rp)), conv.proto, *ports).reset_index(drop=True)
    if not len(S) and not len(R):
        return pd.DataFrame(columns=ARROW_COLUMNS)

    # the link's drops, placed in the sending side's capture
    reason = np.full(len(S), None, object)
    why = np.full(len(S), None, object)
    t_link = np.full(len(S), np.nan)
    dropped = np.zeros(len(S), bool)
    d = drops_of(run, conv, c2s)
    d = d[d["reason"] != "corrupt"]            # a corrupted frame went on across the link
    row = summary_row(run, conv, c2s)
    if len(d) and len(S):
        bp = row["before_point"] if row is not None else None
        s_pos = _positions_before(run, S, sp, bp, conv, ports, key)
        used = np.zeros(len(d), bool)
        for i, (bf, r, w, t) in enumerate(zip(d["before_frame"], d["reason"], d["why"],
                                              d["t_in_unix_s"])):
            if bf is pd.NA or bf is None or (isinstance(bf, float) and math.isnan(bf)):
                continue
            k = s_pos.get(int(bf))
            if k is not None and not dropped[k]:
                dropped[k], reason[k], why[k] = True, r, w
                t_link[k] = clk.from_unix_s(t)
                used[i] = True
        left_over = d[~used]
    else:
        left_over = d
    rest = np.flatnonzero(~dropped)
    j = pair_by_occurrence(S.iloc[rest], R, key) if len(rest) else np.zeros(0, np.int64)
    recv = np.full(len(S), -1, np.int64)
    recv[rest] = j
    # a drop the capture before the link did not show: by identity among the unmatched
    if len(left_over):
        for r_, w_, t_, ident in zip(left_over["reason"], left_over["why"],
                                     left_over["t_in_unix_s"], _drop_identity(left_over, tcp)):
            cand = np.flatnonzero((recv < 0) & ~dropped & _identity_mask(S, ident, tcp))
            if len(cand):
                k = cand[0]
                dropped[k], reason[k], why[k] = True, r_, w_
                t_link[k] = clk.from_unix_s(t_)

    fate = np.where(dropped, "dropped", np.where(recv >= 0, "delivered", "unseen"))
    t_sent = clk.from_ns(S["ts_ns"].to_numpy())
    t_recv = np.full(len(S), np.nan)
    ok = recv >= 0
    t_recv[ok] = clk.from_ns(R["ts_ns"].to_numpy()[recv[ok]])
    frame_recv = pd.array(np.where(ok, R["frame"].to_numpy()[np.maximum(recv, 0)], 0),
                          dtype="Int64")
    frame_recv[~ok] = pd.NA
    out = _rows(S, src, dst, c2s, sp, rp, tcp)
    out["frame_sent"] = pd.array(S["frame"].to_numpy(), dtype="Int64")
    out["frame_received"] = frame_recv
    out["t_sent"], out["t_received"], out["t_link"] = t_sent, t_recv, t_link
    out["fate"], out["reason"], out["why"] = fate, reason, why
    # frames seen arriving that nobody saw leave (a copy the link made, or a frame the
    # capture on the sending side missed): from the link
    extra = np.setdiff1d(np.arange(len(R)), recv[recv >= 0])
    if len(extra):
        Rx = R.iloc[extra]
        e = _rows(Rx, src, dst, c2s, sp, rp, tcp)
        e["frame_sent"] = pd.array([pd.NA] * len(Rx), dtype="Int64")
        e["frame_received"] = pd.array(Rx["frame"].to_numpy(), dtype="Int64")
        t = clk.from_ns(Rx["ts_ns"].to_numpy())
        e["t_sent"], e["t_received"], e["t_link"] = np.nan, t, t
        e["fate"], e["reason"], e["why"] = "from_link", None, None
        out = pd.concat([out, e], ignore_index=True)
    out["label"] = [_label(r) for r in out.itertuples()]
    out["n"] = 0
    return out[ARROW_COLUMNS]


def _positions_before(run, S, sp, bp, conv, ports, key) -> dict[int, int]:
    """Frame number in the capture before the link -> row of S (the sending side)."""
    from ..labs.reconcile import pair_by_occurrence

    if bp is None or bp == sp or bp not in run.points:
        return {int(f): i for i, f in enumerate(S["frame"].to_numpy())}
    B = select(frame_cols(run.analysis(bp)), conv.proto, *ports).reset_index(drop=True)
    j = pair_by_occurrence(S, B, key)
    bf = B["frame"].to_numpy()
    return {int(bf[jj]): i for i, jj in enumerate(j) if jj >= 0}


def _drop_identity(d, tcp: bool):
    from ..labs.reconcile import _flag_bits

    for r in d.itertuples():
        if tcp:
            yield ("tcp", _flag_bits(r.flags), _int(r.seq), _int(r.ack), _int(r.payload_bytes))
        else:
            yield ("udp", _int(r.udp_flow), _int(r.udp_seq), _int(r.payload_bytes))


def _int(v) -> int:
    return -1 if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else int(v)


def _identity_mask(S, ident, tcp: bool) -> np.ndarray:
    if tcp:
        _, fl, seq, ack, plen = ident
        return ((S["flags"].to_numpy() == fl) & (S["seq"].to_numpy() == seq)
                & (S["ack"].to_numpy() == ack) & (S["plen"].to_numpy() == plen))
    _, flow, seq, plen = ident
    return (S["udp_flow"].to_numpy() == flow) & (S["udp_seq"].to_numpy() == seq)


def _rows(F, src, dst, c2s, sp, rp, tcp) -> pd.DataFrame:
    n = len(F)
    return pd.DataFrame({
        "direction": np.full(n, f"{src}\u2192{dst}", object),
        "c2s": np.full(n, c2s),
        "src_point": np.full(n, sp, object), "dst_point": np.full(n, rp, object),
        "flags": [flag_names(f) for f in F["flags"].to_numpy()] if tcp else
        np.where(F["udp_kind"].to_numpy() == KIND_CONTROL, "control",
                 np.where(F["udp_seq"].to_numpy() >= 0, "data", "")).astype(object),
        "seq": F["rel_seq"].to_numpy() if tcp else np.zeros(n, np.int64),
        "ack": F["rel_ack"].to_numpy() if tcp else np.zeros(n, np.int64),
        "length": F["plen"].to_numpy(),
        "udp_seq": F["udp_seq"].to_numpy() if not tcp else np.full(n, -1),
    })


def _label(r) -> str:
    if r.udp_seq >= 0 or r.flags in ("data", "control", ""):
        body = (f"UDP {r.flags} seq={r.udp_seq} len={r.length}" if r.udp_seq >= 0 and
                r.flags == "data" else f"UDP {r.flags or 'datagram'} len={r.length}")
    else:
        body = f"[{r.flags}] Seq={r.seq} Ack={r.ack} Len={r.length}"
    if r.fate == "dropped":
        body += f"  \u2717 {r.reason}"
    elif r.fate == "unseen":
        body += f"  ? not seen at {r.dst_point}"
    elif r.fate == "from_link":
        body += f"  (not seen at {r.src_point})"
    return body


# ---------------------------------------------------------------- the figure

def ladder(run, stream: int | None = None, flow: str | None = None,
           frames: tuple[int, int] | None = None,
           time_window: tuple[float, float] | None = None):
    """The ladder diagram (module doc) as a matplotlib Figure; its data in
    `fig.labkit_data` (ladder_data's dict)."""
    from ._mpl import colors, new_figure

    d = ladder_data(run, stream=stream, flow=flow, frames=frames, time_window=time_window)
    a = d["arrows"]
    c = colors()
    n = len(a)
    fs = 7.5
    fig_h = max(5.0, 0.2 * n + 2.2)
    fig = new_figure((12, fig_h))
    top_in, bottom_in = 1.15, 0.55
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - top_in / fig_h,
                        bottom=bottom_in / fig_h)
    ax = fig.add_subplot()
    XA, XL, XB = 0.0, 0.5, 1.0
    ts = np.concatenate([a["t_sent"].to_numpy(float), a["t_received"].to_numpy(float),
                         a["t_link"].to_numpy(float)])
    ts = ts[~np.isnan(ts)]
    lo, hi = float(ts.min()), float(ts.max())
    pad = max((hi - lo) * 0.03, 1e-4)
    ymin, ymax = lo - pad, hi + pad
    ax.set_ylim(ymax, ymin)                       # time runs down, as in Wireshark
    ax.set_xlim(-1.3, 2.3)
    for x in (XA, XB):
        ax.axvline(x, color="black", lw=1.2, zorder=1)
    ax.axvline(XL, color=c["grey"], lw=1, ls="--", zorder=1)
    hdr = {XA: f"{d['left']['host']}\n(capture {d['left']['point']})",
           XL: "link\n(ledger)" if d["ledger"] else "link",
           XB: f"{d['right']['host']}\n(capture {d['right']['point']})"}
    for x, text in hdr.items():
        ax.text(x, 1.005, text, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=9, fontweight="bold")
    ax.set_xticks([])
    for s in ("top", "right", "bottom"):
        ax.spines[s].set_visible(False)
    ax.set_ylabel(d["time_label"])
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", color="#eeeeee", lw=0.6)

    # the label columns: each label beside its arrow's start, spread so none overlap
    ax_h_in = fig_h * (ax.get_position().height)
    gap = (ymax - ymin) * (fs * 1.3 / 72) / ax_h_in
    for c2s, x0, xt, ha in ((True, XA, -0.07, "right"), (False, XB, 1.07, "left")):
        side = a[a["c2s"] == c2s]
        if not len(side):
            continue
        start_x = np.where(side["fate"] == "from_link", XL, x0)
        start_t = np.where(side["fate"] == "from_link", side["t_link"], side["t_sent"])
        ys = _spread(start_t.astype(float), gap, ymin + gap / 2, ymax - gap / 2)
        for (_, r), sx, st, y in zip(side.iterrows(), start_x, start_t, ys):
            dropped = r["fate"] in ("dropped", "unseen")
            color = c["drop"] if dropped else ("#1f4e9c" if c2s else "#2f7d32")
            ax.text(xt, y, r["label"], ha=ha, va="center", fontsize=fs, color=color)
            ax.plot([xt + (0.02 if c2s else -0.02), sx], [y, st], color="#cccccc", lw=0.5,
                    zorder=1)
            if r["fate"] == "dropped":
                ax.annotate("", xy=(XL, r["t_link"]), xytext=(sx, st),
                            arrowprops=dict(arrowstyle="-", color=c["drop"], lw=1.0,
                                            ls="--"), zorder=3)
                ax.plot([XL], [r["t_link"]], marker="x", color=c["drop"], ms=8, mew=2,
                        zorder=4)
                ax.text(XL + (0.03 if c2s else -0.03), r["t_link"], r["reason"] or "",
                        color=c["drop"], fontsize=fs, ha="left" if c2s else "right",
                        va="center", zorder=4)
            elif r["fate"] == "unseen":
                ax.annotate("", xy=(XL, st), xytext=(sx, st),
                            arrowprops=dict(arrowstyle="-", color=c["grey"], lw=1, ls=":"))
                ax.text(XL, st, "?", color=c["grey"], ha="center", va="center", fontsize=10)
            else:
                xd = XB if c2s else XA
                ax.annotate("", xy=(xd, r["t_received"]), xytext=(sx, st),
                            arrowprops=dict(arrowstyle="-|>", color=color, lw=0.9,
                                            shrinkA=0, shrinkB=0, mutation_scale=9),
                            zorder=3)
    first, last = d["window"]
    drops = int((a["fate"] == "dropped").sum())
    fig.suptitle(f"Ladder of {d['title']}: frames {first}-{last} of {d['total']}"
                 + (f", {drops} dropped by the link" if drops else ""),
                 fontsize=10.5, y=1 - 0.12 / fig_h, va="top")
    fig.text(0.5, 1 - 0.42 / fig_h, "each arrow: from the capture on the sending host's "
             "side to the capture on the receiving host's side (after Wireshark's Flow "
             "Graph); \u2717 = dropped by the link, with the ledger's reason", ha="center",
             va="top", fontsize=8, color="#444444")
    fig.labkit_data = d
    return fig


def _spread(ys: np.ndarray, gap: float, lo: float, hi: float) -> np.ndarray:
    """Label positions as near their targets as can be, at least `gap` apart, within
    [lo, hi] (targets sorted ascending)."""
    n = len(ys)
    if n == 0:
        return ys
    if gap * (n - 1) > hi - lo:
        return np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    out = np.clip(ys.astype(float), lo, hi)
    order = np.argsort(out, kind="stable")
    v = out[order]
    for i in range(1, n):
        v[i] = max(v[i], v[i - 1] + gap)
    if v[-1] > hi:
        v[-1] = hi
        for i in range(n - 2, -1, -1):
            v[i] = min(v[i], v[i + 1] - gap)
    out[order] = v
    return out
