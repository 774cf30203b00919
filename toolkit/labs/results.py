"""Run-level tables from the endpoint reports: `endpoints` (one row per endpoint) and
`flows` (one row per flow: the side-by-side comparison of TCP and UDP that the kit is for).

Side by side means like with like: payload bytes the sender handed over against payload
bytes the receiving program got, goodput as the receiver measured it, completion time as
the sender measured it, and loss as each application saw it (TCP: none, however many
segments the link dropped; UDP: the datagrams that never arrived).

The reports are read through RunFolder.endpoint_report, which upgrades a saved version-1
report to version 2 (toolkit.endpoints.report.upgrade): the names here are version 2's,
the unit last (docs/columns.md).
"""

from __future__ import annotations

import math

# flattened from a report's "end" (and the receiver's connection record)
_END_KEYS = ("duration_s", "payload_bytes", "goodput_bps", "messages", "datagrams", "packets",
             "lost", "expected", "duplicates", "reordered", "loss_fraction", "jitter_s",
             "transactions", "transactions_per_s", "send_errors", "connections", "flows",
             "socket_drops",      # a UDP receiver's socket: datagrams its kernel dropped
             # labkit send --parallel: per-connection times from the release, percentiles
             "parallel", "connected", "failed", "latency_p50_s", "latency_p90_s",
             "latency_max_s", "first_response_p50_s", "first_response_max_s",
             "completion_p50_s", "completion_max_s", "connect_max_s",
             # labkit serve: what the server cost (toolkit.endpoints.resources)
             "peak_connections", "server_peak_rss_bytes", "peak_rss_bytes",
             "peak_pss_bytes", "peak_fds", "peak_threads", "peak_processes",
             "idle_rss_bytes", "idle_pss_bytes", "idle_fds", "idle_threads",
             "child_peak_rss_max_bytes")
_TCP_INFO = ("total_retrans", "retransmits", "lost", "rtt_s", "rttvar_s", "snd_cwnd",
             "snd_ssthresh", "delivery_rate_bps", "bytes_acked", "bytes_retrans")


def _num(v):
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return None if isinstance(v, float) and math.isnan(v) else v
    return None


def _receiver_record(serve: dict | None, parallel: bool = False) -> dict:
    """The receiving program's record of the one client or flow it served; for a
    `labkit send --parallel` flow, the sum of its connections' bytes and messages."""
    if not serve:
        return {}
    conns = serve.get("connections") or []
    if not parallel or len(conns) < 2:
        return conns[0] if conns else {}
    hows = sorted({c.get("how") for c in conns if c.get("how")})
    return {"payload_bytes": sum(c.get("payload_bytes") or 0 for c in conns),
            "messages": {"payload_bytes": sum((c.get("messages") or {}).get("payload_bytes")
                                              or 0 for c in conns),
                         "packets": sum((c.get("messages") or {}).get("packets") or 0
                                        for c in conns)},
            "duration_s": max(c.get("duration_s") or 0 for c in conns),
            "how": ",".join(h for h in hows if h)}


def endpoint_rows(run) -> list[dict]:
    rows = []
    for f in run.doc.get("flows", []):
        for side in ("send", "serve"):
            info = f.get(side, {})
            if side == "serve" and not info and f.get("scenario"):
                continue          # a scenario without a server role (it aims at another's)
            rep = run.endpoint_report(f["name"], side)
            row = {"flow": f["name"], "side": side, "proto": f["proto"],
                   "host": info.get("host"), "exit_status": info.get("exit_status"),
                   "timed_out": bool(info.get("timed_out")), "report": rep is not None}
            if rep:
                row["role"] = rep.get("start", {}).get("role")
                row["mode"] = rep.get("start", {}).get("mode")
                end = rep.get("end", {})
                for k in _END_KEYS:
                    if _num(end.get(k)) is not None:
                        row[k] = end[k]
                info_ = end.get("tcp_info") or {}
                for k in _TCP_INFO:
                    if _num(info_.get(k)) is not None:
                        row[f"tcp_info_{k}"] = info_[k]
                rec = _receiver_record(rep) if side == "serve" else {}
                # the receiver's record of its client: scalars, and one level of the nested
                # records (messages{...}, alignment{...} of an unframed stream)
                for k, v in rec.items():
                    if isinstance(v, dict):
                        for k2, v2 in v.items():
                            if _num(v2) is not None:
                                row[f"received_{k}_{k2}"] = v2
                    elif _num(v) is not None:
                        row[f"received_{k}"] = v
                if rec.get("ended") or rec.get("how"):
                    row["ended"] = rec.get("how") or rec.get("ended")
                if rep.get("start", {}).get("scenario"):
                    # a scenario's end says what its program saw, in words as well as
                    # numbers (toolkit.scenarios.base): outcome "ConnectionResetError",
                    # errno "EADDRINUSE", ...; the columns the runner set come first
                    for k, v in end.items():
                        if k not in row and (isinstance(v, str) or _num(v) is not None):
                            row[k] = v
            rows.append(row)
    return rows


