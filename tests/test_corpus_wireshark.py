"""Every frame of every corpus capture: our verdicts equal tshark 4.0's.

Two references: the saved per-frame verdicts in ../shared/corpus/tshark/*.tsv (made with
tshark 4.0.17 -2), and tshark run live here for the fields the saved files lack. Deliberate
differences would be listed in docs/wireshark-differences.md and excepted here by name and
frame; today there are none.
"""

from __future__ import annotations

import csv
import io
import subprocess

import numpy as np
import pytest

import toolkit
from toolkit.analysis import verdicts as V

from conftest import corpus_file, corpus_names, corpus_or_skip, tshark_or_skip

SAVED_FLAGS = ["retransmission", "fast_retransmission", "spurious_retransmission",
               "duplicate_ack", "lost_segment", "out_of_order", "zero_window", "window_full",
               "keep_alive"]
LIVE_FLAGS = ["ack_lost_segment", "zero_window_probe", "zero_window_probe_ack",
              "window_update", "keep_alive_ack", "reused_ports"]
# (file, frame, field) -> why we differ on purpose. Empty: we agree everywhere.
DIFFERENCES: dict[tuple[str, int, str], str] = {}


def _tsv(name: str) -> list[dict]:
    path = corpus_or_skip() / "tshark" / f"{name}.tsv"
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _mismatches(name, rows, ours, fields):
    bad = []
    for r in rows:
        i = int(r["frame.number"]) - 1
        for fld, expect in fields(r):
            got = ours(fld, i)
            if got != expect and (name, i + 1, fld) not in DIFFERENCES:
                bad.append((i + 1, fld, expect, got))
    return bad


@pytest.fixture(scope="module")
def analyses():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = toolkit.analyze(corpus_file(name))
        return cache[name]
    return get


@pytest.mark.parametrize("name", corpus_names())
def test_saved_verdicts_equal(name, analyses):
    rows = _tsv(name)
    a = analyses(name)
    pk = a.packets
    assert len(pk) == len(rows), "frame count differs from tshark's"

    def expected(r):
        yield "tcp_stream", int(r["tcp.stream"]) if r["tcp.stream"] else -1
        yield "udp_stream", int(r["udp.stream"]) if r["udp.stream"] else -1
        if r["tcp.flags"]:
            yield "tcp_flags", int(r["tcp.flags"], 16)
            yield "seq_raw", int(r["tcp.seq_raw"])
            yield "ack_raw", int(r["tcp.ack_raw"])
            yield "tcp_len", int(r["tcp.len"])
            yield "src", r["ip.src"] or r["ipv6.src"]
        for flag in SAVED_FLAGS:
            yield flag, 1 if r[f"tcp.analysis.{flag}"] else 0
        rtt = r["tcp.analysis.ack_rtt"]
        yield "ack_rtt_ns", round(float(rtt) * 1e9) if rtt else None

    cols = {c: pk[c].to_numpy() for c in pk.columns}
    no_rtt = np.isnan(cols["ack_rtt_s"])
    rtt_ns = np.round(np.where(no_rtt, 0, cols["ack_rtt_s"]) * 1e9).astype(np.int64)

    def ours(fld, i):
        if fld == "ack_rtt_ns":
            return None if no_rtt[i] else int(rtt_ns[i])
        if fld == "src":
            return str(cols["src"][i])
        return int(cols[fld][i])

    bad = _mismatches(name, rows, ours, expected)
    assert not bad, f"{len(bad)} differences from tshark, first: {bad[:10]}"


LIVE_FIELDS = ["frame.number", "tcp.seq", "tcp.ack", "tcp.window_size",
               "tcp.analysis.bytes_in_flight", "tcp.analysis.duplicate_ack_num",
               "tcp.analysis.acks_frame"] + [f"tcp.analysis.{f}" for f in LIVE_FLAGS]


@pytest.mark.tshark
@pytest.mark.parametrize("name", corpus_names())
def test_live_tshark_fields_equal(name, analyses):
    """Relative seq/ack, window, bytes in flight, dup-ACK numbers, and the flags the
    saved files do not carry, against tshark run here."""
    exe = tshark_or_skip()
    cmd = [exe, "-2", "-n", "-r", str(corpus_file(name)), "-T", "fields", "-E", "header=y",
           "-E", "separator=/t"]
    for f in LIVE_FIELDS:
        cmd += ["-e", f]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = list(csv.DictReader(io.StringIO(run.stdout), delimiter="\t"))
    assert rows, f"tshark printed nothing: {run.stderr[:300]}"
    pk = analyses(name).packets
    is_tcp = (pk["tcp_stream"] >= 0).to_numpy()
    cols = {c: pk[c].to_numpy() for c in pk.columns}

    def expected(r):
        i = int(r["frame.number"]) - 1
        if not r["tcp.seq"] or not is_tcp[i]:
            return
        yield "seq", int(r["tcp.seq"])
        yield "ack", int(r["tcp.ack"])
        yield "window", int(r["tcp.window_size"])
        yield "bytes_in_flight", int(r["tcp.analysis.bytes_in_flight"] or 0)
        yield "duplicate_ack_num", int(r["tcp.analysis.duplicate_ack_num"] or 0)
        yield "acks_frame", int(r["tcp.analysis.acks_frame"] or 0)
        for flag in LIVE_FLAGS:
            yield flag, 1 if r[f"tcp.analysis.{flag}"] else 0

    bad = _mismatches(name, rows, lambda fld, i: int(cols[fld][i]), expected)
    assert not bad, f"{len(bad)} differences from tshark, first: {bad[:10]}"


def test_every_verdict_is_exercised_by_the_corpus(analyses):
    """The comparison above means something only if the corpus sets the verdicts."""
    corpus_or_skip()
    seen = 0
    for name in corpus_names():
        seen |= int(np.bitwise_or.reduce(analyses(name).segments.analysis, initial=0))
    for flag in SAVED_FLAGS + ["ack_lost_segment", "window_update"]:
        assert seen & V.VERDICTS[flag], f"no corpus frame has {flag}"
