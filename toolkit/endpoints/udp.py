"""UDP sender and receiver (RFC 768): numbered datagrams, paced evenly, counted exactly.

Sender modes: bulk (datagrams of --length at --rate; iperf3's default 1 Mbit/s, 0 for as
fast as possible), stream (sizes cycled; one datagram per call), rr (a request, then wait
for the response or a timeout: a lost transaction is counted, not retried).

Pacing, why it is even: each datagram i has a departure time t0 + (bits before i) / rate,
and the sender waits for it (sleeping when far, spinning the last ~100 us), so gaps are
equal, unlike a sender that wakes every few ms and sends a burst (iperf3's pacing timer).
Above ~20,000 datagrams/s the gap is shorter than a system call is reliable; then small
GSO batches leave together, each batch on its schedule.

Unpaced, datagrams leave in GSO batches (batch.py): up to 64 per system call.
The receiver takes batches with recvmmsg and kernel timestamps, decodes the headers with
numpy, and keeps SequenceStats per flow (source address, port and flow id).

A slow reader (--pause S, --slow-read RATE) waits before its first read, or reads at most
RATE bits/s of payload, one datagram per read: unlike TCP, nothing tells the sender to
slow down (no window, RFC 768), so once the socket's receive buffer (SO_RCVBUF, a small
--rcvbuf) is full the kernel drops each further datagram inside the receiving host, after
every capture saw it, and counts it in UdpRcvbufErrors (/proc/net/snmp) and in the
socket's own drop counter, which the receiver reports as `socket_drops` (/proc/net/udp).

Whatever a datagram says stays bounded at the receiver: at most MAX_FLOWS flows are kept at
once (datagrams of further flows are counted as stray), each flow's statistics are bounded
(stats.py), a control message that is not what it should be (not JSON, an end marker whose
count is not a count) is counted as stray, and an rr response is at most
RR_MAX_AMPLIFICATION times the size of the request datagram: a UDP source address is not
proven, so a forged request must not turn the receiver into an amplifier aimed at someone
else (the sender refuses a --response-size beyond that up front).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import wire
from ..procnet import udp_socket_drops as socket_drops
from . import batch, control, sockopts
from .pacing import ReadPacer
from .report import Report
from .stats import SequenceStats
from .tcp import bind_cport, refuse_self_connection

SPIN_S = 100e-6
# a paced datagram that leaves more than this after its schedule is counted late: the
# sender then could not keep time (a busy machine, a VM's scheduler), and says so in its
# report instead of passing uneven gaps off as even
PACE_TOLERANCE_S = 100e-6
MIN_GAP_S = 50e-6
END_REPEAT = 3
MAX_FLOWS = 1024                  # flows a receiver keeps at once
MAX_PAYLOAD = 65507               # the largest UDP payload over IPv4
RR_MAX_AMPLIFICATION = 8          # an rr response datagram is at most 8x its request's size
UDP_MODES = ("bulk", "paced", "stream", "rr")


def rr_request_size(cfg_lengths: list[int]) -> int:
    """The rr request datagram's payload size: header and the 4-byte response size at least."""
    return max(cfg_lengths[0], wire.HEADER_LEN + control.RESPONSE_SIZE.size)


def rr_response_cap(request_size: int) -> int:
    """The largest response body a receiver sends to a request datagram of this size."""
    return max(0, min(MAX_PAYLOAD, RR_MAX_AMPLIFICATION * request_size) - wire.HEADER_LEN)


def check_rr(lengths: list[int], response_size: int) -> None:
    """ValueError when the receiver would cut the response asked for (see rr_response_cap)."""
    size = rr_request_size(lengths)
    cap = rr_response_cap(size)
    if response_size > cap:
        raise ValueError(f"--response-size {response_size}: a UDP rr response is at most "
                         f"{RR_MAX_AMPLIFICATION} times the request datagram ({size} bytes "
                         f"with its header), so at most {cap} here; raise --length")


