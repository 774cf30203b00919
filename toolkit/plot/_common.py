"""What every figure needs: its input opened, flows and vantage points found, one clock.

No matplotlib here: the data functions of every figure run without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
FLAG_NAMES = ((FIN, "FIN"), (SYN, "SYN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"),
              (URG, "URG"), (ECE, "ECE"), (CWR, "CWR"))
TCP_KEY = ["sport", "dport", "flags", "seq", "ack", "plen"]       # as reconcile.TCP_KEY
UDP_KEY = ["sport", "dport", "udp_flow", "udp_seq", "plen"]       # as reconcile.UDP_KEY
KIND_CONTROL = 4                                                   # toolkit.wire


class PlotInputError(ValueError):
    """Input a figure cannot be drawn from (no such flow, stream, vantage point, or a kind
    that needs a run folder given one capture); the message says what to give instead."""


def flag_names(bits: int) -> str:
    """Wireshark's way: "SYN, ACK", "PSH, ACK", "FIN, ACK"."""
    return ", ".join(name for bit, name in FLAG_NAMES if int(bits) & bit)


# ---------------------------------------------------------------- the input

def open_source(src):
    """A RunFolder, a toolkit.api.Analysis, or a path: a run folder (a directory with
    run.json) or a capture file (analyzed here). Returns the RunFolder or the Analysis."""
    from ..api import Analysis
    from ..labs.folder import RunFolder

    if isinstance(src, (RunFolder, Analysis)):
        return src
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if p.is_dir():
            return RunFolder(p)           # RunFolderError (a ValueError) names run.json
        if not p.exists():
            raise PlotInputError(f"{p}: no such file or directory")
        from ..api import analyze
        return analyze(p)
    raise PlotInputError(f"expected a run folder, a RunFolder, a capture file or an "
                         f"Analysis, not {type(src).__name__}")


def need_run(src, kind: str):
    """The RunFolder, or PlotInputError naming what to give instead."""
    from ..labs.folder import RunFolder

    src = open_source(src)
    if not isinstance(src, RunFolder):
        raise PlotInputError(
            f"{kind} needs a run folder (RUN: a folder with run.json, from `labkit run`), "
            f"not one capture: it uses {NEEDS_RUN[kind]}; for one capture use "
            f"time-sequence, goodput or udp")
    return src


NEEDS_RUN = {
    "ladder": "the captures on both sides of the link and the link's ledger",
    "rtt-cwnd": "the sender's endpoint report (TCP_INFO)",
    "side-by-side": "the captures of every flow and the link's drops table",
    "figures_for": "the run's flows, its captures and its ledger",
}


def is_run(src) -> bool:
    from ..labs.folder import RunFolder
    return isinstance(src, RunFolder)


# ---------------------------------------------------------------- one clock

@dataclass(frozen=True)
class Clock:
    """Every figure of a run shares one time axis: seconds since the first frame of the
    first vantage point's capture (the packets table's `time` there). t0_ns is that
    frame's CLOCK_REALTIME timestamp, the clock of the captures, the ledger and the
    endpoint reports."""
    t0_ns: int
    point: str | None

    @property
    def label(self) -> str:
        where = f"at {self.point}" if self.point else "of the capture"
        return f"time (s since the first frame {where})"

    def from_ns(self, ns) -> np.ndarray:
        return (np.asarray(ns, np.int64) - self.t0_ns) / 1e9

    def from_unix_s(self, s) -> np.ndarray:
        return np.asarray(s, np.float64) - self.t0_ns / 1e9


def clock(src) -> Clock:
    if is_run(src):
        if not src.points:
            raise PlotInputError(f"{src.path}: this run has no capture")
        p = src.points[0]
        ts = src.analysis(p).capture.cols["ts_ns"]
        return Clock(int(ts[0]) if len(ts) else 0, p)
    ts = src.capture.cols["ts_ns"]
    return Clock(int(ts[0]) if len(ts) else 0, None)


# ---------------------------------------------------------------- frames

def frames(analysis):
    """reconcile.frame_table of a capture (identity, lab header fields, verdicts), with the
    relative seq/ack, window and ack_rtt_s of the packets table beside it. Cached on the
    Analysis (its `extra` dict), so several figures of one run decode it once."""
    cached = analysis.extra.get("plot_frames")
    if cached is not None:
        return cached
    from ..labs.reconcile import frame_table

    f = frame_table(analysis)
    pk = analysis.packets
    for c in ("seq", "ack"):
        f[f"rel_{c}"] = pk[c].to_numpy()
    for c in ("window", "ack_rtt_s", "bytes_in_flight", "tcp_stream", "udp_stream",
              "zero_window", "window_full"):
        f[c] = pk[c].to_numpy()
    f["send_ns"] = _send_ns(analysis)
    analysis.extra["plot_frames"] = f
    return f


def _send_ns(analysis) -> np.ndarray:
    """Per frame: the lab header's send time (ns since 1970), 0 where there is none."""
    from .. import wire
    from ..analysis.udp import _heads_by_row, udp_datagram_rows

    cols = analysis.capture.cols
    out = np.zeros(len(cols["ts_ns"]), np.int64)
    rows = udp_datagram_rows(cols)
    if len(rows):
        head, head_len = _heads_by_row(cols, rows)
        lab = wire.decode_heads(head, head_len)
        ok = lab["valid"]
        out[rows[ok]] = lab["send_ns"][ok]
    return out


def select(f, proto: str, sport: int | None, dport: int | None):
    """Frames of one direction of a conversation: protocol and ports (a None port: any)."""
    m = f["l4"].to_numpy() == (6 if proto == "tcp" else 17)
    if sport is not None:
        m &= f["sport"].to_numpy() == int(sport)
    if dport is not None:
        m &= f["dport"].to_numpy() == int(dport)
    return f[m]


