#!/usr/bin/env python3
"""How fast toolkit.pcap.read_capture turns a big capture into columns, and at what memory.

Writes a synthetic capture (default 1M packets) to a temporary file with numpy, quickly:
a repeating group of 8 frames - three full-size IPv4 data segments, three IPv4 ACKs (one
with SACK blocks), an IPv6 data segment and an IPv6 ACK, all with the TCP timestamps
option - patched per group with rising timestamps and sequence numbers. Then reads it in a
fresh process twice: cold (numba compiles, or loads its on-disk cache) and warm, and prints
packets/s and the peak RSS over the packet count. Just in time only (LABKIT_AOT=0): this
measures numba's compile and cache; analyze_speed.py measures the kernels as `make` builds
them. The last line is machine-readable:

    packets=N cold_s=S warm_s=S warm_pps=N peak_rss_bytes_per_packet=B

Peak RSS includes the interpreter, numpy and numba (about 100-150 MB before any
packet), which is why it is reported also with the baseline subtracted.

Examples:
    .venv/bin/python benchmarks/pcap_read_speed.py
    .venv/bin/python benchmarks/pcap_read_speed.py --packets 200000 --snaplen 96
    .venv/bin/python benchmarks/pcap_read_speed.py --pcapng --gzip
    .venv/bin/python benchmarks/pcap_read_speed.py --file big.pcap   # an existing capture
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

MSS = 1448
TS_OPT = b"\x01\x01\x08\x0a" + b"\0" * 8                  # NOP NOP timestamps (12 bytes)
SACK_OPT = b"\x01\x01\x05\x12" + b"\0" * 16               # two SACK blocks (20 bytes)


def _tcp(flags: int, opts: bytes, payload: int) -> bytes:
    off = (20 + len(opts)) // 4
    return struct.pack("!HHIIHHHH", 40000, 5201, 0, 0, (off << 12) | flags, 501, 0, 0) \
        + opts + bytes(payload)


def _v4(seg: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0,
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + seg


def _v6(seg: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + struct.pack(
        "!IHBB", 6 << 28, len(seg), 6, 64) + b"\x20\x01" + bytes(13) + b"\x01" \
        + b"\x20\x01" + bytes(13) + b"\x02" + seg


def group_frames() -> list[bytes]:
    data4 = _v4(_tcp(0x10, TS_OPT, MSS))
    ack4 = _v4(_tcp(0x10, TS_OPT, 0))
    sack4 = _v4(_tcp(0x10, TS_OPT + SACK_OPT, 0))
    return [data4, data4, data4, ack4, ack4, sack4, _v6(_tcp(0x18, TS_OPT, MSS - 20)),
            _v6(_tcp(0x10, TS_OPT, 0))]


def write_capture(path: Path, packets: int, snaplen: int, pcapng: bool) -> int:
    """Write `packets` frames (a multiple of 8) to path; return the file's size."""
    frames = group_frames()
    recs, fields = [], []            # per frame: record bytes, (ts offset, seq offset)
    for f in frames:
        cap = f[:snaplen]
        pad = (-len(cap) % 4) if pcapng else 0
        if pcapng:
            n = 32 + len(cap) + pad
            head = struct.pack("<IIIIIII", 6, n, 0, 0, 0, len(cap), len(f))
            rec = head + cap + bytes(pad) + struct.pack("<I", n)
            ts_at, data_at = 12, 28
        else:
            rec = struct.pack("<IIII", 0, 0, len(cap), len(f)) + cap
            ts_at, data_at = 0, 16
        l3 = 14 + (20 if f[12:14] == b"\x08\x00" else 40)
        recs.append(rec)
        fields.append((ts_at, data_at + l3 + 4))
    group = b"".join(recs)
    starts = np.cumsum([0] + [len(r) for r in recs])[:-1]
    groups = packets // len(frames)
    with open(path, "wb") as out:
        if pcapng:
            shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + \
                struct.pack("<I", 28)
            idb = struct.pack("<IIHHIHH", 1, 32, 1, 0, 0, 9, 1) + bytes([9, 0, 0, 0]) + \
                struct.pack("<HHI", 0, 0, 32)               # if_tsresol = 9 (ns)
            out.write(shb + idb)
        else:
            out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        step = 20_000
        base = np.frombuffer(group, np.uint8)
        for g0 in range(0, groups, step):
            g = np.arange(g0, min(g0 + step, groups), dtype=np.int64)
            block = np.tile(base, (len(g), 1))
            for k, (ts_at, seq_at) in enumerate(fields):
                ns = 1_700_000_000 * 10**9 + (g * len(frames) + k) * 10_000
                at = starts[k]
                if pcapng:
                    block[:, at + ts_at:at + ts_at + 4] = (ns >> 32).astype("<u4").view(
                        np.uint8).reshape(-1, 4)
                    block[:, at + ts_at + 4:at + ts_at + 8] = (ns & 0xFFFFFFFF).astype(
                        "<u4").view(np.uint8).reshape(-1, 4)
                else:
                    block[:, at:at + 4] = (ns // 10**9).astype("<u4").view(
                        np.uint8).reshape(-1, 4)
                    block[:, at + 4:at + 8] = (ns % 10**9).astype("<u4").view(
                        np.uint8).reshape(-1, 4)
                if seq_at + 4 <= len(recs[k]):
                    seq = (g * MSS * 3).astype(np.uint32).astype(">u4")
                    block[:, at + seq_at:at + seq_at + 4] = seq.view(np.uint8).reshape(-1, 4)
            out.write(block.tobytes())
    return path.stat().st_size


