"""Every option of `labkit serve` and `labkit send`, in every mode, either does what it says
or is refused (exit 2, naming the option and the mode): never accepted and then ignored.

The walk reads the options from the parser itself, so an option added later is walked too:
each (option, mode) is either in WORKS, with the test that shows it working there, or must
be refused. A refusal is checked in-process, with the network entry points replaced by a
trap: nothing listens or sends, and an option that is not refused springs the trap."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
import option_walk as walk
from test_endpoints_loopback import Running, quiet, tcp_server
from toolkit import cli
from toolkit.commands.send import MODES as SEND_MODES
from toolkit.endpoints.servers import MODELS
from toolkit.endpoints.sockopts import SocketOptions
from toolkit.endpoints.udp import UdpReceiver

TESTS = Path(__file__).parent

# ---- the modes ----

SERVE = [("tcp", m) for m in MODELS] + [("udp", None)]
SEND = [("tcp", m) for m in SEND_MODES] + [("udp", m) for m in ("bulk", "paced", "stream",
                                                                 "rr")]


def _base(command: str, proto: str, mode, tmp: Path) -> list[str]:
    if command == "serve":
        return ["serve", "--proto", proto] + (["--model", mode] if mode else [])
    out = ["send", "127.0.0.1", "-p", "9", "--proto", proto, "--mode", mode]
    if mode == "paced":
        out += ["-b", "1M"]
    if mode == "file":
        out += ["--file", str(tmp / "f.bin")]
    return out


# a value for each option that takes one, valid on its own: a refusal is then the mode's
SAMPLE = {"--port": "9", "--bind": "127.0.0.1", "--model": "thread", "--clients": "2",
          "--time": "1", "--receive-dir": ".", "--limit": "1M", "--pause": "1",
          "--slow-read": "1M", "--idle": "1", "--interval": "1", "--json-file": "r.json",
          "--rcvbuf": "64K", "--sndbuf": "64K", "--backlog": "64", "--congestion": "reno",
          "--proto": "tcp", "--mode": "bulk", "--bytes": "1M", "--count": "5", "--rate": "1M",
          "--length": "100", "--response-size": "64", "--tps": "10", "--file": "f.bin",
          "--parallel": "2", "--flow": "7", "--cport": "40000"}

# ---- what works where, and the test that shows it ----

TCP = {m for m in SERVE if m[0] == "tcp"}
UDP = {m for m in SERVE if m[0] == "udp"}
ALL_SERVE = TCP | UDP
LOOP = "test_endpoints_loopback.py::"
OPTIONS_HERE = "test_cli_options_walk.py::"

SERVE_WORKS: dict[str, list[tuple[set, str]]] = {
    "--proto": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_reports_"
                 "each_interval")],
    "--model": [(TCP, LOOP + "test_every_model_serves_every_mode_and_tells_endings_apart")],
    "--port": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_reports_"
                "each_interval")],
    "--bind": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_reports_"
                "each_interval")],
    "--clients": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_"
                   "reports_each_interval")],
    "--one-off": [(TCP, "test_pacing.py::test_every_model_pauses_then_reads_slowly"),
                  (UDP, "test_udp_slow_reader.py::test_labkit_serve_udp_takes_pause_and_"
                   "rcvbuf")],
    "--time": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_on_time")],
    "--interval": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_"
                    "reports_each_interval")],
    "--json-file": [(ALL_SERVE, OPTIONS_HERE + "test_serve_stops_after_its_clients_and_"
                     "reports_each_interval")],
    "--json": [(ALL_SERVE, "test_json_option.py::test_json_is_the_document_on_stdout")],
    "--quiet": [(ALL_SERVE, "test_serve_paused_cpu.py::test_a_slow_reader_waits_without_"
                 "spinning")],
    "--receive-dir": [(TCP, "test_endpoints_files.py::test_every_model_refuses_and_"
                       "receives_alike")],
    "--limit": [(TCP, LOOP + "test_pipelined_rr_requests_are_answered_in_order")],
    "--pause": [(TCP, "test_pacing.py::test_every_model_pauses_then_reads_slowly"),
                (UDP, "test_udp_slow_reader.py::test_a_paused_reader_overflows_its_small_"
                 "buffer_and_the_kernel_drops_the_rest")],
    "--slow-read": [(TCP, "test_pacing.py::test_every_model_pauses_then_reads_slowly"),
                    (UDP, "test_udp_slow_reader.py::test_a_slow_reader_reads_at_its_rate_"
                     "and_its_buffer_overflows")],
    "--idle": [(UDP, "test_udp_slow_reader.py::test_a_flow_whose_end_markers_never_came_"
                "ends_after_the_idle_time")],
    "--nodelay": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                   "connections")],
    "--rcvbuf": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                  "connections"),
                 (UDP, "test_udp_slow_reader.py::test_labkit_serve_udp_takes_pause_and_"
                  "rcvbuf")],
    "--sndbuf": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                  "connections"),
                 (UDP, OPTIONS_HERE + "test_udp_receiver_socket_options")],
    "--linger0": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                   "connections")],
    "--no-reuseaddr": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                        "connections"),
                       (UDP, OPTIONS_HERE + "test_udp_receiver_socket_options")],
    "--backlog": [(TCP, LOOP + "test_every_model_listens_with_the_backlog_asked_for")],
    "--congestion": [(TCP, OPTIONS_HERE + "test_serve_socket_options_reach_every_models_"
                      "connections")],
}


def _send(*pairs) -> set:
    return {(p, m) for p, modes in pairs for m in modes.split()}


ALL_SEND = set(SEND)
TCP_SEND = _send(("tcp", "bulk paced stream rr echo file"))
UDP_SEND = _send(("udp", "bulk paced stream rr"))
STREAMS = _send(("tcp", "bulk paced stream"), ("udp", "bulk paced stream"))
RR = _send(("tcp", "rr echo"), ("udp", "rr"))
PAIR = LOOP + "test_cli_pair_writes_both_reports"
EVERY_MODE = LOOP + "test_every_model_serves_every_mode_and_tells_endings_apart"

SEND_WORKS: dict[str, list[tuple[set, str]]] = {
    "--proto": [(ALL_SEND, LOOP + "test_cli_cport_binds_the_senders_source_port")],
    "--port": [(ALL_SEND, LOOP + "test_cli_cport_binds_the_senders_source_port")],
    "--mode": [(ALL_SEND, LOOP + "test_cport_in_every_mode_and_again_past_time_wait")],
    "--time": [(ALL_SEND - _send(("tcp", "file")), PAIR)],
    "--bytes": [(STREAMS, EVERY_MODE)],
    "--count": [(RR | UDP_SEND, "test_send_options.py::test_count_and_tps_do_what_they_say_"
                 "in_rr")],
    "--rate": [(STREAMS, LOOP + "test_udp_paced_departures_are_even")],
    "--length": [(ALL_SEND - _send(("tcp", "file")), EVERY_MODE)],
    "--response-size": [(_send(("tcp", "rr"), ("udp", "rr")), LOOP + "test_udp_rr_response_"
                         "is_at_most_8_times_the_request")],
    "--tps": [(RR, "test_send_options.py::test_count_and_tps_do_what_they_say_in_rr")],
    "--file": [(_send(("tcp", "file")), "test_endpoints_files.py::test_the_cli_sender_"
                "stores_a_file_and_exits_0")],
    "--no-framing": [(_send(("tcp", "bulk stream")), EVERY_MODE)],
    "--no-gso": [(_send(("udp", "bulk paced stream")), LOOP + "test_udp_unpaced_uses_gso_"
                  "batches_and_rr_works")],
    "--parallel": [(TCP_SEND - _send(("tcp", "file")), "test_parallel_send.py::test_the_"
                    "sender_reports_every_connection_and_percentiles_over_all")],
    "--flow": [(ALL_SEND, "test_udp_slow_reader.py::test_a_reader_that_keeps_up_loses_"
                "nothing_and_the_socket_drops_none")],
    "--cport": [(ALL_SEND, LOOP + "test_cport_in_every_mode_and_again_past_time_wait")],
    "--interval": [(ALL_SEND, LOOP + "test_slow_reader_fills_the_window")],
    "--json-file": [(ALL_SEND, PAIR)],
    "--json": [(ALL_SEND, "test_json_option.py::test_json_is_the_document_on_stdout")],
    "--quiet": [(ALL_SEND, "test_send_options.py::test_count_and_tps_do_what_they_say_in_"
                 "rr")],
    "--nodelay": [(TCP_SEND, OPTIONS_HERE + "test_send_socket_options_reach_the_socket")],
    "--rcvbuf": [(ALL_SEND, OPTIONS_HERE + "test_send_socket_options_reach_the_socket")],
    "--sndbuf": [(ALL_SEND, LOOP + "test_slow_reader_fills_the_window")],
    "--linger0": [(TCP_SEND, EVERY_MODE)],
    "--no-reuseaddr": [(ALL_SEND, OPTIONS_HERE + "test_send_socket_options_reach_the_"
                        "socket")],
    "--congestion": [(TCP_SEND, OPTIONS_HERE + "test_send_socket_options_reach_the_"
                      "socket")],
}
WORKS = {"serve": SERVE_WORKS, "send": SEND_WORKS}
MODES = {"serve": SERVE, "send": SEND}


def _options(command: str) -> list[argparse.Action]:
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return walk.options(sub.choices[command])


_name = walk.name


Trap = walk.Trap


def _trap(*_a, **_k):
    raise Trap


@pytest.fixture
def trapped(monkeypatch, tmp_path):
    from toolkit.endpoints import parallel, servers, tcp, udp
    for mod, name in ((servers, "Server"), (udp, "UdpReceiver"), (tcp, "send"),
                      (udp, "send"), (parallel, "send_parallel")):
        monkeypatch.setattr(mod, name, _trap)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.bin").write_bytes(b"x" * 100)

    def run(argv: list[str]) -> tuple[int | str, str]:
        return walk.run_trapped(cli.main, argv)
    return run


@pytest.mark.parametrize("command", ["serve", "send"])
def test_every_option_works_or_is_refused_in_every_mode(command, trapped, tmp_path):
    works = WORKS[command]
    unknown = [_name(a) for a in _options(command) if _name(a) not in works]
    missing_sample = [_name(a) for a in _options(command)
                      if a.nargs != 0 and _name(a) not in SAMPLE]
    assert not missing_sample, f"give these a SAMPLE value: {missing_sample}"
    problems = []
    for action in _options(command):
        name = _name(action)
        for proto, mode in MODES[command]:
            if any((proto, mode) in where for where, _ in works.get(name, ())):
                continue
            base = _base(command, proto, mode, tmp_path)
            if name in ("--proto", "--mode"):
                problems.append(f"{name} in {proto} {mode}: the mode itself must work")
                continue
            value = [] if action.nargs == 0 else [SAMPLE[name]]
            flag = action.option_strings[0]
            code, err = trapped([*base, flag, *value])
            named = any(re.search(rf"(^|[\s/]){re.escape(o)}\b", err)
                        for o in action.option_strings)
            said_mode = any(w and w.lower() in err.lower() for w in (proto, mode))
            if code != 2 or not named or not said_mode:
                problems.append(f"{command} {flag} in {proto} {mode or ''}: neither listed in "
                                f"WORKS nor refused (exit {code}: {err.strip()!r})")
    assert not problems, "\n".join(problems)
    assert not unknown or not problems      # an unlisted option must be refused everywhere


def test_every_mode_and_the_base_of_every_walk_is_accepted(trapped, tmp_path):
    for command in ("serve", "send"):
        for proto, mode in MODES[command]:
            code, err = trapped(_base(command, proto, mode, tmp_path))
            assert code == "accepted", (command, proto, mode, err)
    for mode in ("echo", "file"):                   # modes UDP has not, refused
        code, err = trapped(["send", "127.0.0.1", "--proto", "udp", "--mode", mode,
                             "--file", "f.bin"] if mode == "file" else
                            ["send", "127.0.0.1", "--proto", "udp", "--mode", mode])
        assert code == 2 and "--mode" in err and mode in err, err


def test_every_test_named_in_the_tables_exists():
    assert not walk.missing_tests(WORKS)


# ---- the behaviours the tables point at, where no other test shows them ----

def _serve_cli(*args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "-p", "0", "-B",
                             "127.0.0.1", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert "listening" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc, int(line.split("port")[1].split()[0])


def _send_cli(proto: str, port: int, seconds: str) -> None:
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "send", "127.0.0.1", "-p",
                           str(port), "--proto", proto, "-t", seconds, "-b", "8M", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model", [*MODELS, "udp"])
def test_serve_stops_after_its_clients_and_reports_each_interval(model, tmp_path):
    report = tmp_path / "serve.json"
    where = ["--proto", "udp", "--idle", "1"] if model == "udp" else ["--model", model]
    proc, port = _serve_cli(*where, "--clients", "2", "-t", "30", "-i", "0.2", "--json-file",
                            str(report))
    try:
        for _ in range(2):
            _send_cli("udp" if model == "udp" else "tcp", port, "0.6")
        assert proc.wait(10) == 0                  # after its two clients, not -t 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    doc = json.loads(report.read_text())
    assert len(doc["connections"]) == 2
    assert len(doc["intervals"]) >= 4, doc["intervals"]        # 1.2 s of traffic, -i 0.2


@pytest.mark.parametrize("model", [*MODELS, "udp"])
def test_serve_stops_on_time(model):
    where = ["--proto", "udp"] if model == "udp" else ["--model", model]
    t0 = time.monotonic()
    proc, _ = _serve_cli(*where, "-t", "0.5")
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert time.monotonic() - t0 < 5


_server_side = walk.server_side


@pytest.mark.parametrize("nodelay", [True, False])
@pytest.mark.parametrize("model", [m for m in MODELS if m != "process"])
def test_serve_socket_options_reach_every_models_connections(model, nodelay, tmp_path):
    """-N, --rcvbuf, --sndbuf, --linger0, -C and --no-reuseaddr hold on the connections
    the server accepts, in each model (asyncio turned Nagle off whatever -N said). The
    process model accepts as the iterative one does; its child inherits that socket."""
    import struct
    opts = SocketOptions(nodelay=nodelay, rcvbuf=48 << 10, sndbuf=40 << 10, linger0=True,
                         congestion="reno", reuseaddr=False)
    srv = tcp_server(model, tmp_path, options=opts)
    assert not srv.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with Running(srv):
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        time.sleep(0.3)                       # accepted, and (asyncio) its transport made
        s = _server_side(srv.port, c.getsockname())
        try:
            assert bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is nodelay
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * (48 << 10)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * (40 << 10)
            assert struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                    8)) == (1, 0)
            assert s.getsockopt(socket.IPPROTO_TCP, 13, 16).rstrip(b"\0") == b"reno"
        finally:
            s.close()
            c.close()


def test_udp_receiver_socket_options():
    rx = UdpReceiver(0, "127.0.0.1", options=SocketOptions(rcvbuf=32 << 10, sndbuf=24 << 10,
                                                           reuseaddr=False),
                     report=quiet("receiver", "udp", "udp"))
    try:
        assert rx.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * (24 << 10)
        assert not rx.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert rx.report.doc["start"]["options"]["sndbuf"] == 2 * (24 << 10)
    finally:
        rx.sock.close()


def test_send_socket_options_reach_the_socket():
    """A sender's -N, --rcvbuf, --no-reuseaddr and -C, as the server sees the connection
    and as the sender's report says."""
    from toolkit.endpoints.tcp import TcpSendConfig
    from toolkit.endpoints.tcp import send as tcp_send
    lst = socket.create_server(("127.0.0.1", 0))
    got = {}

    def accept():
        conn, _ = lst.accept()
        while conn.recv(65536):
            pass
        conn.close()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    doc = tcp_send(TcpSendConfig("127.0.0.1", lst.getsockname()[1], "bulk", total_bytes=1000,
                                 options=SocketOptions(nodelay=True, rcvbuf=48 << 10,
                                                       reuseaddr=False, congestion="reno")),
                   quiet())
    t.join(10)
    lst.close()
    got = doc["start"]["options"]
    assert got["nodelay"] is True and got["congestion"] == "reno"
    assert got["rcvbuf"] == 2 * (48 << 10) and got["reuseaddr"] is False
