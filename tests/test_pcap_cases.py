"""More reader cases by table: tshark 4.0's behaviour on odd frames, pcapng damage, chunking.

Each expectation marked "tshark" was checked with tshark 4.0.17 on the same bytes.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import pcapbuild as B
import toolkit.pcap.scanner as scanner_mod
import toolkit.pcap.source as source_mod
from toolkit.pcap import CaptureError, read_capture

FRAME = B.ether(B.ipv4(B.tcp(payload=b"x" * 100)))          # 154 bytes, tcp.len 100


def read(tmp_path, data: bytes, name="t.pcap", **kw):
    p = tmp_path / name
    p.write_bytes(data)
    return read_capture(p, **kw)


def _bogus_hlen() -> bytes:
    f = bytearray(FRAME)
    f[14 + 20 + 12] = 0x30                                  # data offset 3: 12 bytes
    return bytes(f)


def _fcs_pcap() -> bytes:
    d = bytearray(B.pcap([FRAME]))
    struct.pack_into("<I", d, 20, 1 | 0x04000000 | (4 << 28))   # FCS of 4 x 16 bits
    return bytes(d)


# (name, pcap bytes, column -> expected value of row 0)
FRAME_CASES = [
    ("tshark: caplen > wirelen kept, tcp.len from IP", B.pcap([(FRAME, 10**18, 104)]),
     {"caplen": 154, "wirelen": 104, "paylen": 100, "l4": 6}),
    ("tshark: FCS length in the linktype field", _fcs_pcap(), {"paylen": 92, "l4": 6}),
    ("tshark: IP total length 0 (TSO) uses the frame",
     B.pcap([B.ether(B.ipv4(B.tcp(payload=b"y" * 100), total=0))]), {"paylen": 100}),
    ("tshark: TCP header length 12 is bogus, tcp.len 108", B.pcap([_bogus_hlen()]),
     {"l4": 6, "tcp_hlen": 12, "paylen": 108, "opt_mss": -1}),
    ("tshark: DLT_NULL family 10 is not IPv6",
     B.pcap([struct.pack("<I", 10) + B.ipv6(B.tcp())], linktype=0), {"l3": 0, "l4": 0}),
    ("tshark: DLT_NULL family 24 is IPv6",
     B.pcap([struct.pack("<I", 24) + B.ipv6(B.tcp())], linktype=0), {"l3": 6, "l4": 6}),
    ("tshark: DLT_NULL 16-bit family in the upper half",
     B.pcap([bytes([0, 0, 2, 0]) + B.ipv4(B.tcp())], linktype=0), {"l3": 4, "l4": 6}),
    ("DLT_NULL written big-endian", B.pcap([struct.pack(">I", 2) + B.ipv4(B.tcp())],
                                           linktype=0), {"l3": 4}),
    ("802.1Q in 0x9100 in 802.1ad", B.pcap([B.ether(B.ipv4(B.tcp()), tags=[
        (0x88A8, 1), (0x9100, 2), (0x8100, 3)])]), {"l3": 4, "l4": 6}),
    ("IPv4 later fragment has no transport header",
     B.pcap([B.ether(B.ipv4(b"\0" * 40, ident=9, frag=185))]),
     {"ip_frag": 2, "l4": 0, "frag_off": 1480, "frag_len": 40, "ip_id": 9}),
    ("IPv4 first fragment", B.pcap([B.ether(B.ipv4(B.tcp(), frag=0x2000))]),
     {"ip_frag": 1, "l4": 6, "frag_more": 1}),
    ("IPv6 AH then TCP", B.pcap([B.ether(B.ipv6(B.tcp(payload=b"z" * 10), nxt=51,
                                                ext=bytes([6, 4]) + b"\0" * 22),
                                         etype=0x86DD)]),
     {"l4": 6, "ip_proto": 6, "paylen": 10}),
    ("IPv6 routing header then UDP", B.pcap([B.ether(B.ipv6(B.udp(payload=b"q" * 7), nxt=43,
                                                            ext=bytes([17, 0]) + b"\0" * 6),
                                                     etype=0x86DD)]),
     {"l4": 17, "paylen": 7}),
    ("IPv6 ESP ends the chain", B.pcap([B.ether(B.ipv6(b"\0" * 30, nxt=50), etype=0x86DD)]),
     {"l3": 6, "l4": 0, "ip_proto": 50}),
    ("IPv6 later fragment", B.pcap([B.ether(B.ipv6(b"\0" * 16, nxt=44, ext=bytes([6, 0])
                                                   + struct.pack("!HI", 8 << 3, 77)),
                                            etype=0x86DD)]),
     {"ip_frag": 2, "l4": 0, "ip_id": 77, "frag_off": 64}),
    ("TCP fixed header not captured", B.pcap([(FRAME[:14 + 20 + 10], 10**18, 154)]),
     {"l3": 4, "l4": 0, "l4_trunc": 1}),
    ("UDP length 0 uses the IP length",
     B.pcap([B.ether(B.ipv4(B.udp(payload=b"a" * 20, length=0), proto=17))]),
     {"l4": 17, "paylen": 20}),
    ("UDP length beyond the IP payload is bogus",
     B.pcap([B.ether(B.ipv4(B.udp(payload=b"a" * 20, length=999), proto=17))]),
     {"l4": 17, "paylen": 20}),
    ("TCP option with a bad length stops the walk",
     B.pcap([B.ether(B.ipv4(B.tcp(options=b"\x02\x04\x05\xb4\x08\x01\x00\x00")))]),
     {"opt_mss": 1460, "has_ts": 0, "l4_trunc": 0}),
    ("IPv4 header length under 20 is not IP", B.pcap([B.ether(b"\x44" + B.ipv4(B.tcp())[1:])]),
     {"l3": 0, "l4": 0}),
    ("unknown link type keeps lengths", B.pcap([FRAME], linktype=147),
     {"l3": 0, "caplen": 154, "wirelen": 154}),
]


@pytest.mark.parametrize("name,data,expect", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_frame_cases(tmp_path, name, data, expect):
    cap = read(tmp_path, data)
    assert cap.error is None and len(cap) == 1
    got = {k: int(cap.cols[k][0]) for k in expect}
    assert got == expect


def _ng(*blocks, order="<"):
    return B.shb(order) + b"".join(blocks)


EPB = B.epb(FRAME, 1)


def _big_epb() -> bytes:
    b = bytearray(B.epb(FRAME, 2))
    struct.pack_into("<I", b, 20, 300000)                   # captured length
    return bytes(b)


# (name, file bytes, frames kept, error offset, words in the error)
NG_DAMAGE = [
    ("tshark: interface not described", _ng(B.idb(), EPB, B.epb(FRAME, 2, iface=5)), 1,
     28 + 20 + len(EPB), "refers to interface 5"),
    ("tshark: captured length over 262144", _ng(B.idb(), EPB, _big_epb()), 1,
     28 + 20 + len(EPB), "more than the 262144 allowed"),
    ("block length not a multiple of 4",
     _ng(B.idb(), EPB, struct.pack("<II", 6, 33) + b"\0" * 40), 1, 28 + 20 + len(EPB),
     "block total length 33"),
    ("block length under 12", _ng(B.idb(), EPB, struct.pack("<II", 6, 8) + b"\0" * 40), 1,
     28 + 20 + len(EPB), "block total length 8"),
    ("block beyond the end of the file", _ng(B.idb(), EPB, EPB[:-8]), 1, 28 + 20 + len(EPB),
     "file ends inside a block"),
    ("captured length beyond the block",
     _ng(B.idb(), EPB, EPB[:20] + struct.pack("<I", 200) + EPB[24:]), 1, 28 + 20 + len(EPB),
     "runs past the end of the block"),
    ("second section with a bad byte-order magic",
     _ng(B.idb(), EPB, B.shb(">")[:8] + b"\0\0\0\0" + B.shb(">")[12:]), 1,
     28 + 20 + len(EPB), "byte-order magic"),
    ("simple packet block too short", _ng(B.idb(), EPB, struct.pack("<III", 3, 12, 12)), 1,
     28 + 20 + len(EPB), "too short"),
    ("packet block before any interface", _ng(EPB), 0, 28, "refers to interface 0"),
]


@pytest.mark.parametrize("name,data,kept,offset,words", NG_DAMAGE,
                         ids=[c[0] for c in NG_DAMAGE])
def test_pcapng_damage(tmp_path, name, data, kept, offset, words):
    cap = read(tmp_path, data, "t.pcapng")
    assert len(cap) == kept
    assert cap.error is not None and cap.error.offset == offset, str(cap.error)
    assert words in cap.error.reason and f"at byte {offset}: " in str(cap.error)


@pytest.mark.parametrize("data,words", [
    (B.shb()[:8] + b"\0\0\0\0" + B.shb()[12:], "byte-order magic"),
    (b"\x0a\x0d\x0d\x0a\x10\0\0\0", "ends inside"),
    (B.pcap([])[:23], "24-byte pcap file header"),
    (gzip.compress(b"", mtime=0), "no data"),
    (gzip.compress(b"\x7fELF" + b"\0" * 40, mtime=0), "7f 45 4c 46"),
])
def test_unreadable_header_raises(tmp_path, data, words):
    with pytest.raises(CaptureError) as e:
        read(tmp_path, data, "t.bin")
    assert words in str(e.value) and e.value.offset == 0 or words in str(e.value)


def test_missing_file_raises_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="cannot open"):
        read_capture(tmp_path / "nope.pcap")


def test_simple_packet_block_cut_to_snaplen(tmp_path):
    cap = read(tmp_path, _ng(B.idb(snaplen=60), B.spb(FRAME)), "t.pcapng")
    c = cap.cols
    assert cap.error is None and (c["caplen"][0], c["wirelen"][0]) == (60, 154)
    assert c["paylen"][0] == 100 and c["l4"][0] == 6 and c["ts_ns"][0] == 0


def test_two_sections_restart_interface_ids(tmp_path):
    data = (B.shb(">") + B.idb(113, ">", tsresol=3) + B.idb(1, ">", tsoffset=-5)
            + B.epb(b"\0\0\0\1\0\6" + b"\2" * 8 + b"\x08\x00" + B.ipv4(B.tcp()), 1234,
                    iface=0, order=">")
            + B.epb(FRAME, 7, iface=1, order=">")
            + B.shb("<") + B.idb(229, "<", name="lo", tsresol=0)
            + B.epb(B.ipv6(B.tcp(sport=7)), 3, iface=0, order="<"))
    cap = read(tmp_path, data, "t.pcapng")
    c = cap.cols
    assert cap.error is None and list(c["iface"]) == [0, 1, 2]
    assert list(c["ts_ns"]) == [1234 * 10**6, 7000 - 5 * 10**9, 3 * 10**9]
    assert list(c["l3"]) == [4, 4, 6] and c["sport"][2] == 7
    assert [i.linktype for i in cap.interfaces] == [113, 1, 229]
    assert cap.interfaces[2].name == "lo" and cap.interfaces[0].tsresol == 10**6


@pytest.mark.parametrize("code", [0x7F, 0xFF, 0xC0, 19, 0x80 | 40])
def test_absurd_tsresol_and_offset_do_not_fail(tmp_path, code):
    data = _ng(B.idb(tsresol=code, tsoffset=2**62), B.epb(FRAME, 2**63 + 5))
    cap = read(tmp_path, data, "t.pcapng")
    assert cap.error is None and len(cap) == 1 and cap.cols["l4"][0] == 6


@pytest.mark.parametrize("threads", [1, 3])
def test_packet_comments_beyond_one_kernel_call(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(scanner_mod, "NOTES", 2)
    monkeypatch.setattr(scanner_mod, "MIN_PART_ROWS", 1)
    blocks = [B.epb(FRAME, i, comments=[f"c{i}"] if i % 2 else []) for i in range(3000)]
    cap = read(tmp_path, _ng(B.idb(), *blocks), "t.pcapng", threads=threads)
    assert cap.packet_comments == {i: [f"c{i}"] for i in range(1, 3000, 2)}


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_small_chunks_and_many_rows(tmp_path, monkeypatch, fmt):
    """Records cut by chunk ends are carried over; the columns grow past their room."""
    monkeypatch.setattr(source_mod, "CHUNK", 1000)
    frames = [B.ether(B.ipv4(B.tcp(seq=i, payload=b"p" * (i % 300)))) for i in range(40000)]
    if fmt == "pcap":
        data = B.pcap([]) + b"".join(struct.pack("<IIII", i, 0, len(f), len(f)) + f
                                     for i, f in enumerate(frames))
    else:
        data = _ng(B.idb(), *[B.epb(f, i) for i, f in enumerate(frames)])
    seen = []
    cap = read(tmp_path, data, "t." + fmt, progress=lambda done, total: seen.append(done))
    assert cap.error is None and len(cap) == 40000
    assert np.array_equal(cap.cols["seq"], np.arange(40000, dtype=np.uint32))
    assert np.array_equal(cap.cols["paylen"], np.arange(40000) % 300)
    assert seen and seen[-1] == len(data)


def _icmp_error(quoted: bytes, icmp_type=3, code=3) -> bytes:
    """An ICMP error (RFC 792) quoting the IP header and 8 bytes of a datagram."""
    return struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted


def _sack(le: int, re: int) -> bytes:
    return b"\x01\x01\x05\x0a" + struct.pack("!II", le, re)


def _mixed_frames(n: int) -> list[bytes]:
    """TCP with SACK blocks, UDP with payload heads and ICMP errors quoting UDP, mixed."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            opts = _sack(i, i + 10) if i % 2 else b""
            out.append(B.ether(B.ipv4(B.tcp(seq=i, options=opts))))
        elif i % 3 == 1:
            out.append(B.ether(B.ipv4(B.udp(sport=i % 60000, payload=bytes([i % 256]) * 40),
                                      proto=17)))
        else:
            quoted = B.ipv4(B.udp(sport=i % 60000), proto=17)[:28]
            out.append(B.ether(B.ipv4(_icmp_error(quoted), proto=1)))
    return out


