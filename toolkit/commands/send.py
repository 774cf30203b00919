"""`labkit send`: the sending end (iperf3 -c, with modes and a JSON report)."""

from __future__ import annotations

import sys

from ..endpoints.options import add_output_options, add_socket_options, socket_options

MODES = ["bulk", "paced", "stream", "rr", "echo", "file"]


def register(sub) -> None:
    p = sub.add_parser("send", help="send TCP or UDP lab traffic (iperf3 -c style)",
                       description="Modes: bulk (as fast as allowed), paced (--rate), stream "
                                   "(messages of --length sizes, e.g. 100,1400), rr "
                                   "(request/response), file (--file PATH). Every datagram "
                                   "and message carries the lab header.")
    p.add_argument("host")
    p.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    p.add_argument("-p", "--port", type=int, default=5201)
    p.add_argument("--mode", choices=MODES, default=None,
                   help="default bulk (file when --file is given)")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("-t", "--time", metavar="S", help="seconds to send (default 10)")
    lim.add_argument("-n", "--bytes", metavar="N", help="bytes to send, e.g. 100M")
    lim.add_argument("-k", "--count", type=int, metavar="N",
                     help="datagrams, or transactions in rr mode")
    p.add_argument("-b", "--rate", metavar="R",
                   help="bits/s, e.g. 10M (UDP default 1M as iperf3; 0: unlimited)")
    p.add_argument("-l", "--length", metavar="L",
                   help="message/datagram size, or sizes cycled: 100,1400 "
                        "(default TCP 128K, UDP 1400)")
    p.add_argument("--response-size", default=None, metavar="SIZE",
                   help="rr response size (default 128; TCP: at most the server's --limit; "
                        "UDP: at most 8 times the request datagram)")
    p.add_argument("--tps", type=float, default=0.0, metavar="N",
                   help="rr: transactions per second (default: back to back)")
    p.add_argument("--file", metavar="PATH",
                   help="file transfer (TCP); the server must receive files (labkit serve "
                        "--receive-dir DIR), keeps the name, never replaces a file, and "
                        "refuses hidden names and files above its --limit")
    p.add_argument("--no-framing", action="store_true",
                   help="TCP: write messages back to back with no framing promise; the "
                        "receiver reports how its reads lined up with them")
    p.add_argument("--no-gso", action="store_true", help="UDP: one datagram per system call")
    p.add_argument("-P", "--parallel", type=int, metavar="N",
                   help="TCP: N connections at once (as iperf3 -P), opened together and "
                        "released together, each running the mode; the report gives each "
                        "connection's first response and completion time and latency "
                        "percentiles over all (connection i from --cport + i)")
    p.add_argument("--flow", type=int, metavar="ID", help="flow id (default random)")
    p.add_argument("--cport", type=int, metavar="PORT",
                   help="bind the sending socket to this local (source) port, as iperf3's "
                        "--cport (default: an ephemeral port)")
    p.add_argument("-i", "--interval", default="1", metavar="S", help="report interval")
    add_output_options(p)
    add_socket_options(p)
    p.set_defaults(func=run)


# options a mode would take and ignore, refused (exit 2) naming the option and the mode:
# (flag, the args attribute, why it is refused for this protocol and mode, or None)
_FILE_WHOLE = "a file is sent whole, in frames of its own"
_IGNORED = (
    ("--backlog", "backlog", lambda proto, mode: "a sender does not listen"),
    ("--file", "file", lambda proto, mode: mode != "file" and "applies to --mode file only"),
    ("-t/--time", "time", lambda proto, mode: mode == "file" and _FILE_WHOLE),
    ("-n/--bytes", "bytes", lambda proto, mode: (
        _FILE_WHOLE if mode == "file" else (proto, mode) == ("udp", "rr")
        and "rr counts transactions (-k) or time (-t)")),
    ("-b/--rate", "rate", lambda proto, mode: (
        _FILE_WHOLE if mode == "file" else mode in ("rr", "echo")
        and "transactions are paced by --tps")),
    ("-l/--length", "length", lambda proto, mode: mode == "file" and _FILE_WHOLE),
    ("--no-gso", "no_gso", lambda proto, mode: (
        "GSO is UDP's" if proto == "tcp" else mode == "rr"
        and "rr sends one request datagram at a time")),
    ("-N/--nodelay", "nodelay", lambda proto, mode: proto == "udp"
     and "Nagle's algorithm is TCP's"),
    ("--linger0", "linger0", lambda proto, mode: proto == "udp"
     and "a UDP socket has no connection to close with a RST"),
    ("-C/--congestion", "congestion", lambda proto, mode: proto == "udp"
     and "congestion control is TCP's"),
)