@dataclass
class UdpSendConfig:
    host: str
    port: int = 5201
    mode: str = "bulk"
    seconds: float | None = None
    total_bytes: int | None = None
    count: int | None = None
    rate_bps: float = 1e6
    lengths: list[int] = field(default_factory=lambda: [1400])
    response_size: int = 64
    rr_timeout: float = 1.0
    tps: float = 0.0
    interval: float = 1.0
    flow: int | None = None
    gso: bool = True
    options: sockopts.SocketOptions = field(default_factory=sockopts.SocketOptions)
    cport: int | None = None             # the local (source) port; None: an ephemeral one


def _template(flow: int, length: int, kind: int = wire.KIND_DATA) -> np.ndarray:
    head = np.frombuffer(wire.Header(flow, 0, 0, length - wire.HEADER_LEN, kind).pack(),
                         np.uint8)
    row = np.zeros(length, np.uint8)
    row[:wire.HEADER_LEN] = head
    return row


class _Datagrams:
    """k datagrams of one size in one buffer; seq and send time filled per batch."""

    def __init__(self, flow: int, length: int, k: int):
        self.length, self.k = length, k
        self.buf = np.tile(_template(flow, length), (k, 1))
        off = wire.OFFSET
        self._seq = self.buf[:, off["seq"]:off["seq"] + 8]
        self._ns = self.buf[:, off["send_ns"]:off["send_ns"] + 8]

    def fill(self, seq0: int, n: int, send_ns: int) -> memoryview:
        self._seq[:n] = np.arange(seq0, seq0 + n, dtype=">u8").view(np.uint8).reshape(n, 8)
        self._ns[:n] = np.full(n, send_ns, dtype=">i8").view(np.uint8).reshape(n, 8)
        return memoryview(self.buf[:n]).cast("B")


def _socket(cfg: UdpSendConfig):
    info = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(info[0], socket.SOCK_DGRAM)
    try:
        granted = sockopts.apply(sock, cfg.options)
        bind_cport(sock, cfg.cport)
        sock.connect(info[4])
        refuse_self_connection(sock)
    except BaseException:
        sock.close()
        raise
    return sock, granted


def _wait_until(due: float) -> None:
    while True:
        left = due - time.monotonic()
        if left <= 0:
            return
        if left > SPIN_S:
            time.sleep(left - SPIN_S)
        # the last stretch spins: sleep() overshoots by 50-100 us


@contextlib.contextmanager
def _paced_priority(rate_bps):
    """A paced sender keeps time better on a busy machine when the scheduler runs it the
    moment its sleep ends: where allowed (CAP_SYS_NICE, as in a lab), this thread alone
    (Linux: a thread id names one thread) runs at nice -10 while it paces, and is put back
    after. Yields what was granted, for the report."""
    if not rate_bps or not sys.platform.startswith("linux"):
        yield "normal"
        return
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        yield "normal"
        return
    granted = "normal"
    for nice in (-10, -5):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            granted = f"nice {nice}"
            break
        except OSError:
            continue
    try:
        yield granted
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, before)


