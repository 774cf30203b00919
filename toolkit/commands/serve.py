"""`labkit serve`: the receiving end (iperf3 -s, with server models and a JSON report)."""

from __future__ import annotations

import sys

from ..endpoints.options import add_output_options, add_socket_options, socket_options


def register(sub) -> None:
    p = sub.add_parser("serve", help="receive TCP or UDP lab traffic (iperf3 -s style)",
                       description="Serves every sender mode: bulk, paced, stream, rr "
                                   "(echo), unframed, and file when --receive-dir is given. "
                                   "Listens on every address unless -B says which. Rates "
                                   "and sizes as iperf3 writes them (10M, 64K).")
    p.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    p.add_argument("-p", "--port", type=int, default=5201)
    p.add_argument("-B", "--bind", default="", metavar="ADDR", help="local address")
    p.add_argument("--model", choices=["iterative", "thread", "process", "selectors",
                                       "asyncio"], default=None,
                   help="TCP concurrency model (default thread)")
    p.add_argument("-1", "--one-off", action="store_true",
                   help="stop after one client (TCP) or one flow (UDP)")
    p.add_argument("--clients", type=int, metavar="N", help="stop after N clients or flows")
    p.add_argument("-t", "--time", metavar="S", help="stop after S seconds")
    p.add_argument("--receive-dir", "--out-dir", dest="receive_dir", default=None,
                   metavar="DIR",
                   help="receive files (send --mode file) into DIR, an existing folder; "
                        "without it file transfers are refused. A file is never replaced; "
                        "names must be plain (no path, no leading dot, no control "
                        "characters, at most 255 bytes); size at most --limit; stored mode "
                        "0600 once its SHA-256 checks (--out-dir is the old name)")
    p.add_argument("--limit", default=None, metavar="SIZE",
                   help="TCP: largest message accepted, rr response sent and file received "
                        "(default 16M); a larger length field closes that connection")
    p.add_argument("--pause", metavar="S", help="slow reader: wait S seconds before reading "
                   "(TCP: the window closes; UDP: the socket buffer overflows, see --rcvbuf)")
    p.add_argument("--slow-read", metavar="RATE",
                   help="slow reader: read at most RATE bits/s (UDP: one datagram per read)")
    p.add_argument("--idle", metavar="S",
                   help="UDP: a flow that sends nothing for S seconds has ended (default 5; "
                        "its end markers may have been lost, or dropped by a full buffer)")
    p.add_argument("-i", "--interval", default="1", metavar="S", help="report interval")
    add_output_options(p)
    add_socket_options(p)
    p.set_defaults(func=run)


def _raise_fd_limit() -> None:
    """A thousand clients need a thousand descriptors; the soft limit is often 1024. Raised
    as far as this platform allows (macOS refuses more than OPEN_MAX with ValueError, and
    Windows has no resource module); where it cannot be, the server runs with what it has
    and accept() backs off when descriptors run out."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    for target in (want, 10240, 4096):
        if soft >= target:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return
        except (OSError, ValueError):
            continue


# what a server of one protocol would take and ignore: refused (exit 2), naming the option
# and the protocol. The socket options each protocol does take are in sockopts.py.
TCP_ONLY = {"model": "--model", "receive_dir": "--receive-dir", "limit": "--limit",
            "nodelay": "-N/--nodelay", "linger0": "--linger0", "congestion": "-C/--congestion",
            "backlog": "--backlog"}
UDP_ONLY = {"idle": "--idle"}
WHY = {"--model": "the server models are TCP's; a UDP receiver is one socket",
       "--receive-dir": "files are received over TCP only",
       "--limit": "UDP datagrams are at most 64K, and rr responses at most 8 times their "
                  "request",
       "-N/--nodelay": "Nagle's algorithm is TCP's",
       "--linger0": "a UDP socket has no connection to close with a RST",
       "-C/--congestion": "congestion control is TCP's",
       "--backlog": "a UDP socket does not listen",
       "--idle": "a TCP connection ends with its FIN"}


def _refuse_other_proto(args) -> None:
    from ..endpoints.quantities import QuantityError
    other = TCP_ONLY if args.proto == "udp" else UDP_ONLY
    for dest, flag in other.items():
        if getattr(args, dest) not in (None, False):
            raise QuantityError(f"{flag}: {args.proto == 'udp' and 'TCP' or 'UDP'} only, "
                                f"this is --proto {args.proto} ({WHY[flag]})")


def check(args) -> str | None:
    """What is wrong with these options, as `labkit serve` would refuse them (exit 2), or
    None: a lab's servers are checked so when the lab is loaded, not when they start."""
    from ..endpoints.quantities import QuantityError
    try:
        settings(args, files=False)
    except (QuantityError, ValueError) as e:
        return str(e)
    return None


