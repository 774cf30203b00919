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

import numpy as np

from ..pcap.jit import kernel
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


@kernel
def _number_addresses(hi, lo, l3, codes, first):
    """codes[r]: the number of row r's (hi, lo) address, numbered in order of first
    appearance, -1 where the frame has no IP address (l3 0); first[k]: the row where number
    k first appeared. Returns how many numbers. An open-addressing table of at least twice
    the rows (Fibonacci hashing of the pair, Knuth 6.4), each slot the number there."""
    n = len(hi)
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    table = np.full(1 << bits, -1, np.int64)
    shift = np.uint64(64 - bits)
    mask = (1 << bits) - 1
    m = 0
    for r in range(n):
        if l3[r] == 0:
            codes[r] = -1
            continue
        h, v = hi[r], lo[r]
        slot = np.int64(((v ^ (h * _HASH)) * _HASH) >> shift)
        while True:
            k = table[slot]
            if k < 0:
                table[slot] = m
                first[m] = r
                codes[r] = m
                m += 1
                break
            j = first[k]
            if hi[j] == h and lo[j] == v:
                codes[r] = k
                break
            slot = (slot + 1) & mask
    return m


def address_codes(cols: dict, rows: np.ndarray, side: str) -> tuple[np.ndarray, list]:
    """Per row an index into the returned list of (hi, lo) address pairs, -1 where the
    frame has no IP address; the pairs in order of first appearance. A chunk has few
    distinct addresses: a hash table numbers them in one pass (np.unique's sort took a
    third of the Parquet export's column work). The kernel gets this chunk's values, not
    the columns: an export broadcasts a column of one value (stride 0), an argument type
    the ahead-of-time build never sees (no saved capture is IPv4 alone)."""
    hi, lo = cols[f"{side}_hi"][rows], cols[f"{side}_lo"][rows]
    codes = np.empty(len(rows), np.int64)
    first = np.empty(len(rows), np.int64)
    m = _number_addresses(hi, lo, cols["l3"][rows], codes, first)
    at = first[:m]
    return codes, list(zip(hi[at].tolist(), lo[at].tolist()))


# the per-segment fields columns() takes as int64, in the order of _segment_fields' `wide`
WIDE = ("tcp_stream", "seq", "ack", "window", "duplicate_ack_num", "duplicate_ack_frame",
        "acks_frame", "bytes_in_flight", "ack_rtt_ns")


@kernel
def _segment_fields(rows, seg_rows, stream, rel_seq, rel_ack, window, dupnum, dupframe,
                    acked, bif, rtt_ns, analysis, masks, flags_in, seq_in, ack_in, paylen_in,
                    wide, bits, flags, seq_raw, ack_raw, tcp_len):
    """For frame rows `rows` (sorted), in one pass: where the frame is a TCP segment, its
    per-segment fields (wide[j] for WIDE[j], bits[v] for verdict masks[v] as 0/1) and its
    raw TCP header fields; elsewhere tcp_stream -1 and zeros. (One numpy pass a field
    took most of the Parquet export's column work.)"""
    n_seg = len(seg_rows)
    n_masks = len(masks)
    s = np.searchsorted(seg_rows, rows[0]) if len(rows) else 0
    for r in range(len(rows)):
        i = rows[r]
        while s < n_seg and seg_rows[s] < i:
            s += 1
        if s < n_seg and seg_rows[s] == i:
            wide[0, r] = stream[s]
            wide[1, r] = rel_seq[s]
            wide[2, r] = rel_ack[s]
            wide[3, r] = window[s]
            d = dupnum[s]
            wide[4, r] = d
            wide[5, r] = dupframe[s] if d > 0 else 0
            wide[6, r] = acked[s]
            wide[7, r] = bif[s]
            wide[8, r] = rtt_ns[s]
            a = analysis[s]
            for v in range(n_masks):
                bits[v, r] = 1 if a & masks[v] else 0
            flags[r] = flags_in[i]
            seq_raw[r] = seq_in[i]
            ack_raw[r] = ack_in[i]
            tcp_len[r] = paylen_in[i]
        else:
            wide[0, r] = -1
            for j in range(1, wide.shape[0]):
                wide[j, r] = 0
            for v in range(n_masks):
                bits[v, r] = 0
            flags[r] = 0
            seq_raw[r] = 0
            ack_raw[r] = 0
            tcp_len[r] = 0


def columns(a, rows: np.ndarray) -> dict:
    """Every column for these frame rows (sorted), as numpy arrays; src and dst as codes
    into out["src_pairs"] / out["dst_pairs"], proto as codes into PROTO_NAMES."""
    cols, seg = a.capture.cols, a.segments
    k = len(rows)
    l4 = cols["l4"][rows]
    wide = np.empty((len(WIDE), k), np.int64)
    bits = np.empty((len(V.MASKS), k), np.uint8)
    raw = {name: np.empty(k, cols[src].dtype) for name, src in (
        ("tcp_flags", "tcp_flags"), ("seq_raw", "seq"), ("ack_raw", "ack"),
        ("tcp_len", "paylen"))}
    _segment_fields(rows, seg.rows, seg.stream, seg.rel_seq, seg.rel_ack, seg.window,
                    seg.dupack_num, seg.dupack_frame, seg.acked_frame, seg.bytes_in_flight,
                    seg.ack_rtt_ns, seg.analysis, V.MASKS, cols["tcp_flags"], cols["seq"],
                    cols["ack"], cols["paylen"], wide, bits, raw["tcp_flags"],
                    raw["seq_raw"], raw["ack_raw"], raw["tcp_len"])
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
        "udp_stream": a.udp_stream[rows],
        **raw,
        **dict(zip(WIDE, wide)),
        **dict(zip(V.VERDICTS, bits)),
    }
    rtt_ns = out.pop("ack_rtt_ns")
    # judged on this chunk's rows only (a chunk at a time: never over every segment)
    out["ack_rtt_s"] = np.where(ack_rtt_shown(out["acks_frame"], rtt_ns), rtt_ns / 1e9, np.nan)
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
