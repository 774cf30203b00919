"""The per-packet table (`--packets`, `Analysis.packets`), made a chunk of frames at a time.

One row per frame: addresses, ports, streams, flags, relative and raw sequence numbers and
every TCP verdict, named as Wireshark's tcp.analysis fields (verdicts.py). Columns are
computed for a range of frames from the analysis' own arrays, so a writer holds one chunk
of rows at once, never the whole table: exporting a capture ten times larger needs no more
memory than analyzing it. The DataFrame is the same code run on every frame at once.

Parquet goes through pyarrow's writer (columns, in C++), a row group a chunk; CSV and JSON
Lines through packet_text.py's compiled formatter.
"""

from __future__ import annotations

import sys

import numpy as np

from . import verdicts as V
from .addresses import address_text
from .table import arrow_array
from .tcp import ack_rtt_shown

CHUNK_ROWS = 1 << 15            # a Parquet row group; ~10 MB of columns
COLUMNS = ("frame", "time_s", "frame_bytes", "src", "dst", "proto", "sport", "dport", "tcp_stream",
           "udp_stream", "tcp_flags", "seq", "ack", "seq_raw", "ack_raw", "tcp_len", "window",
           *V.VERDICTS, "duplicate_ack_num", "duplicate_ack_frame", "acks_frame", "ack_rtt_s",
           "bytes_in_flight")
PROTO_NAMES = ("", "TCP", "UDP")
_HASH = np.uint64(0x9E3779B97F4A7C15)


def row_chunks(a, stream: int | None = None, size: int = CHUNK_ROWS):
    """Frame rows (sorted) a chunk at a time; only TCP stream `stream`'s when given."""
    if stream is None:
        n = len(a)
        for start in range(0, n, size):
            yield np.arange(start, min(start + size, n))
    else:
        seg = a.segments
        rows = seg.rows[seg.stream == stream]
        for start in range(0, len(rows), size):
            yield rows[start:start + size]


def address_codes(cols: dict, rows: np.ndarray, side: str) -> tuple[np.ndarray, list]:
    """Per row an index into the returned list of (hi, lo) address pairs, -1 where the
    frame has no IP address. A chunk has few distinct addresses: each pair is numbered
    through a hash of it, checked against the pairs themselves."""
    hi, lo = cols[f"{side}_hi"][rows], cols[f"{side}_lo"][rows]
    if not len(rows):
        return np.zeros(0, np.int64), []
    key = lo ^ (hi * _HASH)
    if "pandas" in sys.modules:
        # a hash table: about ten times quicker than sorting a million keys (the DataFrame
        # path has pandas loaded anyway; the writers do not load it for this)
        import pandas as pd
        inv, uniq = pd.factorize(key)
        first = np.zeros(len(uniq), np.int64)
        first[inv[::-1]] = np.arange(len(inv) - 1, -1, -1)
    else:
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if not (np.array_equal(hi[first][inv], hi) and np.array_equal(lo[first][inv], lo)):
        _, first, inv = np.unique(np.stack([hi, lo], axis=1), axis=0, return_index=True,
                                  return_inverse=True)     # a hash collision: the exact way
        inv = inv.reshape(-1)
    pairs = list(zip(hi[first].tolist(), lo[first].tolist()))
    return np.where(cols["l3"][rows] != 0, inv, -1), pairs


