"""TCP stream graphs of one conversation: time-sequence (Stevens, tcptrace), RTT and cwnd.

Time-sequence, after Wireshark's TCP Stream Graphs (Statistics > TCP Stream Graphs):

- Stevens (W. R. Stevens, TCP/IP Illustrated): one point per data segment of one
  direction, its relative sequence number against the time the capture saw it. The slope
  is the sending rate; a step back down is a resend.
- tcptrace (Shawn Ostermann's tcptrace, as Wireshark draws it): each segment a vertical
  bar from seq to seq + len; the ACK line (the cumulative acknowledgment the other side
  sent, a step line) below the bars; the receive-window line (ack + advertised window)
  above them, the most the sender may have sent; SACK blocks (RFC 2018) as short bars
  where the receiver reported data beyond a hole. Between the bars and the ACK line lies
  what is in flight; a bar below the ACK line is a resend of data already delivered.

Both mark what the analyzer concluded (the packets table's verdicts, Wireshark's
tcp.analysis flags): retransmissions (fast and spurious ones apart), out-of-order
segments, duplicate ACKs and zero windows. The graph is drawn at one vantage point; for a
run, the sending host's side by default, where the ACKs arrive an RTT after their data.

RTT and cwnd: the RTT samples the capture gives (Wireshark's tcp.analysis.ack_rtt: from
a data segment to the ACK that covers it, at the sender's side), beside what the sender's
kernel said in TCP_INFO (the endpoint report's interval samples: smoothed rtt, snd_cwnd,
snd_ssthresh), with the bytes in flight the capture shows in MSS-sized segments for the
congestion window to be compared with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import (PlotInputError, clock, flow_conv, host_of_address, host_point,
                      is_run, need_run, open_source, select, stream_range, unclaimed_streams,
                      frames as frame_cols)

STYLES = ("stevens", "tcptrace")
DIRECTIONS = ("a_to_b", "b_to_a")
M32 = 0xFFFFFFFF
TCP_INFINITE_SSTHRESH = 0x7FFFFFFF


def _stream_ports(analysis, stream: int, where: str):
    tcp = analysis.tcp
    row = tcp[tcp["stream"] == int(stream)]
    if not len(row):
        raise PlotInputError(f"no TCP stream {stream} in {where} ({stream_range(tcp)})")
    return row.iloc[0]


def _resolve(src, stream, direction, at, flow):
    """(analysis, point name or None, conversation row of the tcp table, direction)."""
    if direction not in DIRECTIONS:
        raise PlotInputError(f"direction {direction!r}: expected a_to_b or b_to_a")
    src = open_source(src)
    if not is_run(src):
        if at is not None or flow is not None:
            raise PlotInputError("at and flow need a run folder; a capture is one vantage "
                                 "point (give stream)")
        return src, None, _stream_ports(src, 0 if stream is None else stream,
                                        "this capture"), src
    run = src
    if at is not None and at not in run.points:
        raise PlotInputError(f"no capture at {at!r} in this run (captured: "
                             f"{', '.join(run.points)})")
    if flow is not None:
        if stream is not None:
            raise PlotInputError("give a flow or a stream, not both")
        conv = flow_conv(run, flow, proto="tcp")
        point = at or host_point(run, conv.client if direction == "a_to_b" else conv.server)
        a = run.analysis(point)
        tcp = a.tcp
        m = ((tcp["a_port"] == conv.client_port) & (tcp["b_port"] == conv.port)) if \
            conv.client_port else unclaimed_streams(run, conv, tcp)
        if not m.any():
            raise PlotInputError(f"flow {flow!r}: no TCP conversation on port {conv.port} "
                                 f"in the capture at {point}")
        return a, point, tcp[m].iloc[0], run
    stream = 0 if stream is None else int(stream)
    if at is not None:
        a = run.analysis(at)
        return a, at, _stream_ports(a, stream, f"the capture at {at}"), run
    first = run.points[0]
    row = _stream_ports(run.analysis(first), stream, f"the capture at {first}")
    host = host_of_address(run, row["a_addr"] if direction == "a_to_b" else row["b_addr"])
    point = first
    if host is not None:
        try:
            point = host_point(run, host)
        except PlotInputError:
            point = first
    if point == first:
        return run.analysis(first), first, row, run
    a = run.analysis(point)
    tcp = a.tcp
    m = (tcp["a_port"] == row["a_port"]) & (tcp["b_port"] == row["b_port"])
    if not m.any():
        return run.analysis(first), first, row, run
    return a, point, tcp[m].iloc[0], run


def _directions(a, f, row, direction):
    """The data direction's frames and the reverse direction's (the ACKs), at one point."""
    s = select(f, "tcp", None, None)
    s = s[s["tcp_stream"] == int(row["stream"])]
    ab = (s["sport"] == row["a_port"]) & (s["dport"] == row["b_port"])
    if row["a_port"] == row["b_port"]:                # the same port at both ends
        src = a.packets["src"].astype(str).to_numpy()[s.index.to_numpy()]
        ab = ab & (src == str(row["a_addr"]))
    ba = ~ab
    return (s[ab], s[ba]) if direction == "a_to_b" else (s[ba], s[ab])


def time_sequence_data(src, stream: int | None = 0, direction: str = "a_to_b",
                       at: str | None = None, flow: str | None = None) -> dict:
    """The data of a time-sequence graph, as plain data (see the module doc):

    segments  one row per data segment (payload > 0) of the direction: frame, t (s),
              seq, len, end (= seq + len), retransmission, fast_retransmission,
              spurious_retransmission, out_of_order (0/1)
    marks     one row per segment of the direction with a verdict (SYN and FIN included):
              frame, t, seq, kind (retransmission | fast_retransmission |
              spurious_retransmission | out_of_order)
    acks      one row per segment of the other direction carrying ACK: frame, t, ack
              (relative, in this direction's sequence space), window (scaled), edge (= ack +
              window), duplicate_ack, zero_window
    sack      one row per SACK block: frame, t, left, right (relative)
    point, stream, direction, src, dst (address:port), time_label
    """
    a, point, row, owner = _resolve(src, stream, direction, at, flow)
    clk = clock(owner)
    f = frame_cols(a)
    data_dir, ack_dir = _directions(a, f, row, direction)
    pk = a.packets
    verdicts = ("retransmission", "fast_retransmission", "spurious_retransmission",
                "out_of_order")
    rows = data_dir.index.to_numpy()
    t = clk.from_ns(data_dir["ts_ns"].to_numpy())
    seq = data_dir["rel_seq"].to_numpy()
    plen = data_dir["plen"].to_numpy()
    v = {k: pk[k].to_numpy()[rows] for k in verdicts}
    has = plen > 0
    segments = pd.DataFrame({"frame": data_dir["frame"].to_numpy()[has], "t": t[has],
                             "seq": seq[has], "len": plen[has], "end": seq[has] + plen[has],
                             **{k: v[k][has] for k in verdicts}})
    mk = []
    for k in verdicts:
        sel = v[k] > 0
        if k == "retransmission":
            # one mark per retransmission, labelled by its kind (tshark counts fast and
            # spurious ones as retransmissions too)
            kind = np.where(v["spurious_retransmission"][sel] > 0, "spurious_retransmission",
                            np.where(v["fast_retransmission"][sel] > 0,
                                     "fast_retransmission", "retransmission"))
        elif k == "out_of_order":
            kind = np.full(int(sel.sum()), k, object)
        else:
            continue
        mk.append(pd.DataFrame({"frame": data_dir["frame"].to_numpy()[sel], "t": t[sel],
                                "seq": seq[sel], "kind": kind}))
    marks = pd.concat(mk, ignore_index=True).sort_values("t", kind="stable") \
        .reset_index(drop=True)
    acked = ack_dir[(ack_dir["flags"].to_numpy() & 0x10) > 0]
    ar = acked.index.to_numpy()
    ack = acked["rel_ack"].to_numpy()
    win = acked["window"].to_numpy()
    acks = pd.DataFrame({"frame": acked["frame"].to_numpy(),
                         "t": clk.from_ns(acked["ts_ns"].to_numpy()), "ack": ack,
                         "window": win, "edge": ack + win,
                         "duplicate_ack": pk["duplicate_ack"].to_numpy()[ar],
                         "zero_window": pk["zero_window"].to_numpy()[ar]})
    sack = _sack_blocks(a, acked, data_dir, clk)
    a_end = f"{row['a_addr']}:{row['a_port']}"
    b_end = f"{row['b_addr']}:{row['b_port']}"
    return {"segments": segments, "marks": marks, "acks": acks, "sack": sack,
            "point": point, "stream": int(row["stream"]), "direction": direction,
            "src": a_end if direction == "a_to_b" else b_end,
            "dst": b_end if direction == "a_to_b" else a_end, "time_label": clk.label}


def _sack_blocks(a, acked, data_dir, clk) -> pd.DataFrame:
    cols = a.capture.cols
    empty = pd.DataFrame({"frame": pd.Series([], dtype=np.int64), "t": pd.Series([], dtype=float),
                          "left": pd.Series([], dtype=np.int64),
                          "right": pd.Series([], dtype=np.int64)})
    if "sack_rows" not in cols or not len(cols["sack_rows"]) or not len(acked) or \
            not len(data_dir):
        return empty
    srows = np.asarray(cols["sack_rows"], np.int64)
    rows = acked.index.to_numpy()
    pos = np.searchsorted(srows, rows)
    pos = np.minimum(pos, len(srows) - 1)
    ok = srows[pos] == rows
    if not ok.any():
        return empty
    # this direction's initial sequence number: raw - relative of its segments
    base = int((int(data_dir["seq"].iloc[0]) - int(data_dir["rel_seq"].iloc[0])) & M32)
    nblk = np.asarray(cols["sack_n"], np.int64)[rows[ok]]
    le = np.asarray(cols["sack_le"], np.int64)[pos[ok]]
    re = np.asarray(cols["sack_re"], np.int64)[pos[ok]]
    out = []
    frame = acked["frame"].to_numpy()[ok]
    t = clk.from_ns(acked["ts_ns"].to_numpy()[ok])
    for k in range(le.shape[1]):
        m = nblk > k
        out.append(pd.DataFrame({"frame": frame[m], "t": t[m],
                                 "left": (le[m, k] - base) & M32,
                                 "right": (re[m, k] - base) & M32}))
    return pd.concat(out, ignore_index=True).sort_values(["t", "left"], kind="stable") \
        .reset_index(drop=True)


def time_sequence(run_or_analysis, stream: int | None = 0, direction: str = "a_to_b",
                  style: str = "stevens", at: str | None = None, flow: str | None = None):
    """The time-sequence graph (module doc), Stevens or tcptrace, as a Figure; its data in
    `fig.labkit_data` (time_sequence_data's dict)."""
    from ._mpl import colors, new_figure

    if style not in STYLES:
        raise PlotInputError(f"style {style!r}: expected stevens or tcptrace")
    d = time_sequence_data(run_or_analysis, stream=stream, direction=direction, at=at,
                           flow=flow)
    c = colors()
    seg, marks, acks, sack = d["segments"], d["marks"], d["acks"], d["sack"]
    fig = new_figure((10, 5.6))
    ax = fig.add_subplot()
    if style == "stevens":
        ax.plot(seg["t"], seg["seq"], ".", ms=3, color=c["tcp"],
                label=f"data segment ({len(seg)})")
    else:
        ax.vlines(seg["t"], seg["seq"], seg["end"], color=c["tcp"], lw=1.1,
                  label=f"data segment, seq to seq+len ({len(seg)})")
        if len(acks):
            ax.step(acks["t"], acks["ack"], where="post", color=c["ack"], lw=1,
                    label="ACK (cumulative)")
            ax.step(acks["t"], acks["edge"], where="post", color=c["window"], lw=1,
                    label="receive window (ack + window)")
        if len(sack):
            ax.vlines(sack["t"], sack["left"], sack["right"], color=c["sack"], lw=2.2,
                      label=f"SACK block ({len(sack)})")
        dup = acks[acks["duplicate_ack"] > 0]
        if len(dup):
            ax.plot(dup["t"], dup["ack"], "|", ms=7, mew=1.2, color=c["dupack"],
                    label=f"duplicate ACK ({len(dup)})")
    zero = acks[acks["zero_window"] > 0]
    if len(zero):
        ax.plot(zero["t"], zero["ack"], "v", ms=6, color=c["zero"],
                label=f"zero window ({len(zero)})")
    styles = {"retransmission": ("o", c["retrans"], "retransmission"),
              "fast_retransmission": ("D", c["retrans"], "fast retransmission"),
              "spurious_retransmission": ("s", "#ff9896", "spurious retransmission"),
              "out_of_order": ("^", c["ooo"], "out of order")}
    for kind, (m, col, name) in styles.items():
        k = marks[marks["kind"] == kind]
        if len(k):
            ax.plot(k["t"], k["seq"], m, ms=6, mfc="none", mew=1.3, color=col,
                    label=f"{name} ({len(k)})")
    ax.set_xlabel(d["time_label"])
    ax.set_ylabel("relative sequence number (bytes)")
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.yaxis.set_major_formatter(_thousands())
    ax.grid(color="#eeeeee", lw=0.6)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    at = f" at {d['point']}" if d["point"] else ""
    name = "Stevens" if style == "stevens" else "tcptrace"
    ax.set_title(f"Time-sequence ({name}) of TCP stream {d['stream']}, {d['src']} \u2192 "
                 f"{d['dst']}{at}", fontsize=10)
    fig.tight_layout()
    fig.labkit_data = {**d, "style": style}
    return fig


def _headroom(series, factor: float = 1.5) -> float:
    """An upper y limit leaving room for the legend above the data."""
    vals = [float(np.nanmax(s.to_numpy(float))) for s in series
            if len(s) and not np.isnan(s.to_numpy(float)).all()]
    top = max(vals) if vals else 1.0
    return top * factor if top > 0 else 1.0


def _thousands():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: f"{v:,.0f}")


