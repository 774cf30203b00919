"""The blocking servers' operations: one system call a read (the kernel's timeouts, set
when they change, not Python's timeout mode), and a timeout still a TimeoutError."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from toolkit.endpoints import pacing
from toolkit.endpoints.servers import _Blocking


@pytest.fixture
def pair():
    lst = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lst.getsockname())
    conn, _ = lst.accept()
    lst.close()
    yield client, conn
    client.close()
    conn.close()


class Counting:
    """A socket that counts the calls made on it."""

    def __init__(self, sock):
        self.sock, self.calls = sock, {}

    def __getattr__(self, name):
        attr = getattr(self.sock, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args)
        return counted


def test_reads_set_the_timeout_once_and_make_one_call_each(pair):
    client, conn = pair
    counting = Counting(conn)
    carry_out = _Blocking(counting)
    view = memoryview(bytearray(4096))
    got = b""
    for i in range(50):
        client.sendall(bytes([i]) * 100)
        while len(got) < 100 * (i + 1):
            got += bytes(carry_out(pacing.Op(pacing.READ, 4096, 5.0), view))
    assert got == b"".join(bytes([i]) * 100 for i in range(50))
    assert counting.calls["setsockopt"] == 1                 # SO_RCVTIMEO, once
    assert counting.calls["settimeout"] == 1                 # blocking, once
    assert counting.calls["recv_into"] >= 50
    assert set(counting.calls) == {"settimeout", "setsockopt", "recv_into"}
    # a new timeout is set once more
    client.sendall(b"x")
    assert bytes(carry_out(pacing.Op(pacing.READ, 10, 2.0), view)) == b"x"
    assert counting.calls["setsockopt"] == 2
    assert conn.gettimeout() is None                         # no poll() before each read


def test_a_silent_peer_times_a_read_out(pair):
    _, conn = pair
    carry_out = _Blocking(conn)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        carry_out(pacing.Op(pacing.READ, 10, 0.3), memoryview(bytearray(10)))
    assert 0.25 <= time.monotonic() - t0 < 5


def test_a_peer_that_reads_nothing_times_a_send_out(pair):
    client, conn = pair
    for s in (client, conn):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    carry_out = _Blocking(conn)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        carry_out(pacing.Op(pacing.SEND, b"y" * (8 << 20), 0.3), None)
    assert 0.25 <= time.monotonic() - t0 < 5


def test_a_selectors_connection_that_keeps_receiving_never_times_out():
    """The selectors model starts an operation's timeout when it first sees the operation:
    each read must be a new one, or a transfer longer than IDLE_S fails while data flows."""
    import selectors

    from toolkit import wire
    from toolkit.endpoints import control
    from toolkit.endpoints.servers import _Conn
    from toolkit.endpoints.sessions import Session

    chunks = [control.encode(7, control.hello("tcp", "bulk", 7))] + [
        wire.frame(wire.Header(7, i, 1_000, 0), b"z" * 100) for i in range(5)]

    class Sock:
        def recv(self, n):
            return chunks.pop(0) if chunks else b""

    session = Session("peer")
    talk = pacing.Conversation(session, pacing.ReadPacer(0, 0, 0.0), clock=lambda: 0.0)
    conn = _Conn(Sock(), session, talk)
    # a read each step (one a readiness), data every 30 s, past IDLE_S (60 s) in all
    for now in (1.0, 30.0, 59.0, 61.0, 90.0, 125.0):
        conn.step(selectors.EVENT_READ, now)
        assert talk.how is None and session.error is None, (now, session.error)
    assert not chunks and session.report()["messages"]["packets"] == 5
    assert pacing.IDLE_S == 60.0


def test_a_kernel_timeout_below_a_microsecond_is_still_a_timeout(pair):
    """struct timeval {0, 0} means no timeout at all: the shortest is one microsecond."""
    import struct

    from toolkit.endpoints.sockopts import kernel_timeout
    _, conn = pair
    for seconds, want in ((2.5, (2, 500000)), (1e-7, (0, 1)), (0.25, (0, 250000))):
        kernel_timeout(conn, socket.SO_RCVTIMEO, seconds)
        got = struct.unpack("@ll", conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
        # the kernel keeps its own resolution (jiffies on older kernels): never zero
        assert got != (0, 0) and abs(got[0] + got[1] / 1e6 - (want[0] + want[1] / 1e6)) < 0.011


def test_a_reply_that_fits_is_one_call_and_a_large_one_arrives_whole(pair):
    client, conn = pair
    counting = Counting(conn)
    carry_out = _Blocking(counting)
    for i in range(20):
        carry_out(pacing.Op(pacing.SEND, bytes([i]) * 64, 5.0), None)
    got = b""
    while len(got) < 20 * 64:
        got += client.recv(4096)
    assert got == b"".join(bytes([i]) * 64 for i in range(20))
    # one send each, none blocking, no timeout mode switched on and off
    assert counting.calls == {"settimeout": 1, "send": 20}
    assert conn.gettimeout() is None

    # a reply larger than the buffers while the client reads nothing yet: the first call
    # takes part of it, and the timed send the rest once the client reads (a client that
    # read at once could take all of it in the first call, as an idle machine's did)
    big = bytes(range(256)) * (16 << 10)             # 4 MiB
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    received = bytearray()
    reader = threading.Timer(0.3, _read_exactly, (client, len(big), received))
    reader.start()
    carry_out(pacing.Op(pacing.SEND, big, 10.0), None)
    reader.join(timeout=20)
    assert bytes(received) == big
    assert counting.calls["send"] == 21 and counting.calls["sendall"] == 1
    assert conn.gettimeout() is None


def _read_exactly(sock, n, into):
    while len(into) < n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        into += chunk


def _rr_config(port, count):
    from toolkit.endpoints.tcp import TcpSendConfig
    return TcpSendConfig("127.0.0.1", port, "rr", count=count, lengths=[64],
                         response_size=64)


def test_a_request_response_client_makes_one_send_and_one_read_a_transaction(tmp_path):
    from toolkit.endpoints import tcp
    from toolkit.endpoints.report import Report
    from toolkit.endpoints.servers import Server, ServerConfig

    server = Server(ServerConfig(port=0, host="127.0.0.1", model="thread",
                                 receive_dir=tmp_path), Report("server", "tcp", "thread",
                                                               quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        counting = Counting(sock)
        out = tcp._rr(_rr_config(server.port, 200), counting, 1,
                      Report("sender", "tcp", "rr", quiet=True))
        assert out["transactions"] == 200
        # the hello and the requests; a 64-byte response is one read on loopback (a few
        # may come in two); never Python's timeout mode, which polls before each call
        assert counting.calls["sendall"] == 201
        assert 200 <= counting.calls["recv_into"] <= 210
        assert counting.calls["settimeout"] == 1 and sock.gettimeout() is None
        assert "recv" not in counting.calls and "send" not in counting.calls
        sock.close()
    finally:
        server.stop()
        thread.join(timeout=30)


def test_a_request_response_client_times_out_on_a_silent_server(monkeypatch):
    from toolkit.endpoints import tcp
    from toolkit.endpoints.report import Report

    monkeypatch.setattr(tcp, "STALL_LIMIT_S", 0.3)
    lst = socket.create_server(("127.0.0.1", 0))      # accepts (backlog), never answers
    sock = socket.create_connection(lst.getsockname(), timeout=5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="answered nothing for 0.3 s"):
        tcp._rr(_rr_config(lst.getsockname()[1], 5), sock, 1,
                Report("sender", "tcp", "rr", quiet=True))
    assert 0.25 <= time.monotonic() - t0 < 5
    sock.close()
    lst.close()


def _flood(sock, total, then=b"", pause_s=0.0, linger_s=0.0, sent_at=None):
    """Send `total` bytes as fast as the socket takes them; after `pause_s`, `then`
    (noting when in sent_at); `linger_s` later, close."""
    block = bytes(1 << 20)
    for _ in range(total // len(block)):
        sock.sendall(block)
    if then:
        time.sleep(pause_s)
        if sent_at is not None:
            sent_at.append(time.monotonic())
        sock.sendall(then)
    time.sleep(linger_s)
    sock.shutdown(socket.SHUT_WR)


def _read_all(carry_out, timeout_s=10.0):
    """Read until the peer's FIN: (bytes, sizes of the reads, when the last data came,
    the largest batch and the largest SO_RCVLOWAT the reader asked for)."""
    view = memoryview(bytearray(pacing.RECV))
    got, sizes, last, batch, lowat = 0, [], 0.0, 0, 1
    while True:
        n = len(carry_out(pacing.Op(pacing.READ, pacing.RECV, timeout_s), view))
        batch, lowat = max(batch, carry_out.batch), max(lowat, carry_out.lowat)
        if not n:
            return got, sizes, last, batch, lowat
        got, last = got + n, time.monotonic()
        sizes.append(n)


@pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT here")
@pytest.mark.parametrize("way", ["lowat", "waitall"])
def test_a_stream_that_outruns_the_reader_is_read_in_batches_and_a_pause_is_not_held(
        pair, monkeypatch, way):
    """A fast stream on loopback is read in whole batches, asked for with the low-water
    mark or, where there is none, MSG_WAITALL; bytes that come after a pause arrive when
    sent, not at the read's timeout or the FIN (the batch's short kernel timeout returns
    them). How many reads get a whole batch depends on the scheduler: at least one."""
    from toolkit.endpoints import servers
    if way == "waitall":
        monkeypatch.setattr(servers, "_LOWAT", 0)
    client, conn = pair
    asked = []                                  # the flags of every read

    class Recording(Counting):
        def recv_into(self, view, size, flags=0):
            asked.append(flags)
            return conn.recv_into(view, size, flags)

    carry_out = _Blocking(Recording(conn))
    total, sent_at = 64 << 20, []
    sender = threading.Thread(target=_flood, args=(client, total, b"t" * 100, 0.3, 3.0,
                                                   sent_at))
    sender.start()
    got, sizes, last, batch, lowat = _read_all(carry_out)
    sender.join(timeout=30)
    assert got == total + 100 and carry_out.batching["way"] == way
    assert batch >= _Blocking.BATCH_FROM and carry_out.batching["reads"] >= 1
    if way == "lowat":
        assert lowat == batch and set(asked) == {0}
    else:
        assert lowat == 1 and socket.MSG_WAITALL in asked
    # the 100 bytes after the pause: read well before the FIN (3 s after them)
    assert last - sent_at[0] < 1.5, last - sent_at[0]


@pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT here")
def test_no_batches_where_the_receive_buffer_is_small(pair):
    """A batch is at most an eighth of the receive buffer (a larger mark would clamp the
    window): with the buffer fixed at 128 KB (256 KB as the kernel counts it), none."""
    client, conn = pair
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 << 10)
    counted = Counting(conn)
    carry_out = _Blocking(counted, buffer_fixed=True)
    sender = threading.Thread(target=_flood, args=(client, 16 << 20))
    sender.start()
    got, _, _, batch, lowat = _read_all(carry_out)
    sender.join(timeout=30)
    assert got == 16 << 20 and batch == 0 and lowat == 1
    assert carry_out.batching["reads"] == 0 and carry_out.batching["way"] is None
    # the fixed buffer was looked at once, not at every large read
    assert counted.calls.get("getsockopt") == 1, counted.calls


class Scripted:
    """A socket whose reads return what the test says: a byte count (at most what was
    asked for) or an exception. Records the low-water marks and read timeouts set, and the
    (size, flags) of every read; its receive buffer is 8 MiB."""

    def __init__(self, script):
        self.script, self.received = list(script), 0
        self.lowats, self.timeouts, self.reads = [], [], []

    def settimeout(self, t):
        pass

    def getsockopt(self, level, name):
        assert name == socket.SO_RCVBUF
        return 8 << 20

    def setsockopt(self, level, name, value):
        if name == socket.SO_RCVLOWAT:
            self.lowats.append(value)
        elif name == socket.SO_RCVTIMEO:
            import struct
            sec, usec = struct.unpack("@ll", value)
            self.timeouts.append(sec + usec / 1e6)

    def recv_into(self, view, size, flags=0):
        self.reads.append((size, flags))
        step = self.script.pop(0)
        if isinstance(step, type) and issubclass(step, BaseException):
            raise step()
        n = min(step, size)
        self.received += n
        return n


def _scripted(monkeypatch, script, bytes_per_segment=64 << 10, counts=True,
              may_batch=lambda: True):
    from toolkit.endpoints import servers
    sock = Scripted(script)
    monkeypatch.setattr(servers.tcpinfo, "received_and_sent", lambda s: (
        (s.received, s.received // bytes_per_segment) if counts else None))
    return sock, _Blocking(sock, may_batch)


def _play(carry_out, sock, op_timeout=7.0):
    view = memoryview(bytearray(pacing.RECV))
    out = []
    while sock.script:
        try:
            out.append(len(carry_out(pacing.Op(pacing.READ, pacing.RECV, op_timeout), view)))
        except TimeoutError:
            out.append("timeout")
    return out


@pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT here")
@pytest.mark.parametrize("bytes_per_segment,keeps", [(3600, False), (64 << 10, True)])
def test_the_marks_trial_counts_whole_batches_across_breaks(monkeypatch, bytes_per_segment,
                                                           keeps):
    """The batching state machine, read by read (a scripted socket and faked kernel
    counts): a read of 64 KiB or more starts batches with the mark (512 KiB, the read's
    size) and the short timeout; a short batch goes back to plain reads and the op's
    timeout; the trial counts 16 whole batches across that break, then keeps the mark (one
    segment back per 64 KB) or gives it up for MSG_WAITALL (one per 3.6 KB)."""
    big = pacing.RECV
    script = [100_000] + [big] * 10 + [1_000, 200_000] + [big] * 6 + [big] * 3
    sock, carry_out = _scripted(monkeypatch, script, bytes_per_segment)
    got = _play(carry_out, sock)
    assert got == [100_000] + [big] * 10 + [1_000, 200_000] + [big] * 9
    # the mark set at each run's start (and cleared at the break), the timeouts switched
    assert sock.lowats[:3] == [big, 1, big]
    assert sock.timeouts[:4] == [7.0, 0.001, 7.0, 0.001]
    assert carry_out.batching["reads"] == 19 and carry_out.batching["runs"] == 2
    if keeps:
        assert carry_out.proven and carry_out.batching["way"] == "lowat"
        assert sock.lowats == [big, 1, big] and set(f for _, f in sock.reads) == {0}
    else:
        # the 16th whole batch (the 6th after the break) ends the mark; the 3 reads after
        # it ask for the batch with MSG_WAITALL
        assert not carry_out.proven and carry_out.batching["way"] == "waitall"
        assert sock.lowats == [big, 1, big, 1]
        assert sock.reads[-3:] == [(big, socket.MSG_WAITALL)] * 3
        assert sock.reads[-4] == (big, 0)


def test_a_pause_in_batches_goes_back_to_the_ops_own_timeout(monkeypatch):
    """A batch that times out with nothing (EAGAIN) is no failure: the read is made again,
    plain, with the operation's timeout, whose own expiry is the TimeoutError."""
    sock, carry_out = _scripted(monkeypatch, [100_000, BlockingIOError, 500,
                                              BlockingIOError])
    assert _play(carry_out, sock) == [100_000, 500, "timeout"]
    assert sock.timeouts == [7.0, 0.001, 7.0]
    assert sock.lowats == [pacing.RECV, 1] and carry_out.batch == 0


