"""The TCP sender (client side of every TCP mode).

    bulk       messages of --length bytes as fast as TCP takes them, for --time or --bytes
    paced      the same at --rate bits/s: a byte budget that grows with time, plus
               SO_MAX_PACING_RATE so the kernel spreads each burst (TCP paces internally)
    stream     messages of the sizes given (cycled), e.g. --length 100,1400,9000
    rr         request/response: a request of --length, the server answers --response-size;
               --count transactions or --time, optionally --tps per second; latency
               percentiles from the sender's clock
    echo       rr where the server sends each request back: the sender checks every byte
               (random bodies) and counts corrupted or missing echoes
    file       a hello with name, size and SHA-256; the receiver's answer (ready, or an error
               saying why it refuses: it receives files only when its user asked it to,
               with --receive-dir); then the bytes in file-data frames, then the receiver's
               verdict
    unframed   (--no-framing) messages written back to back with no promise of boundaries:
               the receiver shows how its reads lined up with them

Every message carries the lab header (flow, seq, send time). The sender ends by
half-closing (shutdown of its write side: a FIN, RFC 9293 3.6) and reading the server's
final report, which lands in this report's "end.peer"; with --linger0 it closes with a RST
instead and the server logs the reset. A server that ends the connection on a protocol error
first sends a control message saying why: the sender raises Refused (a ConnectionError)
with that reason, or, when it comes only with the final messages, keeps it in "end.peer_error".
Whatever the server sends back is bounded here too (frames up to what was asked for, at most
MAX_PEER_MESSAGES control messages) and shown through control.clean.
"""

from __future__ import annotations

import hashlib
import random
import socket
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from .. import wire
from . import control, sockopts, tcpinfo
from .report import Report

FILE_CHUNK = 64 << 10
STALL_LIMIT_S = 30.0              # how long a peer may take nothing, or answer nothing
READY_TIMEOUT_S = 10.0            # how long a file sender waits for the server's answer
MAX_PEER_MESSAGES = 64            # control messages read back after our FIN, at most


class Refused(ConnectionError):
    """The server refused the connection or ended it, and said why."""


@dataclass
class TcpSendConfig:
    host: str
    port: int = 5201
    mode: str = "bulk"
    seconds: float | None = None
    total_bytes: int | None = None
    rate_bps: float = 0.0
    lengths: list[int] = field(default_factory=lambda: [128 << 10])
    response_size: int = 128
    count: int | None = None
    tps: float = 0.0
    file: Path | None = None
    framing: bool = True
    interval: float = 1.0
    flow: int | None = None
    options: sockopts.SocketOptions = field(default_factory=sockopts.SocketOptions)
    connect_timeout: float = 10.0
    cport: int | None = None             # the local (source) port; None: an ephemeral one
    keep_latencies: bool = False         # rr/echo: every transaction's latency in the end


class BindError(OSError):
    """The source port asked for (--cport) cannot be had; no other address will help."""


def check_cport(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"--cport {port}: a port is 1..65535")


def bind_cport(sock: socket.socket, port: int | None, reuseaddr: bool = True) -> None:
    """Bind the sender's socket to source port `port` before it connects (iperf3's
    --cport), on every local address: the route still picks the source address. A fixed
    source port makes a flow's 5-tuple, and so its random stream on the lab's link, the
    same on every run. SO_REUSEADDR on TCP (unless --no-reuseaddr said otherwise): the
    previous run's connection from this port may still sit in TIME-WAIT, which refuses
    the bind for a minute without it."""
    if port is None:
        return
    check_cport(port)
    if reuseaddr and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    anywhere = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    try:
        sock.bind((anywhere, port))
    except OSError as e:
        err = BindError(f"cannot bind source port {port} (--cport): {e.strerror}")
        err.errno = e.errno
        raise err from None


