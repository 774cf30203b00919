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
from functools import cached_property
from pathlib import Path

from ..netlab import ledger as ledger_mod

RUN_SCHEMA, RUN_VERSION = "labkit-run", 1
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
        if self.doc.get("version") != RUN_VERSION:
            raise RunFolderError(f"{f}: run format version {self.doc.get('version')!r}; this "
                                 f"labkit reads version {RUN_VERSION}")

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
