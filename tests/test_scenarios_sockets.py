"""The socket scenarios of labs 02-states and 10-abrupt-close, role by role: what each
server program reports when its client closes, resets, vanishes or has gone before a
write, and what the kernel holds meanwhile (ss). On loopback, as `labkit scenario` runs
them; the vanishing host needs a lab (a packet filter on host a), so that test is root."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, network_or_skip
from toolkit import scenarios
from toolkit.runtime import child_env

CLI = [sys.executable, "-m", "toolkit.cli", "scenario"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Role:
    """One role as a process; `start_server` returns once it printed its ready line."""

    def __init__(self, argv, report, prefix=()):
        self.report = report
        self.proc = subprocess.Popen([*prefix, *argv, "-q", "--json-file", str(report)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=REPO, env=child_env())

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("Server listening"):
                return self
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"the server did not start: {self.proc.stdout.read()}")

    def result(self, timeout=30.0) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        return json.loads(self.report.read_text())


def pair(tmp_path, name, server_args, client_args, host="127.0.0.1", prefix_s=(),
         prefix_c=(), port=None):
    port = port or free_port()
    server = Role([*CLI, name, "server", "-p", str(port), *server_args],
                  tmp_path / "server.json", prefix_s).wait_ready()
    client = Role([*CLI, name, "client", host, "-p", str(port), *client_args],
                  tmp_path / "client.json", prefix_c)
    return port, server, client


def ss_states(port: int, prefix=()) -> list[tuple[str, int, int]]:
    """(state, local port, peer port) of every TCP socket on `port`, as ss prints it."""
    out = subprocess.run([*prefix, "ss", "-H", "-t", "-a", "-n"], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        w = line.split()
        lp, pp = w[3].rpartition(":")[2], w[4].rpartition(":")[2]
        if str(port) in (lp, pp):
            rows.append((w[0], int(lp), int(pp) if pp.isdigit() else 0))
    return rows


def events(doc) -> list[str]:
    return [e["event"] for e in doc["events"]]


# ---------------------------------------------------------------- 02-states

def test_server_closing_first_waits_in_time_wait_and_cannot_rebind_without_reuseaddr(
        tmp_path):
    port, server, client = pair(tmp_path, "states", ["--close", "first", "--restart"],
                                ["--close", "second", "--hold", "0.3"])
    c, s = client.result(), server.result()
    assert c["end"]["reply_bytes"] == 100 and "recv returned b''" in events(c)
    # the server's FIN went first: TIME-WAIT is on the server's port, not the client's
    assert [e["state"] for e in s["events"] if e["event"] == "recv returned b''"] == [
        "TIME-WAIT"]
    tw = [r for r in ss_states(port) if r[0] == "TIME-WAIT"]
    assert tw and all(local == port for _, local, _ in tw)
    # the restart: EADDRINUSE without SO_REUSEADDR, as the student would see it; then ok
    assert s["end"]["rebind_plain"] == "EADDRINUSE"
    assert s["end"]["rebind_plain_error"] == "OSError: [Errno 98] Address already in use"
    assert s["end"]["rebind_reuseaddr"] == "ok"
    assert events(s)[-2:] == ["bind failed", "listening again"]


def test_server_that_never_closes_sits_in_close_wait(tmp_path):
    port, server, client = pair(tmp_path, "states", ["--close", "never", "--hold", "1.5"],
                                ["--close", "first"])
    client.result()
    seen = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        seen |= {(st, local) for st, local, _ in ss_states(port)}
        time.sleep(0.05)
    assert ("CLOSE-WAIT", port) in seen            # the server's end of the connection
    assert any(st == "FIN-WAIT-2" and local != port for st, local in seen)   # the client's
    s = server.result()
    assert [e.get("state") for e in s["events"]][-2:] == ["CLOSE-WAIT", "LAST-ACK"]


# ---------------------------------------------------------------- 10-abrupt-close

def test_fin_makes_recv_return_empty_bytes(tmp_path):
    _, server, client = pair(tmp_path, "abrupt_close", [], ["--close", "fin"])
    client.result()
    end = server.result()["end"]
    assert end["outcome"] == "eof" and end["recv_returned"] == "b''"
    assert end["recv_bytes"] == 5 and "errno" not in end


def test_linger_zero_makes_recv_raise_connection_reset(tmp_path):
    _, server, client = pair(tmp_path, "abrupt_close", [], ["--close", "rst"])
    assert client.result()["events"][-1]["how"] == "RST"
    end = server.result()["end"]
    assert end["outcome"] == "ConnectionResetError" and end["errno"] == "ECONNRESET"
    assert end["shown"] == "ConnectionResetError: [Errno 104] Connection reset by peer"
    assert end["recv_bytes"] == 5             # the hello before the RST was still read


def test_write_to_a_closed_peer_succeeds_once_then_raises_broken_pipe(tmp_path):
    _, server, client = pair(tmp_path, "abrupt_close",
                             ["--write-after", "0.3", "--writes", "3", "--write-gap", "0.1"],
                             ["--close", "fin", "--length", "0", "--wait", "0"])
    client.result()
    doc = server.result()
    end = doc["end"]
    assert end["writes_ok"] == 1 and end["outcome"] == "BrokenPipeError"
    assert end["errno"] == "EPIPE" and end["shown"].startswith("BrokenPipeError: [Errno 32]")
    assert [e["event"] for e in doc["events"]][-2:] == ["send ok", "error"]


def test_keepalive_options_reach_the_socket():
    from toolkit.scenarios.abrupt_close import set_keepalive
    with socket.socket() as s:
        set_keepalive(s, 2, 3, 4)
        got = [s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
               *(s.getsockopt(socket.IPPROTO_TCP, o) for o in (
                   socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT))]
    assert got == [1, 2, 3, 4]


def test_roles_refuse_udp_and_bad_options(tmp_path):
    for name in ("states", "abrupt_close"):
        assert set(scenarios.roles(name)) == {"server", "client"}
    bad = subprocess.run([*CLI, "abrupt_close", "client", "127.0.0.1", "--close", "slam"],
                         capture_output=True, text=True, cwd=REPO, env=child_env())
    assert bad.returncode == 2 and "--close" in bad.stderr and "Traceback" not in bad.stderr
    udp = subprocess.run([*CLI, "states", "server", "-p", str(free_port()), "--proto", "udp",
                          "-q", "--json-file", str(tmp_path / "u.json")],
                         capture_output=True, text=True, cwd=REPO, env=child_env(),
                         timeout=30)
    assert udp.returncode == 2 and "--proto udp: TCP states need TCP" in udp.stderr


def test_sigint_ends_a_waiting_server_with_its_report(tmp_path):
    server = Role([*CLI, "abrupt_close", "server", "-p", str(free_port())],
                  tmp_path / "server.json").wait_ready()
    server.proc.send_signal(2)
    server.proc.communicate(timeout=10)
    doc = json.loads(server.report.read_text())
    assert doc["end"]["outcome"] == "stopped" and server.proc.returncode == 1


# ---------------------------------------------------------------- a vanishing host (lab)

VANISH = """table inet labkit_vanish {{
  chain in {{ type filter hook input priority 0; tcp sport {port} drop; }}
  chain out {{ type filter hook output priority 0; tcp dport {port} drop; }}
}}
"""


@pytest.mark.root
@pytest.mark.parametrize("how", ["keepalive", "user-timeout"])
def test_a_vanished_client_is_noticed_only_by_keepalive_or_a_write(tmp_path, how):
    """Host a's filter swallows the flow once it is connected: the reading server learns
    it through keep-alive, the writing one when TCP_USER_TIMEOUT ends its retransmissions;
    both as TimeoutError (ETIMEDOUT), within seconds."""
    network_or_skip()
    from toolkit import netlab
    server_args = (["--keepalive", "--keepidle", "1", "--keepintvl", "1", "--keepcnt", "1"]
                   if how == "keepalive" else
                   ["--write-after", "0.5", "--writes", "30", "--write-gap", "0.2",
                    "--user-timeout", "1"])
    with netlab.up(netlab.default_topology()) as lab:
        port, server, client = pair(
            tmp_path, "abrupt_close", server_args,
            ["--close", "vanish", "--length", "0", "--hold", "6"], host=lab.addr("b"),
            prefix_s=lab.prefix("b"), prefix_c=lab.prefix("a"), port=5299)
        deadline = time.monotonic() + 10
        while not any(st == "ESTAB" for st, *_ in ss_states(port, lab.prefix("a"))):
            assert time.monotonic() < deadline, "the client never connected"
            time.sleep(0.05)
        cut = lab.exec("a", ["nft", "-f", "-"], input=VANISH.format(port=port))
        assert cut.returncode == 0, cut.stderr
        end = server.result(timeout=20)["end"]
        client.proc.kill()
        client.proc.communicate()
    assert end["outcome"] == "TimeoutError" and end["errno"] == "ETIMEDOUT"
    assert 1.0 < end["connection_s"] < 6.0
    if how == "user-timeout":
        assert end["writes_ok"] >= 2             # writes only queue until the timeout


# ---------------------------------------------------------------- both views, one clock

def test_state_timeline_puts_the_capture_beside_ss():
    """02-states' saved run: each state of each end as the capture at b implies it and as
    ss on its host sampled it, on the traffic's clock."""
    from toolkit import labs
    from toolkit.labs import states
    run = labs.open_run(REPO / "captures" / "02-states")
    t = states.timeline(run, at="b")
    row = {(r.flow, r.role, r.state): r for r in t.itertuples()}
    tw = row[("server-first", "server", "TIME-WAIT")]
    assert tw.host == "b" and 50 <= tw.ss_timer_max_s <= 60 and tw.capture_s > 0
    assert tw.ss_first_s >= tw.capture_s - 0.2         # ss cannot see it before the FIN
    assert ("server-first", "client", "TIME-WAIT") not in row
    cw = row[("never-closes", "server", "CLOSE-WAIT")]
    assert cw.ss_samples >= 3 and cw.ss_last_s - cw.ss_first_s > 1.0
    # ss's names are mapped to the RFC's: no ESTAB, SYN-RECV in the table
    assert not set(t.state) & {"ESTAB", "SYN-RECV"}
    assert ("never-closes", "server", "ESTABLISHED") in row
    # a change the client's own segment makes (its SYN: SYN-SENT) is seen at a one-way
    # delay (100 ms) before b sees it; one the server's FIN makes (CLOSE-WAIT), after
    ta = states.timeline(run, at="a").set_index(["flow", "role", "state"])
    tb = t.set_index(["flow", "role", "state"])
    for state, sign in (("SYN-SENT", 1), ("CLOSE-WAIT", -1)):
        key = ("server-first", "client", state)
        lead = sign * (tb.loc[key, "capture_s"] - ta.loc[key, "capture_s"])
        assert 0.08 < lead < 0.15, state
