"""The endpoints' report: human lines while running, a versioned JSON document at the end.

In the spirit of iperf3 -J. The JSON document (schema "labkit-endpoint-report", version 1):

    {"schema": "labkit-endpoint-report", "version": 1,
     "start":     {"role": "sender"|"receiver"|"server", "proto": "tcp"|"udp", "mode": ...,
                   "local": "host:port", "remote": "host:port", "time_unix": float,
                   "flow": int, "options": {every socket choice made},
                   "receive_dir": the folder a TCP server receives files into, or null},
     "intervals": [{"start": s, "end": s, "bytes": n, "bits_per_second": x,
                    "packets": n, "lost": n, "duplicates": n, "reordered": n,
                    "jitter_s": x, "tcp_info": {...} | absent}, ...],
     "end":       {"seconds": s, "bytes": n, "bits_per_second": x, ... totals ...,
                   "tcp_info": {...}, "peer": {the other side's report, when it sent one},
                   "file_result": {a file receiver's verdict}, "peer_error": "why the
                   server ended the connection, when it did"},
     "connections": [per-connection reports of a server], "log": [events]}

Times in intervals are seconds since "start". Counts in an interval are since the previous
interval; "end" holds totals. Fields that do not apply to a mode are absent, not zero.
The file is written atomically (temporary file, then rename): a reader never sees half.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .quantities import show_bytes, show_rate

SCHEMA, VERSION = "labkit-endpoint-report", 1


class Report:
    def __init__(self, role: str, proto: str, mode: str, *, stream=sys.stdout,
                 quiet: bool = False, **start):
        self.t0 = time.monotonic()
        self.doc: dict = {"schema": SCHEMA, "version": VERSION,
                          "start": {"role": role, "proto": proto, "mode": mode,
                                    "time_unix": time.time(), **start},
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
        rec = {"t": round(self.elapsed(), 6), "event": what, **details}
        self.doc["log"].append(rec)
        extra = " ".join(f"{k}={v}" for k, v in details.items())
        self.say(f"[{rec['t']:8.3f}] {what} {extra}".rstrip())

    def interval(self, start: float, end: float, rec: dict) -> dict:
        secs = max(end - start, 1e-9)
        rec = {"start": round(start, 6), "end": round(end, 6), **rec}
        if "bytes" in rec:
            rec["bits_per_second"] = rec["bytes"] * 8 / secs
        self.doc["intervals"].append(rec)
        self.say(human(rec))
        return rec

    def finish(self, totals: dict) -> dict:
        end = dict(totals)
        secs = end.get("seconds")
        if secs and "bytes" in end and "bits_per_second" not in end:
            end["bits_per_second"] = end["bytes"] * 8 / secs
        self.doc["end"] = end
        self.say("- " * 30)
        self.say(human({"start": 0.0, "end": secs or self.elapsed(), **end}, total=True))
        return self.doc

    def write(self, path: str | os.PathLike | None) -> None:
        if not path:
            return
        write_json(path, self.doc)


def write_json(path, doc: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def human(rec: dict, total: bool = False) -> str:
    """One iperf3-like line: interval, transfer, rate, then what the mode measures."""
    parts = [f"{rec['start']:6.2f}-{rec['end']:<6.2f} sec"]
    if "bytes" in rec:
        parts.append(f"{show_bytes(rec['bytes']):>12}")
    if rec.get("bits_per_second") is not None:
        parts.append(f"{show_rate(rec['bits_per_second']):>14}")
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
    if info and "rtt" in info:
        parts.append(f"cwnd {info.get('snd_cwnd')} rtt {info['rtt'] * 1e3:.2f} ms "
                     f"retr {info.get('total_retrans')}")
    label = "total" if total else ""
    return f"[{label:>5}] " + "  ".join(parts)
