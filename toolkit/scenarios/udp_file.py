"""A file sent as plain UDP datagrams: what arrives is what you get (RFC 768: no repair).

The client reads the file, announces it in a hello (name, size, SHA-256, piece size and
count; a control datagram sent three times, 10 ms apart), then sends the file in pieces of
--piece bytes, one datagram each, paced at --rate, each with the lab header whose sequence
number is the piece's number (so a capture alone shows which pieces went missing), then an
end marker (three times; its header's seq is the piece count, as the endpoints' end marker).
Nothing is acknowledged and nothing is sent twice: a plain UDP program, the one a student
would write first.

The server takes one such transfer on its port: it keeps each piece where it belongs (the
piece number says where, so a reordered piece lands right), and at the end marker (or when
the sender has been silent for --idle, or on SIGINT) it judges what it has. Every piece
there and the SHA-256 right: the file is stored in --receive-dir under the same rules as
`labkit serve --receive-dir` (a plain name, never replacing anything, written to a
temporary file and linked into place, mode 0600: endpoints.sessions.FileSink). A piece
missing: nothing is stored, since a file with holes is not the file; the report lists the
missing piece numbers and the SHA-256 of what arrived (holes as zeros), which does not match.

Report (the endpoints' shapes, so the run's tables and the reconciliation read it as they
read `labkit send/serve --proto udp`): the client's end has datagrams and bytes; the
server's connections[0] has bytes, packets, lost, expected, duplicates; its end has the
verdict: stored, hash_ok, pieces, pieces_received, pieces_missing, missing_pieces (text).
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import time
from pathlib import Path

from .. import wire
from ..endpoints import control
from ..endpoints.sessions import FileSink, ProtocolError, check_file_name
from . import Role
from .base import ready, run_role

MAX_DATAGRAM = 65507                 # the largest UDP payload over IPv4
REPEAT = 3                           # hello and end marker, 10 ms apart
MISSING_SHOWN = 200                  # piece numbers listed in the report's text, at most


def _quantity(parse, text, flag: str):
    from ..endpoints.quantities import QuantityError
    try:
        return parse(text)
    except QuantityError as e:
        raise ValueError(f"{flag} {text}: {e}") from None


# ---------------------------------------------------------------- client

def _client_args(p) -> None:
    p.add_argument("--file", required=True, metavar="PATH", help="the file to send")
    p.add_argument("--piece", default="1000", metavar="SIZE",
                   help="file bytes per datagram (default 1000; the lab header adds 32)")
    p.add_argument("--rate", default="4M", metavar="R",
                   help="pace the datagrams at R bits/s (default 4M; 0: as fast as possible)")
    p.add_argument("--flow", type=int, default=None, metavar="ID",
                   help="flow id in the lab header (default random)")


def _send(args, report, stop) -> int:
    from ..endpoints import quantities as q
    try:
        piece = _quantity(q.size, args.piece, "--piece")
        rate = _quantity(q.rate, args.rate, "--rate")
        if not 1 <= piece <= MAX_DATAGRAM - wire.HEADER_LEN:
            raise ValueError(f"--piece {args.piece}: expected 1 to "
                             f"{MAX_DATAGRAM - wire.HEADER_LEN} bytes (one datagram)")
        data = Path(args.file).read_bytes()
        name = check_file_name(Path(args.file).name)
    except (ValueError, ProtocolError) as e:
        print(f"labkit scenario udp-file client: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"labkit scenario udp-file client: --file {args.file}: {e.strerror}",
              file=sys.stderr)
        return 2
    flow = args.flow if args.flow is not None else random.getrandbits(32)
    pieces = -(-len(data) // piece)
    meta = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if args.cport:
            sock.bind(("", args.cport))
        sock.connect((args.host, args.port))
        report.doc["start"].update(flow=flow, file=meta, piece_bytes=piece, pieces=pieces)
        hello = control.encode(flow, control.hello("udp", "file", flow, file=meta,
                                                   piece_bytes=piece, pieces=pieces))
        _repeat(sock, hello)
        report.event("hello sent", name=name, size=len(data), pieces=pieces)
        t0 = time.monotonic()
        sent = sent_bytes = errors = 0
        for i in range(pieces):
            if stop:
                break
            if rate:                      # even gaps: piece i leaves at t0 + bits before it
                due = t0 + sent_bytes * 8 / rate
                while (left := due - time.monotonic()) > 0:
                    time.sleep(left)
            body = data[i * piece:(i + 1) * piece]
            dgram = wire.frame(wire.Header(flow, i, time.time_ns(), 0, wire.KIND_DATA), body)
            try:
                sock.send(dgram)
            except OSError as e:          # an ICMP error from an earlier one: count, go on
                errors += 1
                if errors == 1:
                    report.error("send error", e)
            sent += 1
            sent_bytes += len(dgram)
        seconds = time.monotonic() - t0
        _repeat(sock, control.encode(flow, {"type": "end", "sent": sent, "bytes": sent_bytes},
                                     seq=sent))
        report.event("end sent", pieces=sent)
    finally:
        sock.close()
    report.end(datagrams=sent, payload_bytes=sent_bytes, duration_s=seconds, send_errors=errors,
               file_bytes=len(data), pieces=pieces, sha256=meta["sha256"])
    return 0


def _repeat(sock: socket.socket, dgram: bytes) -> None:
    for k in range(REPEAT):
        if k:
            time.sleep(0.01)      # apart, so one burst of loss cannot take all three
        try:
            sock.send(dgram)
        except OSError:
            pass


# ---------------------------------------------------------------- server

def _server_args(p) -> None:
    p.add_argument("--receive-dir", required=True, metavar="DIR",
                   help="store a complete, verified file here (an existing folder)")
    p.add_argument("--limit", default="16M", metavar="SIZE",
                   help="largest file accepted (default 16M): the pieces wait in memory")
    p.add_argument("--idle", default="3", metavar="S",
                   help="judge the transfer after S seconds without a datagram (default "
                        "3: the end marker may be lost too)")


class Transfer:
    """One file's pieces as they arrive, each kept at its place; pure, no I/O."""

    def __init__(self, hello: dict, limit: int):
        meta = hello.get("file")
        if not isinstance(meta, dict):
            raise ProtocolError("file hello needs name, size and sha256")
        self.name = check_file_name(meta.get("name"))
        self.size, self.sha256 = meta.get("size"), meta.get("sha256")
        self.piece = hello.get("piece_bytes")
        for what, v, top in (("size", self.size, limit),
                             ("piece_bytes", self.piece, MAX_DATAGRAM)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= top or \
                    (what == "piece_bytes" and v == 0):
                raise ProtocolError(f"file hello: {what} {v!r} is not a count up to {top}")
        if not isinstance(self.sha256, str) or len(self.sha256) != 64:
            raise ProtocolError("file hello: sha256 is not 64 hex digits")
        self.pieces = -(-self.size // self.piece)
        self.buf = bytearray(self.size)
        self.have = bytearray(self.pieces)
        self.duplicates = self.stray = self.bytes = 0

    def add(self, seq: int, body: bytes) -> None:
        start = seq * self.piece
        want = min(self.piece, self.size - start) if 0 <= seq < self.pieces else -1
        if len(body) != want:
            self.stray += 1               # not a piece of this file
            return
        self.bytes += wire.HEADER_LEN + len(body)
        if self.have[seq]:
            self.duplicates += 1
            return
        self.have[seq] = 1
        self.buf[start:start + len(body)] = body

    def missing(self) -> list[int]:
        return [i for i, h in enumerate(self.have) if not h]

    def verdict(self) -> dict:
        missing = self.missing()
        digest = hashlib.sha256(self.buf).hexdigest()
        shown = ",".join(map(str, missing[:MISSING_SHOWN])) + \
            (",..." if len(missing) > MISSING_SHOWN else "")
        return {"name": self.name, "file_bytes": self.size, "pieces": self.pieces,
                "pieces_received": self.pieces - len(missing), "pieces_missing": len(missing),
                "missing_pieces": shown, "sha256_announced": self.sha256,
                "sha256_received": digest, "hash_ok": digest == self.sha256.lower()}


def _serve(args, report, stop) -> int:
    from ..endpoints import quantities as q
    try:
        limit = _quantity(q.size, args.limit, "--limit")
        idle = _quantity(q.seconds, args.idle, "--idle")
        folder = Path(args.receive_dir)
        if not folder.is_dir():
            raise ValueError(f"--receive-dir {args.receive_dir}: not a directory")
    except ValueError as e:
        print(f"labkit scenario udp-file server: {e}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("", args.port))
    sock.settimeout(0.1)
    ready("UDP", args.port, args)
    t = None                              # the Transfer, once a hello came
    peer = flow = None
    ended, last, first = "stopped", None, None
    stray = 0
    try:
        while not stop:
            if last is not None and time.monotonic() - last > idle:
                ended = "idle"            # the end marker (all three) lost, or no sender
                break
            try:
                dgram, addr = sock.recvfrom(MAX_DATAGRAM)
            except (TimeoutError, socket.timeout):
                continue
            try:
                h = wire.Header.unpack(dgram[:wire.HEADER_LEN])
            except wire.FramingError:
                stray += 1
                continue
            if peer is not None and (addr, h.flow) != (peer, flow):
                stray += 1                # one transfer per server: the first hello's
                continue
            last = time.monotonic()
            first = first or last
            if h.kind == wire.KIND_CONTROL:
                try:
                    msg = control.decode(h, dgram[wire.HEADER_LEN:])
                except control.ProtocolError:
                    stray += 1
                    continue
                if msg["type"] == "hello" and t is None:
                    try:
                        t = Transfer(msg, limit)
                    except ProtocolError as e:
                        report.event("hello refused", error=str(e))
                        stray += 1
                        continue
                    peer, flow = addr, h.flow
                    report.event("hello", peer=f"{addr[0]}:{addr[1]}", name=t.name,
                                 size=t.size, pieces=t.pieces)
                elif msg["type"] == "end" and t is not None:
                    ended = "ended"
                    break
            elif h.kind == wire.KIND_DATA and t is not None:
                t.add(h.seq, dgram[wire.HEADER_LEN:])
            else:
                stray += 1                # data before any hello: nothing says where it goes
    finally:
        sock.close()
    if t is None:
        report.event("no file: no hello arrived", ended=ended)
        report.end(stored=False, ended=ended, stray_datagrams=stray)
        return 1
    v = t.verdict()
    v["stored"] = False
    if v["pieces_missing"]:
        v["why_not_stored"] = (f"{v['pieces_missing']} of {t.pieces} pieces missing: a file "
                               f"with holes is not the file")
    elif not v["hash_ok"]:
        v["why_not_stored"] = "every piece arrived, but the SHA-256 does not match"
    else:
        try:
            sink = FileSink(folder, t.name, t.size, t.sha256, limit)
            sink.write(bytes(t.buf))
            res = sink.commit()
        except ProtocolError as e:
            res = {"ok": False, "error": str(e)}
        v["stored"] = bool(res.get("ok"))
        if not v["stored"]:
            v["why_not_stored"] = res.get("error")
    seconds = (last - first) if first is not None else 0.0
    report.doc["connections"] = [{
        "peer": f"{peer[0]}:{peer[1]}", "flow": flow, "mode": "file", "ended": ended,
        "payload_bytes": t.bytes, "packets": v["pieces_received"], "expected": t.pieces,
        "lost": v["pieces_missing"], "duplicates": t.duplicates, "reordered": None,
        "loss_fraction": v["pieces_missing"] / t.pieces if t.pieces else 0.0,
        "duration_s": seconds}]
    report.event("stored" if v["stored"] else "not stored", name=t.name,
                 missing=v["pieces_missing"], hash_ok=v["hash_ok"])
    report.end(**v, ended=ended, lost=v["pieces_missing"], datagrams=v["pieces_received"],
               payload_bytes=t.bytes, duplicates=t.duplicates, stray_datagrams=stray + t.stray)
    return 0


def _run(role: str, body):
    def run(args) -> int:
        if args.proto != "udp":
            print(f"labkit scenario udp-file {role}: --proto: this is a UDP file transfer "
                  f"(`labkit send --mode file` sends files over TCP)", file=sys.stderr)
            return 2
        return run_role("udp-file", role, args, lambda rep, stop: body(args, rep, stop))
    return run


ROLES = {"server": Role("receive one file as UDP datagrams into --receive-dir: store it only "
                        "when every piece came and the SHA-256 matches; report the missing "
                        "pieces", _server_args, _run("server", _serve)),
         "client": Role("send --file as UDP datagrams of --piece bytes at --rate, each "
                        "numbered, none repeated", _client_args, _run("client", _send))}
