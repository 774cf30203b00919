"""What a server costs the machine: memory, descriptors, threads and processes, measured
while it runs (Linux /proc), for the report's `end.resources`.

Two kinds of numbers, and the report says which is which:

- exact: the kernel's own peak resident set of the server process (VmHWM), each forked
  child's peak resident set (ru_maxrss from wait4, process model), and the most
  connections the server held at once (its own bookkeeping);
- sampled every `every_s` (default 20 ms): the sums over the server's processes (itself
  and its live children) of resident memory (RSS), open descriptors (/proc/PID/fd) and
  threads; and every `pss_every_s` (every fifth sample: 100 ms) of proportional memory
  (PSS: a page shared by k processes counts 1/k in each, so forked children are not
  charged the parent's pages again; smaps_rollup). A peak shorter than the interval can
  be missed, except of threads and processes: the server notes their counts as it starts
  each (Sampler.note); `idle` is the first sample, before any client.

PSS is read less often because it is most of a sample's cost: smaps_rollup walks the
process's page tables, 0.4-1 ms for a server here against 0.1 ms for the rest, and a
sampler reading it every 20 ms took 5% of a core from the transfer it measured.

RSS summed over processes counts a page shared by a parent and its forked children once
per process: an upper bound of what they use together. PSS is the honest share.
"""

from __future__ import annotations

import os
import threading
import time

DEFAULT_EVERY_S = 0.02
PSS_EVERY = 5                    # PSS (smaps_rollup) every fifth sample
_FIELDS = ("rss_bytes", "pss_bytes", "fds", "threads", "processes")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read(path: str) -> bytes | None:
    """A small /proc file in one read: a sampler thread shares the GIL with the server's
    own, and a text file object's line loop held it for hundreds of microseconds while
    the server's thread waited to answer its client."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1 << 14)
    except OSError:
        return None
    finally:
        os.close(fd)


def _status(pid: int) -> dict:
    """Resident memory and threads from /proc/PID/stat (proc(5): rss and num_threads, the
    same counters as status's VmRSS and Threads), fields counted after the command name's
    last ")" (a name may hold spaces and parentheses)."""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return {}                        # gone
    try:
        fields = data[data.rindex(b")") + 2:].split()
        return {"VmRSS": int(fields[21]) * _PAGE, "Threads": int(fields[17])}
    except (ValueError, IndexError):
        return {}


def _kib(path: str, key: bytes) -> int | None:
    """The "Key:  N kB" line of a /proc file (status, smaps_rollup), in bytes."""
    data = _read(path) or b""
    i = data.find(b"\n" + key + b":")
    try:
        return int(data[i + len(key) + 2:].split(None, 1)[0]) * 1024 if i >= 0 else None
    except (ValueError, IndexError):
        return None


def _hwm(pid: int) -> int | None:
    """The kernel's peak resident set (status's VmHWM)."""
    return _kib(f"/proc/{pid}/status", b"VmHWM")


def _pss(pid: int) -> int | None:
    return _kib(f"/proc/{pid}/smaps_rollup", b"Pss")


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(pids, pss: bool = True) -> dict:
    """One sample summed over the live processes among `pids` (the first is the server:
    without its smaps_rollup, no PSS at all; a child that ends between two reads counts
    as gone). `pss` False: no smaps_rollup read, and no pss_bytes in the sample."""
    tot = dict.fromkeys(_FIELDS, 0)
    if not pss:
        del tot["pss_bytes"]
    for i, pid in enumerate(pids):
        st = _status(pid)
        if "VmRSS" not in st:
            continue                     # gone (a child that just ended)
        p = _pss(pid) if pss else 0
        if p is None and i:
            continue                     # it ended while we read it
        tot["processes"] += 1
        tot["rss_bytes"] += st["VmRSS"]
        tot["threads"] += st.get("Threads", 0)
        tot["fds"] += _fds(pid) or 0
        if not pss:
            continue
        if p is None or tot["pss_bytes"] is None:
            tot["pss_bytes"] = None      # no smaps_rollup here (an old kernel)
        else:
            tot["pss_bytes"] += p
    return tot


class Sampler:
    """A daemon thread sampling the server's processes until stop()."""

    def __init__(self, children=lambda: (), every_s: float = DEFAULT_EVERY_S):
        self.children, self.every_s = children, every_s
        self.pid = os.getpid()
        self.samples = 0
        self.idle: dict | None = None
        self.peak = dict.fromkeys(_FIELDS, 0)
        self.child_max_rss = 0
        self.children_reaped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resources")

    def start(self) -> Sampler:
        self._take()                     # the idle sample, before any client
        self._thread.start()
        return self

    def _take(self, pss: bool = True) -> None:
        s = sample((self.pid, *tuple(self.children())), pss)
        self.samples += 1
        if self.idle is None:
            self.idle = s
        for k, v in s.items():
            if v is not None:
                self.peak[k] = max(self.peak[k] or 0, v)
            elif not self.peak[k]:
                self.peak[k] = None      # never measured

    def _run(self) -> None:
        wait = self.every_s
        n = 0
        while not self._stop.wait(wait):
            n += 1
            t0 = time.thread_time()
            self._take(pss=n % PSS_EVERY == 0)
            # a sample reads each process's smaps_rollup, which costs the kernel a walk of
            # its page tables: with many children, sample less often rather than let the
            # measurement take a core from what it measures (at most a tenth of one). Its
            # cost is this thread's CPU time: on a busy machine the wall time of a sample
            # is mostly waiting for a core, and backing off on it missed whole peaks
            wait = max(self.every_s, 10 * (time.thread_time() - t0))

    def note(self, **counts) -> None:
        """Counts the server knows exactly at the moment it makes them (the threads after it
        starts one, the processes after a fork): the peak is at least these, whenever the
        samples fall (a busy machine stretches the interval, and a short peak slips
        between two samples)."""
        for k, v in counts.items():
            if v is not None:
                self.peak[k] = max(self.peak[k] or 0, v)

    def reaped(self, rusage) -> None:
        """A child ended (os.wait4): its exact peak resident set (ru_maxrss is KiB)."""
        self.children_reaped += 1
        self.child_max_rss = max(self.child_max_rss, int(rusage.ru_maxrss) * 1024)

    def stop(self, peak_connections: int) -> dict:
        self._stop.set()
        self._thread.join(timeout=2)
        self._take()
        hwm = _hwm(self.pid)
        return {"sample_every_s": self.every_s,
                "pss_every_s": round(self.every_s * PSS_EVERY, 9), "samples": self.samples,
                "idle": self.idle, "peak": self.peak,
                "server_peak_rss_bytes": hwm,
                "children": self.children_reaped,
                "child_peak_rss_max_bytes": self.child_max_rss or None,
                "peak_connections": peak_connections,
                "exact": ["server_peak_rss_bytes", "child_peak_rss_max_bytes",
                          "peak_connections"],
                "sampled": ["idle", "peak"]}


def flat(res: dict) -> dict:
    """The numbers expectations read, as scalars for the report's end."""
    out = {"peak_connections": res["peak_connections"],
           "server_peak_rss_bytes": res["server_peak_rss_bytes"]}
    for k, v in (res.get("peak") or {}).items():
        out[f"peak_{k}"] = v
    for k, v in (res.get("idle") or {}).items():
        out[f"idle_{k}"] = v
    if res.get("child_peak_rss_max_bytes"):
        out["child_peak_rss_max_bytes"] = res["child_peak_rss_max_bytes"]
    return out
