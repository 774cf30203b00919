"""`toolkit.analyze(path)`: a capture file in, DataFrames and files out.

The reader decodes the capture into columns once; the TCP and UDP analyses run over the
columns (at once, on two threads, when both have much to do: their compiled loops release
the GIL) and give their tables as plain columns (analysis.table). JSON and the text report
are written from those; the DataFrames, and the per-packet table (the one large object),
are built when first asked for, so that a command that needs no DataFrame never imports
pandas.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

if "numpy" not in sys.modules:
    # The analyzer does no linear algebra, but numpy's OpenBLAS starts a spinning thread
    # per CPU when numpy is first imported: on a small machine they take CPU from the
    # decoding threads. Only when numpy is not loaded yet and nobody has chosen.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the setting above)

from .analysis import verdicts as V
from .analysis.addresses import address_text
from .analysis.table import Table
from .analysis.tcp import TcpSegments, analyze_segments
from .analysis.tcp_conversations import conversations as tcp_conversations
from .pcap import Capture, CaptureError, read_capture

FORMAT_VERSION = 1
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

    def summary(self) -> dict:
        cols = self.capture.cols
        n = len(self)
        ts = cols["ts_ns"]
        return {
            "file": self.path,
            "format": self.capture.file_format,
            "compressed": self.capture.compressed,
            "frames": n,
            "first_time": float(ts[0]) / 1e9 if n else None,
            "duration": float(ts.max() - ts.min()) / 1e9 if n else 0.0,
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

    def write(self, out: str | os.PathLike, fmt: str, packets: bool = False) -> list[Path]:
        """Write the tables: json -> one file, csv/parquet -> a directory of tables."""
        out = Path(out)
        if fmt == "json":
            out.write_text(json.dumps(self.to_json(packets=packets), indent=1, default=jsonable))
            return [out]
        out.mkdir(parents=True, exist_ok=True)
        tables = {"tcp_conversations": self.tcp, "udp_conversations": self.udp,
                  "tcp_states": self.tcp_states, "udp_flows": self.udp_flows}
        if packets:
            tables["packets"] = self.packets
        written = []
        for name, df in tables.items():
            p = out / f"{name}.{fmt}"
            if fmt == "csv":
                df.to_csv(p, index=False)
            elif fmt == "parquet":
                df.to_parquet(p, index=False)
            else:
                raise ValueError(f"unknown format {fmt!r}")
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
    _settle()
    return Analysis(path=str(path), capture=cap, segments=seg, tcp_table=tcp,
                    tcp_state_table=states, udp_result=udp)


def _settle() -> None:
    """Move the objects alive now out of the cyclic garbage collector's way.

    Loading numba and its compiled kernels leaves a few hundred thousand long-lived objects
    (its type system, registries, the kernels). Every full collection walks them all, and
    so does the interpreter's exit: 0.3-0.4 s of a `labkit analyze` run. gc.freeze() puts
    them in a generation the collector skips; objects are still freed by reference
    counting, only reference cycles among the objects frozen here would never be
    collected. Done once, on the first analysis: what later calls create is collected as
    usual, so a notebook analyzing many captures does not keep their tables."""
    global _settled
    if not _settled:
        _settled = True
        gc.freeze()


_settled = False


def _address_column(hi: np.ndarray, lo: np.ndarray, valid: np.ndarray):
    """Address text per row via the (few) distinct addresses: one conversion each."""
    import pandas as pd

    pairs = np.stack([hi, lo], axis=1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    names = [address_text(h, v) for h, v in uniq.tolist()]
    codes = np.where(valid, inv.reshape(-1), -1)
    return pd.Categorical.from_codes(codes, categories=names)


def packet_table(a: Analysis):
    import pandas as pd

    cols = a.capture.cols
    n = len(a)
    seg = a.segments
    ip = cols["l3"] != 0
    t0 = int(cols["ts_ns"][0]) if n else 0
    proto = np.full(n, "", object)
    proto[cols["l4"] == 6] = "TCP"
    proto[cols["l4"] == 17] = "UDP"
    tcp_stream = np.full(n, -1, np.int64)
    tcp_stream[seg.rows] = seg.stream
    df = pd.DataFrame({
        "frame": np.arange(1, n + 1),
        "time": (cols["ts_ns"] - t0) / 1e9,
        "length": cols["wirelen"],
        "src": _address_column(cols["src_hi"], cols["src_lo"], ip),
        "dst": _address_column(cols["dst_hi"], cols["dst_lo"], ip),
        "proto": pd.Categorical(proto),
        "sport": np.where(cols["l4"] != 0, cols["sport"], 0),
        "dport": np.where(cols["l4"] != 0, cols["dport"], 0),
        "tcp_stream": tcp_stream,
        "udp_stream": a.udp_stream,
    })
    is_tcp = np.zeros(n, bool)
    is_tcp[seg.rows] = True

    def scatter(values, fill, dtype):
        out = np.full(n, fill, dtype)
        out[seg.rows] = values
        return out

    df["tcp_flags"] = np.where(is_tcp, cols["tcp_flags"], 0)
    df["seq"] = scatter(seg.rel_seq, 0, np.int64)
    df["ack"] = scatter(seg.rel_ack, 0, np.int64)
    df["seq_raw"] = np.where(is_tcp, cols["seq"], 0)
    df["ack_raw"] = np.where(is_tcp, cols["ack"], 0)
    df["tcp_len"] = np.where(is_tcp, cols["paylen"], 0)
    df["window"] = scatter(seg.window, 0, np.int64)
    for name in V.VERDICTS:
        df[name] = scatter(V.verdict_column(seg.analysis, name), 0, np.uint8)
    df["duplicate_ack_num"] = scatter(seg.dupack_num, 0, np.int64)
    df["duplicate_ack_frame"] = scatter(np.where(seg.dupack_num > 0, seg.dupack_frame, 0), 0,
                                        np.int64)
    df["acks_frame"] = scatter(seg.acked_frame, 0, np.int64)
    rtt = np.where(seg.has_ack_rtt(), seg.ack_rtt_ns / 1e9, np.nan)
    df["ack_rtt"] = scatter(rtt, np.nan, np.float64)
    df["bytes_in_flight"] = scatter(seg.bytes_in_flight, 0, np.int64)
    return df


__all__ = ["Analysis", "analyze", "CaptureError", "FORMAT_VERSION"]
