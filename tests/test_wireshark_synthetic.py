"""Synthetic captures for Wireshark 4.0 rules that no capture in the corpus exercises.

Each capture is built from byte literals (pcapbuild.Conversation). The analyzer's values on
the frames that matter are asserted here exactly, so the rule is checked wherever the suite
runs; where tshark is installed, every per-frame field of every frame is compared with
tshark's too (the same comparison as test_corpus_wireshark.py's).

- A zero-window probe as Wireshark 4.0 labels one (packet-tcp.c, tcp_analyze_sequence_number,
  "ZERO WINDOW PROBE"): one byte at the next expected sequence number while the peer's
  window is zero; and its ACK (the window still zero, nothing new acknowledged). Linux's
  probes carry no byte (one below SND.UNA) and are keep-alives to Wireshark 4.0, so no
  capture made on Linux has one.
- A SACK option without a complete block (kind 5, length 2). Wireshark 4.0's SACK option
  dissector (dissect_tcpopt_sack) then tests the first block for D-SACK (RFC 2883 section 4)
  although there is none, reads past the option, and the exception ends the TCP dissection
  there: dissect_tcp prints the SEQ/ACK analysis only after the options, so that frame shows
  no tcp.analysis field at all (no acked frame, no ACK RTT, no bytes in flight, no verdict),
  the options after it are not read (a window scale among them is lost) and a SYN's window
  scaling check is skipped. The analysis state itself was updated before the options, so
  later frames are judged as usual. The test reads the first block's right edge as 0 (no
  block): it holds when 0 is at or before the segment's ACK number in sequence space
  (relative when the ACK flag is set, raw otherwise), as tshark 4.0.17 shows.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

import toolkit
from pcapbuild import Conversation

from conftest import tshark_or_skip
from test_corpus_wireshark import TSHARK_FIELDS, differences, read_tsv

SYN, FIN, PSH, ACK = Conversation.SYN, Conversation.FIN, Conversation.PSH, Conversation.ACK
NOP, EMPTY_SACK, WSCALE_2 = b"\x01", b"\x05\x02", b"\x03\x03\x02"
MS = 1_000_000

ZWP = {"zero_window", "zero_window_probe", "zero_window_probe_ack", "window_update"}


def zero_window_probe_capture(folder: Path) -> tuple[Path, dict]:
    """A reader that stops: the sender probes its zero window twice with one byte, each
    probe is answered with the zero window, then the window opens. Writes the file into
    `folder`; returns it and, per frame, the verdicts of ZWP it must have."""
    c = Conversation()
    c.send("a", 1000, flags=SYN)
    c.send("b", 5000, 1001, SYN | ACK)
    c.send("a", 1001, 5001)
    c.send("a", 1001, 5001, PSH | ACK, payload=bytes(100))
    zero = c.send("b", 5001, 1101, win=0)
    probe1 = c.send("a", 1101, 5001, payload=b"x", after_ns=200 * MS)
    ack1 = c.send("b", 5001, 1101, win=0)
    probe2 = c.send("a", 1101, 5001, payload=b"x", after_ns=400 * MS)
    ack2 = c.send("b", 5001, 1101, win=0)
    update = c.send("b", 5001, 1101, win=65535, after_ns=100 * MS)
    c.send("a", 1101, 5001, PSH | ACK, payload=bytes(100))
    c.send("b", 5001, 1201)
    path = folder / "zero_window_probe.pcap"
    c.write(path)
    expect = {zero: {"zero_window"},
              probe1: {"zero_window_probe"}, ack1: {"zero_window", "zero_window_probe_ack"},
              probe2: {"zero_window_probe"}, ack2: {"zero_window", "zero_window_probe_ack"},
              update: {"window_update"}}
    return path, expect


def test_zero_window_probe_and_its_ack(tmp_path):
    path, expect = zero_window_probe_capture(tmp_path)
    pk = toolkit.analyze(path).packets
    for i, row in enumerate(pk.to_dict("records")):
        got = {v for v in ZWP if row[v]}
        assert got == expect.get(i + 1, set()), f"frame {i + 1}"
    # a probe does not advance the next expected sequence number: no retransmission after
    assert pk["retransmission"].sum() == 0 and pk["keep_alive"].sum() == 0


# ------------------------------------------------------------ empty SACK option ----

def _handshake(c: Conversation, a_opts=b"", b_opts=b""):
    c.send("a", 100, flags=SYN, options=a_opts)
    c.send("b", 500, 101, SYN | ACK, options=b_opts)
    c.send("a", 101, 501)


def ack_with_empty_sack(c):
    """Data, then its ACK carrying an empty SACK option: the ACK shows no acked frame and
    no RTT (frame 5)."""
    _handshake(c)
    c.send("a", 101, 501, PSH | ACK, payload=bytes(10))
    c.send("b", 501, 111, options=NOP + NOP + EMPTY_SACK)
    return {5: {"acks_frame": 0, "ack_rtt_s": None}, 4: {"bytes_in_flight": 10}}


def data_with_empty_sack(c):
    """Data carrying an empty SACK option shows no bytes in flight (frame 4); the ACK after
    it acknowledges it as usual (frame 5)."""
    _handshake(c)
    c.send("a", 101, 501, PSH | ACK, payload=bytes(10), options=NOP + NOP + EMPTY_SACK)
    c.send("b", 501, 111)
    return {4: {"bytes_in_flight": 0}, 5: {"acks_frame": 4, "ack_rtt_s": 0.001}}


def dup_ack_with_empty_sack(c):
    """A duplicate ACK carrying an empty SACK option shows no verdict (frame 6), but it is
    counted: the next duplicate is #2 (frame 7)."""
    _handshake(c)
    c.send("a", 101, 501, PSH | ACK, payload=bytes(10))
    c.send("b", 501, 111)
    c.send("b", 501, 111, options=NOP + NOP + EMPTY_SACK)
    c.send("b", 501, 111)
    return {6: {"duplicate_ack": 0, "duplicate_ack_num": 0},
            7: {"duplicate_ack": 1, "duplicate_ack_num": 2, "duplicate_ack_frame": 5}}


