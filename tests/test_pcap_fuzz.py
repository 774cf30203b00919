"""Damaged captures: never a hang, never anything but CaptureError, nothing before lost.

Real corpus files and synthetic ones (pcap, two-section pcapng with comments, gzip) are
truncated, bit-flipped and given absurd record/block lengths. What can be promised
exactly, with `records` the (start, end, is a frame) of every record or block:
- read_capture returns, or raises CaptureError when not even the file header is readable;
- truncated at byte t: the frames are exactly those whose record ends by t, identical to
  the undamaged read, and the error's offset is the start of the record that t cuts;
- a record's length made absurd: reading stops at that record's start, all before kept;
- bits flipped from byte f on: every frame whose record ends before f is identical (what
  follows may be misread, but not crash).
"""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pcapbuild as B
from conftest import CORPUS
from toolkit.pcap import CaptureError, read_capture

SOURCES = ["cs_ppa_email_troubles.pcap", "zeek_tcp_truncated_header.pcap",
           "gop_test_loopback_null.pcap", "cs_tcp_zerowindowdead.pcapng",
           "zeek_pcapng_multi_interface.pcapng", "cs_http_ip4and6.pcapng"]
FRAME_BLOCKS = {2, 3, 6, 0x00000BAD, 0x40000BAD}


def _synthetic_pcapng() -> bytes:
    f = [B.ether(B.ipv4(B.tcp(seq=i, payload=b"n" * i))) for i in range(12)]
    return (B.shb("<", comments=["s1"]) + B.idb(1, "<", tsresol=9)
            + b"".join(B.epb(x, i, comments=["c"] if i % 3 == 0 else []) for i, x in
                       enumerate(f[:6]))
            + B.spb(f[6]) + B._block(5, b"\0" * 12, "<")
            + B.shb(">") + B.idb(229, ">") + B.idb(1, ">", tsresol=0x80 | 20)
            + b"".join(B.epb(x, i, iface=1, order=">") for i, x in enumerate(f[7:]))
            + B.epb(B.ipv6(B.udp(payload=b"u" * 9), nxt=17), 99, iface=0, order=">"))


def _sources() -> dict[str, bytes]:
    out = {"synthetic.pcap": B.pcap([B.ether(B.ipv4(B.tcp(seq=i, payload=b"p" * (i % 50))))
                                     for i in range(60)], order=">", nanos=True),
           "synthetic.pcapng": _synthetic_pcapng()}
    for name in SOURCES:
        p = CORPUS / "files" / name
        if p.exists():
            out[name] = p.read_bytes()
    return out


DATA = _sources()
FUZZ = settings(max_examples=40, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def records(data: bytes) -> list[tuple[int, int, bool]]:
    """(start, end, is a frame) of every record (pcap) or block (pcapng) that fits."""
    out = []
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        pos, order = 0, "<"
        while pos + 12 <= len(data):
            if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
                order = ">" if data[pos + 8:pos + 12] == b"\x1a\x2b\x3c\x4d" else "<"
            btype, blen = struct.unpack_from(order + "II", data, pos)
            if blen < 12 or pos + blen > len(data):
                break
            out.append((pos, pos + blen, btype in FRAME_BLOCKS))
            pos += blen
        return out
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        out.append((pos, pos + 16 + caplen, True))
        pos += 16 + caplen
    return out


def _read(tmp_path, name: str, data: bytes, gz=False):
    p = tmp_path / ("x" + name[name.index("."):] + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    t = time.perf_counter()
    try:
        return read_capture(p)
    except CaptureError:
        return None
    finally:
        assert time.perf_counter() - t < 2.0, "read took too long"


WHOLE = {}


def _whole(tmp_path, name):
    if name not in WHOLE:
        WHOLE[name] = _read(tmp_path, name, DATA[name])
        assert WHOLE[name].error is None
    return WHOLE[name]


def _same_rows(a, b, n):
    assert len(a) >= n
    for k, v in a.cols.items():
        if len(v) == len(a):           # packet columns (side tables: checked by rows)
            assert np.array_equal(v[:n], b.cols[k][:n]), k


def _frames_before(recs, offset) -> int:
    return sum(1 for s, e, frame in recs if frame and e <= offset)


@FUZZ
@given(name=st.sampled_from(sorted(DATA)), frac=st.floats(0, 1), gz=st.booleans())
def test_truncation_keeps_complete_records(tmp_path, name, frac, gz):
    data = DATA[name]
    whole = _whole(tmp_path, name)
    recs = records(data)
    cut = int(len(data) * frac)
    cap = _read(tmp_path, name, data[:cut], gz)
    header_end = recs[0][1] if name.endswith(".pcapng") else 24
    if cap is None:
        assert cut < header_end, "raised though the file header was whole"
        return
    kept = _frames_before(recs, cut)
    assert len(cap) == kept
    _same_rows(cap, whole, kept)
    cut_inside = [s for s, e, _ in recs if s < cut < e]
    if cut_inside or (cut < len(data) and cut > (recs[-1][1] if recs else 24)):
        assert cap.error is not None
        assert cap.error.offset <= cut
        if cut_inside and not gz:
            assert cap.error.offset == cut_inside[0]
    elif not gz:
        assert cap.error is None or cap.error.offset == cut


@FUZZ
@given(name=st.sampled_from(sorted(DATA)),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1,
                      max_size=8))
def test_bit_flips_never_crash(tmp_path, name, flips):
    data = bytearray(DATA[name])
    first = len(data)
    for where, bit in flips:
        at = min(int(where * len(data)), len(data) - 1)
        data[at] ^= 1 << bit
        first = min(first, at)
    cap = _read(tmp_path, name, bytes(data))
    if cap is None:
        return
    assert all(len(v) == len(cap) for k, v in cap.cols.items() if k in ("ts_ns", "l4"))
    recs = [r for r in records(DATA[name]) if r[1] <= first]
    # frames read before the first flipped byte (their interface blocks came earlier)
    _same_rows(cap, _whole(tmp_path, name), _frames_before(recs, first))


@FUZZ
@given(name=st.sampled_from(sorted(DATA)), which=st.floats(0, 1),
       value=st.sampled_from([262145, 0x7FFFFFFC, 0xFFFFFFF0, 0xFFFFFFFF, 1 << 24, 1 << 20]))
def test_absurd_length_stops_there(tmp_path, name, which, value):
    data = bytearray(DATA[name])
    recs = records(bytes(data))
    ng = name.endswith(".pcapng")
    # pcapng: any block but the first section header; pcap: any record
    choices = recs[1:] if ng else recs
    i = min(int(which * len(choices)), len(choices) - 1)
    start = choices[i][0]
    order = "<"
    if ng:
        for s, _, _ in recs:
            if s <= start and data[s:s + 4] == b"\x0a\x0d\x0d\x0a":
                order = ">" if data[s + 8:s + 12] == b"\x1a\x2b\x3c\x4d" else "<"
        struct.pack_into(order + "I", data, start + 4, value)
    else:
        order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        struct.pack_into(order + "I", data, start + 8, value)
    cap = _read(tmp_path, name, bytes(data))
    kept = _frames_before(recs, start)
    assert cap is not None and len(cap) == kept
    assert cap.error is not None and cap.error.offset == start, str(cap.error)
    _same_rows(cap, _whole(tmp_path, name), kept)