# Peak RSS from /proc's VmHWM: ru_maxrss of a child started by fork keeps the parent's peak.
PEAK = r"""
def peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

CHILD = PEAK + r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
from toolkit.pcap import read_capture
t1 = time.perf_counter()
cap = read_capture(sys.argv[1])
t2 = time.perf_counter()
peak = peak_rss()
col_bytes = sum(v.nbytes for v in cap.cols.values())
n, error = len(cap), str(cap.error or "")
del cap
t3 = time.perf_counter()
read_capture(sys.argv[1])
again = time.perf_counter() - t3
print(json.dumps({"n": n, "import_s": t1 - t0,
                  "read_s": t2 - t1, "again_s": again, "peak": peak,
                  "col_bytes": col_bytes, "error": error}))
"""


def measure(path: Path, cache_dir: str) -> dict:
    """read_capture in a fresh interpreter (so the peak RSS is this read's alone)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, LABKIT_AOT="0")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(REPO)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline(tiny: Path, cache_dir: str) -> int:
    """Peak RSS of an interpreter that has read a 8-packet capture (numpy, numba and the
    compiled kernel loaded): what any read costs before its packets."""
    code = PEAK + ("import sys; sys.path.insert(0, sys.argv[1]); from toolkit.pcap import "
                   "read_capture\nread_capture(sys.argv[2]); print(peak_rss())")
    out = subprocess.run([sys.executable, "-c", code, str(REPO), str(tiny)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, NUMBA_CACHE_DIR=cache_dir, LABKIT_AOT="0"))
    return int(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--snaplen", type=int, default=262144, help="cut frames to this length")
    ap.add_argument("--pcapng", action="store_true", help="write pcapng (EPB) instead of pcap")
    ap.add_argument("--gzip", action="store_true", help="gzip the synthetic file")
    ap.add_argument("--file", type=Path, help="measure this capture instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcapbench-") as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / ("bench.pcapng" if args.pcapng else "bench.pcap")
            t = time.perf_counter()
            size = write_capture(path, args.packets - args.packets % 8, args.snaplen,
                                 args.pcapng)
            print(f"wrote {path.name}: {size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s")
            if args.gzip:
                gz = path.with_suffix(path.suffix + ".gz")
                with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
                path.unlink()
                path = gz
        # cold: an empty numba cache, so the kernels compile; warm: the cache that run left
        cache = tempfile.mkdtemp(prefix="numba-", dir=tmp)
        cold = measure(path, cache)
        warm = measure(path, cache)
        tiny = Path(tmp) / "tiny.pcap"
        write_capture(tiny, 8, 262144, False)
        base = baseline(tiny, cache)
    n = warm["n"]
    size = os.path.getsize(path) if args.file else None
    print(f"packets: {n}" + (f" ({size / 1e6:.0f} MB)" if size else ""))
    print(f"cold read: {cold['read_s']:.2f} s  ({n / cold['read_s']:,.0f} packets/s; "
          f"numba compiles the kernels)")
    print(f"warm read: {warm['read_s']:.2f} s  ({n / warm['read_s']:,.0f} packets/s; kernels "
          f"loaded from numba's cache)")
    print(f"hot read:  {warm['again_s']:.2f} s  ({n / warm['again_s']:,.0f} packets/s; "
          f"second read in the same process)")
    extra = warm["peak"] - base
    print(f"peak RSS: {warm['peak'] / 1e6:.0f} MB; {warm['peak'] / max(n, 1):.0f} bytes/packet "
          f"overall, {extra / max(n, 1):.0f} bytes/packet above the {base / 1e6:.0f} MB "
          f"baseline (columns: {warm['col_bytes'] / max(n, 1):.0f} bytes/packet)")
    if warm["error"]:
        print("error:", warm["error"])
    print(f"packets={n} cold_s={cold['read_s']:.3f} warm_s={warm['read_s']:.3f} "
          f"warm_pps={n / warm['read_s']:.0f} hot_pps={n / warm['again_s']:.0f} "
          f"peak_rss_bytes_per_packet={warm['peak'] / max(n, 1):.0f} "
          f"above_baseline_bytes_per_packet={extra / max(n, 1):.0f}")


if __name__ == "__main__":
    main()
