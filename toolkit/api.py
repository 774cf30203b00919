"""`toolkit.analyze(path)`: a capture file in, DataFrames and files out.

The reader decodes the capture into columns once; the TCP and UDP analyses run over the
columns (at once, on two threads, when both have much to do: their compiled loops release
the GIL) and give their tables as plain columns (analysis.table). JSON and the text report
are written from those; the DataFrames, and the per-packet table (the one large object),
are built when first asked for, so that a command that needs no DataFrame never imports
pandas.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .analysis.table import Table
from .analysis.tcp import TcpSegments, analyze_segments
from .analysis.tcp_conversations import conversations as tcp_conversations
from .pcap import Capture, CaptureError, read_capture

FORMAT_VERSION = 2
# capture columns neither the per-packet table nor the per-segment details pass reads
EXPORT_UNUSED_COLUMNS = ("caplen", "iface", "ip_proto", "ip_id", "frag_off", "frag_len",
                         "frag_more", "l4_trunc", "tcp_hlen", "opt_mss", "opt_sackperm",
                         "has_ts", "tsval", "tsecr")
# UDP datagrams above which the UDP analysis gets its own thread
UDP_THREAD_MIN = 1 << 16


@dataclass
class Analysis:
    """What the analyzer found in one capture file."""

    path: str
    capture: Capture
    segments: TcpSegments
    tcp_table: Table                  # one row per TCP conversation (tcp.stream)
    tcp_state_table: Table            # endpoint TCP state transitions
    udp_result: object                # analysis.udp.UdpResult
    extra: dict = field(default_factory=dict)

    @property
    def error(self) -> CaptureError | None:
        """Damage found in the file; everything before it was analyzed."""
        return self.capture.error

    def __len__(self) -> int:
        return len(self.capture.cols["ts_ns"])

    @cached_property
    def tcp(self):
        """One row per TCP conversation (tcp.stream), as a pandas DataFrame."""
        return self.tcp_table.to_frame()

    @cached_property
    def tcp_states(self):
        """The endpoints' TCP state transitions, as a pandas DataFrame."""
        return self.tcp_state_table.to_frame()

    @property
    def udp(self):
        """One row per UDP conversation (udp.stream), as a pandas DataFrame."""
        return self.udp_result.conversations

    @property
    def udp_flows(self):
        """One row per lab-header flow (loss, reordering, delay), as a pandas DataFrame."""
        return self.udp_result.flows

    @property
    def udp_stream(self) -> np.ndarray:
        """Per frame: udp.stream, -1 when the frame has none."""
        return self.udp_result.stream

    @cached_property
    def packets(self):
        """One row per frame: addresses, ports, streams, flags and every TCP verdict."""
        return packet_table(self)

    def release_columns_for_export(self) -> None:
        """Free what a one-shot per-packet export does not read, so that its peak memory
        stays that of the analysis: the capture columns only the conversation tables
        read (made already) go before the per-segment details are computed; after them,
        an address column holding one value (the IPv4-mapped prefix of an IPv4 capture)
        becomes that value broadcast. Later use of this Analysis is limited to its tables
        and the per-packet table."""
        cols = self.capture.cols
        for name in EXPORT_UNUSED_COLUMNS:
            cols.pop(name, None)
        _ = self.segments.rel_seq                   # the details pass, while all is there
        for name in ("src_hi", "dst_hi"):
            v = cols.get(name)
            if v is not None and len(v) and v.strides[0] and (v == v[0]).all():
                cols[name] = np.broadcast_to(v[:1].copy(), v.shape)

    def write_packets(self, out, fmt: str, stream: int | None = None,
                      extra: dict | None = None, header: bool = True) -> int:
        """Stream the per-packet table to `out` (a binary file for "csv" and "jsonl", a
        path for "parquet") a chunk of frames at a time; returns the rows written."""
        from .analysis import packet_rows, packet_text
        if fmt == "parquet":
            return packet_rows.write_parquet(self, out, stream, extra)
        return packet_text.write(self, out, fmt, stream, extra, header)

    def summary(self) -> dict:
        cols = self.capture.cols
        n = len(self)
        ts = cols["ts_ns"]
        return {
            "file": self.path,
            "format": self.capture.file_format,
            "compressed": self.capture.compressed,
            "frames": n,
            "first_time_unix_s": float(ts[0]) / 1e9 if n else None,
            # in float: stamps far apart (a damaged file's) overflow an int64 difference
            "duration_s": (float(ts.max()) - float(ts.min())) / 1e9 if n else 0.0,
            "tcp_segments": len(self.segments),
            "tcp_conversations": len(self.tcp_table),
            "udp_conversations": len(self.udp_result.conversation_table),
            "error": str(self.error) if self.error else None,
        }

    def to_json(self, packets: bool = False, stream: int | None = None) -> dict:
        """A JSON-ready dict (format_version, summary, tables)."""
        tcp = self.tcp_table
        udp = self.udp_result.conversation_table
        if stream is not None:
            tcp = tcp.take(tcp["stream"] == stream)
            udp = udp.take(np.zeros(len(udp), bool))
        doc = {"format_version": FORMAT_VERSION, "summary": self.summary(),
               "tcp_conversations": tcp.records(), "udp_conversations": udp.records()}
        if stream is None:
            doc["udp_flows"] = self.udp_result.flow_table.records()
        if packets:
            pk = self.packets
            if stream is not None:
                pk = pk[pk["tcp_stream"] == stream]
            doc["packets"] = _records(pk)
        return doc

    def write(self, out: str | os.PathLike, fmt: str, packets: bool = False,
              stream: int | None = None) -> list[Path]:
        """Write the tables: json -> one file, csv/parquet -> a directory of tables; with
        `stream`, TCP stream `stream`'s rows only (no UDP rows)."""
        out = Path(out)
        if fmt == "json":
            out.write_text(json.dumps(self.to_json(packets=packets, stream=stream), indent=1,
                                      default=jsonable))
            return [out]
        out.mkdir(parents=True, exist_ok=True)
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown format {fmt!r}")
        tables = {"tcp_conversations": self.tcp_table,
                  "udp_conversations": self.udp_result.conversation_table,
                  "tcp_states": self.tcp_state_table, "udp_flows": self.udp_result.flow_table}
        if stream is not None:
            tables = {name: t.take(t["stream"] == stream if "stream" in t and
                                   name.startswith("tcp") else np.zeros(len(t), bool))
                      for name, t in tables.items()}
        written = []
        for name, table in tables.items():
            p = out / f"{name}.{fmt}"
            if fmt == "csv":
                table.to_frame().to_csv(p, index=False)
            else:
                import pyarrow.parquet as pq     # from the columns: no pandas needed
                pq.write_table(table.to_arrow(), p)
            written.append(p)
        if packets:
            # a chunk at a time, never held whole
            p = out / f"packets.{fmt}"
            if fmt == "csv":
                with open(p, "wb") as f:
                    self.write_packets(f, "csv", stream=stream)
            else:
                self.write_packets(p, fmt, stream=stream)
            written.append(p)
        return written