def send(cfg: UdpSendConfig, report: Report | None = None) -> dict:
    if cfg.mode == "rr":
        check_rr(cfg.lengths, cfg.response_size)
    flow = cfg.flow if cfg.flow is not None else random.getrandbits(32)
    sock, granted = _socket(cfg)
    local, remote = sock.getsockname(), sock.getpeername()
    report = report or Report("sender", "udp", cfg.mode)
    report.doc["start"].update({"local": f"{local[0]}:{local[1]}",
                                "remote": f"{remote[0]}:{remote[1]}", "flow": flow,
                                "rate_bps": cfg.rate_bps, "lengths": cfg.lengths,
                                "options": {**cfg.options.as_dict(), **granted}})
    hello = control.encode(flow, control.hello("udp", cfg.mode, flow, lengths=cfg.lengths,
                                               rate_bps=cfg.rate_bps))
    try:
        for _ in range(END_REPEAT):
            try:
                sock.send(hello)
            except ConnectionRefusedError:
                pass                     # reported below, if it persists, as send errors
        if cfg.mode == "rr":
            totals = _rr(cfg, sock, flow, report)
            sent = totals["transactions"]
        else:
            with _paced_priority(cfg.rate_bps) as scheduling:
                totals = _stream(cfg, sock, flow, report)
            if "pacing" in totals:
                totals["pacing"]["scheduling"] = scheduling
            sent = totals["datagrams"]
        batch.disable_gso(sock)
        # the header's seq carries the count too: a capture alone then sees the tail loss
        end = control.encode(flow, {"type": "end", "sent": sent,
                                    "bytes": totals["payload_bytes"]}, seq=sent)
        for _ in range(END_REPEAT):
            time.sleep(0.01)             # apart, so one burst of loss cannot take all three
            try:
                sock.send(end)
            except OSError:              # the receiver got one and left (port unreachable)
                break
    finally:
        sock.close()
    report.finish(totals)
    return report.doc


def _limits(cfg: UdpSendConfig, start: float):
    deadline = start + cfg.seconds if cfg.seconds else None
    if deadline is None and cfg.total_bytes is None and cfg.count is None:
        deadline = start + 10.0
    return deadline


