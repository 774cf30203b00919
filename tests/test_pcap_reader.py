"""The capture reader on byte-literal files: formats, link types, headers, damage."""

from __future__ import annotations

import gzip
import struct
from fractions import Fraction

import numpy as np
import pytest

import pcapbuild as B
from toolkit.pcap import CaptureError, read_capture

TS_OPTS = b"\x01\x01\x08\x0a" + struct.pack("!II", 111, 222)
SYN_OPTS = (b"\x02\x04\x05\xb4" + b"\x01\x03\x03\x07" + b"\x04\x02" + b"\x08\x0a"
            + struct.pack("!II", 7, 0))
SACK_OPTS = b"\x01\x01\x05\x12" + struct.pack("!IIII", 100, 200, 300, 400)


def read(tmp_path, data: bytes, name="t.pcap"):
    p = tmp_path / name
    p.write_bytes(data)
    return read_capture(p)


def row(cap, i=0):
    return {k: v[i] for k, v in cap.cols.items() if v.ndim == 1 and len(v) == len(cap)}


MAPPED = 0xFFFF << 32

# (name, linktype, frame bytes)
LINK_CASES = [
    ("ethernet", 1, B.ether(B.ipv4(B.tcp()))),
    ("802.1ad+802.1Q", 1, B.ether(B.ipv4(B.tcp()), tags=[(0x88A8, 10), (0x8100, 20)])),
    ("linux cooked v1", 113, b"\0\0\0\1\0\6" + b"\2" * 8 + b"\x08\x00" + B.ipv4(B.tcp())),
    ("linux cooked v2", 276, b"\x08\x00\0\0" + b"\0" * 16 + B.ipv4(B.tcp())),
    ("raw 101", 101, B.ipv4(B.tcp())),
    ("raw ipv4 228", 228, B.ipv4(B.tcp())),
    ("raw ipv6 229", 229, B.ipv6(B.tcp())),
    ("null, little-endian family", 0, struct.pack("<I", 2) + B.ipv4(B.tcp())),
    ("null, big-endian family 30", 0, struct.pack(">I", 30) + B.ipv6(B.tcp())),
    ("loop", 108, struct.pack(">I", 2) + B.ipv4(B.tcp())),
]


@pytest.mark.parametrize("name,linktype,frame", LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_link_types_reach_tcp(tmp_path, name, linktype, frame):
    cap = read(tmp_path, B.pcap([frame], linktype=linktype))
    r = row(cap)
    assert cap.error is None
    assert r["l4"] == 6 and r["sport"] == 1234 and r["dport"] == 80 and r["seq"] == 1000
    assert r["tcp_flags"] == 0x02
    assert r["l3"] in (4, 6)
    if r["l3"] == 4:
        assert r["src_hi"] == 0 and r["src_lo"] == MAPPED | 0x0A000001


def test_unknown_link_type_keeps_frames(tmp_path):
    cap = read(tmp_path, B.pcap([b"\x01\x02\x03"] * 3, linktype=147))
    assert len(cap) == 3 and not cap.cols["l3"].any()


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, order, nanos):
    ts = 1_700_000_000_123_456_789
    frame = B.ether(B.ipv4(B.tcp()))
    cap = read(tmp_path, B.pcap([(frame, ts, len(frame) + 100)], order=order, nanos=nanos))
    expect = ts if nanos else ts - ts % 1000
    assert cap.cols["ts_ns"][0] == expect
    assert cap.cols["wirelen"][0] == len(frame) + 100
    assert cap.cols["caplen"][0] == len(frame)


def test_tcp_options(tmp_path):
    frames = [B.ether(B.ipv4(B.tcp(options=SYN_OPTS))),
              B.ether(B.ipv4(B.tcp(flags=0x10, options=TS_OPTS))),
              B.ether(B.ipv4(B.tcp(flags=0x10, options=SACK_OPTS)))]
    c = read(tmp_path, B.pcap(frames)).cols
    assert (c["opt_mss"][0], c["opt_wscale"][0], c["opt_sackperm"][0]) == (1460, 7, 1)
    assert (c["has_ts"][0], c["tsval"][0], c["tsecr"][0]) == (1, 7, 0)
    assert (c["opt_mss"][1], c["opt_wscale"][1], c["has_ts"][1]) == (-1, -1, 1)
    assert (c["tsval"][1], c["tsecr"][1]) == (111, 222)
    assert c["sack_n"][2] == 2 and list(c["sack_rows"]) == [2]
    assert list(c["sack_le"][0][:2]) == [100, 300] and list(c["sack_re"][0][:2]) == [200, 400]