# ---------------------------------------------------------------- RTT and cwnd

def rtt_cwnd_data(run, flow: str | None = None) -> dict:
    """RTT and congestion window of a run's TCP flow (module doc), as plain data:

    ack_rtt   one row per RTT sample of the capture at the sender's side: frame (the ACK),
              t (s), rtt_ms
    tcp_info  one row per interval of the sender's endpoint report that has tcp_info:
              t (its end on the run's time axis: the sending loop's start, placed at the
              flow's first payload segment at the sender's side, + end), t_report
              (start.time_unix_s + end_s, as report.py documents it), start_s, end_s,
              rtt_ms, rttvar_ms, min_rtt_ms, snd_cwnd, snd_ssthresh (segments; NaN: not
              set yet), snd_mss, total_retrans, unacked
    tcp_info_end  the report's final sample, taken once the peer's FIN arrived (t: the
              connection's last frame at the sender's side), or empty
    flight    one row per data segment at the sender's side: t, bytes_in_flight, segments
              (bytes in flight / MSS)
    flow, point, mss, time_label
    """
    run = need_run(run, "rtt-cwnd")
    conv = flow_conv(run, flow, proto="tcp")
    point = host_point(run, conv.client)
    clk = clock(run)
    f = frame_cols(run.analysis(point))
    data = select(f, "tcp", *conv.ports(True))
    back = select(f, "tcp", *conv.ports(False))
    rtt = back[back["ack_rtt_s"].notna()]
    ack_rtt = pd.DataFrame({"frame": rtt["frame"].to_numpy(),
                            "t": clk.from_ns(rtt["ts_ns"].to_numpy()),
                            "rtt_ms": rtt["ack_rtt_s"].to_numpy() * 1e3})
    rep = run.endpoint_report(conv.name, "send") or {}
    recs = [r for r in rep.get("intervals") or [] if r.get("tcp_info")]
    # `labkit send` counts interval times from its sending loop's start, right after the
    # hello message (endpoints/tcp.py _Clock), while start.time_unix_s is when it made its
    # report, before connecting: the loop's start is placed at the first payload segment
    # the capture saw leave (start.time_unix_s only when the capture has none)
    t0_unix = float((rep.get("start") or {}).get("time_unix_s") or np.nan)
    payload = data[data["plen"] > 0]
    anchor = float(clk.from_ns(payload["ts_ns"].iloc[0])) if len(payload) else float(
        clk.from_unix_s(t0_unix))
    info = _info_frame(recs, anchor, t0_unix, clk)
    end = rep.get("end") or {}
    end_recs = []
    if end.get("tcp_info"):
        # sampled once the peer's FIN arrived: at the connection's last frame at the sender
        both = pd.concat([data, back])
        last = float(clk.from_ns(both["ts_ns"].max())) if len(both) else np.nan
        end_recs = [{"start_s": 0.0, "end_s": float(end.get("duration_s") or np.nan),
                     "tcp_info": end["tcp_info"], "_t": last}]
    info_end = _info_frame(end_recs, anchor, t0_unix, clk)
    mss = next((int(r["tcp_info"]["snd_mss"]) for r in recs + end_recs
                if r["tcp_info"].get("snd_mss")), None)
    d = data[data["plen"] > 0]
    if mss is None:
        mss = int(d["plen"].max()) if len(d) else 1460
    flight = pd.DataFrame({"t": clk.from_ns(d["ts_ns"].to_numpy()),
                           "bytes_in_flight": d["bytes_in_flight"].to_numpy(),
                           "segments": d["bytes_in_flight"].to_numpy() / mss})
    return {"ack_rtt": ack_rtt, "tcp_info": info, "tcp_info_end": info_end, "flight": flight,
            "flow": conv.name, "title": conv.title(), "point": point, "mss": mss,
            "time_label": clk.label, "report": bool(rep)}


