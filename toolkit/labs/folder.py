"""A run folder, opened: everything after `labkit run` starts here (docs/runs.md).

    run = RunFolder("runs/04-loss-20261202-101500")
    run.doc                          # run.json
    run.analysis("b")                # toolkit.analyze of the capture at b (done afresh)
    run.table("udp_flows", "b")      # the tables the expectation language reads
    run.reconciliation()             # ground truth, reconciled

It reads only the folder: the captures are analyzed again whenever asked (a stored analysis
is never trusted), the ledger and the endpoint reports are read as they are. No privileges,
no external tools, no Linux-only imports, so it runs wherever the wheels install.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path

from ..netlab import ledger as ledger_mod

RUN_SCHEMA, RUN_VERSION = "labkit-run", 2
ANALYZER_TABLES = ("tcp", "udp", "udp_flows", "tcp_states", "packets")
RUN_TABLES = ("reconciliation", "drops", "endpoints", "flows", "sockets", "counters")


def analyzer_table(a, name: str):
    """One of the analyzer's tables of an Analysis, by the expectation language's name."""
    return {"tcp": lambda: a.tcp, "udp": lambda: a.udp, "udp_flows": lambda: a.udp_flows,
            "tcp_states": lambda: a.tcp_states,
            "packets": lambda: with_stream_columns(a.packets)}[name]()


def with_stream_columns(packets):
    """The packets table with each frame's place and time within its TCP conversation, for
    expectations that name frames ("the 2nd SYN of the conversation to port 5301, 1 s after
    the first"): other conversations interleave differently each run, so the capture's own
    frame numbers and times are not stable; a conversation's are.

    stream_frame   1 = the conversation's first frame in this capture (0 outside TCP)
    stream_time_s  seconds since that frame (Wireshark's tcp.time_relative)
    dupacks_seen   the duplicate ACKs the other end had sent in a row when this frame was
                   captured: Wireshark's duplicate_ack_num of the other end's latest frame
                   (0: it was a new ACK). A fast retransmission has 3 (RFC 5681 3.2's
                   threshold); a retransmission on a timer usually 0.
    """
    import numpy as np

    df = packets.copy()
    n = len(df)
    in_stream = (df["tcp_stream"] >= 0).to_numpy()
    tcp = df.loc[in_stream]
    by_stream = tcp.groupby("tcp_stream", sort=False)
    frame = np.zeros(n, np.int64)
    frame[in_stream] = by_stream.cumcount().to_numpy() + 1
    rel = np.full(n, np.nan)
    rel[in_stream] = (tcp["time_s"] - by_stream["time_s"].transform("min")).to_numpy()
    # which end sent each frame: the one that sent the conversation's first frame, or not
    first_src = by_stream["src"].transform("first").astype(str)
    first_port = by_stream["sport"].transform("first")
    from_first = ((tcp["src"].astype(str) == first_src) & (tcp["sport"] == first_port))
    seen = np.zeros(n, np.int64)
    if len(tcp):
        dup = tcp["duplicate_ack_num"].astype(float)
        latest = {}
        for side in (True, False):
            # each end's latest duplicate_ack_num, carried forward over the other's frames
            mine = dup.where(from_first == side)
            latest[side] = mine.groupby(tcp["tcp_stream"]).ffill().fillna(0)
        other = np.where(from_first.to_numpy(), latest[False].to_numpy(),
                         latest[True].to_numpy())
        seen[in_stream] = other.astype(np.int64)
    df["stream_frame"] = frame
    df["stream_time_s"] = rel
    df["dupacks_seen"] = seen
    return df


# ---- run.json version 1 -> 2 ----

def _v1_columns() -> dict[str, dict[str, tuple[str, float]]]:
    """Per table the expectation language reads: format 1's column -> (format 2's column,
    factor from the old unit to the new). docs/columns.md, "Changes in format 2"."""
    same = 1.0
    tcp = {"start": ("start_s", same), "duration": ("duration_s", same),
           "payload_a_to_b": ("payload_bytes_a_to_b", same),
           "payload_b_to_a": ("payload_bytes_b_to_a", same),
           "syn_time": ("syn_time_s", same), "synack_time": ("synack_time_s", same),
           "ack_time": ("ack_time_s", same), "handshake_rtt_ms": ("handshake_rtt_s", 1e-3),
           "zero_window_time": ("zero_window_time_s", same)}
    udp = {"start": ("start_s", same), "duration": ("duration_s", same)}
    for d in ("a_to_b", "b_to_a"):
        udp[f"bits_per_s_{d}"] = (f"bitrate_{d}_bps", same)
        udp[f"payload_bits_per_s_{d}"] = (f"goodput_{d}_bps", same)
        for k in ("mean", "std", "min", "p50", "p99", "max"):
            udp[f"iat_{k}_ms_{d}"] = (f"iat_{k}_{d}_s", 1e-3)
        for k in ("jitter", "jitter_max", "jitter_mean"):
            udp[f"{k}_ms_{d}"] = (f"{k}_{d}_s", 1e-3)
    flows = {"jitter_ms": ("jitter_s", 1e-3), "jitter_max_ms": ("jitter_max_s", 1e-3),
             **{f"owd_{k}_ms": (f"owd_{k}_s", 1e-3)
                for k in ("mean", "std", "min", "p50", "p99", "max")}}
    endpoints = {"seconds": ("duration_s", same), "bytes": ("payload_bytes", same),
                 "bits_per_second": ("goodput_bps", same),
                 "transactions_per_second": ("transactions_per_s", same),
                 "tcp_info_rtt": ("tcp_info_rtt_s", same),
                 "tcp_info_rttvar": ("tcp_info_rttvar_s", same),
                 "tcp_info_delivery_rate": ("tcp_info_delivery_rate_bps", same),
                 "received_bytes": ("received_payload_bytes", same),
                 "received_seconds": ("received_duration_s", same),
                 "received_messages_bytes": ("received_messages_payload_bytes", same),
                 "received_messages_seconds": ("received_messages_duration_s", same),
                 "child_peak_rss_bytes_max": ("child_peak_rss_max_bytes", same)}
    return {"tcp": tcp, "udp": udp, "udp_flows": flows, "tcp_states": {"time": ("time_s", same)},
            "packets": {"time": ("time_s", same), "length": ("frame_bytes", same),
                        "ack_rtt": ("ack_rtt_s", same)},
            "endpoints": endpoints, "flows": {"receiver_seconds": ("receiver_duration_s", same)}}


V1_COLUMNS = _v1_columns()
_FN_RE = re.compile(r"^\s*(\w+)\s*\(\s*(\w+)\s*\)\s*$")


def _scaled(v, factor: float):
    """A number (or the numbers of a list or an {op: value} condition) times factor."""
    if factor == 1.0 or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return round(v * factor, 12)
    if isinstance(v, list):
        return [_scaled(x, factor) for x in v]
    if isinstance(v, dict):
        return {k: _scaled(x, factor) for k, x in v.items()}
    return v


def upgrade_expectation(e: dict) -> dict:
    """An [[expect]] entry (or a recorded result) naming format 1's columns, in format 2's:
    the column in `value` and `where` renamed, the numbers compared with it converted
    (expected, an absolute tolerance, found; a sample row's columns too). An entry naming
    format 2's columns comes back unchanged."""
    cols = V1_COLUMNS.get(e.get("table"), {})
    if not cols or not isinstance(e, dict):
        return e
    e = dict(e)
    value = e.get("value")
    if isinstance(value, str):
        m = _FN_RE.match(value)
        col = m.group(2) if m else value.strip()
        if col in cols:
            new, factor = cols[col]
            e["value"] = f"{m.group(1)}({new})" if m else new
            for k in ("expected", "found"):
                if k in e:
                    e[k] = _scaled(e[k], factor)
            if isinstance(e.get("tolerance"), (int, float)):
                e["tolerance"] = _scaled(e["tolerance"], factor)
    if isinstance(e.get("where"), dict):
        e["where"] = {cols.get(c, (c, 1.0))[0]: _scaled(v, cols.get(c, (c, 1.0))[1])
                      for c, v in e["where"].items()}
    if isinstance(e.get("sample"), list):
        e["sample"] = [{cols.get(c, (c, 1.0))[0]: _scaled(v, cols.get(c, (c, 1.0))[1])
                        for c, v in row.items()} if isinstance(row, dict) else row
                       for row in e["sample"]]
    return e


def _upgrade_question(q):
    """A lab [[question]] recorded in a version-1 run: its answer names format 2's column;
    where the unit changed, an absolute tolerance is converted and the text says in which
    unit the answer is now checked (its id, which answer sheets use, is kept)."""
    if not isinstance(q, dict) or not isinstance(q.get("answer"), dict):
        return q
    answer = q["answer"]
    value = answer.get("value")
    m = _FN_RE.match(value) if isinstance(value, str) else None
    col = m.group(2) if m else value
    new, factor = V1_COLUMNS.get(answer.get("table"), {}).get(col, (col, 1.0))
    q = {**q, "answer": upgrade_expectation(answer)}
    if isinstance(q.get("hint"), str) and new != col:        # the hint names the column too
        q["hint"] = re.sub(rf"\b{re.escape(col)}\b", new, q["hint"])
    if factor != 1.0:
        if isinstance(q.get("tolerance"), (int, float)):
            q["tolerance"] = _scaled(q["tolerance"], factor)
        q["text"] = (f"{q.get('text', '')} [checked since labkit's format 2 against {new}: "
                     f"answer in seconds]")
    return q


def upgrade_run(doc: dict) -> dict:
    """run.json of version 1 as version 2 (a new dict; version 2 is returned as it is).
    Version 2 names every number with its unit (docs/columns.md): the expectations, in the
    spec and as recorded, name format 2's columns (values converted where the unit
    changed: handshake_rtt_ms 20 is handshake_rtt_s 0.02); the side-by-side rows'
    receiver_seconds is receiver_duration_s; a capture's started_at/stopped_at are
    started_unix_s/stopped_unix_s; the engine's late.max_ns is late.max_s."""
    if doc.get("version") != 1:
        return doc
    doc = json.loads(json.dumps(doc))
    doc["version"] = RUN_VERSION
    spec = doc.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("expect"), list):
        spec["expect"] = [upgrade_expectation(e) for e in spec["expect"]]
    if isinstance(spec, dict) and isinstance(spec.get("question"), list):
        spec["question"] = [_upgrade_question(q) for q in spec["question"]]
    if isinstance(doc.get("expectations"), list):
        doc["expectations"] = [upgrade_expectation(e) for e in doc["expectations"]]
    side = (doc.get("summary") or {}).get("side_by_side")
    if isinstance(side, list):
        for row in side:
            if isinstance(row, dict) and "receiver_seconds" in row:
                row["receiver_duration_s"] = row.pop("receiver_seconds")
    for cap in (doc.get("captures") or {}).values():
        if isinstance(cap, dict):
            for old, new in (("started_at", "started_unix_s"), ("stopped_at", "stopped_unix_s")):
                if old in cap:
                    cap[new] = cap.pop(old)

    def late(x):
        if isinstance(x, dict):
            if isinstance(x.get("late"), dict) and "max_ns" in x["late"]:
                ns = x["late"].pop("max_ns")
                x["late"]["max_s"] = ns / 1e9 if isinstance(ns, (int, float)) else ns
            for v in x.values():
                late(v)
    late(doc.get("engine"))
    return doc


class RunFolderError(ValueError):
    """Not a readable run folder; the message names the file."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._analyses: dict = {}
        self._reconciliation = None
        f = self.path / "run.json"
        try:
            self.doc = json.loads(f.read_text())
        except OSError as e:
            raise RunFolderError(f"{f}: cannot read: {e.strerror or e}") from None
        except ValueError as e:
            raise RunFolderError(f"{f}: not JSON: {e}") from None
        if not isinstance(self.doc, dict) or self.doc.get("schema") != RUN_SCHEMA:
            raise RunFolderError(f"{f}: not a labkit run (no \"schema\": \"{RUN_SCHEMA}\")")
        if self.doc.get("version") not in (1, RUN_VERSION):
            raise RunFolderError(f"{f}: run format version {self.doc.get('version')!r}; this "
                                 f"labkit reads versions 1 and {RUN_VERSION}")
        # the version on disk: a version-1 folder's expect.toml names format 1's columns too
        self.version_read = self.doc.get("version")
        self.doc = upgrade_run(self.doc)

    # -- what was captured --
    @property
    def points(self) -> list[str]:
        return [p for p, c in self.doc.get("captures", {}).items() if c.get("files")]

    def capture_file(self, point: str) -> Path:
        caps = self.doc.get("captures", {})
        if point not in caps or not caps[point].get("files"):
            raise LookupError(f"no capture at vantage point {point!r} in this run "
                              f"(captured: {', '.join(self.points) or 'none'})")
        return self.path / caps[point]["files"][0]

    def analysis(self, point: str):
        if point not in self._analyses:
            from ..api import analyze
            self._analyses[point] = analyze(self.capture_file(point))
        return self._analyses[point]

    def analyses(self) -> dict:
        return {p: self.analysis(p) for p in self.points}

    @property
    def ledger_path(self) -> Path | None:
        p = self.path / ((self.doc.get("files") or {}).get("ledger") or "link.jsonl")
        return p if p.exists() else None

    def ledger(self):
        return ledger_mod.read(self.ledger_path) if self.ledger_path else None

    def endpoint_report(self, flow: str, side: str) -> dict | None:
        for f in self.doc.get("flows", []):
            if f["name"] == flow:
                rel = f.get(side, {}).get("report")
                if rel and (self.path / rel).exists():
                    from ..endpoints.report import upgrade
                    return upgrade(json.loads((self.path / rel).read_text()))
        return None

    # -- tables --
    def reconciliation(self):
        if self._reconciliation is None:
            from .reconcile import reconcile
            self._reconciliation = reconcile(self.path, self.doc, self.analyses())
        return self._reconciliation

    @cached_property
    def timing_reliable(self) -> bool:
        return bool(self.doc.get("timing", {}).get("reliable", True))

    def table(self, name: str, at: str | None = None):
        """A DataFrame the expectation language reads (expect.evaluate's get_table)."""
        if name in ANALYZER_TABLES:
            point = at or (self.points[0] if self.points else None)
            if point is None:
                raise LookupError("this run has no capture to analyze")
            return analyzer_table(self.analysis(point), name)
        if name == "reconciliation":
            return self.reconciliation().summary
        if name == "drops":
            return self.reconciliation().drops
        if name == "endpoints":
            from .results import endpoints_table
            return endpoints_table(self)
        if name == "flows":
            from .results import flows_table
            return flows_table(self)
        if name in ("sockets", "counters"):
            from . import observe
            return (observe.sockets_table if name == "sockets" else observe.counters_table)(self)
        raise LookupError(f"no table {name!r}; tables: "
                          f"{', '.join(ANALYZER_TABLES + RUN_TABLES)}")
