"""How a server learns its client is gone: FIN, RST, a vanished host, a closed peer.

FIN: recv returns b''. RST: ConnectionResetError. A vanished host: keep-alive or a write
times out (TimeoutError). A write to a peer that closed: BrokenPipeError.

The client ends its connection one of three ways (`--close`):

    fin      close(): a FIN, the orderly close (RFC 9293 3.6); the server's recv returns b''
    rst      SO_LINGER {on, 0} then close(): a RST instead (RFC 9293 3.10.4, "ABORT");
             the server's next recv raises ConnectionResetError (ECONNRESET)
    vanish   nothing at all: it stays silent for --hold seconds, as a host that lost power
             or its network would (the lab's link drops the flow's packets from some point
             on). It must end at last: it resets, and the link drops that RST too.

The server reads (the default) or only writes (`--write-after S`: a push feed that never
reads). Reading, it learns of a FIN or a RST at once, but of a vanished peer never, unless
it turns on keep-alive (RFC 9293 3.8.4; --keepalive with TCP_KEEPIDLE/KEEPINTVL/KEEPCNT
short enough to fail within seconds: recv raises TimeoutError, ETIMEDOUT). Writing to a
peer that closed, the first write succeeds (it is only queued), the peer's host answers it
with a RST, and the next write raises BrokenPipeError (EPIPE; Python ignores SIGPIPE, so
it is an exception, not a dead process). Writing to a vanished peer, the writes are
retransmitted until TCP_USER_TIMEOUT (RFC 5482) gives up: TimeoutError again.
"""

from __future__ import annotations

import socket
import struct
import sys

from . import Role, base

SCENARIO = "abrupt_close"


def refuse_udp(args) -> int:
    print(f"labkit scenario {SCENARIO}: --proto {args.proto}: this scenario is about TCP",
          file=sys.stderr)
    return 2


def _seconds(text) -> float:
    from ..endpoints.quantities import seconds
    return seconds(text)


def _server_args(p) -> None:
    p.add_argument("--keepalive", action="store_true",
                   help="SO_KEEPALIVE with --keepidle, --keepintvl and --keepcnt")
    p.add_argument("--keepidle", type=int, metavar="S",
                   help="TCP_KEEPIDLE: idle seconds before the first probe (default 1)")
    p.add_argument("--keepintvl", type=int, metavar="S",
                   help="TCP_KEEPINTVL: seconds between probes (default 1)")
    p.add_argument("--keepcnt", type=int, metavar="N",
                   help="TCP_KEEPCNT: unanswered probes before giving up (default 2)")
    p.add_argument("--user-timeout", type=_seconds, metavar="S",
                   help="--write-after or --keepalive: TCP_USER_TIMEOUT, seconds data (or "
                        "keep-alive probes) may stay unacknowledged (default: the kernel's, "
                        "about 15 minutes of retransmissions)")
    p.add_argument("--write-after", type=_seconds, default=None, metavar="S",
                   help="never read: S seconds after accept, write --writes messages")
    p.add_argument("--writes", type=int, metavar="N",
                   help="--write-after: messages to write, --write-gap apart (default 3)")
    p.add_argument("--write-gap", type=_seconds, metavar="S",
                   help="--write-after: seconds between writes (default 0.2)")
    p.add_argument("--length", type=int, metavar="BYTES",
                   help="--write-after: bytes per write (default 100)")


def _client_args(p) -> None:
    p.add_argument("--close", choices=["fin", "rst", "vanish"], default="fin",
                   help="how the client ends: close(), SO_LINGER 0, or silence")
    p.add_argument("--length", type=int, default=5, metavar="BYTES",
                   help="bytes sent after connecting (default 5, 'hello'; 0: none)")
    p.add_argument("--wait", type=_seconds, metavar="S",
                   help="fin, rst: seconds between sending and closing (default 0.2)")
    p.add_argument("--hold", type=_seconds, metavar="S",
                   help="vanish: seconds of silence before the program ends (default 5)")


# what each role's options default to, when the mode they belong to is on (an option of a
# mode that is off is refused, not ignored: _mode_refusal)
SERVER_DEFAULTS = {"keepidle": 1, "keepintvl": 1, "keepcnt": 2, "user_timeout": 0.0,
                   "writes": 3, "write_gap": 0.2, "length": 100}
CLIENT_DEFAULTS = {"wait": 0.2, "hold": 5.0}


def _mode_refusal(role: str, args) -> str | None:
    """Why an option given does nothing in the mode asked for (None: none such)."""
    def given(*names):
        return next((n for n in names if getattr(args, n, None) is not None), None)
    if role == "server":
        if not args.keepalive and (n := given("keepidle", "keepintvl", "keepcnt")):
            return (f"--{n}: keep-alive's timing; without --keepalive the server sends no "
                    f"keep-alive probe")
        if args.write_after is None and (n := given("writes", "write_gap", "length")):
            return (f"--{n.replace('_', '-')}: the server only reads (no --write-after): it "
                    f"writes nothing")
        # TCP_USER_TIMEOUT bounds unacknowledged data (a writer's) and, with keep-alive, the
        # unanswered probes too (tcp(7)): it does nothing to a reader without keep-alive
        if args.write_after is None and not args.keepalive and given("user_timeout"):
            return ("--user-timeout: it ends a connection whose data or keep-alive probes go "
                    "unanswered; this server neither writes (no --write-after) nor probes "
                    "(no --keepalive)")
    elif args.close == "vanish" and given("wait"):
        return "--wait: --close vanish stays silent for --hold, then ends"
    elif args.close != "vanish" and given("hold"):
        return f"--hold: the silence of --close vanish; --close {args.close} waits --wait"
    return None


