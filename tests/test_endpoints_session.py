"""The server's view of one TCP connection, with byte literals and no sockets."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from toolkit import wire
from toolkit.endpoints import control
from toolkit.endpoints.sessions import MAX_READS_KEPT, Session


def hello(mode, **params):
    return control.encode(7, control.hello("tcp", mode, 7, **params))


def raw_hello(**fields):
    """A hello with any field set to anything, as a hostile or broken client writes it."""
    return control.encode(7, {**control.hello("tcp", "bulk", 7), **fields})


def data(seq, body=b"x" * 10, kind=wire.KIND_DATA, send_ns=1_000):
    return wire.frame(wire.Header(7, seq, send_ns, 0, kind), body)


def _fields(raw: bytes) -> list[tuple]:
    """Each frame's fields and body, all but the send time (which differs run to run)."""
    return [(h.flow, h.seq, h.length, h.kind, b) for h, b in wire.Deframer().feed(raw)]


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


def test_held_messages_give_the_statistics_of_one_at_a_time():
    """A session holds up to HELD_ROWS messages before its statistics take them in one
    batch: the report is what one message at a time gives (losses, duplicates, reordering,
    delay, jitter), and the rows held never exceed the bound."""
    import random

    from toolkit.endpoints.sessions import HELD_ROWS
    from toolkit.endpoints.stats import SequenceStats
    rng = random.Random(5)
    seqs = [i for i in range(3 * HELD_ROWS + 17) if rng.random() > 0.01]
    for _ in range(40):                       # some swapped, some repeated
        i = rng.randrange(len(seqs) - 1)
        seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
        seqs.insert(rng.randrange(len(seqs)), rng.choice(seqs))
    sends = [1_000 + 100 * i + rng.randrange(50) for i in range(len(seqs))]
    s = Session("peer")
    s.received(hello("bulk"), now_ns=1)
    reference = SequenceStats()
    for k, (seq, send_ns) in enumerate(zip(seqs, sends)):
        frame = data(seq, body=b"y" * 100, send_ns=send_ns)
        now_ns = 10_000 + 100 * k
        s.received(frame[:50], now_ns=now_ns)            # a read inside the message
        s.received(frame[50:], now_ns=now_ns)            # the read that completes it
        reference.add(seq, send_ns, now_ns, len(frame))
        assert len(s._held[0]) < HELD_ROWS
    got = s.report()["messages"]
    assert got == reference.totals(s.same_clock)
    assert got["duplicates"] > 0 and got["reordered"] > 0 and got["lost"] > 0


def test_a_sequence_number_past_int64_is_stray_not_an_error():
    """The header's seq is unsigned 64-bit; no sender numbers that high, and the counts
    stay bounded whatever arrives: stray, and the session goes on."""
    s = Session("peer")
    s.received(hello("bulk") + data(2**63 + 5) + data(0) + data(2**64 - 1), now_ns=2_000)
    rep = s.report()
    assert rep["error"] is None
    assert (rep["messages"]["stray"], rep["messages"]["packets"]) == (2, 1)


def test_rr_answers_each_request_with_its_sequence_number():
    s = Session()
    out = s.received(hello("rr", response_size=100) + data(0, kind=wire.KIND_REQUEST)
                     + data(1, kind=wire.KIND_REQUEST))
    frames = wire.Deframer().feed(out)
    assert [(h.kind, h.seq, len(b)) for h, b in frames] == [
        (wire.KIND_RESPONSE, 0, 100), (wire.KIND_RESPONSE, 1, 100)]
    assert s.responses == 2



def test_rr_a_request_alone_in_a_read_is_answered_as_any_other():
    """A read of one whole request (the usual one) is answered at once (Session.answer,
    which the blocking server models also call on their own); the same requests glued in
    one read go through the deframer and the queue. The same responses, field by field but
    the send time, and the same statistics."""
    reqs = [wire.frame(wire.Header(flow, seq, 1_000 + seq, 0, wire.KIND_REQUEST), b"q" * 20)
            for flow, seq in ((7, 0), (7, 1), (9, 2), (7, 4), (7, 3))]
    lone, glued = Session(), Session()
    for s in (lone, glued):
        s.received(hello("rr", response_size=48))
    answered = []                               # the fast path, taken for each lone one
    answer = lone.answer

    def counted(data, now_ns=None):
        reply = answer(data, now_ns)
        if reply is not None:
            answered.append(wire.STRUCT.unpack_from(data)[5])
        return reply

    lone.answer = counted
    alone = b"".join(lone.received(r, now_ns=5_000) for r in reqs)
    assert answered == [0, 1, 2, 4, 3]
    together = glued.received(b"".join(reqs), now_ns=5_000)
    while glued.pending:
        together += glued.more()

    assert _fields(alone) == _fields(together) == [
        (flow, seq, 48, wire.KIND_RESPONSE, bytes(48)) for flow, seq in
        ((7, 0), (7, 1), (9, 2), (7, 4), (7, 3))]
    assert lone.responses == glued.responses == 5 and lone.read_count == 6
    for s in (lone, glued):
        s.peer_closed()
    assert lone.report()["messages"] == glued.report()["messages"]
    # a lone frame of another kind: a protocol error, said to the client
    bad = Session()
    bad.received(hello("rr", response_size=48))
    said = controls(bad.received(data(0)))
    assert bad.error == "rr expects requests, got kind 0" and said[0]["type"] == "error"