def empty_sack_ack_far_behind(c):
    """Without the ACK flag the raw ACK number is tested: 0x90000000 is more than 2**31
    after 0, so no D-SACK test, no exception, and the segment shows its bytes in flight
    (frame 5); a small raw ACK number throws (frame 6 shows none)."""
    _handshake(c)
    c.send("a", 101, 501, PSH | ACK, payload=bytes(10))
    c.send("b", 501, 0x90000000, PSH, payload=b"y", options=NOP + NOP + EMPTY_SACK)
    c.send("b", 502, 5, PSH, payload=b"z", options=NOP + NOP + EMPTY_SACK)
    return {5: {"bytes_in_flight": 1}, 6: {"bytes_in_flight": 0}}


def syn_with_empty_sack_before_wscale(c):
    """The window scale option after an empty SACK on the SYN is never read: a's scaling
    stays unknown, its windows are shown unscaled (frames 3, 4)."""
    c.send("a", 100, flags=SYN, options=EMPTY_SACK + WSCALE_2 + NOP)
    c.send("b", 500, 101, SYN | ACK, options=WSCALE_2)
    c.send("a", 101, 501, win=100)
    c.send("a", 101, 501, PSH | ACK, win=100, payload=bytes(10))
    return {3: {"window": 100}, 4: {"window": 100}, 2: {"acks_frame": 1}}


def synack_with_empty_sack_after_wscale(c):
    """The scale option before the empty SACK counts; the SYN-ACK shows no acked frame
    (frame 2) and the windows after are scaled (frames 3, 4)."""
    c.send("a", 100, flags=SYN, options=WSCALE_2)
    c.send("b", 500, 101, SYN | ACK, options=WSCALE_2 + NOP + EMPTY_SACK)
    c.send("a", 101, 501, win=100)
    c.send("b", 501, 101, PSH | ACK, win=100, payload=bytes(10))
    return {2: {"acks_frame": 0, "ack_rtt_s": None}, 3: {"window": 400, "acks_frame": 2},
            4: {"window": 400}}


EMPTY_SACK_CASES = [ack_with_empty_sack, data_with_empty_sack, dup_ack_with_empty_sack,
                    empty_sack_ack_far_behind, syn_with_empty_sack_before_wscale,
                    synack_with_empty_sack_after_wscale]


def _build(case, folder: Path) -> tuple[Path, dict]:
    c = Conversation()
    expect = case(c)
    path = folder / f"{case.__name__}.pcap"
    c.write(path)
    return path, expect


@pytest.mark.parametrize("case", EMPTY_SACK_CASES, ids=lambda f: f.__name__)
def test_empty_sack_option_hides_the_frames_analysis(case, tmp_path):
    path, expect = _build(case, tmp_path)
    pk = toolkit.analyze(path).packets
    for frame, values in expect.items():
        row = pk.iloc[frame - 1]
        for column, want in values.items():
            got = row[column]
            if column == "ack_rtt_s":
                got = None if math.isnan(got) else round(float(got), 9)
            assert got == want, f"frame {frame} {column}: {got}, Wireshark 4.0: {want}"


# ------------------------------------------------------------ tshark, live ----

def _tshark_table(path: Path) -> dict[str, list[str]]:
    exe = tshark_or_skip()
    cmd = [exe, "-n", "-2", "-r", str(path), "-T", "fields", "-E", "header=y"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.stdout, f"tshark printed nothing: {run.stderr[:300]}"
    table = path.with_suffix(".tsv")
    table.write_text(run.stdout)
    return read_tsv(table)


@pytest.mark.tshark
@pytest.mark.parametrize("case", ["zero_window_probe", *[f.__name__ for f in EMPTY_SACK_CASES]])
def test_synthetic_captures_equal_tshark_live(case, tmp_path):
    if case == "zero_window_probe":
        path, _ = zero_window_probe_capture(tmp_path)
    else:
        path, _ = _build(globals()[case], tmp_path)
    ref = _tshark_table(path)
    bad = differences(case, toolkit.analyze(path).packets, ref)
    assert not bad, f"{len(bad)} differences from tshark, first: {bad[:10]}"
