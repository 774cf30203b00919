"""Every frame of every corpus capture: every per-frame field equals tshark 4.0's.

The reference is ../shared/corpus/tshark-full/NAME.tsv: for the twenty public captures
(files/) and the three made ones (made/), every per-frame field tshark 4.0.17 prints
(`tshark -n -2 -r FILE -T fields -E header=y -e ...`, TSHARK_FIELDS in that order). It is
read offline, so the comparison runs wherever the corpus is, with or without tshark.
../shared/corpus/tshark/NAME.tsv (the older reference) adds the two fields tshark-full
lacks, TCP flags and source address. A deliberate difference is listed in DIFFERENCES by
(file, frame, field) with its reason, and written up in docs/wireshark-differences.md;
today there are none.

Synthetic captures for what no capture here has (a Wireshark-style zero-window probe, an
empty SACK option) are in test_wireshark_synthetic.py, compared with tshark run live.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import toolkit
from toolkit.analysis import verdicts as V

from conftest import CORPUS, corpus_file, corpus_names, corpus_or_skip

# every verdict column, named as tshark's tcp.analysis.<name> field
FLAGS = list(V.VERDICTS)
# the verdicts ../shared/corpus/tshark/*.tsv carries, and the others (toolkit.wireshark's
# cross_check compares the same set, test_wireshark.py checks)
SAVED_FLAGS = ["retransmission", "fast_retransmission", "spurious_retransmission",
               "duplicate_ack", "lost_segment", "out_of_order", "zero_window", "window_full",
               "keep_alive"]
LIVE_FLAGS = [f for f in FLAGS if f not in SAVED_FLAGS]

# tshark field -> our packets column. Numbers absent in tshark's output are 0 in ours
# (ack_rtt_s: NaN); the sequence fields of a frame that is not a TCP segment are 0.
TCP_HEADER = {"tcp.len": "tcp_len", "tcp.seq": "seq", "tcp.ack": "ack",
              "tcp.seq_raw": "seq_raw", "tcp.ack_raw": "ack_raw", "tcp.window_size": "window"}
NUMBERS = {f"tcp.analysis.{n}": n for n in ("duplicate_ack_num", "duplicate_ack_frame",
                                            "acks_frame", "bytes_in_flight")}
COLUMN = {"tcp.stream": "tcp_stream", "udp.stream": "udp_stream", **TCP_HEADER,
          **{f"tcp.analysis.{f}": f for f in FLAGS}, **NUMBERS,
          "tcp.analysis.ack_rtt": "ack_rtt_s"}
# tshark-full's columns, in its order
TSHARK_FIELDS = (["frame.number", "tcp.stream", "udp.stream", "tcp.len", "tcp.seq", "tcp.ack",
                  "tcp.seq_raw", "tcp.ack_raw", "tcp.window_size"]
                 + [f"tcp.analysis.{f}" for f in FLAGS]
                 + ["tcp.analysis.duplicate_ack_num", "tcp.analysis.duplicate_ack_frame",
                    "tcp.analysis.acks_frame", "tcp.analysis.ack_rtt",
                    "tcp.analysis.bytes_in_flight"])
LIVE_FIELDS = TSHARK_FIELDS          # the name test_wireshark.py knows them by
assert set(TSHARK_FIELDS) - {"frame.number"} == set(COLUMN)

# (file, frame, tshark field) -> why we differ on purpose. Empty: we agree everywhere.
DIFFERENCES: dict[tuple[str, int, str], str] = {}


def made_names() -> list[str]:
    folder = CORPUS / "made"
    return sorted(p.stem for p in folder.glob("*.pcapng")) if folder.is_dir() else []


def capture_path(name: str) -> Path:
    if name in made_names():
        return CORPUS / "made" / f"{name}.pcapng"
    return corpus_file(name)


ALL_NAMES = corpus_names() + made_names()


def read_tsv(path: Path) -> dict[str, list[str]]:
    """A tshark -T fields -E header=y table as columns of text."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    return {h: [r[i] if i < len(r) else "" for r in body] for i, h in enumerate(header)}


def _expected(field: str, cells: list[str], is_tcp: np.ndarray) -> np.ndarray:
    """tshark's column as numbers comparable with ours."""
    if field == "tcp.analysis.ack_rtt":
        # as ns, rounded: tshark prints 9 decimals
        return np.array([round(float(c) * 1e9) if c else -1 for c in cells], np.int64)
    if field.removeprefix("tcp.analysis.") in FLAGS:
        return np.array([1 if c else 0 for c in cells], np.int64)   # duplicate_ack: "1,1"
    if field in ("tcp.stream", "udp.stream"):
        return np.array([int(c) if c else -1 for c in cells], np.int64)
    out = np.array([int(c) if c else 0 for c in cells], np.int64)
    if field in TCP_HEADER:
        missing = np.array([not c for c in cells]) & is_tcp
        out[missing] = -2          # a TCP segment must carry it: never equal to ours
    return out


