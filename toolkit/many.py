"""Many captures at once: `toolkit.analyze_many(paths, out)` and `labkit analyze DIR -o OUT
--format parquet`.

Each capture is analyzed by one worker (a process of a local pool, one per core by default,
or a Dask worker when given a `dask.distributed` Client) which writes its own part of one
Parquet dataset per table, partitioned by capture file:

    OUT/tcp_conversations/capture=<sha256[:16]>/part-0.parquet
    OUT/udp_conversations/...  OUT/tcp_states/...  OUT/udp_flows/...  (OUT/packets/...)
    OUT/_captures/<sha256>.json       one per capture done: name, sha256, frames, error,
                                      format_version (the tables' columns: docs/columns.md)

Every row carries its capture's `file` (path as given) and `sha256`; the `capture`
partition column is the hash's first 16 hex digits. pandas, pyarrow, DuckDB and Dask read
a table's folder as one dataset (e.g. `pd.read_parquet("OUT/tcp_conversations")`). A
capture whose record in `_captures/` exists with the same sha256 and format version is
skipped, so re-running after an interruption does only what is left (one written by a
labkit of another format is done again: a dataset holds one set of column names); a file
that cannot be read is reported and skipped, never the end of the rest. Workers write to
their own files only (a temporary folder renamed into place), so a half-written partition
is never read as a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")
TABLES = ("tcp_conversations", "udp_conversations", "tcp_states", "udp_flows")
DONE = "_captures"


class ManyError(ValueError):
    """Bad input to analyze_many (no captures, an output that is a file); names it."""


@dataclass
class ManyResult:
    out: Path
    done: list[dict] = field(default_factory=list)        # analyzed now
    skipped: list[dict] = field(default_factory=list)     # done before (same sha256)
    failed: list[dict] = field(default_factory=list)      # {"file", "error"}: an error
    #                                                       names its file, as CaptureError

    @property
    def damaged(self) -> list[dict]:
        """Captures analyzed up to damage in the file (their rows are written)."""
        return [d for d in self.done if d.get("error")]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.damaged


def captures_in(paths) -> list[Path]:
    """The capture files named or found (recursively, by suffix) in the folders named."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file()
                            and f.name.lower().endswith(CAPTURE_SUFFIXES))
        elif p.exists():
            found.append(p)
        else:
            raise ManyError(f"{p}: no such file or folder")
    return list(dict.fromkeys(found))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def done_before(out: Path, digest: str, packets: bool = False) -> dict | None:
    """The record of a capture of these bytes done before, if it has what is asked now
    (a run without --packets did not write the packets dataset) in this format (a record
    without a version is format 1's)."""
    from .api import FORMAT_VERSION
    record = out / DONE / f"{digest}.json"
    try:
        doc = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if packets and not doc.get("packets"):
        return None
    if doc.get("format_version", 1) != FORMAT_VERSION:
        return None
    return {**doc, "skipped": True}


def analyze_one(path: str, out: str, packets: bool = False, source: str | None = None) -> dict:
    """Analyze one capture into its partitions of the datasets under `out`, unless a
    capture of the same bytes (sha256) is done there already: a worker's job, plain
    arguments and result, so a process pool or Dask can carry them. The hash is taken
    here, in the worker: reading every file once more in the caller would be serial.
    `source`: where to read the file when `path` (the name kept in the rows) is relative
    to another working directory (a Dask worker's)."""
    t0 = time.perf_counter()
    path_, out_ = Path(source or path), Path(out)
    try:
        digest = sha256_of(path_)
    except OSError as e:
        return {"file": path, "error": f"{path}: {e.strerror or e}"}
    before = done_before(out_, digest, packets)
    if before is not None:
        return {**before, "file": path}
    record = out_ / DONE / f"{digest}.json"
    # one worker a capture's bytes: the same file under two names is analyzed once
    claim = out_ / DONE / f"{digest}.claim"
    claim.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return {"file": path, "sha256": digest, "skipped": True, "duplicate": True,
                "error": None}
    try:
        return _analyze_claimed(path, path_, out_, digest, record, packets, t0)
    finally:
        claim.unlink(missing_ok=True)


def _as_named(error: str, path: str, read: Path) -> str:
    """A reader's error (which names the file it read) naming the file as the user gave it,
    where a Dask worker read it under another name."""
    return f"{path}: {error.removeprefix(f'{read}: ')}" if str(read) != path and \
        error.startswith(f"{read}: ") else error


def _analyze_claimed(path: str, path_: Path, out_: Path, digest: str, record: Path,
                     packets: bool, t0: float) -> dict:
    from .api import FORMAT_VERSION, analyze
    from .pcap import CaptureError

    part = f"capture={digest[:16]}"
    try:
        a = analyze(path_, threads=1)
    except CaptureError as e:                   # says its path and byte itself
        return {"file": path, "sha256": digest, "error": _as_named(str(e), path, path_)}
    except OSError as e:
        return {"file": path, "sha256": digest, "error": f"{path}: {e.strerror or e}"}
    extra = {"file": path, "sha256": digest}
    import pyarrow.parquet as pq

    from .analysis.table import arrow_array

    tables = {"tcp_conversations": a.tcp_table,
              "udp_conversations": a.udp_result.conversation_table,
              "tcp_states": a.tcp_state_table, "udp_flows": a.udp_result.flow_table}
    for name, table in tables.items():
        t = table.to_arrow()
        n = t.num_rows
        t = t.append_column("file", arrow_array([path] * n)) \
             .append_column("sha256", arrow_array([digest] * n))
        _write_partition(out_ / name / part,
                         lambda d, t=t: pq.write_table(t, d / "part-0.parquet"))
    if packets:
        _write_partition(out_ / "packets" / part,
                         lambda d: a.write_packets(d / "part-0.parquet", "parquet",
                                                   extra=extra))
    doc = {"file": path, "sha256": digest, "frames": len(a),
           "error": _as_named(str(a.error), path, path_) if a.error else None,
           "duration_s": round(time.perf_counter() - t0, 3), "packets": packets,
           "format_version": FORMAT_VERSION}
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.{uuid.uuid4().hex}.part")
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, record)
    return doc


