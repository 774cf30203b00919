"""A connection's states twice over: as the capture implies them and as the kernel held them.

    states.timeline(run, at="b")     # one row per flow, host and state, both views

The capture's view is the analyzer's state timeline (tcp_states: RFC 9293 3.3.2, each
endpoint's state inferred from the segments seen at one vantage point); the kernel's is
`ss` sampled on each host during the run ([observe]: the sockets table). They share one
clock here, the traffic phase's start (the sockets table's t_s): a state change in the
capture is placed at its frame's capture time.

They do not have to agree to the millisecond: the capture sees a segment on the wire at
one vantage point, the kernel changes state when it sends or processes it, and ss only
looks every [observe].every. A state shorter than that interval may never be sampled
(SYN-SENT on a fast link); one the kernel holds after the capture stopped (TIME-WAIT's
60 s) only ss shows lasting. A listener (LISTEN) and the kernel's half-open entries
(SYN-RECV) are the server's; ss names ESTABLISHED "ESTAB" and SYN-RECEIVED "SYN-RECV".
"""

from __future__ import annotations

from . import observe

# ss's names for the RFC's states (the rest are spelled alike)
SS_NAMES = {"ESTAB": "ESTABLISHED", "SYN-RECV": "SYN-RECEIVED", "UNCONN": "CLOSED"}
COLUMNS = ("flow", "port", "host", "role", "state", "capture_s", "ss_first_s", "ss_last_s",
           "ss_samples", "ss_timer_max_s")


def _capture_rows(run, at: str, flows: list[dict]) -> list[dict]:
    """Each endpoint's state changes at vantage point `at`, on the traffic clock."""
    states = run.table("tcp_states", at)
    conv = run.table("tcp", at)
    if not len(states) or not len(conv):
        return []
    ts_ns = run.analysis(at).capture.cols["ts_ns"]
    t0 = observe.origin_unix_s(run)
    rows = []
    for f in flows:
        mine = conv[(conv["b_port"] == f["port"]) & (conv["a_port"] == f["client_port"])]
        for stream in mine["stream"].tolist():
            for s in states[states["stream"] == stream].itertuples():
                client = s.endpoint == "A"          # the originator: the flow's client
                rows.append({"flow": f["name"], "port": f["port"],
                             "host": f["client"] if client else f["server"],
                             "role": "client" if client else "server", "state": s.state,
                             "capture_s": round(ts_ns[int(s.frame) - 1] / 1e9 - t0, 6)})
    return rows


def _ss_rows(run, flows: list[dict]) -> list[dict]:
    socks = run.table("sockets")
    if not len(socks):
        return []
    socks = socks[socks["proto"] == "tcp"]
    rows = []
    for f in flows:
        server = socks[(socks["host"] == f["server"]) & (socks["local_port"] == f["port"])]
        client = socks[(socks["host"] == f["client"]) & (socks["peer_port"] == f["port"])
                       & (socks["local_port"] == f["client_port"])]
        for role, df in (("server", server), ("client", client)):
            for state, g in df.groupby("state", sort=False):
                timer = g["timer_s"].max()
                rows.append({"flow": f["name"], "port": f["port"],
                             "host": f[role], "role": role,
                             "state": SS_NAMES.get(state, state),
                             "ss_first_s": float(g["t_s"].min()),
                             "ss_last_s": float(g["t_s"].max()), "ss_samples": len(g),
                             "ss_timer_max_s": None if timer != timer else float(timer)})
    return rows


def timeline(run, at: str | None = None):
    """One row per flow, host and state: when the capture at `at` (default: the first
    captured point) shows the endpoint entering it, and the first and last ss sample on
    that host showing the socket in it, with the most time left on its timer. TCP flows
    only; a state one view lacks has NaN there."""
    import pandas as pd

    at = at or run.points[0]
    flows = [f for f in run.doc.get("flows", []) if f.get("proto") == "tcp"]
    cap = pd.DataFrame(_capture_rows(run, at, flows),
                       columns=["flow", "port", "host", "role", "state", "capture_s"])
    # a state entered twice (LISTEN again after a restart) keeps its first entry
    cap = cap.groupby(["flow", "port", "host", "role", "state"], as_index=False,
                      sort=False)["capture_s"].min()
    ss = pd.DataFrame(_ss_rows(run, flows), columns=["flow", "port", "host", "role", "state",
                                                     "ss_first_s", "ss_last_s", "ss_samples",
                                                     "ss_timer_max_s"])
    out = cap.merge(ss, on=["flow", "port", "host", "role", "state"], how="outer")
    out["ss_samples"] = out["ss_samples"].fillna(0).astype(int)
    out["_t"] = out[["capture_s", "ss_first_s"]].min(axis=1)
    out = out.sort_values(["port", "role", "_t"], kind="stable").drop(columns="_t")
    return out[list(COLUMNS)].reset_index(drop=True)