V6_A = b"\x20\x01" + b"\0" * 13 + b"\x01"
V6_B = b"\x20\x01" + b"\0" * 13 + b"\x02"
QUOTED_UDP4 = B.ipv4(B.udp(sport=5000, dport=53), proto=17, src="10.0.0.1", dst="10.0.0.2")
QUOTED_UDP6 = B.ipv6(B.udp(sport=6000, dport=443), nxt=17, src=V6_A, dst=V6_B)
# (why, frame, expected quoted entry: (proto, src, sport, dst, dport) or None)
ICMP_CASES = [
    ("port unreachable quoting UDP (RFC 792)",
     B.ether(B.ipv4(_icmp_error(QUOTED_UDP4[:28]), proto=1, src="10.0.0.2", dst="10.0.0.1")),
     (17, "10.0.0.1", 5000, "10.0.0.2", 53)),
    ("time exceeded quoting TCP: noted with its protocol",
     B.ether(B.ipv4(_icmp_error(B.ipv4(B.tcp(sport=7, dport=8))[:28], 11, 0), proto=1)),
     (6, "10.0.0.1", 7, "10.0.0.2", 8)),
    ("ICMPv6 destination unreachable quoting UDP (RFC 4443 2.4)",
     B.ether(B.ipv6(_icmp_error(QUOTED_UDP6, 1, 4), nxt=58, src=V6_B, dst=V6_A), 0x86DD),
     (17, "2001::1", 6000, "2001::2", 443)),
    ("ICMPv6 quoting UDP after a hop-by-hop header and a first fragment header",
     B.ether(B.ipv6(_icmp_error(B.ipv6(
         b"\x2c\0\x01\x04\0\0\0\0" + b"\x11\0\0\x01\0\0\0\x07" + B.udp(1, 2), nxt=0,
         src=V6_A, dst=V6_B), 1, 4), nxt=58), 0x86DD),
     (17, "2001::1", 1, "2001::2", 2)),
    ("echo request: not an error, nothing quoted",
     B.ether(B.ipv4(_icmp_error(QUOTED_UDP4[:28], 8, 0), proto=1)), None),
    ("quoting a later fragment: no transport header",
     B.ether(B.ipv4(_icmp_error(B.ipv4(B.udp(), proto=17, frag=185)[:28]), proto=1)), None),
    ("quoted UDP header cut short (under 8 bytes)",
     B.ether(B.ipv4(_icmp_error(QUOTED_UDP4[:26]), proto=1)), None),
    ("ICMPv6 type 128 (echo request): not an error",
     B.ether(B.ipv6(_icmp_error(QUOTED_UDP6, 128, 0), nxt=58), 0x86DD), None),
]


