"""TCP's states over one connection: TIME-WAIT, CLOSE-WAIT, a restart on the same port.

Whoever closes first waits in TIME-WAIT, a server that never closes leaves CLOSE-WAIT, and
a server restarted on its port meets its own TIME-WAIT.

One request and its echo over one connection, then the close in the order the lab asks:

    server --close first    reply, shutdown(SHUT_WR) (FIN: FIN-WAIT-1, FIN-WAIT-2), read
                            until the client's FIN (TIME-WAIT), close
    server --close never    reply, read until recv returns b'' (the client's FIN:
                            CLOSE-WAIT), keep the socket open --hold seconds, then close
    client --close first    close as soon as the reply is in (FIN-WAIT-1, FIN-WAIT-2)
    client --close second   read until the server's FIN (recv returns b'': CLOSE-WAIT),
                            wait --hold seconds, then close (LAST-ACK)

`server --restart`: once its connection is over, the server closes its listener and
binds the same address and port again, as a restarted server would: first without
SO_REUSEADDR, which fails with EADDRINUSE while the old connection sits in TIME-WAIT on
this side, then with it, which works. Linux lets the bind through only when both the new
socket and the one in TIME-WAIT had SO_REUSEADDR (the connection inherits it from the
listener that accepted it), so the first listener sets it, as servers do.
"""

from __future__ import annotations

import socket
import sys

from . import Role, base

SCENARIO = "states"


def refuse_udp(args) -> int:
    print(f"labkit scenario {SCENARIO}: --proto {args.proto}: TCP states need TCP", file=sys.stderr)
    return 2


def _seconds(text) -> float:
    from ..endpoints.quantities import seconds
    return seconds(text)


def _server_args(p) -> None:
    p.add_argument("--close", choices=["first", "never"], default="first",
                   help="first: the server closes first (TIME-WAIT here); never: it does "
                        "not close after the client's FIN (CLOSE-WAIT) for --hold seconds")
    p.add_argument("--hold", type=_seconds, metavar="S",
                   help="--close never: seconds to keep the socket open after recv "
                        "returned b'' (default 2)")
    p.add_argument("--restart", action="store_true",
                   help="after the connection, bind the port again without and then with "
                        "SO_REUSEADDR")
    p.add_argument("--listen-again", type=_seconds, metavar="S",
                   help="--restart: seconds the restarted server listens before it ends "
                        "(default 0.5)")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                   help="the address to listen on (default every address)")


def _client_args(p) -> None:
    p.add_argument("--close", choices=["first", "second"], default="first",
                   help="first: close once the reply is in; second: wait for the server's "
                        "FIN, then --hold seconds, then close")
    p.add_argument("--hold", type=_seconds, metavar="S",
                   help="--close second: seconds in CLOSE-WAIT before closing (default 1)")
    p.add_argument("--length", type=int, default=100, metavar="BYTES",
                   help="the request's size; the server echoes it (default 100)")


def _refusal(role: str, args) -> str | None:
    """Why an option given does nothing in the mode asked for (--hold belongs to the side
    that closes second, --listen-again to --restart); None: none such."""
    waits = "never" if role == "server" else "second"
    if args.close != waits and args.hold is not None:
        return (f"--hold: the time the {role} keeps its socket open after the peer's FIN "
                f"(--close {waits}); with --close {args.close} it closes at once")
    if role == "server" and not args.restart and args.listen_again is not None:
        return "--listen-again: how long the restarted server listens; it takes --restart"
    return None


def _checked(role: str, args) -> int | None:
    """Exit status 2 for an option the mode asked for would ignore; else fill in the
    defaults."""
    why = _refusal(role, args)
    if why:
        print(f"labkit scenario {SCENARIO} {role}: {why}", file=sys.stderr)
        return 2
    if args.hold is None:
        args.hold = 2.0 if role == "server" else 1.0
    if role == "server" and args.listen_again is None:
        args.listen_again = 0.5
    return None