def _stream(cfg: UdpSendConfig, sock: socket.socket, flow: int, report: Report) -> dict:
    sizes = [max(n, wire.HEADER_LEN) for n in cfg.lengths]
    one_size = len(set(sizes)) == 1
    size = sizes[0]
    rate = cfg.rate_bps
    gap = size * 8 / rate if rate and one_size else 0.0
    # how many leave together: 1 when paced slowly enough, else a GSO batch
    if one_size and cfg.gso and batch.enable_gso(sock, size):
        k = batch.gso_batch_limit(size) if not rate else max(1, min(
            batch.gso_batch_limit(size), int(MIN_GAP_S / gap) + 1 if gap < MIN_GAP_S else 1))
        gso = k > 1
    else:
        k, gso = 1, False
    if not gso:
        batch.disable_gso(sock)
    grams = {n: _Datagrams(flow, n, k if n == size else 1) for n in set(sizes)}
    start = time.monotonic()
    deadline = _limits(cfg, start)
    next_tick = start + cfg.interval
    last = {"t": 0.0, "bytes": 0, "n": 0}
    sent_bytes = seq = i = 0
    bits_sent = 0.0
    errors = 0
    late, worst = 0, 0.0
    report.doc["start"]["batch"] = k
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if cfg.count is not None and seq >= cfg.count:
            break
        if cfg.total_bytes is not None and sent_bytes >= cfg.total_bytes:
            break
        n_size = sizes[i % len(sizes)]
        n = 1
        if gso:
            n = k
            if cfg.count is not None:
                n = min(n, cfg.count - seq)
            if cfg.total_bytes is not None:
                n = max(1, min(n, -(-(cfg.total_bytes - sent_bytes) // size)))
        if rate:
            due = start + bits_sent / rate
            _wait_until(due)
        data = grams[n_size].fill(seq, n, time.time_ns())
        try:
            sock.send(data)
        except (ConnectionRefusedError, BlockingIOError, OSError) as e:
            # ICMP port unreachable from an earlier datagram, or a full queue: count, go on
            errors += 1
            if errors == 1:
                report.event("send error", error=str(e))
        if rate:
            behind = time.monotonic() - due
            if behind > PACE_TOLERANCE_S:
                late += 1
                worst = max(worst, behind)
        seq += n
        i += 1
        sent_bytes += n * n_size
        bits_sent += n * n_size * 8
        now = time.monotonic()
        if now >= next_tick:
            t = now - start
            report.interval(last["t"], t, {"payload_bytes": sent_bytes - last["bytes"],
                                           "datagrams": seq - last["n"]})
            last = {"t": t, "bytes": sent_bytes, "n": seq}
            while next_tick <= now:
                next_tick += cfg.interval
    t = time.monotonic() - start
    if seq > last["n"]:
        report.interval(last["t"], t, {"payload_bytes": sent_bytes - last["bytes"],
                                       "datagrams": seq - last["n"]})
    out = {"duration_s": t, "payload_bytes": sent_bytes, "datagrams": seq, "send_errors": errors,
           "gso_batch": k if gso else 1}
    if rate:
        # sends (datagrams or GSO batches) that left over PACE_TOLERANCE_S behind schedule
        out["pacing"] = {"sends": i, "late": late, "max_late_s": worst,
                         "tolerance_s": PACE_TOLERANCE_S}
        if i and late > 0.01 * i:
            report.event("pacing behind schedule", late=f"{late}/{i}",
                         worst_s=round(worst, 6))
    return out


def _rr(cfg: UdpSendConfig, sock: socket.socket, flow: int, report: Report) -> dict:
    from .tcp import _percentiles

    size = rr_request_size(cfg.lengths)
    body = bytearray(size - wire.HEADER_LEN)
    control.RESPONSE_SIZE.pack_into(body, 0, cfg.response_size)
    sock.settimeout(cfg.rr_timeout)
    lat = []
    lost = late = 0
    start = time.monotonic()
    deadline = _limits(cfg, start)
    seq = 0
    buf = bytearray(65536)
    while (cfg.count is None or seq < cfg.count) and (deadline is None or
                                                        time.monotonic() < deadline):
        if cfg.tps:
            _wait_until(start + seq / cfg.tps)
        t0 = time.perf_counter()
        sock.send(wire.frame(wire.Header(flow, seq, time.time_ns(), 0, wire.KIND_REQUEST),
                             bytes(body)))
        while True:
            try:
                n = sock.recv_into(buf)
            except (TimeoutError, socket.timeout):
                lost += 1
                break
            except ConnectionRefusedError:
                raise ConnectionError(f"nobody listens on {cfg.host} port {cfg.port} "
                                      f"(ICMP port unreachable)") from None
            try:
                h = wire.Header.unpack(bytes(buf[:min(n, wire.HEADER_LEN)]))
            except wire.FramingError:
                continue
            if h.kind == wire.KIND_RESPONSE and h.seq == seq:
                lat.append(time.perf_counter() - t0)
                break
            late += 1           # a response to an earlier request that we gave up on
        seq += 1
    secs = time.monotonic() - start
    return {"duration_s": secs, "payload_bytes": seq * size, "transactions": seq,
            "answered": len(lat), "lost": lost,
            "late_responses": late, "transactions_per_s": len(lat) / secs if secs else 0,
            "latency_s": _percentiles(lat)}


# ---- the receiver ----


def _groups(sources: np.ndarray, flows: np.ndarray) -> list[np.ndarray]:
    """Row indices per (source, flow), in arrival order. Almost always one group: checked
    first without sorting."""
    if (sources == sources[0]).all() and (flows == flows[0]).all():
        return [np.arange(len(flows))]
    key = np.concatenate([sources, flows.astype(">u4").view(np.uint8).reshape(-1, 4)], axis=1)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


@dataclass
class Flow:
    key: tuple
    stats: SequenceStats
    hello: dict | None = None
    same_clock: bool = False
    ended: bool = False
    last_seen: float = 0.0


class UdpReceiver:
    """Counts every flow that reaches `port`; answers rr requests."""

    def __init__(self, port: int = 5201, host: str = "", *,
                 options: sockopts.SocketOptions | None = None, report: Report | None = None,
                 max_flows: int | None = None, max_seconds: float | None = None,
                 idle_end_s: float = 5.0, interval: float = 1.0, batch_size: int = 256,
                 max_live_flows: int = MAX_FLOWS, pause_s: float = 0.0,
                 slow_read_bps: float = 0.0):
        ReadPacer(pause_s, slow_read_bps)          # refuses what cannot be a schedule
        options = options or sockopts.SocketOptions(rcvbuf=8 << 20)
        self.pause_s, self.slow_read_bps = pause_s, slow_read_bps
        if slow_read_bps:
            batch_size = 1               # one datagram per read, each read on its schedule
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        granted = sockopts.apply(self.sock, options)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.rx = batch.BatchReceiver(self.sock, batch_size)
        self.report = report or Report("receiver", "udp", "server")
        self.report.doc["start"].update({"local": f"{host or '*'}:{self.port}",
                                         "options": {**options.as_dict(), **granted},
                                         "pause_s": pause_s, "slow_read_bps": slow_read_bps})
        self.report.doc["connections"] = []
        self.flows: dict[tuple, Flow] = {}
        self.max_flows, self.max_seconds = max_flows, max_seconds
        self.idle_end_s, self.interval = idle_end_s, interval
        self.ended = 0
        self.stray = 0
        self.max_live_flows = max_live_flows
        self.refused_flows = 0           # datagrams of flows beyond max_live_flows
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def _flow(self, key) -> Flow | None:
        """The flow of `key`, started if need be; None when MAX_FLOWS are already kept."""
        f = self.flows.get(key)
        if f is None:
            if len(self.flows) >= self.max_live_flows:
                if not self.refused_flows:
                    self.report.event("too many flows: datagrams of new flows are counted "
                                      "as stray", limit=self.max_live_flows)
                self.refused_flows += 1
                return None
            f = self.flows[key] = Flow(key, SequenceStats())
            self.report.event("flow started", peer=f"{key[0]}:{key[1]}", flow=key[2])
        return f

    def _finish(self, f: Flow, why: str) -> None:
        f.ended = True
        rec = {"peer": f"{f.key[0]}:{f.key[1]}", "flow": f.key[2], "ended": why,
               "mode": (f.hello or {}).get("mode"), **f.stats.totals(f.same_clock)}
        self.report.doc["connections"].append(rec)
        del self.flows[f.key]
        self.ended += 1
        self.report.event(f"flow {why}", peer=rec["peer"], flow=rec["flow"],
                          lost=f"{rec['lost']}/{rec['expected']}",
                          jitter_s=round(rec["jitter_s"], 6))

    def _handle(self, n: int) -> None:
        heads = self.rx.buf[:n, :wire.HEADER_LEN]
        d = wire.decode_heads(heads, self.rx.lengths[:n])
        valid = d["valid"]
        self.stray += int((~valid).sum())
        now = time.monotonic()
        data_rows = np.flatnonzero(valid & (d["kind"] == wire.KIND_DATA))
        special = np.flatnonzero(valid & (d["kind"] != wire.KIND_DATA))
        # data: grouped by source and flow, each group one batch into its stats
        if len(data_rows):
            for rows in _groups(self.rx.source_keys(n)[data_rows], d["flow"][data_rows]):
                rows = data_rows[rows]
                i = int(rows[0])
                addr = self.rx.source(i)
                f = self._flow((addr[0], addr[1], int(d["flow"][i])))
                if f is None:
                    self.stray += len(rows)
                    continue
                f.last_seen = now
                f.stats.add_batch(d["seq"][rows], d["send_ns"][rows], self.rx.recv_ns[rows],
                                  self.rx.lengths[rows])
        for i in special:
            try:
                self._special(int(i), d, now)
            except Exception:     # noqa: BLE001 - no datagram may stop the receiver
                self.stray += 1

    def _special(self, i: int, d: dict, now: float) -> None:
        """One request or control datagram (row i of the batch)."""
        addr = self.rx.source(i)
        key = (addr[0], addr[1], int(d["flow"][i]))
        kind = int(d["kind"][i])
        length = int(self.rx.lengths[i])
        if kind == wire.KIND_REQUEST:
            f = self._flow(key)
            if f is None:
                self.stray += 1
                return
            body = bytes(self.rx.buf[i, wire.HEADER_LEN:min(length, wire.HEADER_LEN + 4)])
            want = control.RESPONSE_SIZE.unpack(body)[0] if len(body) == 4 else 0
            want = min(want, rr_response_cap(length))
            reply = wire.frame(wire.Header(key[2], int(d["seq"][i]), time.time_ns(), 0,
                                           wire.KIND_RESPONSE), bytes(want))
            try:
                self.sock.sendto(reply, addr)
            except OSError:
                pass
            f.last_seen = now
            f.stats.add(int(d["seq"][i]), int(d["send_ns"][i]), int(self.rx.recv_ns[i]),
                        length)
        elif kind == wire.KIND_CONTROL:
            try:
                msg = control.decode(wire.Header.unpack(bytes(self.rx.buf[i, :32])),
                                     bytes(self.rx.buf[i, wire.HEADER_LEN:length]))
            except (control.ProtocolError, wire.FramingError):
                self.stray += 1
                return
            if msg["type"] == "hello":
                f = self._flow(key)
                if f is None:
                    self.stray += 1
                    return
                f.last_seen = now
                if f.hello is None:
                    # only what is used, and only known values: the rest is the peer's
                    mode = msg.get("mode")
                    f.hello = {"mode": mode if isinstance(mode, str) and mode in UDP_MODES
                               else None}
                    boot = msg.get("boot_id")
                    f.same_clock = isinstance(boot, str) and boot == control.boot_id()
            elif msg["type"] == "end" and key in self.flows:
                sent = msg.get("sent", 0)
                if not isinstance(sent, int) or isinstance(sent, bool) or \
                        not 0 <= sent < 1 << 63:
                    self.stray += 1
                    return
                f = self.flows[key]
                f.stats.end_marker(sent)
                self._finish(f, "ended")
        else:
            self.stray += 1

    def _wait(self, until: float, start: float) -> None:
        """Sleep until `until` (monotonic), in short steps: a stop or the time limit ends it."""
        while not self._stop:
            left = until - time.monotonic()
            if self.max_seconds is not None:
                left = min(left, start + self.max_seconds - time.monotonic())
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def run(self) -> dict:
        t_last, marks = 0.0, {}
        next_tick = time.monotonic() + self.interval
        start = time.monotonic()
        # the slow reader (pacing.py): while it waits, what arrives waits in the socket's
        # buffer, and once that is full the kernel drops it (UdpRcvbufErrors)
        pacer = ReadPacer(self.pause_s, self.slow_read_bps, start)
        if self.pause_s:
            self.report.event("pausing before the first read", seconds=self.pause_s)
        while not self._stop:
            if self.max_flows is not None and self.ended >= self.max_flows:
                break
            if (wait := pacer.wait(time.monotonic())) > 0:
                self._wait(time.monotonic() + wait, start)
            if self._stop or (self.max_seconds is not None
                              and time.monotonic() - start >= self.max_seconds):
                break
            n = self.rx.recv_batch(timeout=min(0.2, self.interval))
            if n:
                pacer.read(int(self.rx.lengths[:n].sum()), time.monotonic())
                self._handle(n)
            now = time.monotonic()
            for f in list(self.flows.values()):
                if f.last_seen and now - f.last_seen > self.idle_end_s:
                    self._finish(f, "idle")      # the end markers were lost, or rr ended
            if now >= next_tick:
                t = self.report.elapsed()
                for f in self.flows.values():
                    rec = f.stats.interval()
                    rec["flow"] = f.key[2]
                    self.report.interval(marks.get(f.key, t_last), t, rec)
                    marks[f.key] = t
                t_last = t
                while next_tick <= now:
                    next_tick += self.interval
        for f in list(self.flows.values()):
            self._finish(f, "open at stop")
        drops = socket_drops(self.sock)
        self.sock.close()
        conns = self.report.doc["connections"]
        self.report.finish({"duration_s": self.report.elapsed(), "flows": len(conns),
                            "payload_bytes": sum(c["payload_bytes"] for c in conns),
                            "goodput_bps": None, "stray_datagrams": self.stray,
                            "socket_drops": drops})
        return self.report.doc