@pytest.mark.parametrize("why,frame,expect", ICMP_CASES, ids=[c[0] for c in ICMP_CASES])
def test_icmp_error_quoted_headers(tmp_path, why, frame, expect):
    import ipaddress

    def addr(hi, lo):
        v = ipaddress.IPv6Address((int(hi) << 64) | int(lo))
        return str(v.ipv4_mapped or v)

    c = read(tmp_path, B.pcap([frame])).cols
    if expect is None:
        assert len(c["icmp_rows"]) == 0
        return
    assert c["icmp_rows"].tolist() == [0] and c["l4"][0] == 0
    got = (int(c["icmp_proto"][0]), addr(c["icmp_src_hi"][0], c["icmp_src_lo"][0]),
           int(c["icmp_sport"][0]), addr(c["icmp_dst_hi"][0], c["icmp_dst_lo"][0]),
           int(c["icmp_dport"][0]))
    assert got == expect


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_threads_split_the_work_and_change_nothing(tmp_path, monkeypatch, fmt):
    """Parts decoded by several threads give the columns and side tables of one thread,
    across several kernel calls (ROWS_PER_CALL) and buffer refills (CHUNK)."""
    monkeypatch.setattr(scanner_mod, "ROWS_PER_CALL", 4096)
    monkeypatch.setattr(scanner_mod, "MIN_PART_ROWS", 1024)
    monkeypatch.setattr(source_mod, "CHUNK", 300_000)
    frames = _mixed_frames(20000)
    data = (B.pcap(frames) if fmt == "pcap"
            else _ng(B.idb(), *[B.epb(f, i) for i, f in enumerate(frames)]))
    one = read(tmp_path, data, "t." + fmt, threads=1)
    many = read(tmp_path, data, "t." + fmt, threads=4)
    assert one.error is None and len(one) == 20000
    assert set(one.cols) == set(many.cols)
    for k in one.cols:
        assert one.cols[k].dtype == many.cols[k].dtype and np.array_equal(
            one.cols[k], many.cols[k]), k
    assert len(one.cols["sack_rows"]) == 3333 and len(one.cols["udp_rows"]) == 6667
    assert np.array_equal(one.cols["icmp_rows"], np.arange(2, 20000, 3))