def endpoints_table(run):
    import pandas as pd
    return pd.DataFrame(endpoint_rows(run))


def flow_rows(run) -> list[dict]:
    rows = []
    for f in run.doc.get("flows", []):
        send = run.endpoint_report(f["name"], "send") or {}
        serve = run.endpoint_report(f["name"], "serve") or {}
        send_end = send.get("end", {})
        rec = _receiver_record(serve, parallel=bool(send_end.get("parallel")))
        row = {"flow": f["name"], "proto": f["proto"], "client": f["client"],
               "server": f["server"], "port": f["port"], "client_port": f["client_port"],
               "send_exit_status": f.get("send", {}).get("exit_status"),
               "serve_exit_status": f.get("serve", {}).get("exit_status"),
               "timed_out": bool(f.get("send", {}).get("timed_out")
                                 or f.get("serve", {}).get("timed_out"))}
        if f["proto"] == "tcp":
            msgs = rec.get("messages") or {}
            delivered = msgs.get("payload_bytes", rec.get("payload_bytes"))
            row.update(
                sent_payload_bytes=send_end.get("payload_bytes"),
                delivered_payload_bytes=delivered,
                app_lost_bytes=(None if delivered is None or send_end.get("payload_bytes")
                                is None else send_end["payload_bytes"] - delivered),
                app_lost_fraction=None,
                sent_units=send_end.get("messages"), delivered_units=msgs.get("packets"),
                completion_s=send_end.get("duration_s"),
                receiver_duration_s=rec.get("duration_s"),
                tcpinfo_total_retrans=(send_end.get("tcp_info") or {}).get("total_retrans"),
                ended=rec.get("how") or rec.get("ended"))
        else:
            row.update(
                sent_payload_bytes=send_end.get("payload_bytes"),
                delivered_payload_bytes=rec.get("payload_bytes"),
                app_lost_bytes=(None if rec.get("payload_bytes") is None
                                or send_end.get("payload_bytes") is None
                                else send_end["payload_bytes"] - rec["payload_bytes"]),
                app_lost_fraction=rec.get("loss_fraction"),
                sent_units=send_end.get("datagrams"), delivered_units=rec.get("packets"),
                app_lost_units=rec.get("lost"), duplicates=rec.get("duplicates"),
                reordered=rec.get("reordered"), jitter_s=rec.get("jitter_s"),
                completion_s=send_end.get("duration_s"),
                receiver_duration_s=rec.get("duration_s"),
                tcpinfo_total_retrans=None, ended=rec.get("ended"))
        secs, got = row.get("receiver_duration_s"), row.get("delivered_payload_bytes")
        row["goodput_bps"] = got * 8 / secs if secs and got is not None else None
        if f["proto"] == "tcp" and row.get("app_lost_units") is None:
            sent, got_n = row.get("sent_units"), row.get("delivered_units")
            row["app_lost_units"] = sent - got_n if sent is not None and got_n is not None \
                else None
        rows.append(row)
    return rows


def flows_table(run):
    import pandas as pd
    df = pd.DataFrame(flow_rows(run))
    if "client_port" in df:
        # a whole number or none (a SYN flood's client has no port of its own), not a float
        df["client_port"] = df["client_port"].astype("Int64")
    return df