def settings(args, files: bool = True) -> dict:
    """The server's settings from its options; QuantityError or ValueError saying which
    option is wrong. Nothing is opened. `files`: check that --receive-dir is a writable
    folder (a lab's is made when it runs)."""
    import os
    from pathlib import Path

    from .. import units
    from .. import wire
    from ..endpoints import quantities as q

    _refuse_other_proto(args)
    if not 0 <= args.port <= 65535:
        raise q.QuantityError(f"-p/--port {args.port}: a port is 0..65535 (0: any free one)")
    interval = units.option(q.seconds, args.interval, "--interval")
    if interval <= 0:
        raise q.QuantityError("--interval must be above zero")
    receive_dir = None
    if args.receive_dir is not None:
        receive_dir = Path(args.receive_dir).resolve()
        if files and not receive_dir.is_dir():
            raise q.QuantityError(f"--receive-dir {args.receive_dir}: not a directory")
        if files and not os.access(receive_dir, os.W_OK | os.X_OK):
            raise q.QuantityError(f"--receive-dir {args.receive_dir}: not writable")
    idle_s = units.option(q.seconds, args.idle, "--idle", 5.0)
    if idle_s <= 0:
        raise q.QuantityError(f"--idle {args.idle}: expected seconds above zero")
    slow_read_bps = units.option(q.rate, args.slow_read, "--slow-read", 0.0)
    if args.slow_read is not None and slow_read_bps <= 0:
        raise q.QuantityError(f"--slow-read {args.slow_read}: expected a rate above zero "
                              f"(e.g. 500K bits/s)")
    return {"model": args.model or "thread", "options": socket_options(args),
            "max_clients": 1 if args.one_off else args.clients,
            "seconds": units.option(q.seconds, args.time, "--time"), "interval": interval,
            "receive_dir": receive_dir,
            "pause_s": units.option(q.seconds, args.pause, "--pause", 0.0),
            "slow_read_bps": slow_read_bps, "idle_s": idle_s,
            "limit": units.option(units.size, args.limit, "--limit", wire.DEFAULT_LIMIT)}


def run(args) -> int:
    import signal

    _raise_fd_limit()
    from ..endpoints import quantities as q
    from ..endpoints.report import Report
    from ..endpoints.servers import Server, ServerConfig
    from ..endpoints.udp import UdpReceiver

    try:
        st = settings(args)
        model, opts = st["model"], st["options"]
        report = Report("server" if args.proto == "tcp" else "receiver", args.proto,
                        model if args.proto == "tcp" else "udp",
                        quiet=args.quiet or args.json)
        if args.proto == "tcp":
            server = Server(ServerConfig(
                port=args.port, host=args.bind, model=model, limit=st["limit"],
                receive_dir=st["receive_dir"], options=opts, pause_s=st["pause_s"],
                slow_read_bps=st["slow_read_bps"], max_connections=st["max_clients"],
                max_seconds=st["seconds"], interval=st["interval"]), report)
        else:
            if opts.rcvbuf is None:
                opts.rcvbuf = 8 << 20
            # the slow reader works for UDP too: with a small --rcvbuf the socket's buffer
            # overflows and the kernel drops datagrams inside this host (UdpRcvbufErrors)
            server = UdpReceiver(args.port, args.bind, options=opts, report=report,
                                 max_flows=st["max_clients"], max_seconds=st["seconds"],
                                 interval=st["interval"], pause_s=st["pause_s"],
                                 slow_read_bps=st["slow_read_bps"], idle_end_s=st["idle_s"])
    except (q.QuantityError, ValueError) as e:
        print(f"labkit serve: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"labkit serve: cannot listen on port {args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    # Ctrl-C and SIGTERM stop it cleanly: the report is still written. Installed before
    # the "listening" line, which is what a script waits for before it may signal us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    # always printed, even with -q: scripts wait for this line before they connect (on
    # stderr with --json, whose stdout is the JSON document alone)
    print(f"Server listening on {args.proto.upper()} port {server.port}"
          + (f" ({model} model)" if args.proto == "tcp" else ""), flush=True,
          file=sys.stderr if args.json else sys.stdout)
    if st["receive_dir"] is not None:
        report.say(f"Receiving files into {st['receive_dir']}")
    doc = server.run()
    report.emit(args)
    return 0 if doc else 1
