"""Per-packet rows as text (CSV, JSON Lines), formatted by one compiled kernel.

The kernel reads the capture's columns and the TCP analysis' per-segment arrays directly
and writes each row's fields into a byte buffer, a chunk of frames at a time: no column is
copied per chunk, no row becomes a Python object. Measured on a 1M-packet capture
(benchmarks/analyze_speed.py), pyarrow's CSV writer took 3.4 s for what this does in a
fraction of a second, so this is the one writer of our own. The columns and their order
are packet_rows.COLUMNS, the same as the DataFrame's; JSON Lines come from the same loop
with each field's key as its prefix.

Times are written as tshark writes frame.time_relative and tcp.analysis.ack_rtt: seconds
with nine decimals, exact from the capture's nanoseconds.
"""

from __future__ import annotations

import json

import numpy as np

from ..pcap.jit import kernel
from . import packet_rows as P
from . import verdicts as V
from .addresses import address_text

IN_FLIGHT = 3                    # chunks being formatted at once (each its own buffer)
TEXT_CHUNK_ROWS = 1 << 11       # 2048 rows: a JSON chunk's buffer is ~3 MB
_FIELD_MAX = 24                  # the longest number or seconds value written
# how each field is written
INT, SECONDS, TEXT, BIT = 0, 1, 2, 3
NULL = np.iinfo(np.int64).min    # a field with no value (ack_rtt where Wireshark has none)
_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint8).copy()


@kernel
def _format(rows, ts_ns, t0, wirelen, l4, sport, dport, udp_stream, tcp_flags, seq_raw,
            ack_raw, paylen, seg_rows, stream, rel_seq, rel_ack, window, analysis, dupnum,
            dupframe, acked, rtt_ns, bif, masks, kinds, src_code, dst_code, texts, text_off,
            pre, pre_off, null, start, end, pairs, out):
    """Rows `rows` (frame rows, sorted) into out; returns the bytes used. Field j's prefix
    is pre[pre_off[j]:pre_off[j+1]]; text k is texts[text_off[k]:text_off[k+1]].

    Each row's values are gathered first, then written by one loop: no calls (each call
    with arrays costs reference counting), unsigned arithmetic (numba's signed floor
    division is several times slower), two digits at a time."""
    m = len(kinds)
    val = np.zeros(m, np.int64)
    n_masks = len(masks)
    o = 0
    n_seg = len(seg_rows)
    s = np.searchsorted(seg_rows, rows[0]) if len(rows) else 0
    hundred = np.uint64(100)
    ten = np.uint64(10)
    billion = np.uint64(1_000_000_000)
    for r in range(len(rows)):
        i = rows[r]
        while s < n_seg and seg_rows[s] < i:
            s += 1
        tcp = s < n_seg and seg_rows[s] == i
        has_l4 = l4[i] != 0
        val[0] = i + 1
        val[1] = np.int64(ts_ns[i]) - t0
        val[2] = wirelen[i]
        val[3] = src_code[r]
        val[4] = dst_code[r]
        val[5] = 1 if l4[i] == 6 else 2 if l4[i] == 17 else 0
        val[6] = sport[i] if has_l4 else 0
        val[7] = dport[i] if has_l4 else 0
        val[8] = stream[s] if tcp else -1
        val[9] = udp_stream[i]
        bits = np.int64(analysis[s]) if tcp else 0
        if tcp:
            val[10] = tcp_flags[i]
            val[11] = rel_seq[s]
            val[12] = rel_ack[s]
            val[13] = seq_raw[i]
            val[14] = ack_raw[i]
            val[15] = paylen[i]
            val[16] = window[s]
        else:
            val[10:17] = 0
        for k in range(n_masks):
            val[17 + k] = 1 if (bits & masks[k]) != 0 else 0
        j = 17 + n_masks
        dn = np.int64(dupnum[s]) if tcp else 0
        val[j] = dn
        val[j + 1] = dupframe[s] if dn > 0 else 0
        val[j + 2] = acked[s] if tcp else 0
        # ack_rtt where Wireshark shows it: an acked frame and a non-zero RTT
        val[j + 3] = rtt_ns[s] if tcp and acked[s] != 0 and rtt_ns[s] != NULL \
            and rtt_ns[s] != 0 else NULL
        val[j + 4] = bif[s] if tcp else 0

        for b in range(len(start)):
            out[o] = start[b]
            o += 1
        for f in range(m):
            for b in range(pre_off[f], pre_off[f + 1]):
                out[o] = pre[b]
                o += 1
            kind = kinds[f]
            v = val[f]
            if kind == BIT:
                out[o] = 48 + v
                o += 1
                continue
            if v == NULL or (kind == TEXT and v < 0):
                for b in range(len(null)):
                    out[o] = null[b]
                    o += 1
                continue
            if kind == TEXT:
                for b in range(text_off[v], text_off[v + 1]):
                    out[o] = texts[b]
                    o += 1
                continue
            if v < 0:
                out[o] = 45                                      # "-"
                o += 1
                v = -v
            u = np.uint64(v)
            frac = np.uint64(0)
            if kind == SECONDS:
                frac = u % billion
                u = u // billion
            # the digits of u: count them, then write from the right, two at a time
            n = 1
            t = ten
            while n < 20 and u >= t:
                n += 1
                t = t * ten
            p = o + n
            while u >= hundred:
                q = u // hundred
                d = np.intp(u - q * hundred) * 2
                out[p - 1] = pairs[d + 1]
                out[p - 2] = pairs[d]
                p -= 2
                u = q
            if u >= ten:
                d = np.intp(u) * 2
                out[p - 1] = pairs[d + 1]
                out[p - 2] = pairs[d]
            else:
                out[p - 1] = 48 + np.intp(u)
            o += n
            if kind == SECONDS:                                  # "." and nine decimals
                out[o] = 46
                p = o + 10
                for _ in range(4):
                    q = frac // hundred
                    d = np.intp(frac - q * hundred) * 2
                    out[p - 1] = pairs[d + 1]
                    out[p - 2] = pairs[d]
                    p -= 2
                    frac = q
                out[p - 1] = 48 + np.intp(frac)
                o += 10
        for b in range(len(end)):
            out[o] = end[b]
            o += 1
    return o