INFO_COLUMNS = ["t", "t_report", "start_s", "end_s", "rtt_ms", "rttvar_ms", "min_rtt_ms",
                "snd_cwnd", "snd_ssthresh", "snd_mss", "total_retrans", "unacked"]


def _info_frame(recs, anchor: float, t0_unix: float, clk) -> pd.DataFrame:
    def num(v, scale=1.0):
        return np.nan if v is None else float(v) * scale

    rows = []
    for r in recs:
        ti = r["tcp_info"]
        ss = ti.get("snd_ssthresh")
        rows.append({
            "t": r["_t"] if "_t" in r else anchor + float(r["end_s"]),
            "t_report": float(clk.from_unix_s(t0_unix + float(r["end_s"]))),
            "start_s": float(r.get("start_s", np.nan)), "end_s": float(r["end_s"]),
            "rtt_ms": num(ti.get("rtt_s"), 1e3), "rttvar_ms": num(ti.get("rttvar_s"), 1e3),
            "min_rtt_ms": num(ti.get("min_rtt_s"), 1e3),
            "snd_cwnd": num(ti.get("snd_cwnd")),
            "snd_ssthresh": np.nan if ss is None or ss >= TCP_INFINITE_SSTHRESH else float(ss),
            "snd_mss": num(ti.get("snd_mss")), "total_retrans": num(ti.get("total_retrans")),
            "unacked": num(ti.get("unacked"))})
    return pd.DataFrame(rows, columns=INFO_COLUMNS).astype(float)