def listen(addr: str, port: int, reuseaddr: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen()
    except OSError:
        s.close()
        raise
    return s


def read_until_eof(conn: socket.socket, stop: base.Stop) -> bool:
    """Read until recv returns b'': the peer's FIN (RFC 9293 3.6). False: stopped first."""
    while base.wait_readable(conn, stop):
        if not conn.recv(65536):
            return True
    return False


def serve(args) -> int:
    def body(report: base.Report, stop: base.Stop) -> int:
        if args.proto != "tcp":
            return refuse_udp(args)
        ls = listen(args.bind, args.port, reuseaddr=True)
        base.ready("TCP", args.port, args)
        if not base.wait_readable(ls, stop):
            return 1
        conn, peer = ls.accept()
        report.event("accepted", peer=f"{peer[0]}:{peer[1]}")
        request = conn.recv(65536)
        report.event("recv", bytes=len(request))
        conn.sendall(request)
        report.event("sent reply", bytes=len(request))
        if args.close == "first":
            conn.shutdown(socket.SHUT_WR)        # our FIN: FIN-WAIT-1, then FIN-WAIT-2
            report.event("shutdown(SHUT_WR)", state="FIN-WAIT-1")
            if not read_until_eof(conn, stop):   # their FIN: TIME-WAIT, 2 MSL (60 s here)
                return 1
            report.event("recv returned b''", state="TIME-WAIT")
            report.end(peer_fin_s=report.now())
            conn.close()
        else:
            if not read_until_eof(conn, stop):
                return 1
            report.event("recv returned b''", state="CLOSE-WAIT")
            report.end(peer_fin_s=report.now())
            stop.wait(args.hold)                 # the bug: the socket is never closed ...
            conn.close()                         # ... until the program ends
            report.event("close", state="LAST-ACK", held_s=args.hold)
        report.end(closed_s=report.now(), close=args.close)
        ls.close()
        if not args.restart:
            return 0
        report.event("listener closed: the server restarts")
        return restart(args, report, stop)
    refused = _checked("server", args)
    if refused is not None:
        return refused
    return base.run_role(SCENARIO, "server", args, body)


def restart(args, report: base.Report, stop: base.Stop) -> int:
    """Bind the same address and port again, as a restarted server: without SO_REUSEADDR,
    then with it. The outcome of each is in the report (ok, or the errno's name)."""
    status = 1
    for key, reuse in (("rebind_plain", False), ("rebind_reuseaddr", True)):
        try:
            s = listen(args.bind, args.port, reuseaddr=reuse)
        except OSError as e:
            report.error("bind failed", e, so_reuseaddr=reuse,
                         shown=f"{type(e).__name__}: {e}")
            report.end(**{key: base.describe_error(e).get("errno", type(e).__name__),
                          f"{key}_error": f"{type(e).__name__}: {e}"})
            continue
        report.event("listening again", so_reuseaddr=reuse, port=args.port)
        report.end(**{key: "ok"})
        if reuse:
            stop.wait(args.listen_again)         # beside the old connection's TIME-WAIT
        s.close()
        status = 0 if reuse else status
    return status


def client(args) -> int:
    def body(report: base.Report, stop: base.Stop) -> int:
        if args.proto != "tcp":
            return refuse_udp(args)
        s = base.connect(args)                    # SYN-SENT, then ESTABLISHED
        report.event("connected", local=f"{s.getsockname()[0]}:{s.getsockname()[1]}")
        s.sendall(b"x" * args.length)
        got = 0
        while got < args.length and (data := s.recv(65536)):
            got += len(data)
        report.event("reply", bytes=got)
        report.end(reply_bytes=got, close=args.close)
        if args.close == "first":
            s.close()                            # our FIN: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT
            report.event("close", state="FIN-WAIT-1")
        else:
            if not read_until_eof(s, stop):
                return 1
            report.event("recv returned b''", state="CLOSE-WAIT")
            report.end(peer_fin_s=report.now())
            stop.wait(args.hold)
            s.close()                            # our FIN after theirs: LAST-ACK
            report.event("close", state="LAST-ACK")
        report.end(closed_s=report.now())
        return 0 if got == args.length else 1
    refused = _checked("client", args)
    if refused is not None:
        return refused
    return base.run_role(SCENARIO, "client", args, body)


ROLES = {
    "server": Role("one connection: echo the request, then close first or never (and "
                   "optionally restart on the same port)", _server_args, serve,
                   check=lambda args: _refusal("server", args)),
    "client": Role("one request, then close first or after the server", _client_args,
                   client, check=lambda args: _refusal("client", args)),
}
