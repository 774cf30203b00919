"""Which runs are alive, and the sweep that removes what dead runs left behind.

A run as root writes /run/labkit/runs/<run id>.json (its pid and the pid's start time from
/proc/<pid>/stat, field 22) BEFORE it creates anything, and removes it after its teardown.
So every lk-<run id>-* namespace either belongs to a live run (record present, that pid
alive with that start time: a recycled pid does not count) or to a dead one. `sweep`
removes only the second kind, and only names of the kit's exact form (lk-<6 hex>-<node>):
nothing else, ever. Rootless runs need no record: their namespaces die with their holder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

RUNS_DIR = Path(os.environ.get("LABKIT_RUNS_DIR", "/run/labkit/runs"))
NETNS_NAME = re.compile(r"lk-([0-9a-f]{6})-([a-z][a-z0-9]{0,4})")


def new_run_id() -> str:
    return secrets.token_hex(3)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid, names a process
    uniquely across pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    pid: int
    start_time: int

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time


def register(run_id: str, runs_dir: Path | None = None) -> Path:
    runs_dir = runs_dir or RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{run_id}.json"
    pid = os.getpid()
    rec = {"run_id": run_id, "pid": pid, "start_time": process_start_time(pid)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    tmp.replace(path)
    return path


def unregister(run_id: str, runs_dir: Path | None = None) -> None:
    ((runs_dir or RUNS_DIR) / f"{run_id}.json").unlink(missing_ok=True)


def load(run_id: str, runs_dir: Path | None = None) -> RunRecord | None:
    path = (runs_dir or RUNS_DIR) / f"{run_id}.json"
    try:
        rec = json.loads(path.read_text())
        return RunRecord(rec["run_id"], int(rec["pid"]), int(rec["start_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_netns() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    # lines look like "lk-3f9c1a-a (id: 4)" or just "lk-3f9c1a-a"
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Leftover:
    run_id: str
    netns: tuple[str, ...]
    reason: str


def leftovers(netns_names: list[str], runs_dir: Path | None = None) -> list[Leftover]:
    """Pure apart from reading run records and /proc: the runs whose namespaces may go."""
    by_run: dict[str, list[str]] = {}
    for name in netns_names:
        m = NETNS_NAME.fullmatch(name)
        if m:
            by_run.setdefault(m.group(1), []).append(name)
    out = []
    for run_id, names in sorted(by_run.items()):
        rec = load(run_id, runs_dir)
        if rec is None:
            out.append(Leftover(run_id, tuple(names), "no run record"))
        elif not rec.alive():
            out.append(Leftover(run_id, tuple(names), f"process {rec.pid} is gone"))
    return out


def sweep(dry_run: bool = False, runs_dir: Path | None = None) -> tuple[list[Leftover],
                                                                       list[str]]:
    """Remove the namespaces of dead runs (and their run records). Returns what was (or,
    with dry_run, would be) removed and any errors."""
    found = leftovers(list_netns(), runs_dir)
    errors = []
    if dry_run:
        return found, errors
    for left in found:
        for ns in left.netns:
            done = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if done.returncode != 0:
                errors.append(f"ip netns del {ns}: {done.stderr.strip()}")
        unregister(left.run_id, runs_dir)
    # records of dead runs that left no namespace
    directory = runs_dir or RUNS_DIR
    if directory.is_dir():
        for path in directory.glob("*.json"):
            rec = load(path.stem, directory)
            if rec is None or not rec.alive():
                path.unlink(missing_ok=True)
    return found, errors
