#!/usr/bin/env python3
"""Every lab, run once, timed: each within 15 s of wall time, all within 3 minutes.

Runs `labkit run NAME` for every lab in labs/ (as root, or --privilege rootless), one after
the other, each into a temporary folder, and prints each lab's wall time with its phases
(the lab's own traffic, setup and teardown, analysis, figures) and the total. The last line
is machine-readable:

    labs=N total_s=S max_s=S max_lab=NAME over_15s=K failed=F

    sudo .venv/bin/python benchmarks/labs_time.py [--privilege auto|root|rootless] [LAB ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S, TOTAL_BUDGET_S = 15.0, 180.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labs", nargs="*", help="lab names (default: every lab)")
    ap.add_argument("--privilege", default="auto", choices=["auto", "root", "rootless"])
    args = ap.parse_args(argv)
    labs = args.labs or sorted(p.parent.name for p in (REPO / "labs").glob("*/lab.toml"))
    work = Path(tempfile.mkdtemp(prefix="lkbench-labs-"))
    rows = []
    try:
        for lab in labs:
            out = work / lab
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "toolkit.cli", "run", lab, "--out",
                                   str(out), "--privilege", args.privilege],
                                  capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - t0
            try:
                doc = json.loads((out / "run.json").read_text())
                phases = {p["name"]: p["duration_s"] for p in doc["phases"]}
            except (OSError, ValueError):
                phases = {}
            rows.append((lab, wall, done.returncode, phases))
            print(f"{lab:20} {wall:6.1f} s  exit {done.returncode}  "
                  + "  ".join(f"{k} {phases[k]:.1f}" for k in ("lab", "traffic", "analysis",
                                                               "figures") if k in phases),
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(r[1] for r in rows)
    worst = max(rows, key=lambda r: r[1])
    print(f"total {total:.1f} s for {len(rows)} labs (budget {BUDGET_S:g} s each, "
          f"{TOTAL_BUDGET_S:g} s in all); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"labs={len(rows)} total_s={total:.1f} max_s={worst[1]:.1f} max_lab={worst[0]} "
          f"over_15s={sum(r[1] > BUDGET_S for r in rows)} failed={sum(r[2] != 0 for r in rows)}")
    return 0 if all(r[2] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