def _checked(role: str, args) -> int | None:
    """Exit status 2 for an option the mode would ignore; else fill in the defaults."""
    why = _mode_refusal(role, args)
    if why:
        print(f"labkit scenario {SCENARIO} {role}: {why}", file=sys.stderr)
        return 2
    for name, value in (SERVER_DEFAULTS if role == "server" else CLIENT_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return None


def set_keepalive(conn: socket.socket, idle_s: int, intvl_s: int, cnt: int) -> None:
    # Linux's defaults (2 h idle, 75 s apart, 9 probes) would take over 2 hours
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl_s)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)


def _detected(report: base.Report, **end) -> None:
    """The moment the server learned its client was gone, also counted from accept."""
    now = report.now()
    report.end(detected_s=now, connection_s=round(now - report.doc["end"]["accepted_s"], 6),
               **end)


def _outcome(report: base.Report, e: OSError, **fields) -> None:
    d = base.describe_error(e)
    report.error("error", e, **fields)
    _detected(report, outcome=d["error"], errno=d.get("errno"), shown=f"{d['error']}: {e}")


def read_until_gone(conn: socket.socket, report: base.Report, stop: base.Stop) -> int:
    got = 0
    while base.wait_readable(conn, stop):
        try:
            data = conn.recv(65536)
        except OSError as e:                      # RST: ECONNRESET; keep-alive: ETIMEDOUT
            _outcome(report, e, after_bytes=got)
            return 0
        if not data:                              # the peer's FIN
            report.event("recv returned b''", after_bytes=got)
            _detected(report, outcome="eof", recv_returned="b''")
            return 0
        got += len(data)
        report.event("recv", bytes=len(data))
        report.end(recv_bytes=got)
    report.end(outcome="stopped")
    return 1


def write_until_error(conn: socket.socket, args, report: base.Report, stop: base.Stop) -> int:
    if stop.wait(args.write_after):
        report.end(outcome="stopped")
        return 1
    ok = 0
    for i in range(args.writes):
        if i and stop.wait(args.write_gap):
            break
        try:
            conn.sendall(b"w" * args.length)
        except OSError as e:                      # EPIPE after the peer's RST; ETIMEDOUT
            _outcome(report, e, write=i + 1, writes_ok=ok)
            report.end(writes_ok=ok)
            return 0
        ok += 1
        report.event("send ok", write=i + 1, bytes=args.length)
        report.end(writes_ok=ok)
    report.end(outcome="no error")
    return 1


def serve(args) -> int:
    def body(report: base.Report, stop: base.Stop) -> int:
        if args.proto != "tcp":
            return refuse_udp(args)
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", args.port))
        ls.listen()
        base.ready("TCP", args.port, args)
        if not base.wait_readable(ls, stop):
            report.end(outcome="stopped")
            return 1
        conn, peer = ls.accept()
        ls.close()
        report.event("accepted", peer=f"{peer[0]}:{peer[1]}")
        report.end(accepted_s=report.now())
        if args.keepalive:
            set_keepalive(conn, args.keepidle, args.keepintvl, args.keepcnt)
        if args.user_timeout:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(args.user_timeout * 1000))
        with conn:
            if args.write_after is not None:
                return write_until_error(conn, args, report, stop)
            return read_until_gone(conn, report, stop)
    refused = _checked("server", args)
    if refused is not None:
        return refused
    return base.run_role(SCENARIO, "server", args, body)


def client(args) -> int:
    def body(report: base.Report, stop: base.Stop) -> int:
        if args.proto != "tcp":
            return refuse_udp(args)
        s = base.connect(args)
        report.event("connected")
        if args.length:
            s.sendall(b"hello"[:args.length].ljust(args.length, b"."))
            report.event("sent", bytes=args.length)
        report.end(close=args.close)
        if args.close == "vanish":
            stop.wait(args.hold)                  # silence: the host is gone
        else:
            stop.wait(args.wait)
        if args.close in ("rst", "vanish"):
            # SO_LINGER on with 0 s: close() discards what is queued and sends RST
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        report.event("closed", how={"fin": "FIN", "rst": "RST", "vanish": "RST"}[args.close])
        return 0
    refused = _checked("client", args)
    if refused is not None:
        return refused
    return base.run_role(SCENARIO, "client", args, body)


ROLES = {
    "server": Role("one connection: read until the client is gone (or only write), and "
                   "report how it learned", _server_args, serve,
                   check=lambda args: _mode_refusal("server", args)),
    "client": Role("connect, say hello, then close with FIN, with RST, or vanish",
                   _client_args, client, check=lambda args: _mode_refusal("client", args)),
}
