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


class _Starved(resources.Sampler):
    """A sampler whose thread never gets to run (a loaded machine at its worst): only the
    samples the server itself asks for are taken."""

    def _run(self) -> None:
        self._stop.wait()


def test_a_forking_server_samples_its_children_whatever_its_sampling_thread_does(
        monkeypatch, tmp_path):
    """Lab 07's process-memory: resident memory summed over the server and its children.
    A loaded CI run sampled no child at all (45 MB, one server's); the server now samples
    as it forks, when the last sample is an interval old, so a live child is counted."""
    monkeypatch.setattr(resources, "Sampler", _Starved)
    n = 4
    srv = tcp_server("process", tmp_path, max_connections=n)
    with Running(srv) as s:
        deadline = time.monotonic() + 10
        while not s.port and time.monotonic() < deadline:
            time.sleep(0.01)
        held = []
        for _ in range(n):
            held.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
            time.sleep(0.05)                 # forks an interval (20 ms) apart or more
        deadline = time.monotonic() + 10
        while srv.peak_live < n and time.monotonic() < deadline:
            time.sleep(0.01)
        for c in held:
            c.close()
    res = srv.report.doc["end"]["resources"]
    # a child right after fork maps the server's pages: its RSS is about the server's
    assert res["peak"]["processes"] >= 2 and res["samples"] >= 3, res
    assert res["peak"]["rss_bytes"] > 1.5 * res["idle"]["rss_bytes"], res