def test_gzip_damage_is_reported_in_decompressed_offsets(tmp_path):
    data = B.pcap([FRAME] * 50)
    z = gzip.compress(data)
    cap = read(tmp_path, z[:len(z) // 2], "t.pcap.gz")
    assert cap.compressed and 0 < len(cap) < 50
    assert "gzip" in str(cap.error) and "decompressed" in str(cap.error)
    assert cap.error.offset == 24 + len(cap) * (16 + len(FRAME))
    # the record where reading stopped, and the damage beyond it, said as two places
    assert f"at byte {cap.error.offset}: the record here is cut short: gzip stream " \
        f"damaged after " in str(cap.error)


def test_pcap_big_endian_nanoseconds_header_fields(tmp_path):
    cap = read(tmp_path, B.pcap([(FRAME, 5 * 10**9 + 7, 154)], order=">", nanos=True,
                                snaplen=1000))
    assert cap.cols["ts_ns"][0] == 5 * 10**9 + 7 and cap.interfaces[0].snaplen == 1000
    assert cap.interfaces[0].tsresol == 1


def test_decoding_threads_work_in_a_forked_child(tmp_path):
    """A child forked after a threaded read gets its own worker threads (an inherited
    pool would take the parts and never decode them: a hang)."""
    import os

    frames = _mixed_frames(20000)
    path = tmp_path / "t.pcap"
    path.write_bytes(B.pcap(frames))
    parent = read_capture(path, threads=2)
    pid = os.fork()
    if pid == 0:                                    # the child: exit status says it all
        code = 1
        try:
            import signal
            signal.alarm(60)                        # a hang ends the child, failing
            child = read_capture(path, threads=2)
            code = 0 if np.array_equal(child.cols["seq"], parent.cols["seq"]) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_records_larger_than_the_buffer_grow_it(tmp_path, monkeypatch, fmt):
    """A record longer than the whole chunk buffer makes a bigger buffer; the frames around
    it, and it, are decoded whole."""
    monkeypatch.setattr(source_mod, "CHUNK", 1000)
    sizes = [100, 5000, 120, 9000, 50]
    frames = [B.ether(B.ipv4(B.tcp(seq=i, payload=b"q" * n))) for i, n in enumerate(sizes)]
    data = (B.pcap(frames) if fmt == "pcap"
            else _ng(B.idb(), *[B.epb(f, i) for i, f in enumerate(frames)]))
    cap = read(tmp_path, data, "t." + fmt, threads=2)
    assert cap.error is None and cap.cols["seq"].tolist() == list(range(len(sizes)))
    assert cap.cols["paylen"].tolist() == sizes