def test_no_counts_means_msg_waitall_and_no_mode_means_no_batches(monkeypatch):
    """Where TCP_INFO's counts cannot be read the mark cannot be judged: batches are asked
    for with MSG_WAITALL from the start. A session that is not streaming (may_batch says
    no: request/response, paced, unframed) never batches."""
    sock, carry_out = _scripted(monkeypatch, [100_000, pacing.RECV, pacing.RECV],
                                counts=False)
    _play(carry_out, sock)
    assert carry_out.batching == {"way": "waitall", "runs": 1, "reads": 2}
    assert sock.lowats == []
    assert sock.reads[1:] == [(pacing.RECV, socket.MSG_WAITALL)] * 2
    sock, carry_out = _scripted(monkeypatch, [100_000] * 5, may_batch=lambda: False)
    _play(carry_out, sock)
    assert carry_out.batch == 0 and sock.lowats == [] and set(sock.reads) == {
        (pacing.RECV, 0)}


def test_received_and_sent_are_the_kernels_counts(pair):
    """The trial's two counts, read alone, agree with the whole struct's parse."""
    from toolkit.endpoints import tcpinfo
    client, conn = pair
    client.sendall(b"z" * 100_000)
    got = 0
    while got < 100_000:
        got += len(conn.recv(1 << 20))
    received, sent = tcpinfo.received_and_sent(conn)
    whole = tcpinfo.sample(conn)
    assert received == whole["bytes_received"] == 100_000
    assert sent == whole["segs_out"] and sent >= 2            # the SYN-ACK and some ACKs


