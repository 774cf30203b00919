"""`labkit serve` when descriptors run out: it neither spins nor dies, and it raises its
descriptor limit only as far as the platform allows (macOS refuses with ValueError)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from toolkit.commands import serve as serve_cmd


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("model", ["thread", "process", "selectors"])
def test_out_of_descriptors_the_server_waits_instead_of_spinning(tmp_path, model):
    port = {"thread": 5871, "process": 5872, "selectors": 5873}[model]
    report = tmp_path / "serve.json"

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "-p", str(port),
                             "-B", "127.0.0.1", "-q", "--json-file", str(report), "--model",
                             model],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, preexec_fn=few_descriptors)
    clients = []
    try:
        assert "listening" in proc.stdout.readline()
        for _ in range(60):            # more than the server has descriptors for
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(c)
        time.sleep(1.0)                # the server has hit EMFILE by now
        before = cpu_seconds(proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(proc.pid) - before
        # a server retrying accept() at once burns a core: ~2 s here, less under load
        assert used < 0.3, f"the server used {used:.2f} s of CPU in 2 s while starved"
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(10)
    doc = json.loads(report.read_text())
    starved = [e for e in doc.get("log", []) if e.get("event") == "accept starved"]
    assert starved and starved[0]["errno"] == "EMFILE", doc.get("log")


def test_the_descriptor_limit_is_raised_as_far_as_the_platform_allows(monkeypatch):
    tried = []

    def refuse_big(which, limits):
        tried.append(limits[0])
        if limits[0] > 10240:          # macOS: more than OPEN_MAX is a ValueError
            raise ValueError("current limit exceeds maximum limit")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", refuse_big)
    serve_cmd._raise_fd_limit()
    assert tried == [1 << 16, 10240]

    def refuse_all(which, limits):
        raise OSError("not permitted")
    monkeypatch.setattr(resource, "setrlimit", refuse_all)
    serve_cmd._raise_fd_limit()        # runs with the limit it has, no exception
