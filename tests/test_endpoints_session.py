"""The server's view of one TCP connection, with byte literals and no sockets."""

from __future__ import annotations

import hashlib
import json

import pytest

from toolkit import wire
from toolkit.endpoints import control
from toolkit.endpoints.sessions import MAX_READS_KEPT, Session


def hello(mode, **params):
    return control.encode(7, control.hello("tcp", mode, 7, **params))


def data(seq, body=b"x" * 10, kind=wire.KIND_DATA, send_ns=1_000):
    return wire.frame(wire.Header(7, seq, send_ns, 0, kind), body)


def controls(raw: bytes) -> list[dict]:
    return [control.decode(h, b) for h, b in wire.Deframer().feed(raw)]


def test_bulk_counts_messages_whatever_the_read_boundaries():
    stream = hello("bulk") + b"".join(data(i) for i in [0, 1, 3, 2, 4])
    for cut in (1, 7, 33, len(stream)):
        s = Session("peer")
        for i in range(0, len(stream), cut):
            assert s.received(stream[i:i + cut], now_ns=2_000) == b""
        final = controls(s.peer_closed())
        rep = final[-1]
        assert rep["type"] == "report" and rep["mode"] == "bulk" and rep["error"] is None
        m = rep["messages"]
        assert (m["packets"], m["lost"], m["reordered"]) == (5, 0, 1), cut


def test_rr_answers_each_request_with_its_sequence_number():
    s = Session()
    out = s.received(hello("rr", response_size=100) + data(0, kind=wire.KIND_REQUEST)
                     + data(1, kind=wire.KIND_REQUEST))
    frames = wire.Deframer().feed(out)
    assert [(h.kind, h.seq, len(b)) for h, b in frames] == [
        (wire.KIND_RESPONSE, 0, 100), (wire.KIND_RESPONSE, 1, 100)]
    assert s.responses == 2


@pytest.mark.parametrize("stream,words", [
    (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20, "bad magic"),
    (hello("bulk") + b"LBK1\x09" + bytes(27), "unsupported header version 9"),
    (hello("bulk") + wire.Header(7, 0, 0, 1 << 30).pack(), "exceeds the limit"),
    (hello("bulk") + data(0, kind=wire.KIND_REQUEST), "expects data messages"),
    (control.encode(7, {"type": "report"}), "expected hello"),
    (data(0), "the first message must be a hello"),
    (hello("teleport"), "modes bulk, paced"),
    (hello("rr", response_size=1 << 40), "response_size"),
    (hello("unframed", message_sizes=[]), "message_sizes"),
    (hello("file", file={"name": "x"}), "needs name, size and sha256"),
])
def test_malformed_streams_end_the_session_with_a_clear_error(stream, words):
    s = Session()
    s.received(stream)
    assert s.error is not None and words in s.error, s.error
    assert s.ended == "error"
    assert s.received(data(5)) == b""           # nothing more is taken in
    assert s._deframer is None or s._deframer.buffered <= wire.HEADER_LEN


@pytest.mark.parametrize("tail,words", [
    (b"LBK1\x01", "truncated header (5 of 32 bytes)"),
    (wire.Header(7, 0, 0, 100).pack() + b"abc", "inside a message body (3 of 100"),
])
def test_a_stream_that_stops_mid_frame_is_an_error_at_close(tail, words):
    s = Session()
    s.received(hello("bulk") + data(0) + tail)
    assert s.peer_closed() == b""
    assert words in s.error


def test_truncated_hello_at_close():
    s = Session()
    s.received(hello("bulk")[:10])
    s.peer_closed()
    assert "inside the hello header" in s.error


def test_a_huge_length_field_never_makes_it_buffer():
    s = Session(limit=1 << 20)
    s.received(hello("bulk") + wire.Header(7, 0, 0, (1 << 20) - 1).pack())
    for _ in range(100):
        s.received(b"y" * 9000)
    assert s.error is None and s._deframer.buffered == 900_000
    s.received(b"y" * 200_000)                     # completes it, the rest is a bad header
    assert "bad magic" in s.error


def _file_hello(content: bytes, name="notes.txt", **override):
    meta = {"name": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    meta.update(override)
    return hello("file", file=meta)


def test_file_transfer_is_verified_and_atomic(tmp_path):
    content = bytes(range(256)) * 1000
    s = Session(out_dir=tmp_path)
    chunks = [content[i:i + 65536] for i in range(0, len(content), 65536)]
    s.received(_file_hello(content) + b"".join(
        data(i, c, wire.KIND_FILE) for i, c in enumerate(chunks)))
    assert not (tmp_path / "notes.txt").exists()          # not before it is verified
    verdict = controls(s.peer_closed())[0]
    assert verdict == {"type": "file", "ok": True, "name": "notes.txt",
                       "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    assert (tmp_path / "notes.txt").read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]   # no temporary left


@pytest.mark.parametrize("override,sent,words", [
    ({"sha256": "0" * 64}, b"hello", "SHA-256 mismatch"),
    ({}, b"hel", "got 3 of 5 bytes"),
])
def test_a_bad_file_is_refused_and_leaves_nothing(tmp_path, override, sent, words):
    s = Session(out_dir=tmp_path)
    s.received(_file_hello(b"hello", **override) + data(0, sent, wire.KIND_FILE))
    verdict = controls(s.peer_closed())[0]
    assert verdict["ok"] is False and words in verdict["error"]
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_cannot_escape_the_directory(tmp_path):
    s = Session(out_dir=tmp_path / "in")
    (tmp_path / "in").mkdir()
    s.received(_file_hello(b"hi", name="../../etc/passwd") + data(0, b"hi", wire.KIND_FILE))
    assert controls(s.peer_closed())[0]["ok"]
    assert (tmp_path / "in" / "passwd").read_bytes() == b"hi"


def test_more_file_data_than_announced_is_an_error(tmp_path):
    s = Session(out_dir=tmp_path)
    s.received(_file_hello(b"hi") + data(0, b"hi!", wire.KIND_FILE))
    assert "beyond the announced size" in s.error
    assert list(tmp_path.iterdir()) == []


def test_unframed_reads_are_lined_up_with_the_promised_messages():
    s = Session()
    s.received(hello("unframed", message_sizes=[100]))
    for n in (100, 250, 50):
        s.received(b"z" * n)
    rep = controls(s.peer_closed())[-1]
    assert rep["alignment"] == {"reads": 3, "messages": 4, "exact": 1, "glued": 1,
                                "partial": 1, "split_messages": 1}
    assert MAX_READS_KEPT >= 1 << 20


def test_reset_is_recorded():
    s = Session()
    s.received(hello("bulk") + data(0))
    s.reset()
    assert s.report()["ended"] == "reset"


def test_control_messages_reject_garbage():
    h = wire.Header(1, 0, 0, 3, wire.KIND_CONTROL)
    with pytest.raises(control.ProtocolError, match="not JSON"):
        control.decode(h, b"{{{")
    with pytest.raises(control.ProtocolError, match="without a type"):
        control.decode(h, json.dumps([1]).encode())
    with pytest.raises(ValueError, match="exceeds"):
        control.encode(1, {"type": "x", "pad": "p" * (control.MAX_CONTROL + 1)})