# ---------------------------------------------------------------- flows of a run

@dataclass
class Conv:
    """One conversation of a run: a lab flow, or a TCP stream found by its ports."""
    name: str
    proto: str
    client: str             # host names
    server: str
    client_port: int | None
    port: int

    def ports(self, c2s: bool) -> tuple[int | None, int | None]:
        return (self.client_port, self.port) if c2s else (self.port, self.client_port)

    def title(self) -> str:
        return f"{self.name} ({self.proto.upper()} {self.client}:{self.client_port or '*'} " \
               f"\u2192 {self.server}:{self.port})"


def run_flows(run) -> list[dict]:
    return [f for f in run.doc.get("flows") or [] if f.get("name")]


def flow_conv(run, name: str | None = None, proto: str | None = None) -> Conv:
    """The run's flow `name`, or its first flow of `proto` (any protocol: None)."""
    flows = run_flows(run)
    if name is not None:
        for f in flows:
            if f["name"] == name:
                if proto and f.get("proto") != proto:
                    raise PlotInputError(f"flow {name!r} is {f.get('proto', '?').upper()}, "
                                         f"not {proto.upper()}; {_flow_list(flows, proto)}")
                return _conv(f)
        raise PlotInputError(f"no flow {name!r} in this run; {_flow_list(flows, proto)}")
    for f in flows:
        if proto is None or f.get("proto") == proto:
            return _conv(f)
    raise PlotInputError(f"this run has no {proto.upper() if proto else ''} flow"
                         .replace("  ", " ") + f"; {_flow_list(flows, None)}")


def _flow_list(flows, proto) -> str:
    names = [f"{f['name']} ({f.get('proto', '?')})" for f in flows
             if proto is None or f.get("proto") == proto]
    return f"flows: {', '.join(names)}" if names else "it has none"


def _conv(f: dict) -> Conv:
    return Conv(f["name"], f.get("proto", "tcp"), f.get("client", "a"), f.get("server", "b"),
                int(f["client_port"]) if f.get("client_port") else None, int(f["port"]))


def unclaimed_streams(run, conv: Conv, tcp):
    """For a flow with no client port of its own (a SYN flood): the mask of `tcp` rows to
    its server's port (and address, when the run has it) whose client port no other flow
    of the run claims."""
    claimed = {int(f["client_port"]) for f in run_flows(run)
               if f.get("proto") == "tcp" and int(f["port"]) == conv.port
               and f.get("client_port")}
    m = (tcp["b_port"] == conv.port) & ~tcp["a_port"].isin(claimed)
    addr = next((f.get("server_addr") for f in run_flows(run) if f["name"] == conv.name), None)
    return m & (tcp["b_addr"] == addr) if addr else m


def host_point(run, host: str) -> str:
    """A host's own vantage point when it was captured, else the router's side facing it."""
    for p in (host, f"r-{host}"):
        if p in run.points:
            return p
    raise PlotInputError(f"no capture at {host} or r-{host} in this run (captured: "
                         f"{', '.join(run.points) or 'none'})")


def host_of_address(run, addr: str) -> str | None:
    for f in run_flows(run):
        for role in ("client", "server"):
            if f.get(f"{role}_addr") == addr and f.get(role):
                return f[role]
    return None


def stream_conv(run, stream: int, point: str | None = None) -> Conv:
    """TCP stream `stream` as numbered in the capture at `point` (default: the first
    vantage point), as a conversation: the run's flow with its ports when there is one."""
    point = point or run.points[0]
    tcp = run.analysis(point).tcp
    row = tcp[tcp["stream"] == int(stream)]
    if not len(row):
        raise PlotInputError(f"no TCP stream {stream} in the capture at {point} "
                             f"({stream_range(tcp)})")
    r = row.iloc[0]
    ports = (r["a_port"], r["b_port"])
    flows = [f for f in run_flows(run) if f.get("proto") == "tcp" and int(f["port"]) in ports]
    # the flow whose own ports these are; a flow with no port of its own (a SYN flood's
    # client: each SYN its own) only for a stream no other flow claims, at its server
    for f in flows:
        if f.get("client_port") and int(f["client_port"]) in ports:
            return _conv(f)
    for f in flows:
        if not f.get("client_port") and unclaimed_streams(run, _conv(f), row).iloc[0]:
            return _conv(f)
    a = host_of_address(run, r["a_addr"]) or "a"
    b = host_of_address(run, r["b_addr"]) or "b"
    return Conv(f"stream {stream}", "tcp", a, b, int(r["a_port"]), int(r["b_port"]))


def stream_range(tcp) -> str:
    n = len(tcp)
    return "it has none" if n == 0 else "it has one: 0" if n == 1 else \
        f"it has {n}: 0 to {n - 1}"


def summary_row(run, conv: Conv, c2s: bool):
    """The reconciliation summary row of one direction of a flow, or None."""
    s = run.reconciliation().summary
    src = conv.client if c2s else conv.server
    m = (s["flow"] == conv.name) & (s["src_host"] == src)
    return s[m].iloc[0] if m.any() else None


def drops_of(run, conv: Conv, c2s: bool | None = None):
    """The drops table's rows of a flow (one direction, or both)."""
    d = run.reconciliation().drops
    d = d[d["flow"] == conv.name]
    if c2s is not None:
        row = summary_row(run, conv, c2s)
        if row is None:
            return d.iloc[0:0]
        d = d[d["direction"] == row["direction"]]
    return d
