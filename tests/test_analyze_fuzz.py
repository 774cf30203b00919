"""Damaged captures, end to end: `toolkit.analyze()` and `labkit analyze` on mutants of
real captures (the conformance corpus and the saved runs in captures/).

test_pcap_fuzz.py holds the reader to exact promises; this holds everything after it.
Each mutant is made deterministically (a seeded random generator per source and kind):
bytes flipped anywhere, bytes flipped in the frames' first 64 bytes (the headers the
decoders read), truncation, a record's or block's length field made absurd, timestamps
reversed or scrambled, the link type swapped, the gzip stream cut. For each mutant:

- in process: analyze() raises CaptureError (the reader's error, with the file and a
  byte offset inside it), or returns an Analysis whose every table (tcp, tcp_states,
  udp, udp_flows, packets, the summary, the text report) can be read, and that can be
  written in every format (json, csv, parquet, with and without per-packet rows, and the
  per-packet streams csv/jsonl/parquet), each written file reading back with its rows;
- on a subset, the command: `labkit analyze MUTANT` in each mode (table, --packets, and
  each --format with and without --packets, parquet with -o) exits 0, or 2 with one
  line naming the file and the byte offset; never a traceback, never a hang.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import CORPUS, REPO
from toolkit import analyze
from toolkit.api import jsonable
from toolkit.pcap import CaptureError

PCAPNG_SHB, PCAPNG_EPB = 0x0A0D0D0A, 6
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
LINKTYPES = [0, 1, 101, 105, 113, 127, 228, 229, 276, 147, 0xFFFF]
MAX_SOURCE = 600_000          # bytes (uncompressed): the larger corpus files are left out


def _sources() -> dict[str, bytes]:
    """name -> the uncompressed bytes of each real capture."""
    out = {}
    if (CORPUS / "files").is_dir():
        for p in sorted((CORPUS / "files").iterdir()):
            if p.stat().st_size <= MAX_SOURCE:
                out[p.name] = p.read_bytes()
    for run in sorted((REPO / "captures").iterdir()):
        p = run / "b.pcapng.gz"
        if p.is_file():
            data = gzip.decompress(p.read_bytes())
            if len(data) <= MAX_SOURCE:
                out[f"{run.name}-{p.name[:-3]}"] = data
    return out


SOURCES = _sources()


# --- where the records are ------------------------------------------------------------------

def _frames(data: bytes):
    """(record start, frame data start, caplen, timestamp offset, byte order, kind) of each
    packet record (pcap) or enhanced packet block (pcapng) of an undamaged file; kind is
    "pcap" or "epb"."""
    out = []
    if data[:4] in PCAP_MAGICS:
        end, pos = PCAP_MAGICS[data[:4]], 24
        while pos + 16 <= len(data):
            caplen = struct.unpack_from(end + "I", data, pos + 8)[0]
            if pos + 16 + caplen > len(data):
                break
            out.append((pos, pos + 16, caplen, pos, end, "pcap"))
            pos += 16 + caplen
        return out
    pos, end = 0, "<"
    while pos + 12 <= len(data):
        if struct.unpack_from("<I", data, pos)[0] == PCAPNG_SHB:
            end = ">" if data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d" else "<"
        btype, blen = struct.unpack_from(end + "II", data, pos)
        if blen < 12 or pos + blen > len(data):
            break
        if btype == PCAPNG_EPB:
            caplen = struct.unpack_from(end + "I", data, pos + 20)[0]
            out.append((pos, pos + 28, caplen, pos + 12, end, "epb"))
        pos += blen
    return out


def _linktype_offsets(data: bytes) -> list[int]:
    """Offsets of the 16-bit link type fields (pcap header; each pcapng IDB)."""
    if data[:4] in PCAP_MAGICS:
        return [20 if PCAP_MAGICS[data[:4]] == "<" else 22]
    out, pos, end = [], 0, "<"
    while pos + 12 <= len(data):
        if struct.unpack_from("<I", data, pos)[0] == PCAPNG_SHB:
            end = ">" if data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d" else "<"
        btype, blen = struct.unpack_from(end + "II", data, pos)
        if blen < 12 or pos + blen > len(data):
            break
        if btype == 1:
            out.append(pos + 8)
        pos += blen
    return out


# --- the mutations --------------------------------------------------------------------------

def _flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _flip_headers(data: bytes, rng: random.Random) -> bytes:
    """Bytes of the frames' first 64 bytes replaced: IP/TCP/UDP lengths, offsets, flags."""
    frames = _frames(data)
    if not frames:
        return _flip(data, rng)
    b = bytearray(data)
    for _ in range(rng.randint(1, 40)):
        _, start, caplen, *_ = rng.choice(frames)
        if caplen:
            b[start + rng.randrange(min(caplen, 64))] = rng.randrange(256)
    return bytes(b)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def _bad_length(data: bytes, rng: random.Random) -> bytes:
    frames = _frames(data)
    if not frames:
        return _truncate(data, rng)
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        rec, start, caplen, _, end, kind = rng.choice(frames)
        value = rng.choice([0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, caplen + rng.randint(1, 5000),
                            max(0, caplen - rng.randint(1, 60))])
        # the record's caplen (pcap), or the block's total length or caplen (pcapng)
        where = rec + 8 if kind == "pcap" else rng.choice([rec + 4, rec + 20])
        struct.pack_into(end + "I", b, where, value)
    return bytes(b)