def refuse_self_connection(sock: socket.socket) -> None:
    """A source port equal to a local destination port connects the socket to itself
    (TCP's simultaneous open, RFC 9293 3.5; for UDP, its datagrams come back to it): it
    would then send into its own receive buffer, measuring nothing."""
    if sock.getsockname()[:2] == sock.getpeername()[:2]:
        host, port = sock.getsockname()[:2]
        raise BindError(f"the socket connected to itself ({host} port {port} to "
                        f"{host} port {port}): choose another --cport")


def _connect(cfg: TcpSendConfig) -> tuple[socket.socket, dict]:
    check_cport(cfg.cport)
    last = None
    for family, type_, proto, _, addr in socket.getaddrinfo(cfg.host, cfg.port,
                                                           type=socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        try:
            granted = sockopts.apply(sock, cfg.options)
            bind_cport(sock, cfg.cport, cfg.options.reuseaddr)
            sock.settimeout(cfg.connect_timeout)
            sock.connect(addr)
            refuse_self_connection(sock)
            sock.settimeout(STALL_LIMIT_S)  # a stalled peer cannot hang the sender forever
            return sock, granted
        except BindError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            last = e
    raise ConnectionError(f"cannot connect to {cfg.host} port {cfg.port}: {last}")


class _Clock:
    """Intervals on the sender: bytes since the last tick, and a TCP_INFO sample."""

    def __init__(self, report: Report, sock: socket.socket, every: float):
        self.report, self.sock, self.every = report, sock, every
        self.start = time.monotonic()
        self.next = self.start + every
        self.last_t, self.last_bytes, self.last_count = 0.0, 0, 0

    def tick(self, sent_bytes: int, count: int, force: bool = False, **extra) -> None:
        now = time.monotonic()
        if now < self.next and not force:
            return
        t = now - self.start
        if t - self.last_t <= 1e-6 or (force and sent_bytes == self.last_bytes):
            return
        rec = {"payload_bytes": sent_bytes - self.last_bytes, "messages": count - self.last_count,
               **extra}
        info = tcpinfo.sample(self.sock)
        if info is not None:
            rec["tcp_info"] = info
        self.report.interval(self.last_t, t, rec)
        self.last_t, self.last_bytes, self.last_count = t, sent_bytes, count
        while self.next <= now:
            self.next += self.every


def _read_peer(sock: socket.socket, timeout: float = 10.0) -> list[dict]:
    """After our FIN: the server's control messages until its close (at most
    MAX_PEER_MESSAGES of them, and for at most `timeout` seconds in all)."""
    deadline = time.monotonic() + timeout
    deframer = wire.Deframer(control.MAX_CONTROL)
    out: list[dict] = []
    try:
        while len(out) < MAX_PEER_MESSAGES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            for h, body in deframer.feed(data):
                if h.kind == wire.KIND_CONTROL:
                    out.append(control.decode(h, body))
    except (OSError, wire.FramingError, control.ProtocolError):
        pass
    return out[:MAX_PEER_MESSAGES]


def _peer_error(messages: list[dict]) -> str | None:
    for msg in messages:
        if msg["type"] == "error":
            return control.clean(msg.get("error"))
    return None


def _message_sizes(cfg: TcpSendConfig) -> list[int]:
    # a message is at least its header
    return [max(n, wire.HEADER_LEN) for n in cfg.lengths]


def send(cfg: TcpSendConfig, report: Report | None = None) -> dict:
    prepare(cfg)
    sock, granted = _connect(cfg)
    return send_connected(cfg, sock, granted, report)


def prepare(cfg: TcpSendConfig) -> None:
    """Check the config and derive what the socket needs (pacing), before connecting."""
    if cfg.mode == "paced" and not cfg.rate_bps:
        raise ValueError("paced mode needs --rate")
    if cfg.rate_bps and cfg.mode in ("bulk", "paced", "stream"):
        cfg.options.pacing_bps = cfg.options.pacing_bps or cfg.rate_bps


def send_connected(cfg: TcpSendConfig, sock: socket.socket, granted: dict,
                   report: Report | None = None) -> dict:
    """The sender's work on a socket already connected (by _connect); closes it."""
    flow = cfg.flow if cfg.flow is not None else random.getrandbits(32)
    mode = cfg.mode if cfg.framing or cfg.mode in ("rr", "echo") else "unframed"
    local, remote = sock.getsockname(), sock.getpeername()
    report = report or Report("sender", "tcp", mode)
    report.doc["start"].update({"local": f"{local[0]}:{local[1]}",
                                "remote": f"{remote[0]}:{remote[1]}", "flow": flow,
                                "options": {**cfg.options.as_dict(), **granted}})
    try:
        try:
            if cfg.mode in ("rr", "echo"):
                totals = _rr(cfg, sock, flow, report)
            elif cfg.mode == "file":
                totals = _file(cfg, sock, flow, report)
            else:
                totals = _stream(cfg, sock, flow, report, mode)
        except Refused:
            raise
        except OSError:
            # the server may have said why before it closed (or reset) the connection
            why = _peer_error(_read_peer(sock, timeout=1.0))
            if why is None:
                raise
            raise Refused(f"the server ended the connection: {why}") from None
        if cfg.options.linger0:
            report.event("closing with RST (SO_LINGER 0)")
            peer = []
        else:
            try:
                sock.shutdown(socket.SHUT_WR)   # half-close: our FIN, their report back
            except OSError:
                pass            # the server closed (or reset) first: what it sent still reads
            peer = _read_peer(sock)
        info = tcpinfo.sample(sock)
    finally:
        sock.close()
    for msg in peer:
        if msg["type"] == "report":
            totals["peer"] = msg
        elif msg["type"] == "file":
            totals["file_result"] = msg
        elif msg["type"] == "error":
            totals["peer_error"] = control.clean(msg.get("error"))
    if info is not None:
        totals["tcp_info"] = info
    report.finish(totals)
    return report.doc


def _stream(cfg: TcpSendConfig, sock: socket.socket, flow: int, report: Report,
            mode: str) -> dict:
    sizes = _message_sizes(cfg)
    params = {"message_sizes": sizes} if mode == "unframed" else {}
    sock.sendall(control.encode(flow, control.hello("tcp", mode, flow, **params)))
    # one buffer a message size, reused: the header is written into it in place, so a
    # message costs no allocation and no copy of its body (a 128 KB concatenation per
    # message was most of the sender's time)
    buffers = [bytearray(n) for n in sizes]
    views = [memoryview(b) for b in buffers]
    clock = _Clock(report, sock, cfg.interval)
    # a blocking send of a whole message, as iperf3's write(); the kernel's timeout
    # (not Python's, which polls before every send) returns to tick the intervals
    send_timeout = min(cfg.interval, 0.25)
    sock.settimeout(None)
    sockopts.kernel_timeout(sock, socket.SO_SNDTIMEO, send_timeout)
    start = time.monotonic()
    deadline = start + cfg.seconds if cfg.seconds else None
    if deadline is None and cfg.total_bytes is None:
        deadline = start + 10.0                 # iperf3's default: ten seconds
    sent = seq = 0
    rate_Bps = cfg.rate_bps / 8 if cfg.rate_bps else 0.0
    i = 0
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if cfg.total_bytes is not None and sent >= cfg.total_bytes:
            break
        if rate_Bps:
            # paced: never ahead of rate * elapsed (a budget, not a sleep per message)
            ahead = sent / rate_Bps - (now - start)
            if ahead > 0:
                time.sleep(min(ahead, cfg.interval / 4))
                clock.tick(sent, seq)
                continue
        msg = views[i]
        i = (i + 1) % len(views)
        body_len = len(msg) - wire.HEADER_LEN
        if cfg.total_bytes is not None and cfg.total_bytes - sent < len(msg):
            body_len = max(cfg.total_bytes - sent - wire.HEADER_LEN, 0)
            msg = msg[:wire.HEADER_LEN + body_len]
        wire.pack_header_into(msg, 0, flow, seq, time.time_ns(), body_len)
        # a blocking send with the kernel's timeout: intervals go on while a full window
        # blocks us (showing the stall), and the deadline holds
        stalled = None
        while True:
            try:
                n = sock.send(msg)
            except BlockingIOError:        # SO_SNDTIMEO passed and nothing was queued
                clock.tick(sent, seq)
                now = time.monotonic()
                stalled = stalled or now - send_timeout     # waiting since the send began
                if now - stalled > STALL_LIMIT_S:
                    raise ConnectionError(f"the receiver has taken nothing for "
                                          f"{STALL_LIMIT_S:g} s") from None
                continue
            sent += n
            if n == len(msg):
                break
            msg, stalled = msg[n:], None
        seq += 1
        clock.tick(sent, seq)
    clock.tick(sent, seq, force=True)
    secs = time.monotonic() - start
    return {"duration_s": secs, "payload_bytes": sent, "messages": seq}


def _rr(cfg: TcpSendConfig, sock: socket.socket, flow: int, report: Report) -> dict:
    echo = cfg.mode == "echo"
    req_len = max(cfg.lengths[0], wire.HEADER_LEN)
    sock.sendall(control.encode(flow, control.hello("tcp", cfg.mode, flow,
                                                    response_size=cfg.response_size)))
    body_len = req_len - wire.HEADER_LEN
    # one request buffer, its header packed in place, and one receive buffer: a
    # transaction allocates nothing (it is a few tens of microseconds on loopback)
    request = bytearray(req_len)
    body = b""
    rng = random.Random(flow)
    corrupted = 0
    deframer = wire.Deframer(max(cfg.response_size, req_len, 1 << 16))
    received = memoryview(bytearray(65536))
    # blocking calls with the kernel's timeouts: Python's timeout mode polls before every
    # send and every receive, four system calls a transaction where two do
    sock.settimeout(None)
    sockopts.kernel_timeout(sock, socket.SO_SNDTIMEO, STALL_LIMIT_S)
    sockopts.kernel_timeout(sock, socket.SO_RCVTIMEO, STALL_LIMIT_S)
    latencies = array("d")
    clock = _Clock(report, sock, cfg.interval)
    start = time.monotonic()
    count = cfg.count
    deadline = start + cfg.seconds if cfg.seconds else (None if count else start + 10.0)
    seq = sent = 0
    mark = 0
    # the loop's names bound once: each attribute lookup is interpreter work in every
    # transaction, and Python's share of one runs with caches the wake-up has just emptied
    tps = cfg.tps
    monotonic, perf_counter, time_ns = time.monotonic, time.perf_counter, time.time_ns
    # the request's header whole once; then only its flow, seq and send time change
    wire.pack_header_into(request, 0, flow, 0, 0, body_len, wire.KIND_REQUEST)
    pack, ids_at, one = wire.IDS.pack_into, wire.IDS_AT, deframer.one
    sendall, recv_into, keep = sock.sendall, sock.recv_into, latencies.append
    HEADER_LEN, RESPONSE = wire.HEADER_LEN, wire.KIND_RESPONSE
    tick_at = clock.next
    now = start
    while (count is None or seq < count) and (deadline is None or now < deadline):
        if tps:
            due = start + seq / tps
            if (wait := due - monotonic()) > 0:
                time.sleep(wait)
        if echo:
            body = rng.randbytes(body_len)
            request[HEADER_LEN:] = body
        t0 = perf_counter()
        pack(request, ids_at, flow, seq, time_ns())
        got = None
        try:
            sendall(request)
            sent += req_len
            while got is None:
                n = recv_into(received)
                if not n:
                    raise ConnectionError(f"server closed the connection after {seq} "
                                          f"transactions")
                got = one(received[:n])                 # the usual read: one response
                if got is not None:
                    # the body only where it is read: an echo, or the server's message
                    got_body = (bytes(received[HEADER_LEN:n])
                                if echo or got[4] != RESPONSE else b"")
                elif frames := deframer.feed(received[:n]):
                    got, got_body = frames[0]
        except BlockingIOError:          # the kernel's timeout: the peer stalled
            raise TimeoutError(f"timed out: the server has answered nothing for "
                               f"{STALL_LIMIT_S:g} s") from None
        keep(perf_counter() - t0)
        _, got_seq, _, _, kind = got
        if kind != RESPONSE or got_seq != seq:
            if kind == wire.KIND_CONTROL:
                msg = control.decode(got, got_body)
                if msg["type"] == "error":
                    raise Refused(f"the server ended the connection: "
                                  f"{control.clean(msg.get('error'))}")
            raise control.ProtocolError(f"response {got_seq} (kind {kind}) to request {seq}")
        if echo and got_body != body:
            corrupted += 1
        seq += 1
        now = monotonic()
        if now >= tick_at:
            clock.tick(sent, seq, transactions=seq - mark,
                       latency_s=_percentiles(latencies[mark:]))
            mark, tick_at = seq, clock.next
    clock.tick(sent, seq, force=True, transactions=seq - mark,
               latency_s=_percentiles(latencies[mark:]))
    secs = time.monotonic() - start
    out = {"duration_s": secs, "payload_bytes": sent, "transactions": seq,
           "transactions_per_s": seq / secs if secs else 0.0,
           "latency_s": _percentiles(latencies)}
    if echo:
        out["corrupted"] = corrupted
    if cfg.keep_latencies:
        out["latencies_s"] = [round(x, 9) for x in latencies]
    return out


def _percentiles(values) -> dict | None:
    if not len(values):
        return None
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"min": s[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1],
            "mean": sum(s) / len(s)}


