#!/usr/bin/env python3
"""labkit analyze on many captures: --jobs 2 against --jobs 1, in the same run.

Makes 20 synthetic captures of 100k packets each (benchmarks/synthetic.py: bulk TCP with
retransmissions, some UDP), then times `labkit analyze DIR --format parquet -o OUT` with
--jobs 1 and with --jobs N (default: every core), each into a fresh OUT; and, as the
machine's own reference in the same run, N copies of a plain CPU-bound Python loop at once
against one after the other: what N processes can gain here at all (a virtual machine's
CPUs are not always whole cores). Each command's fixed part (the interpreter, the imports,
loading the compiled kernels, starting the workers) is measured too, by the same commands
on N captures of 1,000 packets, so the speedup of the work that grows with the captures is
shown beside the whole commands'. The last line is machine-readable (one line, wrapped
here):

    captures=20 packets_each=100000 jobs=2 seconds_1=S seconds_n=S speedup=X ceiling=C
    fixed_1=S fixed_n=S work_speedup=X

    .venv/bin/python benchmarks/analyze_many_speed.py [--captures 20] [--packets 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from synthetic import bulk_capture  # noqa: E402


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - t0


def _spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def ceiling(jobs: int, n: int = 10_000_000) -> float:
    """Serial time over parallel time of `jobs` CPU-bound processes (no I/O, little memory)."""
    import multiprocessing as mp
    t = time.perf_counter()
    for _ in range(jobs):
        _spin(n)
    serial = time.perf_counter() - t
    with mp.get_context("fork").Pool(jobs) as pool:
        t = time.perf_counter()
        pool.map(_spin, [n] * jobs)
        parallel = time.perf_counter() - t
    return serial / parallel


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", type=int, default=20)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lkbench-many-"))
    try:
        caps = work / "captures"
        caps.mkdir()
        small = work / "small"
        small.mkdir()
        for i in range(args.captures):
            bulk_capture(caps / f"c{i:02d}.pcap", args.packets, seed=i)
        for i in range(args.jobs):
            bulk_capture(small / f"s{i:02d}.pcap", 1000, seed=i)
        lk = [sys.executable, "-m", "toolkit.cli", "analyze", str(caps), "--format",
              "parquet"]
        timed(lk + ["-o", str(work / "warm"), "--jobs", "1"])      # compiled kernels cached
        shutil.rmtree(work / "warm")
        one = timed(lk + ["-o", str(work / "one"), "--jobs", "1"])
        many = timed(lk + ["-o", str(work / "many"), "--jobs", str(args.jobs)])
        small_lk = lk[:4] + [str(small)] + lk[5:]
        fixed_1 = timed(small_lk + ["-o", str(work / "small1"), "--jobs", "1"])
        fixed_n = timed(small_lk + ["-o", str(work / "smalln"), "--jobs", str(args.jobs)])
        top = ceiling(args.jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = args.captures * args.packets
    print(f"{args.captures} captures of {args.packets:,} packets; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"--jobs 1: {one:6.2f} s  {total / one:>12,.0f} packets/s")
    print(f"--jobs {args.jobs}: {many:6.2f} s  {total / many:>12,.0f} packets/s")
    print(f"{args.jobs} CPU-bound Python loops at once: {top:.2f}x one after the other "
          f"(what {args.jobs} processes can gain on this machine)")
    # (tiny inputs can leave nothing beyond the fixed part: no ratio then)
    work_1, work_n = max(one - fixed_1, 1e-3), max(many - fixed_n, 1e-3)
    print(f"fixed part ({args.jobs} captures of 1,000 packets): --jobs 1 {fixed_1:.2f} s, "
          f"--jobs {args.jobs} {fixed_n:.2f} s; beyond it: {work_1:.2f} s and {work_n:.2f} s, "
          f"{work_1 / work_n:.2f}x")
    print(f"captures={args.captures} packets_each={args.packets} jobs={args.jobs} "
          f"seconds_1={one:.2f} seconds_n={many:.2f} speedup={one / many:.2f} "
          f"ceiling={top:.2f} fixed_1={fixed_1:.2f} fixed_n={fixed_n:.2f} "
          f"work_speedup={work_1 / work_n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
