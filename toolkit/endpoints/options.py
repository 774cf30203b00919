"""Command-line socket options shared by `labkit serve` and `labkit send` (argparse only:
the CLI imports this at start-up)."""

from __future__ import annotations


def add_socket_options(p) -> None:
    g = p.add_argument_group("socket options")
    g.add_argument("-N", "--nodelay", action="store_true", help="TCP_NODELAY (no Nagle)")
    g.add_argument("--rcvbuf", metavar="SIZE", help="SO_RCVBUF (the kernel doubles it)")
    g.add_argument("--sndbuf", metavar="SIZE", help="SO_SNDBUF (the kernel doubles it)")
    g.add_argument("--linger0", action="store_true",
                   help="SO_LINGER 0: close with RST instead of FIN")
    g.add_argument("--no-reuseaddr", action="store_true", help="do not set SO_REUSEADDR")
    g.add_argument("--backlog", type=int, default=None,
                   help="listen backlog (default 128)")
    g.add_argument("-C", "--congestion", metavar="ALGO",
                   help="TCP congestion control (e.g. cubic, reno, bbr)")


def add_output_options(p) -> None:
    """--json and --json-file, the same in every command that reports: `--json` is a switch
    (JSON on stdout instead of the text, as in doctor, selftest, labs and check);
    `--json-file FILE` keeps the text and writes the JSON report to FILE as well."""
    p.add_argument("--json", action="store_true",
                   help="one JSON document on stdout at the end, instead of the text lines")
    p.add_argument("--json-file", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no lines while running")


def socket_options(args):
    from .. import units
    from .sockopts import SocketOptions

    return SocketOptions(nodelay=args.nodelay,
                         rcvbuf=units.option(units.size, args.rcvbuf, "--rcvbuf"),
                         sndbuf=units.option(units.size, args.sndbuf, "--sndbuf"),
                         linger0=args.linger0, reuseaddr=not args.no_reuseaddr,
                         backlog=128 if args.backlog is None else args.backlog,
                         congestion=args.congestion)
