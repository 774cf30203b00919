"""Figures of a run (or of one capture): the pictures Wireshark and tcptrace draw, from the
run folder alone, as matplotlib Figures for a notebook, a script, the CLI and report.md.

    from toolkit import plot
    plot.ladder(run, flow="tcp")                  # two vantage points, one arrow per frame
    plot.time_sequence(run, stream=0, style="tcptrace")
    plot.goodput(run)                             # TCP and UDP on the same axes
    plot.rtt_cwnd(run, flow="tcp")                # capture RTT beside TCP_INFO
    plot.udp(run, flow="udp")                     # received, lost (and where), delay
    plot.side_by_side(run)                        # delivered, drops, repairs
    plot.save_figures(run, run.path / "figures")  # the ones that fit, as PNG

Theory of operation
-------------------
Every figure is two functions: `<kind>_data(...)`, pure, returning plain data (a dict of
DataFrames and numbers: what is drawn, point by point), and `<kind>(...)`, which draws
that data and returns the matplotlib Figure with the same dict as `fig.labkit_data`.
Tests and notebooks check the data, not pixels; the figure only draws it.

The figures, and the tool each follows:

- ladder: Wireshark's Flow Graph, on a time axis, between the captures on the two hosts'
  sides of the link; the link's drops end at the link with the ledger's reason
  (toolkit.plot.ladder).
- time-sequence: Wireshark's TCP Stream Graphs, Stevens and tcptrace styles, with the
  analyzer's verdicts marked (toolkit.plot.tcpgraph).
- rtt-cwnd: the capture's ACK RTT samples beside the sender's TCP_INFO (rtt, snd_cwnd,
  snd_ssthresh) from its endpoint report (toolkit.plot.tcpgraph).
- goodput: tcptrace's throughput graph: payload seen at the receiving side over a moving
  window, every flow on one axis (toolkit.plot.delivery).
- udp: a UDP flow by its lab sequence numbers: received, duplicated, reordered, lost and
  where; one-way delay and RFC 3550 jitter (toolkit.plot.udpflow).
- side-by-side: TCP against UDP on one time axis: bytes delivered, every drop of the link,
  each TCP repair (toolkit.plot.delivery).

Inputs: a RunFolder or a run folder's path; where one capture is enough (time-sequence,
goodput, udp) also a toolkit.api.Analysis or a capture's path. Times are seconds since the
first frame of the run's first vantage point (the packets table's `time` there), so every
figure of a run shares one axis. matplotlib is imported only when a figure is drawn, and
without pyplot (toolkit.plot._mpl): no display needed, nothing kept alive.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import PlotInputError
from .delivery import goodput, goodput_data, moving_rate, side_by_side, side_by_side_data
from .ladder import ladder, ladder_data
from .tcpgraph import rtt_cwnd, rtt_cwnd_data, time_sequence, time_sequence_data
from .udpflow import udp, udp_data

__all__ = ["ladder", "ladder_data", "time_sequence", "time_sequence_data", "goodput",
           "goodput_data", "rtt_cwnd", "rtt_cwnd_data", "udp", "udp_data", "side_by_side",
           "side_by_side_data", "figures_for", "save_figures", "KINDS", "RUN_ONLY",
           "PlotInputError", "moving_rate"]

# CLI name -> the function drawing it
KINDS = {"ladder": ladder, "time-sequence": time_sequence, "goodput": goodput,
         "rtt-cwnd": rtt_cwnd, "udp": udp, "side-by-side": side_by_side}
RUN_ONLY = ("ladder", "rtt-cwnd", "side-by-side")      # the others take one capture too


def figures_for(run, kinds=None) -> dict:
    """The figures that fit a run, by kind: each kind its run has data for (ladder,
    time-sequence and rtt-cwnd of the first TCP flow, udp of the first UDP flow, goodput
    and side-by-side of every flow). A kind without data is left out, not drawn empty.
    `kinds`: only those (a lab's [lab].figures); None: every kind."""
    from ._common import need_run, run_flows

    run = need_run(run, "figures_for")
    protos = [f.get("proto") for f in run_flows(run)]
    out = {}
    for kind, fn, wanted in (("side-by-side", side_by_side, bool(protos)),
                             ("goodput", goodput, bool(protos)),
                             ("ladder", ladder, bool(protos)),
                             ("time-sequence", _first_tcp_time_sequence, "tcp" in protos),
                             ("rtt-cwnd", rtt_cwnd, "tcp" in protos),
                             ("udp", udp, "udp" in protos)):
        if not wanted or (kinds is not None and kind not in kinds):
            continue
        try:
            out[kind] = fn(run)
        except PlotInputError:
            continue                      # no data of that kind in this run
    return out


def _first_tcp_time_sequence(run):
    from ._common import flow_conv
    return time_sequence(run, stream=None, flow=flow_conv(run, proto="tcp").name,
                         style="tcptrace")


def save_figures(run, folder: str | os.PathLike, fmt: str = "png",
                 kinds=None) -> list[Path]:
    """Write figures_for(run, kinds) into `folder` as <kind>.<fmt> (created if need be);
    returns the paths written, in figures_for's order."""
    from ._mpl import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, fig in figures_for(run, kinds).items():
        written.append(save(fig, folder / f"{kind}.{fmt}", fmt))
    return written