def _refuse_ignored(args, mode: str) -> None:
    from ..endpoints.quantities import QuantityError
    for flag, dest, refused in _IGNORED:
        why = getattr(args, dest) not in (None, False) and refused(args.proto, mode)
        if why:
            raise QuantityError(f"{flag}: not with --proto {args.proto} --mode {mode} ({why})")
    if mode in ("rr", "echo") and args.length and "," in args.length:
        raise QuantityError(f"-l/--length {args.length}: mode {mode} sends requests of one "
                            f"size")


def _mode(args) -> str:
    """The mode asked for: --mode, else file with --file, else bulk."""
    return args.mode or ("file" if args.file else "bulk")


def check(args) -> str | None:
    """What is wrong with these options, as `labkit send` would refuse them (exit 2), or
    None: a lab's flows are checked so when the lab is loaded, not when a flow starts."""
    from ..endpoints.quantities import QuantityError
    try:
        config(args, files=False)
    except (QuantityError, ValueError) as e:
        return str(e)
    return None


def config(args, files: bool = True):
    """The sender's (mode, configuration) from its options; QuantityError or ValueError
    saying which option is wrong. Nothing is opened or sent. `files`: check that --file is
    a readable file (a lab's is made when it runs)."""
    from pathlib import Path

    from .. import units
    from ..endpoints import quantities as q

    mode = _mode(args)
    _refuse_ignored(args, mode)
    opts = socket_options(args)
    lengths = ([units.option(units.size, x, "--length") for x in args.length.split(",")]
               if args.length else None)
    if lengths is not None and any(n <= 0 for n in lengths):
        raise q.QuantityError(f"--length {args.length}: sizes must be above zero")
    seconds = units.option(q.seconds, args.time, "--time")
    total = units.option(units.size, args.bytes, "--bytes")
    interval = units.option(q.seconds, args.interval, "--interval")
    if interval <= 0:
        raise q.QuantityError("--interval must be above zero")
    if mode == "file":
        if args.proto != "tcp":
            raise q.QuantityError("--mode file is TCP only")
        if not args.file or (files and not Path(args.file).is_file()):
            raise q.QuantityError(f"--file {args.file}: not a readable file")
    if mode == "echo" and args.proto != "tcp":
        raise q.QuantityError("--mode echo is TCP only (UDP: use rr)")
    if args.no_framing and (args.proto != "tcp" or mode not in ("bulk", "stream")):
        raise q.QuantityError(f"--no-framing applies to TCP bulk and stream modes (this "
                              f"is --proto {args.proto}, mode {mode})")
    if mode == "paced" and not args.rate:
        raise q.QuantityError("--mode paced needs --rate")
    # an option that would be read in another mode only is refused, not ignored
    transactions = mode in ("rr", "echo")
    if args.proto == "tcp" and args.count is not None and not transactions:
        raise q.QuantityError(f"-k/--count: TCP counts transactions in rr and echo modes "
                              f"only; mode {mode} sends for -t seconds or -n bytes")
    if args.proto == "tcp" and total is not None and transactions:
        raise q.QuantityError(f"-n/--bytes: mode {mode} counts transactions (-k) or "
                              f"time (-t), not bytes")
    for flag, given in (("--tps", args.tps), ("--response-size", args.response_size)):
        if given and mode != "rr" and not (flag == "--tps" and mode == "echo"):
            raise q.QuantityError(f"{flag}: applies to --mode rr only (this is mode "
                                  f"{mode})")
    if not 1 <= args.port <= 65535:
        raise q.QuantityError(f"-p/--port {args.port}: a port is 1..65535")
    if args.cport is not None and not 1 <= args.cport <= 65535:
        raise q.QuantityError(f"--cport {args.cport}: a port is 1..65535")
    if args.parallel is not None:
        from ..endpoints.parallel import MAX_PARALLEL
        if args.proto != "tcp" or mode == "file":
            raise q.QuantityError(f"--parallel: TCP only, and not with --mode file (this "
                                  f"is --proto {args.proto}, mode {mode})")
        if not 1 <= args.parallel <= MAX_PARALLEL:
            raise q.QuantityError(f"--parallel {args.parallel}: expected 1 to "
                                  f"{MAX_PARALLEL}")
        if args.cport is not None and args.cport + args.parallel - 1 > 65535:
            raise q.QuantityError(f"--cport {args.cport} --parallel {args.parallel}: "
                                  f"ports cport to cport+N-1 must all be ports")
    response_size = units.option(units.size, args.response_size, "--response-size", 128)
    if args.proto == "tcp":
        from ..endpoints.tcp import TcpSendConfig
        cfg = TcpSendConfig(args.host, args.port, mode, seconds=seconds, total_bytes=total,
                            rate_bps=units.option(q.rate, args.rate, "--rate", 0),
                            lengths=lengths or ([128] if mode in ("rr", "echo")
                                                else [128 << 10]),
                            response_size=response_size, count=args.count,
                            tps=args.tps, file=Path(args.file) if args.file else None,
                            framing=not args.no_framing, interval=interval,
                            flow=args.flow, options=opts, cport=args.cport)
    else:
        from ..endpoints.udp import UdpSendConfig, check_rr
        if mode == "paced":
            mode = "bulk"
        if mode == "rr":
            check_rr(lengths or [64], response_size)
        cfg = UdpSendConfig(args.host, args.port, mode, seconds=seconds, total_bytes=total,
                            count=args.count,
                            rate_bps=units.option(q.rate, args.rate, "--rate", 1_000_000),
                            lengths=lengths or [1400 if mode != "rr" else 64],
                            response_size=response_size, tps=args.tps,
                            interval=interval, flow=args.flow, gso=not args.no_gso,
                            options=opts, cport=args.cport)
    return mode, cfg