@pytest.mark.parametrize("read", [
    pytest.param(lambda req: req + req, id="two requests"),
    pytest.param(lambda req: req[:20], id="a request's start"),
    pytest.param(lambda req: data(0, b"q" * 20), id="a data message"),
    pytest.param(lambda req: req[:-1], id="a frame one byte short"),
])
def test_answer_takes_nothing_but_one_whole_request(read):
    """answer() answers a read of exactly one whole request; any other read gets None and
    leaves the session as it was, so received() then takes the read as it would have."""
    req = wire.frame(wire.Header(7, 0, 1_000, 0, wire.KIND_REQUEST), b"q" * 20)
    tried, fresh = Session(), Session()
    for s in (tried, fresh):
        s.received(hello("rr", response_size=48))
    assert Session().answer(req) is None                # no hello yet: not rr
    assert tried.answer(read(req)) is None
    assert tried.read_count == fresh.read_count and tried.bytes_in == fresh.bytes_in
    assert _fields(tried.received(read(req))) == _fields(fresh.received(read(req)))
    assert (tried.error, tried.responses, tried.pending) == \
        (fresh.error, fresh.responses, fresh.pending)
    lone = Session()
    lone.received(hello("rr", response_size=48))
    reply = lone.answer(req)
    (h, body), = wire.Deframer().feed(reply)
    assert (h.flow, h.seq, h.kind, body) == (7, 0, wire.KIND_RESPONSE, bytes(48))
    assert lone.read_count == 2 and lone.responses == 1

def test_a_fault_inside_answer_is_sent_to_the_peer_as_received_would(monkeypatch):
    """answer() runs on the blocking servers' own request/response loop, outside
    received(): a fault inside it (a bug, never the input) gives None, so the loop hands
    the read to the conversation, and received() then sends the peer the error, once."""
    req = wire.frame(wire.Header(7, 0, 1_000, 0, wire.KIND_REQUEST), b"q" * 20)
    s = Session()
    s.received(hello("rr", response_size=48))

    def broken(*a):
        raise RuntimeError("no such thing")
    monkeypatch.setattr(s, "_respond", broken)
    assert s.answer(req) is None
    assert s.error == "internal error on this input: RuntimeError: 'no such thing'"
    said = controls(s.received(req))
    assert [m["type"] for m in said] == ["error"] and said[0]["error"] == s.error
    assert s.received(req) == b"" and s.ended == "error"          # said once


MALFORMED = [
    (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20, "bad magic"),
    (hello("bulk") + b"LBK1\x09" + bytes(27), "unsupported header version 9"),
    (hello("bulk") + wire.Header(7, 0, 0, 1 << 30).pack(), "exceeds the limit"),
    (hello("bulk") + data(0, kind=wire.KIND_REQUEST), "expects data messages"),
    (control.encode(7, {"type": "report"}), "expected hello"),
    (data(0), "the first message must be a hello"),
    (hello("teleport"), "modes bulk, paced"),
    (hello("rr", response_size=1 << 40), "response_size"),
    (hello("unframed", message_sizes=[]), "message_sizes"),
    (hello("file", file={"name": "x"}), "does not receive files"),
    (raw_hello(flow="7"), "hello flow '7'"),
    (raw_hello(flow=1 << 40), "a flow id is 0 to 4294967295"),
    (raw_hello(flow=[1]), "hello flow [1]"),
    (raw_hello(mode="\x1b]0;owned\x07"), "'\\x1b]0;owned\\x07'"),
    (hello("rr", response_size=True), "response_size True"),
    (hello("unframed", message_sizes=[1 << 70]), "message_sizes"),
    (hello("unframed", message_sizes=[1.5]), "message_sizes"),
]


# ids by index: a control message carries its send time, so ids made from the bytes differ
# between the two test processes of `make test` (pytest-xdist collects in each)
@pytest.mark.parametrize("stream,words", MALFORMED, ids=[f"case{i}" for i in
                                                        range(len(MALFORMED))])
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
    said = controls(s.peer_closed())          # the error goes back to the client too
    assert [m["type"] for m in said] == ["error"] and words in said[0]["error"]
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
    s = Session(receive_dir=tmp_path)
    chunks = [content[i:i + 65536] for i in range(0, len(content), 65536)]
    ready = controls(s.received(_file_hello(content) + b"".join(
        data(i, c, wire.KIND_FILE) for i, c in enumerate(chunks))))
    assert ready == [{"type": "ready", "name": "notes.txt", "size": len(content)}]
    assert not (tmp_path / "notes.txt").exists()          # not before it is verified
    verdict = controls(s.peer_closed())[0]
    assert verdict == {"type": "file", "ok": True, "name": "notes.txt",
                       "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    assert (tmp_path / "notes.txt").read_bytes() == content
    assert (tmp_path / "notes.txt").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]   # no temporary left


