"""`labkit plot`: one figure of a run folder (or of one capture) as PNG, SVG or PDF."""

from __future__ import annotations

import sys

KINDS = ("ladder", "time-sequence", "goodput", "rtt-cwnd", "udp", "side-by-side")
RUN_ONLY = ("ladder", "rtt-cwnd", "side-by-side")
FORMATS = ("png", "svg", "pdf")
# which options each kind takes (the others are refused, not silently ignored)
OPTIONS = {
    "ladder": {"stream", "flow", "frames", "time"},
    "time-sequence": {"stream", "flow", "style", "direction", "at"},
    "goodput": {"window"},
    "rtt-cwnd": {"flow"},
    "udp": {"flow"},
    "side-by-side": set(),
}
# options a kind takes of a run folder but not of one capture, and why
RUN_FOLDER_ONLY = {
    "time-sequence": {"at": "a capture is one vantage point",
                      "flow": "a capture has no lab flows; give --stream N"},
}


def register(sub) -> None:
    p = sub.add_parser(
        "plot", help="draw a figure of a run (ladder, time-sequence, goodput, rtt-cwnd, udp, "
                     "side-by-side) as PNG, SVG or PDF",
        description="RUN is a run folder (with run.json); time-sequence, goodput and udp also "
                    "take one CAPTURE file. Without -o the figure is written to KIND.png in "
                    "the current directory. Exit 0: written; 2: bad input (the message says "
                    "what to give instead).")
    p.add_argument("path", metavar="RUN|CAPTURE")
    p.add_argument("kind", metavar="KIND", help=", ".join(KINDS))
    p.add_argument("--stream", type=int, metavar="N",
                   help="TCP stream N (tcp.stream; in a run, as the first vantage point "
                        "numbers it) [ladder, time-sequence]")
    p.add_argument("--flow", metavar="NAME",
                   help="the run's flow NAME (a lab flow id for udp of one capture) "
                        "[ladder, time-sequence, rtt-cwnd, udp]")
    p.add_argument("--style", choices=("stevens", "tcptrace"),
                   help="time-sequence style (default stevens)")
    p.add_argument("--direction", choices=("a_to_b", "b_to_a"),
                   help="time-sequence: the data direction (default a_to_b)")
    p.add_argument("--at", metavar="POINT",
                   help="time-sequence: the vantage point (default: the sender's side)")
    p.add_argument("--frames", metavar="FIRST:LAST",
                   help="ladder: the frames numbered FIRST to LAST (default 1:40)")
    p.add_argument("--time", metavar="T0:T1",
                   help="ladder: the frames sent between T0 and T1 s of the run's time axis")
    p.add_argument("--window", metavar="S",
                   help="goodput: the moving window, e.g. 0.1 (seconds) or 100ms "
                        "(default 0.1)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="FILE.png, FILE.svg or FILE.pdf (default: KIND.png here)")
    p.set_defaults(func=run)


def _err(msg: str) -> int:
    print(f"labkit plot: {msg}", file=sys.stderr)
    return 2


def _pair(text: str, option: str, cast):
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"{option} {text!r}: expected two values, like 1:40")
    try:
        return cast(parts[0]), cast(parts[1])
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected numbers, like 1:40") from None


def run(args) -> int:
    import os
    from pathlib import Path

    kind = args.kind
    if kind not in KINDS:
        return _err(f"no figure {kind!r}; KIND is one of {', '.join(KINDS)}")
    given = {name for name in ("stream", "flow", "style", "direction", "at", "frames", "time",
                               "window") if getattr(args, name) is not None}
    wrong = sorted(given - OPTIONS[kind])
    if wrong:
        takes = ", ".join(f"--{o}" for o in sorted(OPTIONS[kind])) or "no option"
        return _err(f"{kind} takes {takes}, not --{wrong[0]}")
    out = Path(args.output) if args.output else Path(f"{kind}.png")
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        return _err(f"-o {out}: the file name must end in .png, .svg or .pdf")
    if not out.parent.is_dir():
        return _err(f"-o {out}: no such directory {out.parent}")
    path = Path(args.path)
    if not path.exists():
        return _err(f"{path}: no such run folder or capture file")
    if path.is_dir() and not (path / "run.json").is_file():
        return _err(f"{path}: not a run folder (no run.json); give a run folder or a "
                    f"capture file")
    if not path.is_dir() and kind in RUN_ONLY:
        return _err(f"{kind} needs a run folder (RUN, a folder with run.json), not a "
                    f"capture: it draws from {_needs(kind)}; for one capture use "
                    f"time-sequence, goodput or udp")
    if not path.is_dir():
        refused = sorted(given & set(RUN_FOLDER_ONLY.get(kind, {})))
        if refused:
            name, only = refused[0], RUN_FOLDER_ONLY[kind]
            takes = ", ".join(f"--{o}" for o in sorted(OPTIONS[kind] - set(only)))
            return _err(f"--{name} needs a run folder: {kind} of one capture takes {takes}, "
                        f"not --{name} ({only[name]})")
    kw = {}
    try:
        if args.window is not None:
            from .. import units
            window = units.option(units.seconds, args.window, "--window", bare_time="s")
            if window <= 0:
                raise ValueError(f"--window {args.window}: must be above zero")
            kw["window_s"] = window
        if args.frames is not None:
            kw["frames"] = _pair(args.frames, "--frames", int)
        if args.time is not None:
            from .. import units
            kw["time_window"] = _pair(args.time, "--time",
                                      lambda x: units.seconds(x, bare_time="s"))
    except ValueError as e:
        return _err(str(e))

    from .. import plot
    from ..labs.folder import RunFolderError
    from ..pcap import CaptureError
    from ..plot._common import open_source
    from ..plot._mpl import save

    src = None
    try:
        src = open_source(path)
        if kind == "ladder":
            fig = plot.ladder(src, stream=args.stream, flow=args.flow, **kw)
        elif kind == "time-sequence":
            fig = plot.time_sequence(src, stream=args.stream if args.stream is not None or
                                     args.flow is not None else 0,
                                     direction=args.direction or "a_to_b",
                                     style=args.style or "stevens", at=args.at,
                                     flow=args.flow)
        elif kind == "goodput":
            fig = plot.goodput(src, **kw)
        elif kind == "rtt-cwnd":
            fig = plot.rtt_cwnd(src, flow=args.flow)
        elif kind == "udp":
            fig = plot.udp(src, flow=args.flow)
        else:
            fig = plot.side_by_side(src)
        save(fig, out, fmt)
    except (plot.PlotInputError, RunFolderError, CaptureError, LookupError, ValueError) as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"{getattr(e, 'filename', None) or path}: {e.strerror or e}")
    status = 0
    err = getattr(src, "error", None)
    if err is not None:
        _err(f"{err} (drawn from the frames before it)")
        status = 2
    print(f"wrote {out if out.is_absolute() else os.path.join('.', out)}")
    return status


def _needs(kind: str) -> str:
    return {"ladder": "the captures on both sides of the link and the link's ledger",
            "rtt-cwnd": "the sender's endpoint report (TCP_INFO)",
            "side-by-side": "every flow's captures and the link's drops table"}[kind]