def run(args) -> int:
    from ..endpoints.quantities import QuantityError
    from ..endpoints.report import Report

    try:
        mode, cfg = config(args)
    except (QuantityError, ValueError) as e:
        print(f"labkit send: {e}", file=sys.stderr)
        return 2
    if args.proto == "tcp":
        from ..endpoints.tcp import send
    else:
        from ..endpoints.udp import send
    # the report names the mode asked for (a UDP sender's paced is its bulk, paced)
    report = Report("sender", args.proto, _mode(args), quiet=args.quiet or args.json)
    report.say(f"Connecting to host {args.host}, {args.proto.upper()} port {args.port}, "
               f"mode {mode}")
    from ..endpoints.control import ProtocolError, clean
    from ..wire import FramingError

    try:
        if args.parallel is not None:
            from ..endpoints.parallel import send_parallel
            doc = send_parallel(cfg, args.parallel, report)
            report.emit(args)
            failed = doc["end"].get("failed", 0)
            if failed:
                print(f"labkit send: {failed} of {args.parallel} connections failed",
                      file=sys.stderr)
            return 1 if failed else 0
        doc = send(cfg, report)
    except (ConnectionError, OSError, ProtocolError, FramingError) as e:
        if report.doc["intervals"]:
            report.emit(args)        # what was measured before the failure is kept
        print(f"labkit send: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        report.finish({"duration_s": report.elapsed(), "interrupted": True})
        report.emit(args)
        return 130
    report.emit(args)
    end = doc["end"] if doc else {}
    if end.get("peer_error"):
        print(f"labkit send: the server ended the connection: {end['peer_error']}",
              file=sys.stderr)
        return 1
    if mode == "file":
        verdict = end.get("file_result")
        if not isinstance(verdict, dict) or verdict.get("ok") is not True:
            why = (clean(verdict.get("error")) if isinstance(verdict, dict)
                   else "no verdict came back")
            print(f"labkit send: the server did not store the file: {why}", file=sys.stderr)
            return 1
    return 0 if doc else 1
