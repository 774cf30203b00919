"""A listener that does not accept (or only late), and clients that keep arriving.

Server: listen(backlog) and, for `--accept-after` seconds from the moment the first
connection waits (the listening socket turns readable: poll, no accept), accept nothing.
The kernel finishes every handshake by itself and queues the connection (the accept
queue, backlog + 1 entries on Linux); once that is full it drops new SYNs (and counts
TcpExtListenOverflows and TcpExtListenDrops), and a client's TCP sends its SYN again
when its timer fires: after RFC 6298's initial RTO of 1 s, doubled each time (5.5) on
older kernels; Linux 6.5 and later first retry every second, 4 times
(net.ipv4.tcp_syn_linear_timeouts), and only then double. When the server
accepts, it closes each connection at once: the client sees the FIN, so its report says
when the server reached it.

Client: `--connections N` connections, one every `--every` seconds, each from source port
--cport + i, each with a connect timeout; a connection then waits for the server's close
(EOF). Per connection the report says when it started, how long connect() took (0.000x s:
the handshake completed at once, queued or not; about 1 s, 2 s, ...: SYNs were retried), when
the server closed it, or the error (TimeoutError: every SYN went unanswered).
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time

from . import Role
from .base import ready, run_role


def _seconds(text, what: str) -> float | None:
    """`2s`, `100ms`, `1.5` (seconds); "never": None."""
    from .. import units
    if text is None or str(text).lower() == "never":
        return None
    try:
        v = units.seconds(str(text), bare_time="s")
    except units.UnitError as e:
        raise ValueError(f"{what} {text}: {e}") from None
    if v < 0:
        raise ValueError(f"{what} {text}: cannot be negative")
    return v


# ---------------------------------------------------------------- server

def _server_args(p) -> None:
    p.add_argument("--backlog", type=int, default=2, help="listen backlog (default 2)")
    p.add_argument("--accept-after", default="never", metavar="S",
                   help="accept only S seconds after the first connection waits (0: at "
                        "once; default never)")
    p.add_argument("--accepts", type=int, default=None, metavar="N",
                   help="stop after accepting N connections")
    p.add_argument("--time", default=None, metavar="S",
                   help="stop S seconds after the first client made contact (a connection "
                        "waiting, or a half-open one: SYN-RECV in /proc/net/tcp)")


def _refusal(args) -> str | None:
    """Why the options given do nothing together (None: none such)."""
    if args.accepts is not None and (args.accept_after is None
                                     or str(args.accept_after).lower() == "never"):
        return (f"--accepts {args.accepts}: with --accept-after never the server accepts "
                f"nothing; give --accept-after S")
    return None


def _serve(args, report, stop) -> int:
    try:
        hold = _seconds(args.accept_after, "--accept-after")
        limit = _seconds(args.time, "--time")
        if not 0 <= args.backlog <= 4096:
            raise ValueError(f"--backlog {args.backlog}: expected 0 to 4096")
        if args.accepts is not None and args.accepts < 1:
            raise ValueError(f"--accepts {args.accepts}: expected at least 1")
        if (why := _refusal(args)) is not None:
            raise ValueError(why)
    except ValueError as e:
        print(f"labkit scenario backlog server: {e}", file=sys.stderr)
        return 2
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("", args.port))
    ls.listen(args.backlog)
    report.end(backlog=args.backlog, accepted=0)
    ready("TCP", args.port, args)
    report.event("listening", backlog=args.backlog,
                 accept_after_s=hold if hold is not None else "never")
    first_contact = None
    first_waiting = None
    accepted = 0
    poller = select.poll()
    poller.register(ls, select.POLLIN)
    try:
        while not stop:
            now = time.monotonic()
            if first_contact is None and half_open(args.port):
                first_contact = now
                report.event("first contact: a half-open connection (SYN-RECV)")
            if limit is not None and first_contact is not None and \
                    now - first_contact >= limit:
                report.event("time limit", limit_s=limit)
                break
            if not poller.poll(50):
                continue
            if first_contact is None:
                first_contact = now
            if first_waiting is None:
                first_waiting = now
                report.event("first connection waiting in the accept queue")
            if hold is None or now - first_waiting < hold:
                stop.wait(0.02)
                continue
            conn, peer = ls.accept()
            accepted += 1
            report.event("accepted", peer=f"{peer[0]}:{peer[1]}", n=accepted)
            conn.close()                 # at once: the client's EOF says when we got to it
            report.end(accepted=accepted)
            if args.accepts is not None and accepted >= args.accepts:
                break
    finally:
        ls.close()
    report.end(accepted=accepted)
    return 0


def half_open(port: int, path: str = "/proc/net/tcp") -> int:
    """How many half-open (SYN-RECV, state 03) entries listen on `port` in this namespace:
    the kernel lists its request sockets there, the listener's SYN queue (Linux 4.4+)."""
    try:
        with open(path) as f:
            lines = f.readlines()[1:]
    except OSError:
        return 0
    n = 0
    for line in lines:
        w = line.split()
        if len(w) > 3 and w[3] == "03" and int(w[1].rsplit(":", 1)[1], 16) == port:
            n += 1
    return n


