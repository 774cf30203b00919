"""`labkit serve` when descriptors run out: it neither spins nor dies, and it raises its
descriptor limit only as far as the platform allows (macOS refuses with ValueError)."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import sys
import textwrap
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


HIGH_FD = 1100                     # above select()'s FD_SETSIZE (1024)


def _high_fds_or_skip() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < HIGH_FD + 200:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {HIGH_FD + 200}")


def test_readable_takes_descriptors_select_cannot():
    from toolkit.readiness import readable
    _high_fds_or_skip()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH_FD + 200), hard))
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), HIGH_FD)
    try:
        with pytest.raises(ValueError):            # what the servers used before
            select.select([high], [], [], 0)
        assert readable([high], 0) == []
        b.send(b"x")
        assert readable([high, b], 1.0) == [high] and os.read(high, 10) == b"x"
        assert readable([high], 0) == []
        b.close()                                   # a hang-up reads as readable (b'')
        assert readable([high], 1.0) == [high] and os.read(high, 10) == b""
    finally:
        os.close(high)
        a.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_server_whose_descriptors_are_above_1024_still_serves(tmp_path):
    """The process model waits for its children's reports on pipes: with the descriptor
    limit raised (labkit serve raises it for many clients) they may be numbered above 1024,
    where select() raised ValueError and the server died."""
    _high_fds_or_skip()
    report = tmp_path / "serve.json"
    # the server's own process takes every free descriptor below HIGH_FD first (inside it:
    # a preexec_fn's would partly close at exec), so the ones it opens are numbered above
    low_taken = textwrap.dedent(f"""
        import os, resource, runpy, sys
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, {HIGH_FD + 200}), hard))
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in range(3, {HIGH_FD}):
            try:
                os.fstat(fd)
            except OSError:
                os.dup2(null, fd, inheritable=False)
        sys.argv = ["labkit", *sys.argv[1:]]
        runpy.run_module("toolkit.cli", run_name="__main__")
    """)
    proc = subprocess.Popen([sys.executable, "-c", low_taken, "serve", "-p", "0", "-B",
                             "127.0.0.1", "-q", "-1", "--json-file", str(report), "--model",
                             "process"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert "listening" in line, proc.stderr.read()
        port = line.split("port")[1].split()[0]
        fds = [int(f) for f in os.listdir(f"/proc/{proc.pid}/fd")]
        assert max(fds) >= HIGH_FD - 1, max(fds)
        sent = subprocess.run([sys.executable, "-m", "toolkit.cli", "send", "127.0.0.1", "-p",
                               port, "-n", "1M", "-q"], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
    (conn,) = json.loads(report.read_text())["connections"]
    assert conn["payload_bytes"] >= 1 << 20 and conn["how"] == "half-close", conn