def columns(a, rows: np.ndarray) -> dict:
    """Every column for these frame rows (sorted), as numpy arrays; src and dst as codes
    into out["src_pairs"] / out["dst_pairs"], proto as codes into PROTO_NAMES."""
    cols, seg = a.capture.cols, a.segments
    k = len(rows)
    l4 = cols["l4"][rows]
    pos = np.searchsorted(seg.rows, rows)       # where the frames are among the segments
    pos_c = np.minimum(pos, max(len(seg.rows) - 1, 0))
    is_tcp = ((pos < len(seg.rows)) & (seg.rows[pos_c] == rows)) if len(seg.rows) \
        else np.zeros(k, bool)
    at = pos_c[is_tcp]

    def per_segment(values, fill, dtype):
        out = np.full(k, fill, dtype)
        out[is_tcp] = values[at]
        return out

    t0 = int(cols["ts_ns"][0]) if len(cols["ts_ns"]) else 0
    src, src_pairs = address_codes(cols, rows, "src")
    dst, dst_pairs = address_codes(cols, rows, "dst")
    out = {
        "frame": rows + 1,
        "time_s": (cols["ts_ns"][rows].astype(np.int64) - t0) / 1e9,
        "frame_bytes": cols["wirelen"][rows],
        "src": src, "src_pairs": src_pairs,
        "dst": dst, "dst_pairs": dst_pairs,
        "proto": np.select([l4 == 6, l4 == 17], [1, 2], 0).astype(np.int8),
        "sport": np.where(l4 != 0, cols["sport"][rows], 0),
        "dport": np.where(l4 != 0, cols["dport"][rows], 0),
        "tcp_stream": per_segment(seg.stream, -1, np.int64),
        "udp_stream": a.udp_stream[rows],
        "tcp_flags": np.where(is_tcp, cols["tcp_flags"][rows], 0),
        "seq": per_segment(seg.rel_seq, 0, np.int64),
        "ack": per_segment(seg.rel_ack, 0, np.int64),
        "seq_raw": np.where(is_tcp, cols["seq"][rows], 0),
        "ack_raw": np.where(is_tcp, cols["ack"][rows], 0),
        "tcp_len": np.where(is_tcp, cols["paylen"][rows], 0),
        "window": per_segment(seg.window, 0, np.int64),
    }
    bits = per_segment(seg.analysis, 0, np.uint32)
    for name in V.VERDICTS:
        out[name] = V.verdict_column(bits, name)
    dupnum = per_segment(seg.dupack_num, 0, np.int64)
    out["duplicate_ack_num"] = dupnum
    out["duplicate_ack_frame"] = np.where(dupnum > 0,
                                          per_segment(seg.dupack_frame, 0, np.int64), 0)
    out["acks_frame"] = per_segment(seg.acked_frame, 0, np.int64)
    rtt_ns = per_segment(seg.ack_rtt_ns, 0, np.int64)
    # judged on this chunk's rows only (a chunk at a time: never over every segment)
    out["ack_rtt_s"] = np.where(ack_rtt_shown(out["acks_frame"], rtt_ns), rtt_ns / 1e9, np.nan)
    out["bytes_in_flight"] = per_segment(seg.bytes_in_flight, 0, np.int64)
    return out


def texts(pairs: list) -> list[str]:
    return [address_text(h, v) for h, v in pairs]


def to_frame(a, stream: int | None = None):
    """The whole table as one DataFrame (src, dst and proto categorical)."""
    import pandas as pd

    rows = np.arange(len(a)) if stream is None else \
        a.segments.rows[a.segments.stream == stream]
    c = columns(a, rows)
    data = {}
    for name in COLUMNS:
        if name in ("src", "dst"):
            data[name] = pd.Categorical.from_codes(c[name], texts(c[f"{name}_pairs"]))
        elif name == "proto":
            data[name] = pd.Categorical.from_codes(c[name], PROTO_NAMES)
        else:
            data[name] = c[name]
    return pd.DataFrame(data, copy=False)


def _arrow_batch(c: dict, extra: dict | None = None):
    """One chunk as a pyarrow RecordBatch: src, dst and proto dictionary-encoded (read back
    as categorical, as the DataFrame has them), ack_rtt_s's NaN as null (as tshark leaves the
    field empty), constant columns (the file's name) last."""
    import pyarrow as pa

    arrays = []
    for name in COLUMNS:
        v = c[name]
        if name in ("src", "dst", "proto"):
            names = list(PROTO_NAMES) if name == "proto" else texts(c[f"{name}_pairs"])
            arrays.append(pa.DictionaryArray.from_arrays(
                arrow_array(v.astype(np.int32), valid=v >= 0), arrow_array(names)))
        else:
            arrays.append(arrow_array(v))
    for value in (extra or {}).values():
        codes = np.zeros(len(c["frame"]), np.int32)
        arrays.append(pa.DictionaryArray.from_arrays(arrow_array(codes),
                                                     arrow_array([str(value)])))
    return pa.RecordBatch.from_arrays(arrays, names=[*COLUMNS, *(extra or {})])


def write_parquet(a, path, stream: int | None = None, extra: dict | None = None) -> int:
    """The table to one Parquet file, a row group a chunk; returns the rows written.
    pyarrow encodes and compresses a row group without the GIL: one thread writes a chunk
    while this one computes the next chunk's columns (two chunks in memory at most)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    writer = None
    pending = None
    with ThreadPoolExecutor(1, thread_name_prefix="labkit-parquet") as pool:
        try:
            for rows in row_chunks(a, stream):
                batch = _arrow_batch(columns(a, rows), extra)
                if writer is None:
                    # dictionaries for the text columns only: numbers are mostly distinct,
                    # and a dictionary per number column costs memory and time for nothing
                    writer = pq.ParquetWriter(path, batch.schema, use_dictionary=[
                        "src", "dst", "proto", *(extra or {})])
                if pending is not None:
                    pending.result()             # the writer's errors surface here
                pending = pool.submit(writer.write_batch, batch)
                n += batch.num_rows
            if pending is not None:
                pending.result()
            if writer is None:                   # no frame: the columns alone
                empty = _arrow_batch(columns(a, np.zeros(0, np.int64)), extra)
                pq.write_table(pa.Table.from_batches([empty]), path)
        finally:
            if pending is not None:
                pending.exception()              # wait: never close under a running write
            if writer is not None:
                writer.close()
    return n