def test_ipv4_options_and_payload_length(tmp_path):
    frame = B.ether(B.ipv4(B.tcp(payload=b"x" * 100), options=b"\x01\x01\x01\x00"))
    c = read(tmp_path, B.pcap([frame])).cols
    assert c["l4"][0] == 6 and c["paylen"][0] == 100 and c["sport"][0] == 1234


def test_ipv6_extension_headers(tmp_path):
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"          # hop-by-hop, next: dest options
    dst = bytes([6, 1]) + b"\x01\x0c" + b"\0" * 12       # destination options (16 bytes)
    frame = B.ether(B.ipv6(B.tcp(payload=b"y" * 40), nxt=0, ext=hop + dst), etype=0x86DD)
    c = read(tmp_path, B.pcap([frame])).cols
    assert c["l3"][0] == 6 and c["ip_proto"][0] == 6 and c["l4"][0] == 6
    assert c["paylen"][0] == 40
    assert c["src_hi"][0] == 0x2001 << 48 and c["src_lo"][0] == 1


def test_snaplen_truncation_keeps_ip_length(tmp_path):
    full = B.ether(B.ipv4(B.tcp(flags=0x18, options=TS_OPTS, payload=b"z" * 1000)))
    cut = full[:60]                                      # headers and part of the options
    c = read(tmp_path, B.pcap([(cut, 1_000_000_000, len(full))], snaplen=60)).cols
    assert c["l4"][0] == 6 and c["paylen"][0] == 1000 and c["l4_trunc"][0] == 1
    assert c["caplen"][0] == 60 and c["wirelen"][0] == len(full)