def _write_partition(final: Path, write) -> None:
    """Write into a temporary folder beside `final`, then put it in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")   # Dask: one pid
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    if final.exists():                 # a partition of an unfinished earlier run
        shutil.rmtree(final)
    os.replace(tmp, final)


def analyze_many(paths, out, client=None, jobs: int | None = None, packets: bool = False,
                 progress=None) -> ManyResult:
    """Analyze every capture in `paths` (files and folders) into Parquet datasets under
    `out`, in parallel: on a local process pool of `jobs` workers (default: every core),
    or on a Dask cluster when `client` (a dask.distributed Client) is given. `progress`,
    if given, is called with (done_count, total, result_dict) as each capture finishes."""
    files = captures_in(paths)
    if not files:
        raise ManyError(f"no capture files in {', '.join(map(str, paths))} (looked for "
                        f"{', '.join(CAPTURE_SUFFIXES)})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ManyError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    result = ManyResult(out)

    def take(doc: dict) -> None:
        (result.failed if doc.get("error") and "frames" not in doc else
         result.skipped if doc.get("skipped") else result.done).append(doc)
        if progress is not None:
            progress(len(result.done) + len(result.skipped) + len(result.failed),
                     len(files), doc)

    # absolute paths: a Dask worker's working directory is not this one (the `file`
    # column keeps the path as given)
    args = [(str(f), str(out.resolve()), packets) for f in files]
    if client is not None:
        from distributed import as_completed as dask_completed
        futures = {client.submit(analyze_one, *a, str(Path(a[0]).resolve()), pure=False): a[0]
                   for a in args}
        for fut in dask_completed(list(futures)):
            take(_result(fut.result, futures[fut]))
    else:
        jobs = jobs or os.cpu_count() or 1
        if jobs == 1 or len(args) == 1:
            for a in args:
                take(_result(lambda a=a: analyze_one(*a), a[0]))
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=_context()) as pool:
                futures = {pool.submit(analyze_one, *a): a[0] for a in args}
                for fut in as_completed(futures):
                    take(_result(fut.result, futures[fut]))
    return result


def _context():
    """How workers start. Forked from a process with one thread, after the analyzer and
    its compiled kernels are loaded here once (a worker then starts in milliseconds, not
    the second an interpreter takes to import them); spawned where threads run already
    (a notebook's, numba's, a web server's): a fork copies a lock another thread may hold,
    and the child can deadlock on it."""
    import multiprocessing
    import threading
    # Linux only: on macOS system frameworks (Accelerate, under numpy) are not fork-safe
    if threading.active_count() == 1 and sys.platform == "linux":
        _warm()
        if threading.active_count() == 1:
            return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _warm() -> None:
    """Load what every worker needs, once, before the fork: the analyzer with its compiled
    kernels (analyzing a two-frame capture loads them: the module built ahead of time, or
    numba's cache) and pyarrow."""
    import struct
    import tempfile

    from .api import analyze
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 96, 1)
    eth = b"\x02" * 12 + b"\x08\x00"
    tcp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, b"\n\0\0\1",
                      b"\n\0\0\2") + struct.pack("!HHIIHHHH", 1, 2, 0, 0, 0x5002, 1, 0, 0)
    udp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 2, 0, 64, 17, 0, b"\n\0\0\1",
                      b"\n\0\0\2") + struct.pack("!HHHH", 1, 2, 8, 0)
    frames = b"".join(struct.pack("<IIII", 1, i, len(eth + f), len(eth + f)) + eth + f
                      for i, f in enumerate((tcp, udp)))
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(head + frames)
        f.flush()
        analyze(f.name, threads=1).tcp_table.to_arrow()
    import pyarrow.parquet  # noqa: F401


def _result(get, path: str) -> dict:
    try:
        return get()
    except Exception as e:              # a worker that crashed: this file, not the rest
        return {"file": path, "error": f"{path}: {type(e).__name__}: {e}"}


def print_progress(stream=None):
    """A progress callback: one line a capture, as it finishes (on stderr as it is when
    the line is written, unless `stream` is given)."""
    def show(i: int, total: int, doc: dict) -> None:
        out = stream or sys.stderr
        # an error names its file (it is printed alone at the end too): once a line here
        error = doc.get("error") or ""
        error = error.removeprefix(f"{doc['file']}: ")
        if doc.get("duplicate"):
            what = "the same bytes as another capture of this run, skipped"
        elif doc.get("skipped"):
            what = "done before, skipped"
        elif error and "frames" not in doc:
            what = f"FAILED: {error}"
        else:
            what = f"{doc['frames']} frames in {doc['duration_s']:.2f} s" + \
                (f" (damaged: {error})" if error else "")
        out.write(f"[{i}/{total}] {doc['file']}: {what}\n")
        out.flush()
    return show