def _reverse_time(data: bytes, rng: random.Random) -> bytes:
    """The same records, their timestamps in reverse order (time runs backwards)."""
    frames = _frames(data)
    b = bytearray(data)
    stamps = [data[ts:ts + 8] for _, _, _, ts, _, _ in frames]
    for (_, _, _, ts, _, _), stamp in zip(frames, reversed(stamps)):
        b[ts:ts + 8] = stamp
    return bytes(b)


def _scramble_time(data: bytes, rng: random.Random) -> bytes:
    """Some timestamps zero, all ones, or far from their neighbours."""
    frames = _frames(data)
    b = bytearray(data)
    for _, _, _, ts, _, _ in rng.sample(frames, min(len(frames), rng.randint(1, 20))):
        b[ts:ts + 8] = rng.choice([b"\0" * 8, b"\xff" * 8, rng.randbytes(8)])
    return bytes(b)


def _linktype(data: bytes, rng: random.Random) -> bytes:
    offsets = _linktype_offsets(data)
    if not offsets:
        return _flip(data, rng)
    b = bytearray(data)
    end = PCAP_MAGICS.get(data[:4], "<")
    if end == "<" and data[:4] not in PCAP_MAGICS and data[8:12] == b"\x1a\x2b\x3c\x4d":
        end = ">"
    struct.pack_into(end + "H", b, rng.choice(offsets), rng.choice(LINKTYPES))
    return bytes(b)


MUTATIONS = {"flip": _flip, "flip_headers": _flip_headers, "truncate": _truncate,
             "bad_length": _bad_length, "reverse_time": _reverse_time,
             "scramble_time": _scramble_time, "linktype": _linktype}
PLAN = [("flip", 0), ("flip_headers", 0), ("flip_headers", 1), ("truncate", 0),
        ("bad_length", 0), ("reverse_time", 0), ("scramble_time", 0), ("linktype", 0),
        ("gzip_cut", 0)]


def plan_for(i: int) -> list[tuple[str, int]]:
    """Source i's mutants, within the time budget: flips in the headers (they find the
    most) for every source, and every other kind of the plan, alternating, so that each
    kind meets half of the sources (about 140 mutants in all)."""
    return [(kind, n) for k, (kind, n) in enumerate(PLAN)
            if (kind, n) == ("flip_headers", 0) or (i + k) % 2 == 0]


def mutant(name: str, kind: str, n: int) -> tuple[str, bytes]:
    """(file name, bytes) of mutant n of one kind of one source; gzip-compressed for one
    in four (the reader decompresses), the stream itself cut for the kind "gzip_cut"."""
    rng = random.Random(f"{name}/{kind}/{n}")
    data = SOURCES[name]
    stem = f"{name.split('.')[0]}-{kind}{n}"
    if kind == "gzip_cut":
        z = gzip.compress(data, mtime=0)
        return stem + ".pcap.gz", z[:rng.randrange(10, len(z))]
    out = MUTATIONS[kind](data, rng)
    ext = ".pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else ".pcap"
    if rng.random() < 0.25:
        return stem + ext + ".gz", gzip.compress(out, mtime=0)
    return stem + ext, out


