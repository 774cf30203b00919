"""A server's peak threads and processes do not depend on when the sampler happens to
look: the server notes them as it starts each, so a busy machine (whose sampler runs late,
or less often) still reports the thread-per-client peak (lab 07's expectation)."""

from __future__ import annotations

import socket
import time

import pytest

from test_endpoints_loopback import Running, tcp_server
from toolkit.endpoints import resources


class _Blind(resources.Sampler):
    """A sampler that samples only at start and stop, as if the machine never let it run."""

    def __init__(self, children=lambda: (), every_s: float = 3600.0):
        super().__init__(children, every_s=3600.0)


@pytest.mark.parametrize("model,key", [("thread", "threads"), ("process", "processes")])
def test_peaks_of_threads_and_processes_are_exact(monkeypatch, tmp_path, model, key):
    monkeypatch.setattr(resources, "Sampler", _Blind)
    n = 6
    srv = tcp_server(model, tmp_path, max_connections=n)
    with Running(srv) as s:
        deadline = time.monotonic() + 10
        while not s.port and time.monotonic() < deadline:
            time.sleep(0.01)
        held = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(n)]
        # every client is being served at once (each handler waits for a hello)
        deadline = time.monotonic() + 10
        while srv.peak_live < n and time.monotonic() < deadline:
            time.sleep(0.01)
        for c in held:
            c.close()
    doc = srv.report.doc
    peak = doc["end"]["resources"]["peak"][key]
    assert srv.peak_live == n
    # the main thread (or process) and one handler per client at least, whatever the
    # samples saw: a blind sampler saw none of them
    assert peak >= n + 1, (key, peak, doc["end"]["resources"]["samples"])



def test_a_busy_machine_does_not_stretch_the_sampling_interval(monkeypatch):
    """The sampler backs off when a sample costs it CPU (many children's smaps_rollup),
    counted on its own thread's CPU clock. Counted on the wall clock, a sample that waited
    for a core on a loaded machine stretched the interval tenfold, and lab 07's
    process-memory (RSS summed over the server and its children) saw no child at all in a
    loaded CI run (45 MB < 60 MB). Here a sample waits 50 ms and costs nothing."""
    def slow(pids, pss=True):
        time.sleep(0.05)
        return dict.fromkeys(resources._FIELDS, 0)
    monkeypatch.setattr(resources, "sample", slow)
    sampler = resources.Sampler(every_s=0.02).start()
    time.sleep(1.0)
    sampler.stop(0)
    # about 1 s / (50 + 20 ms) = 14 samples; backing off on the wall clock gave 3
    assert sampler.samples >= 7, sampler.samples


def test_proportional_memory_is_read_every_fifth_sample(monkeypatch):
    """smaps_rollup is most of a sample's cost (a walk of the page tables): read every 20
    ms it took 5% of a core from a request/response server. RSS, threads and descriptors
    stay at every sample; PSS is still summed, from the samples that read it."""
    reads = {"status": 0, "pss": 0}
    status, pss = resources._status, resources._pss

    def counted(name, fn):
        def call(pid):
            reads[name] += 1
            return fn(pid)
        return call
    monkeypatch.setattr(resources, "_status", counted("status", status))
    monkeypatch.setattr(resources, "_pss", counted("pss", pss))
    sampler = resources.Sampler(every_s=0.01).start()
    time.sleep(0.6)
    res = sampler.stop(0)
    n = res["samples"]
    assert n >= 15, n
    # the idle and the last sample read PSS, and one in five in between
    assert abs(reads["pss"] - (2 + (n - 2) // resources.PSS_EVERY)) <= 1, (reads, n)
    assert reads["status"] >= n
    assert res["pss_every_s"] == 0.05
    assert res["peak"]["pss_bytes"] > 0 and res["idle"]["pss_bytes"] > 0
    assert res["peak"]["rss_bytes"] >= res["idle"]["rss_bytes"] > 0


def test_resident_memory_and_threads_come_from_proc_stat_whatever_the_command_name(
        monkeypatch):
    import os
    import threading as th
    pid = os.getpid()
    stop = th.Event()
    extra = th.Thread(target=stop.wait)
    extra.start()
    try:
        got = resources._status(pid)
        with open(f"/proc/{pid}/status") as f:
            want = {k: v.split()[0] for k, _, v in (line.partition(":") for line in f)
                    if k in ("Threads", "VmRSS")}
    finally:
        stop.set()
        extra.join()
    assert got["Threads"] == int(want["Threads"]) >= 2
    assert abs(got["VmRSS"] - int(want["VmRSS"]) * 1024) < 4 << 20
    assert resources._hwm(pid) >= got["VmRSS"] - (4 << 20)
    # proc(5): the fields are counted after the name's last ")", which may hold ") S 1 "
    line = b"77 (x) S 1 2 (y)) R " + b" ".join(str(i).encode() for i in range(4, 53))
    monkeypatch.setattr(resources, "_read", lambda path: line)
    assert resources._status(77) == {"Threads": 20, "VmRSS": 24 * resources._PAGE}
    monkeypatch.setattr(resources, "_read", lambda path: None)
    assert resources._status(77) == {} and resources._pss(77) is None