def _u8(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8).copy() if b else np.zeros(0, np.uint8)


def _table(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(texts) + 1, np.int64)
    off[1:] = np.cumsum([len(t) for t in texts])
    return _u8(b"".join(texts)), off


def _csv_field(v) -> str:
    s = str(v)
    if any(ch in s for ch in ',"\n\r'):
        s = '"' + s.replace('"', '""') + '"'
    return s


class TextFormat:
    """CSV or JSON Lines of the per-packet columns (+ constant trailing columns, e.g. the
    file's name when several files are written to one output)."""

    def __init__(self, a, fmt: str, extra: dict | None = None):
        self.a, self.fmt = a, fmt
        extra = extra or {}
        names = list(P.COLUMNS)
        if fmt == "csv":
            prefixes = [""] + [","] * (len(names) - 1)
            self.header = ",".join([*names, *extra]) + "\n"
            null, start = "", ""
            end = "".join("," + _csv_field(v) for v in extra.values()) + "\n"
        else:
            prefixes = [("" if i == 0 else ",") + f'"{n}":' for i, n in enumerate(names)]
            self.header = ""
            null, start = "null", "{"
            end = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in extra.items()) + "}\n"
        self.pre, self.pre_off = _table([p.encode() for p in prefixes])
        self.null, self.start, self.end = _u8(null.encode()), _u8(start.encode()), \
            _u8(end.encode())
        self.row_bound = (len(self.start) + len(self.end) + len(self.pre) +
                          len(names) * max(_FIELD_MAX, len(self.null)))
        self.kinds = np.array([TEXT if n in ("src", "dst", "proto") else
                               SECONDS if n in ("time_s", "ack_rtt_s") else
                               BIT if n in V.VERDICTS else INT for n in names], np.int8)
        self._names: dict[tuple[int, int], bytes] = {}
        self._buf = np.zeros(0, np.uint8)

    def _text(self, t: str) -> bytes:
        return (json.dumps(t) if self.fmt == "jsonl" else t).encode()

    def _name(self, pair: tuple[int, int]) -> bytes:
        if pair not in self._names:
            self._names[pair] = self._text(address_text(*pair))
        return self._names[pair]

    def chunk(self, rows: np.ndarray, buf: np.ndarray | None = None) -> memoryview:
        a, cols = self.a, self.a.capture.cols
        seg = a.segments
        # this chunk's texts: the protocol names, then its sources, then its destinations
        src, src_pairs = P.address_codes(cols, rows, "src")
        dst, dst_pairs = P.address_codes(cols, rows, "dst")
        names = [self._text(t) for t in P.PROTO_NAMES] + \
            [self._name(p) for p in src_pairs] + [self._name(p) for p in dst_pairs]
        src = np.where(src >= 0, src + len(P.PROTO_NAMES), -1)
        dst = np.where(dst >= 0, dst + len(P.PROTO_NAMES) + len(src_pairs), -1)
        text, text_off = _table(names)
        need = len(rows) * (self.row_bound + 3 * max(len(t) for t in names))
        if buf is None:
            if len(self._buf) < need:
                self._buf = np.empty(need, np.uint8)
            buf = self._buf
        elif len(buf) < need:
            buf = np.empty(need, np.uint8)
        t0 = int(cols["ts_ns"][0]) if len(cols["ts_ns"]) else 0
        # by name: two dozen arrays in a row, where a swap would pass unnoticed
        used = _format(rows=rows, ts_ns=cols["ts_ns"], t0=t0, wirelen=cols["wirelen"],
                       l4=cols["l4"], sport=cols["sport"], dport=cols["dport"],
                       udp_stream=a.udp_stream, tcp_flags=cols["tcp_flags"],
                       seq_raw=cols["seq"], ack_raw=cols["ack"], paylen=cols["paylen"],
                       seg_rows=seg.rows, stream=seg.stream, rel_seq=seg.rel_seq,
                       rel_ack=seg.rel_ack, window=seg.window, analysis=seg.analysis,
                       dupnum=seg.dupack_num, dupframe=seg.dupack_frame,
                       acked=seg.acked_frame, rtt_ns=seg.ack_rtt_ns,
                       bif=seg.bytes_in_flight, masks=V.MASKS, kinds=self.kinds,
                       src_code=src, dst_code=dst, texts=text, text_off=text_off,
                       pre=self.pre, pre_off=self.pre_off, null=self.null,
                       start=self.start, end=self.end, pairs=_PAIRS, out=buf)
        return memoryview(buf)[:used]