def test_ipv4_fragments_reassembled_in_last_fragment(tmp_path):
    payload = bytes(range(256)) * 8                       # 2048 bytes of UDP payload
    dgram = B.udp(4000, 53, payload)
    first = B.ipv4(dgram[:1480], proto=17, ident=7, frag=0x2000, total=20 + 1480)
    last = B.ipv4(dgram[1480:], proto=17, ident=7, frag=1480 // 8, total=20 + len(dgram) - 1480)
    c = read(tmp_path, B.pcap([B.ether(first), B.ether(last)])).cols
    assert list(c["ip_frag"]) == [1, 0]
    assert c["l4"][1] == 17 and c["sport"][1] == 4000 and c["paylen"][1] == 2048
    assert list(c["udp_rows"]) == [0, 1]


def test_udp_head_kept(tmp_path):
    c = read(tmp_path, B.pcap([B.ether(B.ipv4(B.udp(payload=b"HELLO" * 10), proto=17))])).cols
    assert c["l4"][0] == 17 and c["paylen"][0] == 50
    assert bytes(c["udp_head"][0][:10]) == b"HELLOHELLO" and c["udp_head_len"][0] == 32


def test_pcapng_sections_interfaces_blocks_comments(tmp_path):
    f1 = B.ether(B.ipv4(B.tcp()))
    f2 = B.ipv4(B.tcp(sport=2222))
    data = (B.shb("<", comments=["first section"])
            + B.idb(1, "<", name="eth0", comments=["the NIC"])
            + B.epb(f1, 1_700_000_000_000_000, order="<", comments=["hello packet"])
            + B.unknown_block("<")
            + B.spb(f1, "<")
            + B.shb(">")
            + B.idb(1, ">", tsresol=9)
            + B.idb(228, ">", tsresol=0x80 | 10, tsoffset=100)
            + B.epb(f1, 1_700_000_000_123_456_789, iface=0, order=">")
            + B.epb(f2, 3 * 1024 + 512, iface=1, order=">")
            + B.obsolete_pb(f1, 5_000_000, iface=0, order=">"))
    cap = read(tmp_path, data, "t.pcapng")
    assert cap.error is None and cap.file_format == "pcapng"
    c = cap.cols
    assert len(cap) == 6
    assert [i.linktype for i in cap.interfaces] == [1, 1, 228]
    assert list(c["iface"]) == [0, 0, 0, 1, 2, 1]
    assert c["ts_ns"][0] == 1_700_000_000_000_000_000            # microseconds by default
    assert c["l3"][1] == 0 and c["caplen"][1] == len(b"hello, world") - 4   # custom block
    assert c["ts_ns"][2] == 0                                    # simple packet block
    assert c["ts_ns"][3] == 1_700_000_000_123_456_789            # nanoseconds
    assert c["ts_ns"][4] == 100 * 10**9 + 3 * 10**9 + 500_000_000  # 2^-10 s ticks + offset
    assert c["ts_ns"][5] == 5_000_000                            # obsolete block, ns ticks
    assert list(c["sport"]) == [1234, 0, 1234, 1234, 2222, 1234]
    assert cap.interfaces[1].tsresol == 1 and cap.interfaces[2].tsresol == Fraction(10**9,
                                                                                     1024)
    assert cap.section_comments == ["first section"]
    assert cap.interfaces[0].name == "eth0" and cap.interfaces[0].comments == ["the NIC"]
    assert cap.packet_comments == {0: ["hello packet"]}


def test_gzip_is_transparent(tmp_path):
    data = B.pcap([B.ether(B.ipv4(B.tcp(seq=i))) for i in range(100)])
    cap = read(tmp_path, gzip.compress(data), "t.pcap.gz")
    assert cap.compressed and len(cap) == 100 and cap.cols["seq"][99] == 99


@pytest.mark.parametrize("data,offset,words", [
    (B.pcap([B.ether(B.ipv4(B.tcp()))] * 3)[:-10], 24 + 2 * 70, "ends inside a packet record"),
    (B.pcap([B.ether(B.ipv4(B.tcp()))] * 3)[:-60], 24 + 2 * 70, "ends inside a packet record"),
])
def test_truncated_pcap_keeps_what_came_before(tmp_path, data, offset, words):
    cap = read(tmp_path, data)
    assert len(cap) == 2
    assert cap.error is not None and cap.error.offset == offset and words in str(cap.error)


def test_absurd_record_length(tmp_path):
    data = bytearray(B.pcap([B.ether(B.ipv4(B.tcp()))] * 3))
    struct.pack_into("<I", data, 24 + 70 + 8, 0x7FFFFFF0)    # second record's caplen
    cap = read(tmp_path, bytes(data))
    assert len(cap) == 1 and cap.error.offset == 24 + 70
    assert "2147483632 bytes" in str(cap.error)


def test_pcapng_bad_trailer(tmp_path):
    good = B.shb() + B.idb() + B.epb(B.ether(B.ipv4(B.tcp())), 1)
    bad = bytearray(B.epb(B.ether(B.ipv4(B.tcp())), 2))
    bad[-1] ^= 0x40
    cap = read(tmp_path, good + bytes(bad), "t.pcapng")
    assert len(cap) == 1 and cap.error.offset == len(good)
    assert "trailing total length" in str(cap.error)


@pytest.mark.parametrize("data,words", [
    (b"", "empty file"),
    (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng file"),
    (B.pcap([])[:10], "pcap file header"),
    (B.shb()[:20], "ends inside"),
])
def test_nothing_readable_raises(tmp_path, data, words):
    with pytest.raises(CaptureError) as e:
        cap = read(tmp_path, data)
        if cap.error is not None:      # a pcapng cut inside its first block: reported, not raised
            raise cap.error
    assert words in str(e.value)


def test_columns_have_contract_dtypes(tmp_path):
    from toolkit.pcap.columns import PACKET_COLUMNS
    c = read(tmp_path, B.pcap([B.ether(B.ipv4(B.tcp()))])).cols
    for name, (dtype, _) in PACKET_COLUMNS.items():
        assert c[name].dtype == np.dtype(dtype), name