def _run_server(args) -> int:
    if args.proto != "tcp":
        print("labkit scenario backlog server: --proto: a listen backlog is TCP's",
              file=sys.stderr)
        return 2
    return run_role("backlog", "server", args, lambda rep, stop: _serve(args, rep, stop))


# ---------------------------------------------------------------- client

def _client_args(p) -> None:
    p.add_argument("--connections", type=int, default=1, metavar="N",
                   help="connections to open (default 1)")
    p.add_argument("--every", default="0", metavar="S",
                   help="one connection every S seconds (default 0: all at once)")
    p.add_argument("--timeout", default="5s", metavar="S",
                   help="connect timeout per connection (default 5s)")
    p.add_argument("--linger", default="5s", metavar="S",
                   help="after connecting, wait at most S for the server's close")


def _one(i: int, args, report, stop, timeout: float, linger: float, out: list) -> None:
    rec = {"i": i, "cport": None, "started_s": report.now(), "connect_s": None,
           "closed_by_server_s": None, "error": None}
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if args.cport is not None:
            rec["cport"] = args.cport + i
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", args.cport + i))
        s.settimeout(timeout)
        t0 = time.monotonic()
        s.connect((args.host, args.port))
        rec["connect_s"] = round(time.monotonic() - t0, 6)
        report.event("connected", i=i, connect_s=rec["connect_s"])
        s.settimeout(0.1)
        deadline = time.monotonic() + linger
        while not stop and time.monotonic() < deadline:
            try:
                data = s.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            if not data:
                rec["closed_by_server_s"] = report.now()
                report.event("closed by the server", i=i)
            break
    except OSError as e:
        ev = report.error("connect failed" if rec["connect_s"] is None else "failed", e, i=i)
        rec["error"] = ev.get("errno") or ev["error"]
    finally:
        s.close()
        out.append(rec)


def _connect_all(args, report, stop) -> int:
    try:
        every = _seconds(args.every, "--every") or 0.0
        timeout = _seconds(args.timeout, "--timeout")
        linger = _seconds(args.linger, "--linger")
        if timeout is None or timeout <= 0:
            raise ValueError(f"--timeout {args.timeout}: expected a time above zero")
        if linger is None:
            raise ValueError(f"--linger {args.linger}: expected a time")
        if not 1 <= args.connections <= 1000:
            raise ValueError(f"--connections {args.connections}: expected 1 to 1000")
        if args.cport is not None and not 1 <= args.cport <= 65535 - args.connections + 1:
            raise ValueError(f"--cport {args.cport}: ports cport to cport+N-1 must be ports")
    except ValueError as e:
        print(f"labkit scenario backlog client: {e}", file=sys.stderr)
        return 2
    out: list[dict] = []
    threads = []
    for i in range(args.connections):
        if i and every and stop.wait(every):
            break
        t = threading.Thread(target=_one, args=(i, args, report, stop, timeout, linger, out),
                             daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    out.sort(key=lambda r: r["i"])
    ok = [r for r in out if r["connect_s"] is not None]
    waits = [r["connect_s"] for r in ok]
    report.doc["connections"] = out
    report.end(connections=len(out), connected=len(ok), failed=len(out) - len(ok),
               timed_out=sum(1 for r in out if r["error"] in ("TimeoutError", "ETIMEDOUT")),
               refused=sum(1 for r in out if r["error"] == "ECONNREFUSED"),
               connected_at_once=sum(1 for w in waits if w < 0.5),
               connected_after_retry=sum(1 for w in waits if w >= 0.5),
               connect_max_s=max(waits) if waits else None,
               closed_by_server=sum(1 for r in out if r["closed_by_server_s"] is not None))
    return 0


def _run_client(args) -> int:
    if args.proto != "tcp":
        print("labkit scenario backlog client: --proto: a listen backlog is TCP's",
              file=sys.stderr)
        return 2
    return run_role("backlog", "client", args, lambda rep, stop: _connect_all(args, rep, stop))


ROLES = {"server": Role("listen with a small backlog and accept nothing (or only after "
                        "--accept-after): the accept queue fills", _server_args, _run_server,
                        check=_refusal),
         "client": Role("open N connections, one every --every seconds, each with a "
                        "connect timeout, and report how long each connect took",
                        _client_args, _run_client)}
