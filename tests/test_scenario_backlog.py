"""The backlog scenario: a listener that accepts late, and clients arriving one by one.
On loopback: with listen(1) the kernel queues backlog + 1 = 2 finished handshakes; the
next clients' SYNs are dropped until the server accepts, and they get in on a retry. The
server's half-open count reads /proc/net/tcp's SYN-RECV rows; bad options exit 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from toolkit.scenarios import backlog

PY = [sys.executable, "-m", "toolkit.cli", "scenario", "backlog"]

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0202C90A:1451 8004C90A:B2A1 03 00000000:00000000 01:00000093 00000000     0        0 0 0
   2: 0202C90A:1451 8104C90A:1F40 03 00000000:00000000 01:00000093 00000000     0        0 0 0
   3: 0202C90A:14B4 0201C90A:A411 03 00000000:00000000 01:00000093 00000000     0        0 0 0
   4: 0202C90A:1451 0201C90A:A029 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""


def test_half_open_counts_syn_recv_rows_of_its_port_only(tmp_path):
    f = tmp_path / "tcp"
    f.write_text(PROC_NET_TCP)
    assert backlog.half_open(5201, str(f)) == 2          # 0x1451; LISTEN and ESTAB not
    assert backlog.half_open(5300, str(f)) == 1          # 0x14B4
    assert backlog.half_open(80, str(f)) == 0
    assert backlog.half_open(5201, str(tmp_path / "absent")) == 0


@pytest.mark.parametrize("role,args,message", [
    ("server", ["--accept-after", "soon"], "--accept-after soon"),
    ("server", ["--accept-after", "-1s"], "--accept-after"),
    ("server", ["--backlog", "-3"], "--backlog -3"),
    ("server", ["--accepts", "0"], "--accepts 0"),
    ("server", ["--time", "1parsec"], "--time 1parsec"),
    ("client", ["127.0.0.1", "--timeout", "0"], "--timeout 0"),
    ("client", ["127.0.0.1", "--connections", "0"], "--connections 0"),
    ("client", ["127.0.0.1", "--every", "x"], "--every x"),
    ("client", ["127.0.0.1", "--connections", "10", "--cport", "65530"], "--cport 65530"),
    ("client", ["127.0.0.1", "--proto", "udp"], "--proto"),
])
def test_bad_options_exit_2_naming_the_option(role, args, message):
    done = subprocess.run([*PY, role, "-p", "1", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_late_accept_makes_the_clients_beyond_the_queue_retry(tmp_path):
    port = _free_port()
    server = subprocess.Popen([*PY, "server", "-p", str(port), "--backlog", "1",
                               "--accept-after", "1200ms", "--accepts", "4", "--time", "20",
                               "--json-file", str(tmp_path / "server.json")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().startswith("Server listening")
        client = subprocess.run([*PY, "client", "127.0.0.1", "-p", str(port),
                                 "--connections", "4", "--every", "100ms", "--timeout", "6s",
                                 "--json-file", str(tmp_path / "client.json")], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        assert server.wait(timeout=20) == 0
    finally:
        server.kill()
    rep = json.loads((tmp_path / "client.json").read_text())
    end = rep["end"]
    # listen(1): two handshakes finish into the accept queue at once, the other two
    # clients' SYNs are dropped and resent (>= 1 s later) until the server accepts
    assert end["connected"] == 4 and end["failed"] == 0
    assert end["connected_at_once"] == 2 and end["connected_after_retry"] == 2
    waits = [c["connect_s"] for c in rep["connections"]]
    assert all(w < 0.5 for w in waits[:2]) and all(w >= 0.9 for w in waits[2:])
    # the server closes each connection as it accepts it: the queued ones only after 1.2 s
    firsts = [c["closed_by_server_s"] - c["started_s"] for c in rep["connections"][:2]]
    assert all(f >= 1.0 for f in firsts)
    srv = json.loads((tmp_path / "server.json").read_text())
    assert srv["end"]["accepted"] == 4 and srv["end"]["exit_status"] == 0
    assert [e["event"] for e in srv["events"]].count("accepted") == 4


def test_a_client_gives_up_at_its_timeout(tmp_path):
    port = _free_port()
    with socket.socket() as ls:            # listen(0): a queue of 0 + 1, never accepted
        ls.bind(("127.0.0.1", port))
        ls.listen(0)
        keep = [socket.create_connection(("127.0.0.1", port))]
        client = subprocess.run([*PY, "client", "127.0.0.1", "-p", str(port),
                                 "--connections", "2", "--timeout", "1500ms", "--linger", "0",
                                 "--json-file", str(tmp_path / "client.json")], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        for s in keep:
            s.close()
    assert client.returncode == 0, client.stderr
    end = json.loads((tmp_path / "client.json").read_text())["end"]
    # the one place in the queue is taken: every SYN of both clients is dropped
    assert end["connected"] == 0 and end["timed_out"] == 2 and end["failed"] == 2