def test_a_bulk_connection_record_says_how_its_reads_were_batched(tmp_path):
    """A fast bulk client on loopback: the server's connection record has `read_batches`
    (the way and how many reads got a whole batch); a request/response one, whose reads are
    small, has none."""
    from toolkit.endpoints import tcp
    from toolkit.endpoints.report import Report
    from toolkit.endpoints.servers import Server, ServerConfig

    server = Server(ServerConfig(port=0, host="127.0.0.1", model="thread", max_connections=2),
                    Report("server", "tcp", "thread", quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        tcp.send(tcp.TcpSendConfig("127.0.0.1", server.port, "bulk", seconds=1.5),
                 Report("sender", "tcp", "bulk", quiet=True))
        tcp.send(_rr_config(server.port, 300), Report("sender", "tcp", "rr", quiet=True))
    finally:
        thread.join(timeout=30)
        server.stop()
    bulk, rr = server.report.doc["connections"]
    assert bulk["mode"] == "bulk" and rr["mode"] == "rr"
    if hasattr(socket, "SO_RCVLOWAT"):
        assert bulk["read_batches"]["way"] in ("lowat", "waitall")
        assert 0 < bulk["read_batches"]["reads"] <= bulk["reads"]
        assert bulk["read_batches"]["runs"] >= 1
    assert "read_batches" not in rr


def test_large_requests_are_not_read_in_batches(tmp_path):
    """A request/response client waits for its answer, so a batch would wait out its
    timeout on every request of 64 KiB or more (4-8 ms a transaction where a batch's
    timer ticks at 250 Hz): such a session never batches, and its transactions stay fast."""
    from toolkit.endpoints import tcp
    from toolkit.endpoints.report import Report
    from toolkit.endpoints.servers import Server, ServerConfig

    server = Server(ServerConfig(port=0, host="127.0.0.1", model="thread", max_connections=1),
                    Report("server", "tcp", "thread", quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        cfg = tcp.TcpSendConfig("127.0.0.1", server.port, "rr", count=200,
                                lengths=[256 << 10], response_size=64)
        doc = tcp.send(cfg, Report("sender", "tcp", "rr", quiet=True))
    finally:
        thread.join(timeout=30)
        server.stop()
    rec, = server.report.doc["connections"]
    assert rec["mode"] == "rr" and rec["responses"] == 200
    assert doc["end"]["transactions"] == 200
    assert "read_batches" not in rec                # no batch was ever begun


@pytest.mark.parametrize("where", ["conversation", "report"])
@pytest.mark.parametrize("model", ["iterative", "thread", "process", "selectors", "asyncio"])
def test_a_fault_serving_one_connection_is_its_error_and_the_server_goes_on(monkeypatch,
                                                                           model, where):
    """Something other than the peer's doing raised while one connection was served, in its
    conversation or in making its record: that connection is recorded as an error saying
    what, the next one is served, and the server still ends after its --clients count
    (before, a thread model's thread died unrecorded and the server never reached its
    count; the iterative and selectors models died with a traceback)."""
    from toolkit.endpoints import pacing, tcp
    from toolkit.endpoints.report import Report
    from toolkit.endpoints.servers import Server, ServerConfig
    from toolkit.endpoints.sessions import Session

    doomed: set[str] = set()

    class Faulty(pacing.Conversation):
        def done(self, result=None):
            raise RuntimeError("a fault for the test")

    if where == "conversation":
        conversation = Server._conversation

        def faulty(self, session):
            talk = conversation(self, session)
            if session.peer in doomed:
                talk.__class__ = Faulty
            return talk

        monkeypatch.setattr(Server, "_conversation", faulty)
    else:
        report = Session.report

        def faulty(self):
            if self.peer in doomed:
                raise RuntimeError("a fault for the test")
            return report(self)

        monkeypatch.setattr(Session, "report", faulty)
    server = Server(ServerConfig(port=0, host="127.0.0.1", model=model, max_connections=2),
                    Report("server", "tcp", model, quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            doomed.add("127.0.0.1:%d" % first.getsockname()[1])
            first.settimeout(10)
            first.connect(("127.0.0.1", server.port))
            first.sendall(b"x")
            first.shutdown(socket.SHUT_WR)
            try:
                while first.recv(4096):               # until the server closes it
                    pass
            except ConnectionResetError:
                pass
        doc = tcp.send(_rr_config(server.port, 20), Report("sender", "tcp", "rr", quiet=True))
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not end after its two connections"
    finally:
        server.stop()
        thread.join(timeout=30)
    assert doc["end"]["transactions"] == 20
    faulted, served = sorted(server.report.doc["connections"],
                             key=lambda rec: rec["peer"] not in doomed)
    assert faulted["peer"] in doomed and served["peer"] not in doomed
    if where == "conversation":
        assert faulted["how"] == "error" and faulted["ended"] == "error"
        assert faulted["error"] == ("internal error serving this connection: "
                                    "RuntimeError: 'a fault for the test'")
    else:
        assert faulted["error"] == ("internal error in the report: "
                                    "RuntimeError: 'a fault for the test'")
    assert served["how"] == "half-close" and served["responses"] == 20 and not served["error"]


def test_requests_are_answered_in_a_loop_of_one_read_and_one_send_each(pair):
    """answer_requests: each read that answer() takes is answered with one send (no
    timeout mode switched on, no poll); the first read it does not take is returned."""
    client, conn = pair
    counting = Counting(conn)
    carry_out = _Blocking(counting)
    answered = []

    def answer(data):
        if bytes(data[:1]) != b"Q":
            return None
        answered.append(bytes(data))
        return b"R" + bytes(data[1:])

    def talk():
        for i in range(5):
            client.sendall(b"Q%d" % i)
            assert client.recv(16) == b"R%d" % i
        client.sendall(b"bye")

    peer = threading.Thread(target=talk)
    peer.start()
    left = carry_out.answer_requests(answer, memoryview(bytearray(pacing.RECV)), 5.0)
    peer.join(timeout=10)
    assert bytes(left) == b"bye" and answered == [b"Q%d" % i for i in range(5)]
    # besides: blocking mode at the start and the kernel's read timeout set once
    assert counting.calls == {"settimeout": 1, "setsockopt": 1, "recv_into": 6, "send": 5}
    assert conn.gettimeout() is None
    # a silent peer: the read's own timeout, as a TimeoutError
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        carry_out.answer_requests(answer, memoryview(bytearray(pacing.RECV)), 0.2)
    assert 0.15 < time.monotonic() - started < 5


@pytest.mark.parametrize("slow_read_bps", [0, 1e6])
def test_a_request_response_server_answers_lone_requests_in_its_loop(monkeypatch,
                                                                    slow_read_bps):
    """The blocking models answer request/response's lone requests in answer_requests,
    without the conversation's steps (every transaction but none of the hello); a server
    told to read slowly keeps its pace instead, and answers each through the conversation."""
    from toolkit.endpoints import tcp
    from toolkit.endpoints.report import Report
    from toolkit.endpoints.servers import Server, ServerConfig
    from toolkit.endpoints.sessions import Session

    calls = {"answered": 0, "received": 0}
    answer, received = Session.answer, Session.received

    def counted_answer(self, data, now_ns=None):
        reply = answer(self, data, now_ns)
        calls["answered"] += reply is not None
        return reply

    def counted_received(self, data, now_ns=None):
        calls["received"] += 1
        return received(self, data, now_ns)

    monkeypatch.setattr(Session, "answer", counted_answer)
    monkeypatch.setattr(Session, "received", counted_received)
    server = Server(ServerConfig(port=0, host="127.0.0.1", model="thread", max_connections=1,
                                 slow_read_bps=slow_read_bps),
                    Report("server", "tcp", "thread", quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        doc = tcp.send(_rr_config(server.port, 200), Report("sender", "tcp", "rr", quiet=True))
        thread.join(timeout=30)
    finally:
        server.stop()
        thread.join(timeout=30)
    rec, = server.report.doc["connections"]
    assert doc["end"]["transactions"] == 200 and rec["responses"] == 200
    if slow_read_bps:
        assert calls["received"] >= 200          # the hello, then each request
    else:
        # the hello's read (the first request may come in it too), then the loop's
        assert calls["received"] == 1 and calls["answered"] >= 199
