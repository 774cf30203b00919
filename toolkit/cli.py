"""The `labkit` command: parses arguments and calls the public API. Nothing more."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, stream=sys.stderr, min_bytes: int = 8 << 20):
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self.min_bytes = min_bytes
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.min_bytes:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        width = 30
        bar = "#" * int(frac * width)
        rate = done / max(now - self.start, 1e-9) / 1e6
        self.stream.write(f"\r{self.label}: [{bar:<{width}}] {frac:5.1%} {rate:6.1f} MB/s")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def _err(msg: str) -> None:
    print(f"labkit: {msg}", file=sys.stderr)


def cmd_analyze(args) -> int:
    if args.format == "parquet" and not args.output:
        _err("--format parquet writes files: give --output DIR")
        return EXIT_INPUT
    many = args.format == "parquet" and (len(args.files) > 1 or args.jobs is not None
                                         or any(os.path.isdir(f) for f in args.files))
    if args.jobs is not None and not many:
        _err("--jobs: captures are analyzed in parallel into Parquet datasets only "
             "(--format parquet -o DIR)")
        return EXIT_INPUT
    if args.output and args.format != "parquet" and not Path(args.output).parent.is_dir():
        _err(f"--output {args.output}: no such directory {Path(args.output).parent}")
        return EXIT_INPUT
    if args.output and args.format != "parquet" and Path(args.output).is_dir():
        _err(f"--output {args.output}: is a folder; --format {args.format} writes one file")
        return EXIT_INPUT
    if args.output and args.format == "parquet" and Path(args.output).exists() and \
            not Path(args.output).is_dir():
        _err(f"--output {args.output}: exists and is not a folder (--format parquet writes "
             f"a folder of tables)")
        return EXIT_INPUT
    if args.jobs is not None and args.jobs < 1:
        _err(f"--jobs {args.jobs}: expected at least 1")
        return EXIT_INPUT
    if many:
        return _analyze_many(args)
    status = EXIT_OK
    docs = []
    csv_tables = []
    # per-packet CSV and JSON Lines stream to the output as each file is analyzed
    try:
        rows_out = _RowSink(args.output) if args.packets and args.format in ("csv", "json") \
            else None
    except OSError as e:
        _err(f"--output {args.output}: {e.strerror or e}")
        return EXIT_INPUT
    try:
        for path in args.files:
            status = max(status, _analyze_one(path, args, docs, csv_tables, rows_out))
    except BaseException:
        if rows_out is not None:
            rows_out.abandon()
        raise
    if rows_out is not None:
        rows_out.close()
    if args.format == "table" and docs:
        status = max(status, _emit("\n\n".join(docs), args.output))
    elif args.format == "json" and docs:
        # one document: a capture's, or with several files {"format_version", "captures"}
        doc = docs[0] if len(docs) == 1 else {"format_version": docs[0]["format_version"],
                                              "captures": docs}
        status = max(status, _emit(json.dumps(doc, indent=1), args.output))
    elif args.format == "csv" and csv_tables:
        import pandas as pd

        if len(csv_tables) == 1:
            df = csv_tables[0][1]
        else:
            df = pd.concat([t.assign(file=p) for p, t in csv_tables], ignore_index=True)
        status = max(status, _emit(df.to_csv(index=False), args.output))
    return status


def _analyze_many(args) -> int:
    from .many import ManyError, analyze_many, print_progress

    if args.stream is not None:
        _err("--stream: one capture at a time (several captures make datasets of every "
             "stream; filter them when reading)")
        return EXIT_INPUT
    try:
        res = analyze_many(args.files, args.output, jobs=args.jobs, packets=args.packets,
                           progress=print_progress())
    except ManyError as e:
        _err(str(e))
        return EXIT_INPUT
    print(f"{len(res.done)} captures analyzed, {len(res.skipped)} done before, "
          f"{len(res.failed)} could not be read, {len(res.damaged)} read up to damage; "
          f"datasets in {res.out}/ (one folder a table, partitioned by capture)",
          file=sys.stderr)
    for doc in res.failed + res.damaged:
        _err(doc["error"])                      # each names its file
    return EXIT_OK if res.ok else EXIT_INPUT


class _RowSink:
    """Where per-packet rows stream: stdout, or OUTPUT.part renamed to OUTPUT at the end
    (a run cut short never leaves a half-written OUTPUT)."""

    def __init__(self, output: str | None):
        self.path = Path(output) if output else None
        self.tmp = self.path.with_name(self.path.name + ".part") if self.path else None
        self.f = open(self.tmp, "wb") if self.tmp else sys.stdout.buffer
        self.files = 0

    def close(self) -> None:
        self.f.flush()
        if self.tmp:
            self.f.close()
            try:
                if self.files:
                    os.replace(self.tmp, self.path)
            finally:                     # no input could be read: no output file either
                self.tmp.unlink(missing_ok=True)

    def abandon(self) -> None:
        if self.tmp:
            self.f.close()
            self.tmp.unlink(missing_ok=True)


def _analyze_one(path, args, docs, csv_tables, rows_out) -> int:
    """Analyze one file into the chosen output; its exit status."""
    from . import api, report
    from .pcap import CaptureError

    if not os.path.exists(path):
        _err(f"{path}: no such file")
        return EXIT_INPUT
    if os.path.isdir(path):
        _err(f"{path}: is a directory, not a capture file")
        return EXIT_INPUT
    bar = Progress(f"reading {os.path.basename(path)}")
    try:
        a = api.analyze(path, progress=bar)
    except CaptureError as e:
        bar.close()
        _err(str(e))
        return EXIT_INPUT
    except OSError as e:
        bar.close()
        _err(f"{path}: {e.strerror or e}")
        return EXIT_INPUT
    bar.close()
    _freeze_long_lived()
    if args.stream is not None and args.stream not in set(a.tcp["stream"].tolist()):
        _err(f"{path}: --stream {args.stream}: no such TCP stream "
             f"(this file has {len(a.tcp)}: 0 to {len(a.tcp) - 1})")
        return EXIT_INPUT
    if args.format == "table":
        text = report.text_report(a, stream=args.stream, packets=args.packets)
        if args.output:
            docs.append(text)                   # written whole at the end (cmd_analyze)
        else:
            print(text)
            print()
    elif rows_out is not None:
        # JSON Lines (one object a frame) or CSV; with several files a file column
        a.release_columns_for_export()
        fmt = "jsonl" if args.format == "json" else "csv"
        extra = {"file": path} if len(args.files) > 1 else None
        a.write_packets(rows_out.f, fmt, stream=args.stream, extra=extra,
                        header=rows_out.files == 0)
        rows_out.files += 1
    elif args.format == "json":
        docs.append(a.to_json(stream=args.stream))
    elif args.format == "csv":
        csv_tables.append((path, _csv_table(a, args)))
    elif args.format == "parquet":
        out = Path(args.output)             # one capture (several go to _analyze_many)
        if args.packets:
            a.release_columns_for_export()
            import pyarrow as pa
            # the system allocator gives each chunk's memory back; Arrow's default pool
            # holds ~20 MB more at the peak (this process ends after the export)
            pa.set_memory_pool(pa.system_memory_pool())
        a.write(out, "parquet", packets=args.packets, stream=args.stream)
    if a.error is not None:
        # the results above cover every packet before the damage
        _err(f"{a.error} (analyzed the {len(a)} frames before it)")
        return EXIT_INPUT
    return EXIT_OK


def _csv_table(a, args):
    import pandas as pd

    tcp = a.tcp if args.stream is None else a.tcp[a.tcp["stream"] == args.stream]
    parts = [tcp.assign(proto="tcp")]
    if args.stream is None and len(a.udp):
        parts.append(a.udp.assign(proto="udp"))
    # counts stay whole numbers where TCP's and UDP's columns differ: pandas' nullable
    # integers, empty in the other protocol's rows (numpy's would turn to floats: 1387.0)
    parts = [p.astype({c: ("UInt64" if t.kind == "u" else "Int64")
                       for c, t in p.dtypes.items() if t.kind in "iu"}) for p in parts]
    df = pd.concat(parts, ignore_index=True)
    return df[["proto"] + [c for c in df.columns if c != "proto"]]


def _emit(text: str, output: str | None) -> int:
    if output:
        tmp = Path(output).with_name(Path(output).name + ".part")
        try:
            tmp.write_text(text)
            os.replace(tmp, output)   # never leave a half-written result behind
        except OSError as e:
            tmp.unlink(missing_ok=True)
            _err(f"--output {output}: {e.strerror or e}")
            return EXIT_INPUT
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .commands.run import unwritable
    why = unwritable(args.out)
    if why:
        _err(f"demo: {why}")
        return EXIT_INPUT
    if args.loopback:
        from .demo import run_demo
        out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        return run_demo(out)
    from .labs import demo
    return demo.run(Path(args.out) if args.out else None)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="labkit",
        description="TCP-vs-UDP lab kit: run captured experiments and analyze captures.")
    p.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    an = sub.add_parser("analyze", help="analyze pcap/pcapng files (Wireshark-equal verdicts)",
                        description="Per-conversation tables (default) or per-frame verdicts "
                                    "(--packets) of pcap, pcapng and gzip-compressed captures.")
    an.add_argument("files", nargs="+", metavar="FILE",
                    help="capture files; with --format parquet also folders of them")
    an.add_argument("--format", choices=["table", "json", "csv", "parquet"], default="table")
    an.add_argument("--packets", action="store_true",
                    help="one row per frame with tcp_stream, udp_stream and every verdict")
    an.add_argument("--stream", type=int, metavar="N", help="only TCP stream N (tcp.stream)")
    an.add_argument("-o", "--output", metavar="PATH",
                    help="write to PATH (a file for json/csv, a directory for parquet)")
    an.add_argument("-j", "--jobs", type=int, metavar="N",
                    help="with --format parquet and several captures or folders: analyze N "
                         "at once (default: every core) into one dataset per table, "
                         "partitioned by capture; captures done before are skipped")
    an.set_defaults(func=cmd_analyze)

    de = sub.add_parser("demo", help="run the loss lab (04-loss): TCP and UDP through a lossy "
                                     "link, captured, analyzed and reconciled",
                        description="Runs `labkit run 04-loss` (root, or rootless in a user "
                                    "namespace). Where this machine can build no lab, it says "
                                    "why and shows the saved reference run in captures/.")
    de.add_argument("--out", metavar="DIR",
                    help="run folder (default runs/04-loss-TIME, or runs/demo-TIME)")
    de.add_argument("--loopback", action="store_true",
                    help="instead: a short TCP and UDP exchange on lo, no namespaces (needs "
                         "capture rights)")
    de.set_defaults(func=cmd_demo)

    # the other subcommands live one per module in toolkit/commands (see its docstring)
    import importlib
    import pkgutil

    from . import commands
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}").register(sub)
    p.commands = sub.choices                   # each command's own parser, by name
    return p


def _process_settings() -> None:
    """Settings for the whole process, which a library must not make on import (a notebook
    that imports toolkit keeps its own), so the command makes them here.

    The analyzer does no linear algebra, but numpy's OpenBLAS starts a spinning thread per
    CPU when numpy is first imported: on a small machine they take CPU from the decoding
    threads. Only when numpy is not loaded yet and nobody has chosen."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _freeze_long_lived() -> None:
    """Move the objects alive now out of the cyclic garbage collector's way.

    Loading numba and its compiled kernels (when they are not built ahead of time) leaves a
    few hundred thousand long-lived objects (its type system, registries, the kernels).
    Every full collection walks them all, and so does the interpreter's exit: 0.3-0.4 s of
    a `labkit analyze` run. gc.freeze() puts them in a generation the collector skips; only
    reference cycles among them would never be collected, which a command that exits soon
    does not mind. Once, after the first analysis: what later files of the same command
    create is collected as usual."""
    global _frozen
    if not _frozen:
        import gc
        gc.freeze()
        _frozen = True


_frozen = False


_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def main(argv: list[str] | None = None) -> int:
    _process_settings()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # said by the command's own parser, with its usage (argparse leaves unknown options
        # to the top level, whose usage lists only the commands)
        parser.commands.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INPUT
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        # `labkit analyze ... | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as e:
        if e.filename is None:
            raise
        # a file or folder a command could not make, read or write: said with its path,
        # never a traceback; what was written before stays. A path the user gave that
        # cannot be used is bad input (2); the machine failing (no room, I/O) is 1
        _err(f"{e.filename2 if e.filename2 is not None else e.filename}: {e.strerror or e}")
        return EXIT_INPUT if e.errno in _PATH_ERRNOS else 1


if __name__ == "__main__":
    sys.exit(main())