# --- in process ----------------------------------------------------------------------------

def _check_error(e: CaptureError, path: Path) -> None:
    """The reader's error names the file and a byte inside it (of the decompressed data,
    and saying so, for a gzip file)."""
    assert e.path == str(path) and e.offset >= 0, e
    assert str(e).startswith(f"{path}: at byte {e.offset}: "), e
    if path.suffix == ".gz":
        assert "(offset in the gzip-decompressed data)" in str(e), e
    else:
        assert e.offset <= path.stat().st_size, e


def _check_analysis(path: Path, out: Path) -> str:
    """Analyze one mutant and use all of it; returns "error" or "ok" (raises otherwise)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from toolkit import report

    try:
        a = analyze(path)
    except CaptureError as e:
        _check_error(e, path)
        return "error"
    if a.error is not None:
        _check_error(a.error, path)
    n = len(a)
    tables = {"tcp": a.tcp, "tcp_states": a.tcp_states, "udp": a.udp,
              "udp_flows": a.udp_flows, "packets": a.packets}
    for name, df in tables.items():
        assert isinstance(df, pd.DataFrame), name
        df.to_dict("records")                         # every value can be read
    assert len(tables["packets"]) == n
    summary = a.summary()
    assert summary["frames"] == n and summary["duration_s"] >= 0, summary
    assert report.text_report(a, packets=True)
    doc = json.loads(json.dumps(a.to_json(packets=True), default=jsonable))
    assert len(doc["packets"]) == n and len(doc["tcp_conversations"]) == len(a.tcp)
    streams = a.tcp["stream"].tolist()
    if streams:
        a.to_json(packets=True, stream=streams[-1])
    rows = {"tcp_conversations": len(a.tcp), "udp_conversations": len(a.udp),
            "tcp_states": len(a.tcp_states), "udp_flows": len(a.udp_flows), "packets": n}
    j = out / "all.json"
    a.write(j, "json", packets=True)
    assert len(json.loads(j.read_text())["packets"]) == n
    for fmt in ("csv", "parquet"):
        written = a.write(out / fmt, fmt, packets=True)
        assert sorted(p.stem for p in written) == sorted(rows)
        for p in written:
            if fmt == "csv":
                got = len(pd.read_csv(p)) if p.stat().st_size > 1 else 0
            else:
                got = pq.read_table(p).num_rows
            assert got == rows[p.stem], (p.name, got, rows[p.stem])
    for fmt in ("csv", "jsonl"):
        buf = io.BytesIO()
        assert a.write_packets(buf, fmt) == n
        lines = buf.getvalue().splitlines()
        assert len(lines) == n + (fmt == "csv")
        if fmt == "jsonl":
            for line in lines:
                json.loads(line)
    assert a.write_packets(out / "rows.parquet", "parquet") == n
    assert pq.read_table(out / "rows.parquet").num_rows == n
    return "ok"


@pytest.fixture(scope="module")
def compiled():
    """The analyzer's compiled kernels, built (or loaded from numba's cache) once before
    any mutant is timed."""
    analyze(min((CORPUS / "files").glob("*.pcap*"), key=lambda p: p.stat().st_size)
            if (CORPUS / "files").is_dir() else REPO / "captures" / "01-handshake" /
            "b.pcapng.gz")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_analyze_every_table_and_format_on_mutants(name, tmp_path, compiled):
    assert SOURCES, "no capture to mutate: captures/ is part of the repository"
    failures = []
    for kind, n in plan_for(sorted(SOURCES).index(name)):
        fname, data = mutant(name, kind, n)
        path = tmp_path / fname
        path.write_bytes(data)
        out = tmp_path / (fname + ".out")
        out.mkdir()
        t0 = time.monotonic()
        try:
            _check_analysis(path, out)
        except Exception as e:          # collected: every failing mutant is reported
            import traceback
            failures.append(f"{fname} ({kind} {n}): {type(e).__name__}: {e}\n"
                            + "".join(traceback.format_exc().splitlines(True)[-6:]))
        assert time.monotonic() - t0 < 30, f"{fname}: analysis took over 30 s"
    assert not failures, "\n\n".join(failures)


def test_mutants_are_damaged_and_deterministic():
    """The mutations do change the files (so the test above tests something), and the
    same mutant comes out every time."""
    name = next(n for n in SOURCES if n.endswith("b.pcapng"))
    for kind, n in PLAN:
        a, b = mutant(name, kind, n), mutant(name, kind, n)
        assert a == b, kind
        if kind == "gzip_cut":
            assert a[1] != gzip.compress(SOURCES[name], mtime=0)
            continue
        raw = gzip.decompress(a[1]) if a[0].endswith(".gz") else a[1]
        assert raw != SOURCES[name], kind
    frames = _frames(SOURCES[name])
    assert len(frames) > 10
    rev = _frames(_reverse_time(SOURCES[name], random.Random(0)))
    first, last = (SOURCES[name][f[3]:f[3] + 8] for f in (frames[0], frames[-1]))
    assert _reverse_time(SOURCES[name], random.Random(0))[rev[0][3]:rev[0][3] + 8] == last
    assert first != last


# --- the command ---------------------------------------------------------------------------

CLI_MODES = [[], ["--packets"], ["--format", "csv"], ["--format", "csv", "--packets"],
             ["--format", "json"], ["--format", "json", "--packets"],
             ["--format", "parquet", "-o", "{out}"],
             ["--format", "parquet", "-o", "{out}", "--packets"]]
CLI_KINDS = ["flip_headers", "truncate", "bad_length", "linktype", "reverse_time",
             "gzip_cut"]
ERROR_LINE = re.compile(r"labkit: (?P<file>.+?): at byte (?P<offset>\d+): .+")


def _run_cli(path: Path, mode: list[str], out: Path) -> tuple[list[str], int, str]:
    argv = [sys.executable, "-m", "toolkit.cli", "analyze", str(path),
            *[m.format(out=out) for m in mode]]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return argv, -1, "(hung: no exit within 60 s)"
    return argv, r.returncode, r.stderr


@pytest.mark.timeout(180)
def test_labkit_analyze_on_mutants_exits_0_or_2_with_one_line(tmp_path):
    """A subset of the mutants, each through one mode of the command (every mode used on
    several), two at a time (the in-process test covers them all): exit 0, or 2 with one
    line naming the file and the offset."""
    jobs = []
    names = sorted(SOURCES)
    for i, name in enumerate(names):
        for j, kind in enumerate(CLI_KINDS):
            if (i + j) % 8:                   # an eighth of the pairs: ~20 runs
                continue
            fname, data = mutant(name, kind, 0)
            path = tmp_path / fname
            path.write_bytes(data)
            mode = CLI_MODES[len(jobs) % len(CLI_MODES)]          # each mode in turn
            jobs.append((path, mode, tmp_path / (fname + ".out")))
    assert {tuple(m) for _, m, _ in jobs} == {tuple(m) for m in CLI_MODES}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda job: _run_cli(*job), jobs))
    failures, codes = [], {0: 0, 2: 0}
    for (path, _, _), (argv, code, err) in zip(jobs, results):
        what = f"{' '.join(argv[3:])}: exit {code}"
        lines = err.splitlines()
        if code not in (0, 2) or "Traceback" in err:
            failures.append(f"{what}\n{err[-2000:]}")
            continue
        codes[code] += 1
        if code == 2:
            m = ERROR_LINE.fullmatch(lines[0]) if len(lines) == 1 else None
            if not (m and m["file"] == str(path) and (
                    int(m["offset"]) <= path.stat().st_size if path.suffix != ".gz"
                    else "(offset in the gzip-decompressed data)" in lines[0])):
                failures.append(f"{what}: expected one line naming the file and the "
                                f"offset, got:\n{err}")
        elif err.strip():
            failures.append(f"{what}: exit 0 but stderr says:\n{err}")
    assert not failures, "\n\n".join(failures)
    assert codes[0] and codes[2], codes      # both outcomes were exercised