def jsonable(x):
    """json.dumps(default=...) for numpy scalars: NaN becomes null."""
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return str(x)


def _records(df) -> list[dict]:
    # NaN is not JSON: missing values become null
    return json.loads(df.to_json(orient="records", double_precision=15))


def analyze(path: str | os.PathLike, progress=None, threads: int | None = None) -> Analysis:
    """Read and analyze one capture file (pcap, pcapng, optionally gzip-compressed).

    A damaged file is analyzed up to the damage; `Analysis.error` says where it is.
    Raises CaptureError only when nothing can be read at all. threads: how many threads
    may work at once (default: the CPUs available, at most 4); results do not depend on it.
    """
    from .analysis.udp import analyze_udp, udp_datagram_rows
    from .pcap.scanner import default_threads, executor

    threads = threads or default_threads()
    cap = read_capture(path, progress=progress, threads=threads)
    cols = cap.cols
    udp_job = None
    if threads > 1 and len(udp_datagram_rows(cols)) >= UDP_THREAD_MIN:
        udp_job = executor().submit(analyze_udp, cols)
    try:
        seg = analyze_segments(cols)
        t0 = int(cols["ts_ns"][0]) if len(cols["ts_ns"]) else 0
        tcp, states = tcp_conversations(cols, seg, t0)
    finally:
        udp = udp_job.result() if udp_job is not None else None
    if udp is None:
        udp = analyze_udp(cols)
    return Analysis(path=str(path), capture=cap, segments=seg, tcp_table=tcp,
                    tcp_state_table=states, udp_result=udp)


def packet_table(a: Analysis):
    """The per-packet table as one DataFrame (analysis.packet_rows, in one chunk)."""
    from .analysis.packet_rows import to_frame
    return to_frame(a)


__all__ = ["Analysis", "analyze", "CaptureError", "FORMAT_VERSION"]