def write(a, out, fmt: str, stream: int | None = None, extra: dict | None = None,
          header: bool = True) -> int:
    """Write an Analysis' per-packet rows to the binary file `out` as "csv" (with a header
    line unless header=False) or "jsonl". Returns the rows written."""
    from ..pcap.scanner import default_threads, executor

    tf = TextFormat(a, fmt, extra)
    if header and tf.header:
        out.write(tf.header.encode())
    n = 0
    chunks = P.row_chunks(a, stream, TEXT_CHUNK_ROWS)
    if default_threads() < 2 or len(a) < 4 * TEXT_CHUNK_ROWS:
        for rows in chunks:
            out.write(tf.chunk(rows))
            n += len(rows)
        return n
    # the kernel releases the GIL: the next chunks are formatted on the decoding threads
    # while this one is written; in order, at most IN_FLIGHT chunks (and buffers) at once
    from collections import deque
    pool, pending = executor(), deque()
    for rows in chunks:
        pending.append((len(rows), pool.submit(tf.chunk, rows, np.empty(0, np.uint8))))
        if len(pending) >= IN_FLIGHT:
            k, fut = pending.popleft()
            out.write(fut.result())
            n += k
    while pending:
        k, fut = pending.popleft()
        out.write(fut.result())
        n += k
    return n