def _ours(pk, column: str) -> np.ndarray:
    v = pk[column].to_numpy()
    if column == "ack_rtt_s":
        return np.where(np.isnan(v), -1, np.round(np.nan_to_num(v) * 1e9)).astype(np.int64)
    return v.astype(np.int64)


def differences(name: str, pk, ref: dict[str, list[str]]) -> list[tuple]:
    """(frame, field, tshark's, ours) wherever a compared field differs and DIFFERENCES
    does not list it, frame by frame."""
    frames = np.array([int(c) for c in ref["frame.number"]], np.int64)
    assert len(pk) == len(frames), f"{len(pk)} frames, tshark has {len(frames)}"
    assert (frames == np.arange(1, len(frames) + 1)).all()
    is_tcp = np.array([c != "" for c in ref["tcp.stream"]])
    bad = []
    for field, column in COLUMN.items():
        want = _expected(field, ref[field], is_tcp)
        got = _ours(pk, column)
        for i in np.flatnonzero(want != got).tolist():
            if (name, i + 1, field) not in DIFFERENCES:
                bad.append((i + 1, field, ref[field][i], got[i].item()))
    return bad


@pytest.fixture(scope="module")
def analyses():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = toolkit.analyze(capture_path(name))
        return cache[name]
    return get


@pytest.mark.parametrize("name", ALL_NAMES or ["(corpus absent)"])
def test_every_field_equals_tshark(name, analyses):
    """Streams, lengths, relative and raw seq/ack, calculated window, all fifteen verdicts,
    duplicate-ACK number and frame, acked frame, ACK RTT and bytes in flight."""
    corpus_or_skip()
    ref = read_tsv(CORPUS / "tshark-full" / f"{name}.tsv")
    assert list(ref) == TSHARK_FIELDS, "tshark-full's columns changed"
    bad = differences(name, analyses(name).packets, ref)
    assert not bad, f"{len(bad)} differences from tshark 4.0, first: {bad[:10]}"


@pytest.mark.parametrize("name", corpus_names() or ["(corpus absent)"])
def test_flags_and_source_equal_tshark(name, analyses):
    """The two fields tshark-full lacks, from the older reference: TCP flags and source."""
    corpus_or_skip()
    ref = read_tsv(CORPUS / "tshark" / f"{name}.tsv")
    pk = analyses(name).packets
    assert len(pk) == len(ref["frame.number"])
    flags = pk["tcp_flags"].to_numpy()
    src = pk["src"].astype(str).to_numpy()
    bad = []
    for i, (f, s4, s6) in enumerate(zip(ref["tcp.flags"], ref["ip.src"], ref["ipv6.src"],
                                        strict=True)):
        if f and (int(f, 16) != flags[i] or (s4 or s6) != src[i]):
            bad.append((i + 1, f, s4 or s6, int(flags[i]), src[i]))
    assert not bad, f"{len(bad)} differences from tshark 4.0, first: {bad[:10]}"


def test_the_references_cover_every_capture():
    """No capture goes uncompared: each file and made capture has its tshark-full table."""
    corpus_or_skip()
    tables = sorted(p.stem for p in (CORPUS / "tshark-full").glob("*.tsv"))
    assert tables == sorted(ALL_NAMES)


def test_every_verdict_is_exercised(analyses, tmp_path):
    """The comparisons mean something only if some frame sets each verdict, in tshark's
    reference and in ours: the corpus and made captures for all but the zero-window probe
    and its ACK, which no capture here has; a synthetic capture (compared with tshark live
    in test_wireshark_synthetic.py) for those two."""
    corpus_or_skip()
    from test_wireshark_synthetic import zero_window_probe_capture

    ours = 0
    theirs = set()
    for name in ALL_NAMES:
        ours |= int(np.bitwise_or.reduce(analyses(name).segments.analysis, initial=0))
        ref = read_tsv(CORPUS / "tshark-full" / f"{name}.tsv")
        theirs |= {f for f in FLAGS if any(ref[f"tcp.analysis.{f}"])}
    synthetic = toolkit.analyze(zero_window_probe_capture(tmp_path)[0])
    ours |= int(np.bitwise_or.reduce(synthetic.segments.analysis, initial=0))
    theirs |= {"zero_window_probe", "zero_window_probe_ack"}     # checked live there
    for flag in FLAGS:
        assert ours & V.VERDICTS[flag], f"no frame of ours has {flag}"
        assert flag in theirs, f"no reference frame has {flag}"
