"""Damaged captures: never a hang, never anything but CaptureError, nothing before lost.

Real corpus files and a synthetic one are truncated, bit-flipped and given absurd record
lengths. What can be promised exactly:
- read_capture returns (or raises CaptureError when nothing at all is readable);
- a truncated file keeps every frame whose record ends before the cut, identically;
- a record whose length field is made absurd stops the reading at that record's offset,
  with every frame before it kept identically.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pcapbuild as B
from conftest import CORPUS
from toolkit.pcap import CaptureError, read_capture

SOURCES = ["cs_ppa_email_troubles.pcap", "zeek_tcp_truncated_header.pcap",
           "cs_tcp_zerowindowdead.pcapng", "zeek_pcapng_multi_interface.pcapng"]


def _sources() -> dict[str, bytes]:
    out = {"synthetic.pcap": B.pcap([B.ether(B.ipv4(B.tcp(seq=i, payload=b"p" * (i % 50))))
                                     for i in range(60)])}
    for name in SOURCES:
        p = CORPUS / "files" / name
        if p.exists():
            out[name] = p.read_bytes()
    return out


DATA = _sources()
FUZZ = settings(max_examples=60, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(tmp_path, name: str, data: bytes):
    p = tmp_path / ("x" + name[name.index("."):])
    p.write_bytes(data)
    try:
        return read_capture(p)
    except CaptureError:
        return None


def _pcap_record_ends(data: bytes) -> list[int]:
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos, ends = 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        pos += 16 + caplen
        if pos > len(data):
            break
        ends.append(pos)
    return ends


def _same_rows(a, b, n):
    for k in ("ts_ns", "caplen", "wirelen", "l4", "seq", "ack", "tcp_flags", "paylen",
              "src_lo", "dst_lo", "sport", "dport"):
        assert np.array_equal(a.cols[k][:n], b.cols[k][:n]), k


@FUZZ
@given(name=st.sampled_from(sorted(DATA)), frac=st.floats(0, 1))
def test_truncation_keeps_complete_records(tmp_path, name, frac):
    data = DATA[name]
    cut = int(len(data) * frac)
    whole = read_capture_bytes(tmp_path, name, data)
    cap = _read(tmp_path, name, data[:cut])
    if cap is None:
        return
    if name.endswith(".pcap"):
        kept = sum(1 for e in _pcap_record_ends(data) if e <= cut)
        assert len(cap) == kept
    assert len(cap) <= len(whole)
    _same_rows(cap, whole, len(cap))
    if len(cap) < len(whole):
        assert cap.error is not None and cap.error.offset <= cut


@FUZZ
@given(name=st.sampled_from(sorted(DATA)), flips=st.lists(st.tuples(st.floats(0, 1),
                                                                    st.integers(0, 7)),
                                                          min_size=1, max_size=8))
def test_bit_flips_never_crash(tmp_path, name, flips):
    data = bytearray(DATA[name])
    for where, bit in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= 1 << bit
    cap = _read(tmp_path, name, bytes(data))
    if cap is not None:
        assert len(cap.cols["ts_ns"]) == len(cap)


@FUZZ
@given(name=st.sampled_from(sorted(n for n in DATA if n.endswith(".pcap"))),
       which=st.floats(0, 1), value=st.sampled_from([262145, 0x7FFFFFFF, 0xFFFFFFFF]))
def test_absurd_record_length_stops_there(tmp_path, name, which, value):
    data = bytearray(DATA[name])
    ends = _pcap_record_ends(bytes(data))
    starts = [24] + ends[:-1]
    i = min(int(which * len(starts)), len(starts) - 1)
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    struct.pack_into(order + "I", data, starts[i] + 8, value)
    whole = read_capture_bytes(tmp_path, name, DATA[name])
    cap = _read(tmp_path, name, bytes(data))
    assert cap is not None and len(cap) == i
    assert cap.error is not None and cap.error.offset == starts[i]
    _same_rows(cap, whole, i)


def read_capture_bytes(tmp_path, name, data):
    p = tmp_path / ("whole" + name[name.index("."):])
    p.write_bytes(data)
    return read_capture(p)
