"""The endpoints' report: human lines while running, a versioned JSON document at the end.

In the spirit of iperf3 -J. The JSON document (schema "labkit-endpoint-report", version 2):

    {"schema": "labkit-endpoint-report", "version": 2,
     "start":     {"role": "sender"|"receiver"|"server", "proto": "tcp"|"udp", "mode": ...,
                   "local": "host:port", "remote": "host:port", "time_unix_s": float,
                   "flow": int, "options": {every socket choice made},
                   "receive_dir": the folder a TCP server receives files into, or null},
     "intervals": [{"start_s": s, "end_s": s, "payload_bytes": n, "goodput_bps": x,
                    "packets": n, "lost": n, "duplicates": n, "reordered": n,
                    "jitter_s": x, "tcp_info": {...} | absent}, ...],
     "end":       {"duration_s": s, "payload_bytes": n, "goodput_bps": x, ... totals ...,
                   "tcp_info": {...}, "peer": {the other side's report, when it sent one},
                   "file_result": {a file receiver's verdict}, "peer_error": "why the
                   server ended the connection, when it did"},
     "connections": [per-connection reports of a server], "log": [{"t_s": s, "event", ...}]}

Units are SI base units and every name that has one ends in it: `_s` (seconds), `_bytes`,
`_bps` (bits per second); docs/columns.md lists every field. Bytes are payload bytes (what
the program wrote or read), never frame bytes. Times in intervals are seconds since
"start". Counts in an interval are since the previous interval; "end" holds totals. Fields
that do not apply to a mode are absent, not zero. The file is written atomically
(temporary file, then rename): a reader never sees half.

A reader of saved reports passes each through `upgrade` first: a version-1 report (names
without units: "seconds", "bytes", "bits_per_second", tcp_info's "rtt", ...) comes out as
version 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .quantities import show_bytes, show_rate

SCHEMA, VERSION = "labkit-endpoint-report", 2


class Report:
    def __init__(self, role: str, proto: str, mode: str, *, stream=sys.stdout,
                 quiet: bool = False, **start):
        self.t0 = time.monotonic()
        self.doc: dict = {"schema": SCHEMA, "version": VERSION,
                          "start": {"role": role, "proto": proto, "mode": mode,
                                    "time_unix_s": time.time(), **start},
                          "intervals": [], "end": {}, "log": []}
        self.stream = None if quiet else stream

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, line: str) -> None:
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()

    def event(self, what: str, **details) -> None:
        """Something worth a line in the log (a connection closed, a reset, an error)."""
        rec = {"t_s": round(self.elapsed(), 6), "event": what, **details}
        self.doc["log"].append(rec)
        extra = " ".join(f"{k}={v}" for k, v in details.items())
        self.say(f"[{rec['t_s']:8.3f}] {what} {extra}".rstrip())

    def interval(self, start: float, end: float, rec: dict) -> dict:
        secs = max(end - start, 1e-9)
        rec = {"start_s": round(start, 6), "end_s": round(end, 6), **rec}
        if "payload_bytes" in rec:
            rec["goodput_bps"] = rec["payload_bytes"] * 8 / secs
        self.doc["intervals"].append(rec)
        self.say(human(rec))
        return rec

    def finish(self, totals: dict) -> dict:
        end = dict(totals)
        secs = end.get("duration_s")
        if secs and "payload_bytes" in end and "goodput_bps" not in end:
            end["goodput_bps"] = end["payload_bytes"] * 8 / secs
        self.doc["end"] = end
        self.say("- " * 30)
        self.say(human({"start_s": 0.0, "end_s": secs or self.elapsed(), **end}, total=True))
        return self.doc

    def write(self, path: str | os.PathLike | None) -> None:
        if not path:
            return
        write_json(path, self.doc)

    def emit(self, args) -> None:
        """The report where the command line asked for it: `--json` prints it on stdout
        (one document, as iperf3 -J), `--json-file FILE` writes it to FILE."""
        self.write(getattr(args, "json_file", None))
        if getattr(args, "json", False):
            sys.stdout.write(json.dumps(self.doc, indent=1, default=str) + "\n")
            sys.stdout.flush()


def write_json(path, doc: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def human(rec: dict, total: bool = False) -> str:
    """One iperf3-like line: interval, transfer, rate, then what the mode measures."""
    parts = [f"{rec['start_s']:6.2f}-{rec['end_s']:<6.2f} sec"]
    if "payload_bytes" in rec:
        parts.append(f"{show_bytes(rec['payload_bytes']):>12}")
    if rec.get("goodput_bps") is not None:
        parts.append(f"{show_rate(rec['goodput_bps']):>14}")
    if "packets" in rec and "lost" in rec:
        exp = rec.get("expected", rec["packets"] + max(rec["lost"], 0))
        pct = (100 * rec["lost"] / exp) if exp else 0.0
        parts.append(f"{rec['lost']}/{exp} lost ({pct:.2g}%)")
    elif "packets" in rec:
        parts.append(f"{rec['packets']} msgs")
    for key, label in (("duplicates", "dup"), ("reordered", "reord")):
        if rec.get(key):
            parts.append(f"{rec[key]} {label}")
    if "jitter_s" in rec:
        parts.append(f"jitter {rec['jitter_s'] * 1e3:.3f} ms")
    if "transactions" in rec:
        parts.append(f"{rec['transactions']} trans")
    if rec.get("latency_s"):
        parts.append(f"rtt p50 {rec['latency_s']['p50'] * 1e3:.3f} ms")
    info = rec.get("tcp_info")
    if info and "rtt_s" in info:
        parts.append(f"cwnd {info.get('snd_cwnd')} rtt {info['rtt_s'] * 1e3:.2f} ms "
                     f"retr {info.get('total_retrans')}")
    label = "total" if total else ""
    return f"[{label:>5}] " + "  ".join(parts)


# ---- reading saved reports: version 1 -> 2 ----

# version 1's names (keys of "end", intervals, connection records and the peer's report)
V1_NAMES = {"seconds": "duration_s", "bytes": "payload_bytes", "bits_per_second": "goodput_bps",
            "transactions_per_second": "transactions_per_s",
            "child_peak_rss_bytes_max": "child_peak_rss_max_bytes",
            "flood_seconds": "flood_duration_s"}
V1_INTERVAL = {"start": "start_s", "end": "end_s"}
# tcp_info: values were in seconds and bits/s already; only the names gained the unit
V1_TCP_INFO = {"rto": "rto_s", "rtt": "rtt_s", "rttvar": "rttvar_s", "rcv_rtt": "rcv_rtt_s",
               "min_rtt": "min_rtt_s", "busy_time": "busy_time_s",
               "rwnd_limited": "rwnd_limited_s", "sndbuf_limited": "sndbuf_limited_s",
               "pacing_rate": "pacing_rate_bps", "delivery_rate": "delivery_rate_bps"}


def upgrade(doc):
    """An endpoint or scenario report of any version as version 2 (a new dict; a version-2
    report is returned as it is). Version 1 had the same values under names without their
    unit: "seconds", "bytes", "bits_per_second", intervals' "start"/"end", the log's "t",
    start's "time_unix" and tcp_info's "rtt", "pacing_rate", ...; a scenario report of
    version 1 had no schema and no version."""
    if not isinstance(doc, dict) or doc.get("version", 1) != 1:
        return doc

    def names(rec, extra=None):
        if not isinstance(rec, dict):
            return rec
        out = {}
        for k, v in rec.items():
            k = (extra or {}).get(k) or V1_NAMES.get(k, k)
            if k == "tcp_info" and isinstance(v, dict):
                v = {V1_TCP_INFO.get(n, n): x for n, x in v.items()}
            elif k in ("peer", "messages", "resources") and isinstance(v, dict):
                v = names(v)
                if k == "resources" and isinstance(v.get("exact"), list):
                    v["exact"] = [V1_NAMES.get(n, n) for n in v["exact"]]
            out[k] = v
        return out

    out = dict(doc)
    scenario = "schema" not in doc and "events" in doc
    out["schema"] = "labkit-scenario-report" if scenario else doc.get("schema", SCHEMA)
    out["version"] = 2
    start = dict(doc.get("start") or {})
    if "time_unix" in start:
        start["time_unix_s"] = start.pop("time_unix")
    out["start"] = start
    if "intervals" in doc:
        out["intervals"] = [names(r, V1_INTERVAL) for r in doc["intervals"]]
    if "end" in doc:
        out["end"] = names(doc["end"])
    if "connections" in doc:
        out["connections"] = [names(c) for c in doc["connections"]]
    if "log" in doc:
        out["log"] = [_log_v1(r) if isinstance(r, dict) else r for r in doc["log"]]
    return out


def _log_v1(r: dict) -> dict:
    """A version-1 log event: t, bytes, and jitter_ms/worst_ms (text in ms) become t_s,
    payload_bytes and jitter_s/worst_s (numbers in s)."""
    out = {}
    for k, v in r.items():
        if k == "t":
            out["t_s"] = v
        elif k in ("jitter_ms", "worst_ms"):
            try:
                out[k[:-3] + "_s"] = float(v) / 1e3
            except (TypeError, ValueError):
                out[k] = v
        else:
            out[V1_NAMES.get(k, k)] = v
    return out
