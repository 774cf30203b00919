"""`labkit send --parallel N` and what `labkit serve` reports it cost: N connections opened
together and released together, per-connection first response and completion, latency
percentiles over all; the server's peak connections, threads, processes, descriptors and
memory (exact where the kernel or its own bookkeeping knows, sampled otherwise). On
loopback, against each model; bad options exit 2 naming the option."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from toolkit.endpoints import resources

PY = [sys.executable, "-m", "toolkit.cli"]
N = 6
# below Linux's ephemeral range (32768-60999): no other test's connection (make test runs
# two files at once, one of them holds a thousand loopback connections) is given these
CPORT = 31100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(model, tmp_path, *send_args, n=N):
    port = _free_port()
    srv = subprocess.Popen([*PY, "serve", "-q", "-p", str(port), "--model", model,
                            "--clients", str(n), "-t", "60", "--json-file",
                            str(tmp_path / "serve.json")], cwd=REPO, stdout=subprocess.PIPE,
                           text=True)
    try:
        assert "listening" in srv.stdout.readline()
        done = subprocess.run([*PY, "send", "127.0.0.1", "-p", str(port), "-q", "--json-file",
                               str(tmp_path / "send.json"), "-P", str(n), *send_args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert srv.wait(timeout=30) == 0
    finally:
        srv.kill()
    return (json.loads((tmp_path / "send.json").read_text()),
            json.loads((tmp_path / "serve.json").read_text()))


def test_the_sender_reports_every_connection_and_percentiles_over_all(tmp_path):
    # --tps: each connection lasts >= 120 ms, longer than the 20 ms sampling interval
    send, serve = _run("thread", tmp_path, "--mode", "rr", "-k", "7", "--tps", "50",
                       "--cport", str(CPORT))
    end = send["end"]
    assert end["parallel"] == N and end["connected"] == N and end["failed"] == 0
    assert end["transactions"] == 7 * N
    conns = send["connections"]
    assert [c["i"] for c in conns] == list(range(N))
    # connection i from source port cport + i, each its own flow id
    assert sorted(int(c["local"].rsplit(":", 1)[1]) for c in conns) == list(range(CPORT,
                                                                               CPORT + N))
    assert len({c["flow"] for c in conns}) == N
    assert all(c["transactions"] == 7 and 0 < c["first_response_s"] <= c["completion_s"]
               for c in conns)
    assert end["duration_s"] == max(c["completion_s"] for c in conns) == end["completion_max_s"]
    assert end["latency_s"]["max"] >= end["latency_s"]["p50"] >= end["latency_s"]["min"]
    assert end["first_response_max_s"] == max(c["first_response_s"] for c in conns)
    # the server saw N clients, all at once (thread model), each one thread
    s = serve["end"]
    assert s["connections"] == N and s["peak_connections"] == N
    assert s["peak_threads"] >= N + 1 > s["idle_threads"]
    assert s["peak_processes"] == s["idle_processes"] == 1
    assert s["peak_fds"] >= s["idle_fds"] + N
    assert s["resources"]["exact"] == ["server_peak_rss_bytes", "child_peak_rss_max_bytes",
                                       "peak_connections"]


def test_the_iterative_server_holds_one_connection_and_the_others_wait(tmp_path):
    send, serve = _run("iterative", tmp_path, "--mode", "rr", "-k", "40")
    s = serve["end"]
    assert s["peak_connections"] == 1
    assert s["peak_threads"] <= s["idle_threads"] + 1     # the sampler may count itself
    assert s["peak_fds"] <= s["idle_fds"] + 2
    conns = send["connections"]
    # every handshake completed at once (the kernel's), but the first responses come one
    # client after another: the last one waited for all the others' whole exchanges
    assert all(c["connect_s"] < 0.5 for c in conns)
    firsts = sorted(c["first_response_s"] for c in conns)
    assert firsts[-1] > 2 * firsts[0]


def test_the_process_model_counts_its_children(tmp_path):
    send, serve = _run("process", tmp_path, "--mode", "rr", "-k", "7", "--tps", "50")
    s = serve["end"]
    assert s["connections"] == N and s["resources"]["children"] == N
    assert s["child_peak_rss_max_bytes"] > 1 << 20        # exact, from wait4's rusage
    assert s["peak_processes"] >= 2 and s["idle_processes"] == 1
    # RSS sums shared pages once per process; PSS shares them out
    assert s["peak_rss_bytes"] > s["peak_pss_bytes"]


def test_a_sample_sums_over_live_processes_and_skips_gone_ones():
    import os
    one = resources.sample([os.getpid()])
    assert one["processes"] == 1 and one["rss_bytes"] > 0 and one["fds"] >= 3
    assert one["threads"] >= 1
    gone = resources.sample([os.getpid(), 2 ** 22 + 12345])
    assert gone["processes"] == 1
    flat = resources.flat({"peak_connections": 3, "server_peak_rss_bytes": 5,
                           "peak": one, "idle": one})
    assert flat["peak_rss_bytes"] == one["rss_bytes"] and flat["idle_fds"] == one["fds"]


@pytest.mark.parametrize("args,message", [
    (["--proto", "udp", "-P", "2"], "--parallel: TCP only"),
    (["-P", "0"], "--parallel 0"),
    (["-P", "1001"], "--parallel 1001"),
    (["--cport", "65530", "-P", "10"], "--cport 65530"),
])
def test_bad_parallel_options_exit_2(args, message):
    done = subprocess.run([*PY, "send", "127.0.0.1", "-p", "9", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr, done
    assert "Traceback" not in done.stderr


def test_an_interrupted_parallel_sender_reports_what_it_had(tmp_path):
    import signal
    import time
    port = _free_port()
    with socket.socket() as ls:           # queues the handshakes, never answers a request
        ls.bind(("127.0.0.1", port))
        ls.listen(16)
        out = tmp_path / "send.json"
        proc = subprocess.Popen([*PY, "send", "127.0.0.1", "-p", str(port), "-q", "--mode",
                                 "rr", "-k", "3", "-P", "3", "--json-file", str(out)], cwd=REPO,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 1
    rep = json.loads(out.read_text())
    assert rep["end"]["interrupted"] is True
    assert rep["end"]["connected"] == 3 and rep["end"]["failed"] == 3
    assert [c["i"] for c in rep["connections"]] == [0, 1, 2]
    assert all("connect_s" in c and "completion_s" not in c for c in rep["connections"])


def test_a_child_that_ends_mid_sample_does_not_spoil_the_pss(monkeypatch):
    import os
    real = resources._pss
    gone = 2 ** 22 + 54321
    monkeypatch.setattr(resources, "_status", lambda pid: {"VmRSS": 1000, "Threads": 1})
    monkeypatch.setattr(resources, "_fds", lambda pid: 3)
    monkeypatch.setattr(resources, "_pss", lambda pid: None if pid == gone else 500)
    s = resources.sample([os.getpid(), gone, os.getpid()])
    assert s["processes"] == 2 and s["pss_bytes"] == 1000 and s["rss_bytes"] == 2000
    monkeypatch.setattr(resources, "_pss", lambda pid: None)      # no smaps_rollup at all
    assert resources.sample([os.getpid()])["pss_bytes"] is None
    monkeypatch.setattr(resources, "_pss", real)