def rtt_cwnd(run, flow: str | None = None):
    """RTT (top) and congestion window (bottom) of a run's TCP flow on one time axis, as a
    Figure; its data in `fig.labkit_data` (rtt_cwnd_data's dict). flow: a TCP flow's name
    (default: the run's first TCP flow)."""
    from ._mpl import colors, new_figure

    d = rtt_cwnd_data(run, flow)
    c = colors()
    fig = new_figure((10, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    ar, info, end = d["ack_rtt"], d["tcp_info"], d["tcp_info_end"]
    top.plot(ar["t"], ar["rtt_ms"], ".", ms=3, color=c["tcp"], alpha=0.7,
             label=f"capture at {d['point']}: ACK RTT (tcp.analysis.ack_rtt, {len(ar)})")
    if len(info):
        top.plot(info["t"], info["rtt_ms"], "o-", color=c["udp"], ms=6,
                 label=f"TCP_INFO rtt, smoothed (report intervals, {len(info)})")
    if len(end):
        top.plot(end["t"], end["rtt_ms"], "o", mfc="none", mew=1.5, color=c["udp"], ms=8,
                 label="TCP_INFO rtt at the end")
    top.set_ylabel("RTT (ms)")
    top.set_ylim(0, _headroom([ar["rtt_ms"], info["rtt_ms"], end["rtt_ms"]]))
    top.grid(color="#eeeeee", lw=0.6)
    top.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fl = d["flight"]
    if len(fl):
        bottom.plot(fl["t"], fl["segments"], "-", lw=0.7, color=c["grey"], alpha=0.8,
                    label=f"capture at {d['point']}: bytes in flight / MSS ({d['mss']} B)")
    if len(info):
        bottom.plot(info["t"], info["snd_cwnd"], "o-", color=c["tcp"], ms=6,
                    label=f"TCP_INFO snd_cwnd ({len(info)})")
        if info["snd_ssthresh"].notna().any():
            bottom.plot(info["t"], info["snd_ssthresh"], "s--", color=c["drop"], ms=5,
                        label="TCP_INFO snd_ssthresh")
    if len(end):
        bottom.plot(end["t"], end["snd_cwnd"], "o", mfc="none", mew=1.5, color=c["tcp"],
                    ms=8, label="snd_cwnd at the end")
        if end["snd_ssthresh"].notna().any():
            bottom.plot(end["t"], end["snd_ssthresh"], "s", mfc="none", mew=1.5,
                        color=c["drop"], ms=7, label="snd_ssthresh at the end")
    bottom.set_ylabel("segments")
    bottom.set_ylim(0, _headroom([fl["segments"], info["snd_cwnd"], info["snd_ssthresh"],
                                  end["snd_cwnd"], end["snd_ssthresh"]]))
    bottom.set_xlabel(d["time_label"])
    bottom.grid(color="#eeeeee", lw=0.6)
    bottom.legend(loc="upper left", fontsize=8, framealpha=0.9)
    note = "" if d["report"] else " (no endpoint report: capture only)"
    fig.suptitle(f"RTT and congestion window of {d['title']}{note}", fontsize=10.5)
    fig.tight_layout()
    fig.labkit_data = d
    return fig