def _file(cfg: TcpSendConfig, sock: socket.socket, flow: int, report: Report) -> dict:
    path = Path(cfg.file)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    meta = {"name": path.name, "size": size, "sha256": digest.hexdigest()}
    sock.sendall(control.encode(flow, control.hello("tcp", "file", flow, file=meta)))
    _await_ready(sock)
    clock = _Clock(report, sock, cfg.interval)
    start = time.monotonic()
    sent = seq = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(FILE_CHUNK), b""):
            msg = wire.frame(wire.Header(flow, seq, time.time_ns(), 0, wire.KIND_FILE), chunk)
            sock.sendall(msg)
            sent += len(msg)
            seq += 1
            clock.tick(sent, seq)
    clock.tick(sent, seq, force=True)
    return {"duration_s": time.monotonic() - start, "payload_bytes": sent, "messages": seq,
            "file": meta}


def _await_ready(sock: socket.socket, timeout: float = READY_TIMEOUT_S) -> dict:
    """After a file hello, before any data: the server accepts (ready) or says why not."""
    deadline = time.monotonic() + timeout
    deframer = wire.Deframer(control.MAX_CONTROL)
    try:
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            data = sock.recv(65536)
            if not data:
                raise Refused("the server closed the connection without accepting the file")
            for h, body in deframer.feed(data):
                msg = control.decode(h, body)
                if msg["type"] == "ready":
                    sock.settimeout(30.0)
                    return msg
                if msg["type"] == "error":
                    raise Refused(f"the server refused the file: "
                                  f"{control.clean(msg.get('error'))}")
    except (TimeoutError, socket.timeout):
        raise ConnectionError(f"the server did not answer the file hello within "
                              f"{timeout:g} s (a labkit server older than this sender "
                              f"never does)") from None
    except (wire.FramingError, control.ProtocolError) as e:
        raise ConnectionError(f"the server answered the file hello with something else: "
                              f"{e}") from None
    except Refused:
        raise
    except OSError as e:                  # a reset: what came before it may say why
        why = _peer_error(_read_peer(sock, timeout=1.0))
        raise Refused(f"the server refused the file: {why}" if why else
                      f"the server closed the connection without accepting the file "
                      f"({e.strerror or e})") from None
