"""One read pacing and one account of how a client left (pacing.py), for every server
model: the schedule and the endings as pure logic, then each model reading slowly."""

from __future__ import annotations

import socket
import time

import pytest

from test_endpoints_loopback import Running, quiet, tcp_server
from toolkit import wire
from toolkit.endpoints import control
from toolkit.endpoints.pacing import READ, SEND, SHUTDOWN, WAIT, Conversation, ReadPacer
from toolkit.endpoints.servers import MODELS
from toolkit.endpoints.sessions import Session
from toolkit.endpoints.tcp import TcpSendConfig
from toolkit.endpoints.tcp import send as tcp_send


def test_the_pacer_pauses_then_reads_at_its_rate_with_no_credit_for_waiting():
    p = ReadPacer(pause_s=1.5, rate_bps=8000, now=10.0)
    assert p.wait(10.0) == 1.5 and p.wait(12.0) == 0
    assert p.size(1 << 18) == 4096
    p.read(1000, now=20.0)                    # 8000 bits at 8000 bits/s: a second
    assert p.wait(20.0) == pytest.approx(1.0) and p.wait(21.0) == 0
    p.read(0, now=30.0)                       # nothing read: no wait
    assert p.wait(30.0) == 0
    assert ReadPacer().size(1 << 18) == 1 << 18 and ReadPacer().wait(0.0) == 0
    with pytest.raises(ValueError):
        ReadPacer(pause_s=-1)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _talk(pause_s=0.0, rate_bps=0.0):
    clock = Clock()
    session = Session("peer")
    return Conversation(session, ReadPacer(pause_s, rate_bps, clock()), clock), session, clock


def _bulk(n: int) -> bytes:
    return control.encode(1, control.hello("tcp", "bulk", 1)) + b"".join(
        wire.frame(wire.Header(1, i, 0), bytes(100)) for i in range(n))


def _through_fin(talk: Conversation, answer):
    """Read b'' (the FIN), take the report and our FIN, then answer the last read."""
    assert talk.done(b"").kind == SEND
    assert talk.done().kind == SHUTDOWN
    assert talk.done().kind == READ
    return answer(talk)


@pytest.mark.parametrize("answer, how", [
    (lambda t: t.done(b""), "half-close"),
    (lambda t: t.failed(TimeoutError()), "half-close"),
    (lambda t: t.failed(ConnectionResetError()), "close"),
    (lambda t: t.done(b"x"), "close"),
])
def test_how_a_client_left_after_its_fin(answer, how):
    talk, session, _ = _talk()
    assert talk.op.kind == READ
    assert talk.done(_bulk(3)).kind == READ
    assert _through_fin(talk, answer) is None
    assert talk.how == how and session.stats.totals(False)["packets"] == 3


def test_a_reset_a_timeout_and_a_protocol_error_while_open():
    talk, session, _ = _talk()
    talk.done(_bulk(1))
    assert talk.failed(ConnectionResetError()) is None and talk.how == "reset"
    assert session.ended == "reset"
    talk, session, _ = _talk()
    assert talk.failed(TimeoutError("timed out")) is None and talk.how == "error"
    assert "TimeoutError" in session.error
    talk, session, _ = _talk()
    op = talk.done(b"GET / HTTP/1.1\r\n\r\n" + bytes(64))
    assert op.kind == SEND and b"error" in op.arg           # why, before closing
    assert talk.done() is None and talk.how == "error"


def test_the_conversation_waits_as_the_pacer_says():
    talk, _, clock = _talk(pause_s=2.0, rate_bps=8 * 4096)
    assert talk.op == (WAIT, 2.0, 60.0)
    clock.t += 2.0
    assert talk.done().kind == READ and talk.op.arg == 4096
    op = talk.done(_bulk(30)[:4096])
    assert op.kind == WAIT and op.arg == pytest.approx(1.0)  # 4096 bytes at 4096 B/s


@pytest.mark.parametrize("model", MODELS)
def test_every_model_pauses_then_reads_slowly(model, tmp_path):
    # 0.3 s of pause, then 40 KB at 400 kbit/s: about 0.8 s more
    srv = tcp_server(model, tmp_path, pause_s=0.3, slow_read_bps=400e3, max_connections=1)
    with Running(srv):
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        t0 = time.monotonic()
        c.sendall(control.encode(1, control.hello("tcp", "bulk", 1)))
        c.settimeout(0.25)
        with pytest.raises(TimeoutError):     # paused: nothing read, nothing answered
            c.recv(1)
        c.settimeout(10)
        c.sendall(b"".join(wire.frame(wire.Header(1, i, time.time_ns()), bytes(968))
                           for i in range(40)))
        c.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := c.recv(65536):
            answer += chunk
        took = time.monotonic() - t0
        c.close()
    (rec,) = srv.report.doc["connections"]
    assert rec["how"] == "half-close" and rec["messages"]["packets"] == 40, rec
    assert 1.0 <= took < 3.0, took
    assert rec["reads"] >= 10                  # 4 KB at a time


def test_a_sender_against_every_model_sees_the_same_endings(tmp_path):
    for model in MODELS:
        srv = tcp_server(model, tmp_path, slow_read_bps=4e6, max_connections=1)
        with Running(srv):
            doc = tcp_send(TcpSendConfig("127.0.0.1", srv.port, "bulk", total_bytes=200_000),
                           quiet())
        assert doc["end"]["peer"]["messages"]["payload_bytes"] == 200_000, model
        assert [c["how"] for c in srv.report.doc["connections"]] == ["half-close"], model