def test_file_hello_needs_name_size_and_sha256(tmp_path):
    s = Session(receive_dir=tmp_path)
    s.received(hello("file", file={"name": "x"}))
    assert "needs name, size and sha256" in s.error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override,sent,words", [
    ({"sha256": "0" * 64}, b"hello", "SHA-256 mismatch"),
    ({}, b"hel", "got 3 of 5 bytes"),
])
def test_a_bad_file_is_refused_and_leaves_nothing(tmp_path, override, sent, words):
    s = Session(receive_dir=tmp_path)
    s.received(_file_hello(b"hello", **override) + data(0, sent, wire.KIND_FILE))
    verdict = controls(s.peer_closed())[0]
    assert verdict["ok"] is False and words in verdict["error"]
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_cannot_escape_the_directory(tmp_path):
    # a path is refused outright (it used to be cut to its last part and stored)
    s = Session(receive_dir=tmp_path / "in")
    (tmp_path / "in").mkdir()
    said = controls(s.received(_file_hello(b"hi", name="../../etc/passwd")
                               + data(0, b"hi", wire.KIND_FILE)))
    assert said[0]["type"] == "error" and "starts with a dot" in said[0]["error"]
    assert [p.name for p in tmp_path.iterdir()] == ["in"]
    assert list((tmp_path / "in").iterdir()) == []


def test_more_file_data_than_announced_is_an_error(tmp_path):
    s = Session(receive_dir=tmp_path)
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


# ---- what a peer sends must not become an unbounded allocation, a crash or a path ----

def test_rr_answers_a_batch_of_requests_a_budget_at_a_time():
    from toolkit.endpoints.sessions import RESPONSE_BUDGET
    size = 1 << 20
    s = Session(limit=size)
    # 200 requests of 32 bytes in one read would be 200 MB of responses made at once
    out = s.received(hello("rr", response_size=size) + b"".join(
        data(i, b"", kind=wire.KIND_REQUEST) for i in range(200)))
    assert len(out) <= RESPONSE_BUDGET + size + wire.HEADER_LEN
    assert s.pending
    seqs = []
    while out:
        seqs += [h.seq for h, _ in wire.Deframer(size).feed(out)]
        out = s.more()
    assert seqs == list(range(200)) and s.responses == 200 and not s.pending


def test_rr_response_size_is_bounded_by_the_servers_limit():
    s = Session(limit=1000)
    said = controls(s.received(hello("rr", response_size=1001)))
    assert said[0]["type"] == "error" and "0 to 1000 bytes" in said[0]["error"]
    assert s._reply is None                       # nothing allocated for it


@pytest.mark.parametrize("body", [
    b"[" * 60_000,                                  # deeper than the JSON parser recurses
    b'{"type": "hello", "flow": ' + b"9" * 5000 + b"}",   # longer than int() converts
    b'"just a string"',
    b"\xff\xfe",
])
def test_a_hostile_hello_ends_the_session_and_never_raises(body):
    s = Session()
    said = controls(s.received(wire.frame(wire.Header(7, 0, 0, 0, wire.KIND_CONTROL), body)))
    assert said[0]["type"] == "error" and s.ended == "error", s.error


def test_unframed_report_costs_memory_per_read_not_per_promised_message():
    import tracemalloc
    s = Session()
    s.received(hello("unframed", message_sizes=[1]))
    for _ in range(64):
        s.received(b"z" * (1 << 20))              # 64 MB promised as 1-byte messages
    tracemalloc.start()
    try:
        rep = controls(s.peer_closed())[-1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep["alignment"]["messages"] == 64 << 20
    assert peak < 10 << 20, peak                  # a list of every message end: 512 MB


def test_a_file_goes_into_place_without_hard_links_too(tmp_path, monkeypatch):
    import errno

    def no_links(*a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    s = Session(receive_dir=tmp_path)
    s.received(_file_hello(b"hi", name="a.txt") + data(0, b"hi", wire.KIND_FILE))
    assert controls(s.peer_closed())[0]["ok"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    # and renameat2(RENAME_NOREPLACE) refuses a name that appeared meanwhile
    s = Session(receive_dir=tmp_path)
    s.received(_file_hello(b"yo", name="b.txt") + data(0, b"yo", wire.KIND_FILE))
    (tmp_path / "b.txt").write_bytes(b"first")
    verdict = controls(s.peer_closed())[0]
    assert verdict["ok"] is False and "meanwhile" in verdict["error"]
    assert (tmp_path / "b.txt").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_released_session_leaves_no_temporary_file(tmp_path):
    s = Session(receive_dir=tmp_path)
    s.received(_file_hello(b"hello", name="c.txt") + data(0, b"he", wire.KIND_FILE))
    assert len(list(tmp_path.iterdir())) == 1     # the temporary file, hidden
    s.release()                                   # the server stopped, say
    assert list(tmp_path.iterdir()) == []
