"""The userspace engine's pure parts, without privileges: frames (identity, routing,
corruption), scripted faults (matching and counting), the link model (loss, burst loss,
queue and rate, delay and jitter, seeds) and the ledger's file format."""

from __future__ import annotations

import json
import random
import struct

import pytest

from toolkit.netlab import frames, ledger
from toolkit.netlab import impairment as I
from toolkit.netlab.faults import FaultBook, matches
from toolkit.netlab.frames import Packet
from toolkit.netlab.linkmodel import DEFAULT_FLOW, DirectionModel, default_queue_bytes

R_MAC, H_MAC = bytes.fromhex("026c6b000201"), bytes.fromhex("026c6b000202")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _header_checksum_ok(frame: bytes) -> bool:
    """RFC 1071: the one's complement sum over a valid IPv4 header is all ones."""
    ihl = (frame[14] & 0x0F) * 4
    return _checksum(frame[14:14 + ihl]) == 0


def ipv4(proto: int, l4: bytes, ttl: int = 64, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, frag, ttl, proto, 0,
                      bytes([10, 201, 1, 2]), bytes([10, 201, 2, 2]))
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + hdr + l4


def ipv6(next_header: int, l4: bytes, hops: int = 64, ext: bytes = b"") -> bytes:
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), next_header, hops,
                      bytes.fromhex("fd000201000100000000000000000002"),
                      bytes.fromhex("fd000201000200000000000000000002"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + hdr + ext + l4


def tcp(flags: int, seq: int = 1000, ack: int = 0, payload: bytes = b"") -> bytes:
    opts = b"\x01\x01\x08\x0a" + b"\0" * 8          # NOP NOP timestamps: a 32-byte header
    return struct.pack("!HHIIBBHHH", 40000, 5401, seq, ack, 8 << 4, flags, 65535, 0, 0) \
        + opts + payload


def udp(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, 5301, 8 + len(payload), 0) + payload


# ---- frames ----

def test_identify_tcp_segment():
    p = frames.identify(ipv4(6, tcp(0x18, seq=5, ack=9, payload=b"x" * 100)))
    assert (p.family, p.proto, p.flags, p.seq, p.ack, p.payload_len) == (4, "tcp", "PA", 5, 9,
                                                                         100)
    assert p.payload_at == 14 + 20 + 32
    assert p.describe() == {"proto": "tcp", "sport": 40000, "dport": 5401, "flags": "PA",
                            "seq": 5, "ack": 9, "len": 100}


def test_identify_takes_the_payload_length_from_ip_not_the_captured_bytes():
    frame = ipv4(6, tcp(0x10, payload=b"x" * 100))
    assert frames.identify(frame[:-60]).payload_len == 100


def test_identify_udp_with_and_without_the_lab_header():
    head = b"LBK1\x01\x00\x00\x00" + struct.pack("!IQqI", 7, 42, 0, 0)
    p = frames.identify(ipv4(17, udp(head + b"body")))
    assert (p.proto, p.flow, p.seq, p.payload_len) == ("udp", 7, 42, 36)
    q = frames.identify(ipv4(17, udp(b"plain datagram")))
    assert (q.flow, q.seq) == (None, None) and "flow" not in q.describe()


def test_identify_icmp_echo_and_later_fragments():
    echo = struct.pack("!BBHHH", 8, 0, 0, 77, 3) + b"ping"
    p = frames.identify(ipv4(1, echo))
    assert (p.proto, p.icmp, p.ack, p.seq) == ("icmp", (8, 0), 77, 3)
    later = frames.identify(ipv4(6, b"\0" * 40, frag=10))
    assert (later.proto, later.l4, later.flags) == ("tcp", -1, "")


def test_identify_ipv6_through_extension_headers():
    hop_by_hop = bytes([6, 0]) + b"\0" * 6           # next header TCP, 8 bytes
    p = frames.identify(ipv6(0, tcp(0x02, seq=99), ext=hop_by_hop))
    assert (p.family, p.proto, p.flags, p.seq) == (6, "tcp", "S", 99)
    later_fragment = bytes([6, 0, 0, 8 << 3]) + b"\0" * 4
    assert frames.identify(ipv6(44, b"\0" * 40, ext=later_fragment)).l4 == -1


def test_identify_ignores_what_is_not_ip():
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28
    assert frames.identify(arp).family == 0 and frames.identify(b"short").family == 0


@pytest.mark.parametrize("ttl", [64, 2, 255, 128])
def test_route_rewrites_macs_and_decrements_ttl_with_a_valid_checksum(ttl):
    frame = ipv4(6, tcp(0x10), ttl=ttl)
    out = frames.route(frame, R_MAC, H_MAC)
    assert out[:6] == H_MAC and out[6:12] == R_MAC and out[22] == ttl - 1
    assert _header_checksum_ok(out)
    assert out[12:22] == frame[12:22] and out[26:] == frame[26:]


def test_route_checksum_property_over_random_headers():
    rng = random.Random(5)
    for _ in range(500):
        ttl = rng.randrange(2, 256)
        frame = bytearray(ipv4(rng.choice([6, 17]), bytes(rng.randrange(256) for _ in range(28)),
                               ttl=ttl))
        frame[18:20] = rng.randbytes(2)               # any IP id: any starting checksum
        hdr = bytes(frame[14:34])
        hdr = hdr[:10] + b"\0\0" + hdr[12:]
        frame[24:26] = struct.pack("!H", _checksum(hdr))
        assert _header_checksum_ok(frames.route(bytes(frame), R_MAC, H_MAC))


def test_route_drops_a_packet_whose_ttl_or_hop_limit_runs_out():
    assert frames.route(ipv4(6, tcp(0x10), ttl=1), R_MAC, H_MAC) is None
    assert frames.route(ipv6(6, tcp(0x10), hops=1), R_MAC, H_MAC) is None
    assert frames.route(ipv6(6, tcp(0x10), hops=9), R_MAC, H_MAC)[21] == 8


def test_corrupt_flips_exactly_one_payload_bit():
    frame = ipv4(6, tcp(0x18, payload=bytes(200)))
    p = frames.identify(frame)
    for draw in (0.0, 0.5, 0.999):
        out, bit = frames.corrupt(frame, p, draw)
        diff = [i for i in range(len(frame)) if out[i] != frame[i]]
        assert diff == [bit // 8] and diff[0] >= p.payload_at
        assert bin(out[diff[0]] ^ frame[diff[0]]).count("1") == 1
    bare = ipv4(6, tcp(0x10))
    out, bit = frames.corrupt(bare, frames.identify(bare), 0.3)
    assert bit // 8 == len(bare) - 1                  # no payload: the last header byte


# ---- faults ----

SYN = frames.identify(ipv4(6, tcp(0x02)))
SYNACK = frames.identify(ipv4(6, tcp(0x12)))
DATA = frames.identify(ipv4(6, tcp(0x10, payload=b"x" * 10)))
FIN = frames.identify(ipv4(6, tcp(0x11)))
DGRAM = frames.identify(ipv4(17, udp(b"x")))


def _faults(*tables):
    return I.from_dict({"fault": list(tables)}).faults


def test_matching_by_flags_payload_direction_protocol_and_window():
    first_syn, = _faults({"action": "drop", "proto": "tcp", "flags": "S", "not_flags": "A"})
    assert matches(first_syn, "a_to_b", SYN, 0) and not matches(first_syn, "b_to_a", SYNACK, 0)
    data, = _faults({"action": "drop", "proto": "tcp", "payload": True,
                     "direction": "a_to_b"})
    assert matches(data, "a_to_b", DATA, 0)
    assert not matches(data, "b_to_a", DATA, 0) and not matches(data, "a_to_b", FIN, 0)
    window, = _faults({"action": "drop", "start": "1s", "end": "1300ms"})
    assert [matches(window, "a_to_b", DGRAM, t) for t in (0.99, 1.0, 1.29, 1.3)] == [
        False, True, True, False]


def test_nth_and_count_pick_the_matches_and_every_counts_all():
    book = FaultBook(_faults({"action": "drop", "proto": "tcp", "flags": "SA", "count": 2},
                             {"action": "drop", "proto": "udp", "nth": 3}))
    got = [book.decide("b_to_a", SYNACK, 0) is not None for _ in range(4)]
    assert got == [True, True, False, False]          # "drop the SYN-ACK twice"
    got = [book.decide("a_to_b", DGRAM, 0) is not None for _ in range(5)]
    assert got == [False, False, True, False, False]
    assert [s["matched"] for s in book.summary()] == [4, 5]
    assert [s["acted"] for s in book.summary()] == [2, 1]


def test_a_window_without_nth_acts_on_every_match():
    f, = _faults({"action": "drop", "start": "0s", "end": "1s"})
    assert f.nth is None
    book = FaultBook((f,))
    assert all(book.decide("a_to_b", DGRAM, t / 10) for t in range(10))
    assert book.decide("a_to_b", DGRAM, 1.0) is None


def test_every_fault_counts_every_packet_and_the_first_listed_wins():
    book = FaultBook(_faults({"action": "drop", "proto": "udp", "nth": 1},
                             {"action": "duplicate", "proto": "udp", "nth": 1},
                             {"action": "corrupt", "proto": "udp", "nth": 2}))
    first = book.decide("a_to_b", DGRAM, 0)
    assert first.index == 0 and first.match_number == 1
    second = book.decide("a_to_b", DGRAM, 0)
    assert second.index == 2                          # fault 1's nth=1 passed with the first


def test_last_candidates_and_confirmation():
    book = FaultBook(_faults({"action": "drop", "direction": "a_to_b", "proto": "tcp",
                              "last": True}))
    assert book.last_candidate("a_to_b", DATA, 0) == 0
    assert book.last_candidate("b_to_a", DATA, 0) is None
    assert book.decide("a_to_b", DATA, 0) is None     # `last` faults never act on arrival
    assert book.confirm_last(0).index == 0
    assert book.last_candidate("a_to_b", DATA, 0) is None      # count 1: spent
    assert book.confirm_last(0) is None


# ---- the link model ----

def _model(seed=1, ceiling=None, **spec):
    d = I.from_dict({"a_to_b": spec}).a_to_b
    return DirectionModel(d, seed, "a_to_b", ceiling)


def test_random_loss_is_seeded_and_near_its_rate():
    def fates(seed):
        m = _model(seed, loss="10%")
        return [m.admit(i * 1000, 100).action for i in range(20_000)]
    a, b = fates(3), fates(3)
    assert a == b and a != fates(4)
    assert 1800 < a.count("drop") < 2200


def test_burst_loss_follows_gilbert_elliott():
    m = _model(burst={"p": "1%", "r": "25%"})
    drops = [m.admit(i, 100).action == "drop" for i in range(100_000)]
    # stationary loss p/(p+r) = 1/26; mean burst length 1/r = 4
    assert drops.count(True) / len(drops) == pytest.approx(1 / 26, rel=0.15)
    runs, n = [], 0
    for d in drops + [False]:
        if d:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert sum(runs) / len(runs) == pytest.approx(4, rel=0.15)


def test_rate_serializes_and_the_queue_drops_tail():
    m = _model(rate="8mbit", queue="3000b")            # 1 byte per microsecond
    v1 = m.admit(0, 1000)
    v2 = m.admit(0, 1000)
    v3 = m.admit(0, 1000)
    v4 = m.admit(0, 1000)
    assert (v1.depart_ns, v2.depart_ns, v3.depart_ns) == (1_000_000, 2_000_000, 3_000_000)
    assert (v4.action, v4.why) == ("drop", "queue")
    assert m.admit(1_500_000, 1000).depart_ns == 4_000_000     # room again after 1.5 ms
    assert default_queue_bytes(20_000_000) == 125_000


def test_delay_with_jitter_never_reorders():
    m = _model(delay="10ms", jitter="5ms")
    departs = [m.admit(i * 100_000, 100).depart_ns for i in range(2000)]
    assert departs == sorted(departs)
    assert all(5_000_000 <= d - i * 100_000 for i, d in enumerate(departs))
    spread = {d - i * 100_000 for i, d in enumerate(departs)}
    assert len(spread) > 100


def test_the_ceiling_shapes_an_unlimited_link_and_marks_its_drops():
    m = _model(ceiling=(8_000_000, 1000))           # 1 byte/us, 1000 frames/s
    assert m.admit(0, 100).depart_ns == 1_000_000      # the frame floor, not 100 us of bytes
    verdicts = [m.admit(0, 100) for _ in range(200)]
    whys = {v.why for v in verdicts if v.action == "drop"}
    assert whys == {"capacity"}
    shaped = _model(ceiling=(100_000_000, 10_000), rate="1mbit", queue="3000b")
    drops = [shaped.admit(0, 1000) for _ in range(5)]
    assert {v.why for v in drops if v.action == "drop"} == {"queue"}   # the lab's limit


def test_duplicate_reorder_corrupt_are_drawn_per_packet():
    m = _model(duplicate="50%", reorder="50%", corrupt="50%")
    vs = [m.admit(i, 100) for i in range(4000)]
    for attr in ("duplicate", "reorder"):
        assert 1800 < sum(getattr(v, attr) for v in vs) < 2200
    assert 1800 < sum(v.corrupt is not None for v in vs) < 2200


# ---- random streams per flow ----

FLOW_X = "udp 10.201.1.2:41001>10.201.2.2:5202"
FLOW_Y = "tcp 10.201.1.2:41000>10.201.2.2:5201"


def _dropped(verdicts) -> set[int]:
    return {i for i, v in enumerate(verdicts) if v.action == "drop"}


def _interleaved(model, flows: dict[str, int], pattern_seed: int) -> dict[str, list]:
    """Feed each flow's packets in its own order, the flows mixed in a random pattern;
    returns each flow's verdicts in its own packet order."""
    order = [k for k, n in flows.items() for _ in range(n)]
    random.Random(pattern_seed).shuffle(order)
    out: dict[str, list] = {k: [] for k in flows}
    for t, key in enumerate(order):
        out[key].append(model.admit(t * 1000, 100, key))
    return out


def test_a_flows_drops_do_not_depend_on_other_flows_interleaving():
    alone = _model(7, loss="10%")
    expected = _dropped([alone.admit(i * 1000, 100, FLOW_X) for i in range(2000)])
    for pattern in range(5):
        mixed = _interleaved(_model(7, loss="10%"), {FLOW_X: 2000, FLOW_Y: 1500 + pattern},
                             pattern)
        assert _dropped(mixed[FLOW_X]) == expected


def test_every_draw_is_per_flow_even_past_a_shared_queue():
    """Jitter, duplicate, reorder and corrupt too; and a packet the shared queue drops
    (which depends on the other flows) still uses up its draws."""
    spec = dict(loss="5%", delay="10ms", jitter="2ms", duplicate="5%", reorder="5%",
                corrupt="5%")

    def fates(verdicts):
        return [(v.duplicate, v.reorder, v.corrupt) for v in verdicts if v.action != "drop"]
    alone = _model(7, **spec)
    solo = [alone.admit(i * 10**6, 100, FLOW_X) for i in range(2000)]
    mixed = _interleaved(_model(7, **spec), {FLOW_X: 2000, FLOW_Y: 3000}, 1)[FLOW_X]
    assert _dropped(mixed) == _dropped(solo) and fates(mixed) == fates(solo)
    # a tight queue: Y's packets crowd out some of X's, the rest keep their own draws
    tight = dict(spec, rate="8mbit", queue="1000b")
    lone = _model(7, **tight)
    solo = [lone.admit(i * 10**6, 100, FLOW_X) for i in range(2000)]
    crowded = _interleaved(_model(7, **tight), {FLOW_X: 2000, FLOW_Y: 20_000}, 2)[FLOW_X]
    queued = {i for i, v in enumerate(crowded) if v.why == "queue"}
    assert queued and _dropped(solo) <= _dropped(crowded)
    assert all((solo[i].duplicate, solo[i].reorder, solo[i].corrupt)
               == (crowded[i].duplicate, crowded[i].reorder, crowded[i].corrupt)
               for i in range(2000) if i not in queued and solo[i].action == "forward")


def test_different_seeds_give_different_drops():
    def drops(seed):
        m = _model(seed, loss="10%")
        return _dropped([m.admit(i * 1000, 100, FLOW_X) for i in range(2000)])
    assert drops(7) == drops(7)
    assert len({frozenset(drops(seed)) for seed in (7, 8, 9)}) == 3


def test_two_flows_with_the_same_packets_draw_independently():
    m = _model(7, loss="10%")
    out = _interleaved(m, {FLOW_X: 2000, FLOW_Y: 2000}, 3)
    x, y = _dropped(out[FLOW_X]), _dropped(out[FLOW_Y])
    assert x != y
    # independent: both dropped about 0.1 * 0.1 * 2000 = 20 times (not 200, not 0)
    assert 5 <= len(x & y) <= 45
    # callers that name no flow share one default stream
    unnamed, named = _model(7, loss="10%"), _model(7, loss="10%")
    assert [unnamed.admit(i, 100).action for i in range(500)] == [
        named.admit(i, 100, DEFAULT_FLOW).action for i in range(500)]


def test_burst_state_is_per_flow():
    spec = dict(burst={"p": "1%", "r": "25%"})
    alone = _model(7, **spec)
    expected = _dropped([alone.admit(i, 100, FLOW_X) for i in range(20_000)])
    mixed = _interleaved(_model(7, **spec), {FLOW_X: 20_000, FLOW_Y: 20_000}, 4)
    assert _dropped(mixed[FLOW_X]) == expected
    # a flow's bad state is its own: X in a burst leaves Y's state where it was
    m = _model(7, burst={"p": "100%", "r": "0%", "loss_bad": "100%"})
    m.flow(FLOW_Y)                                   # Y starts good
    assert m.admit(0, 100, FLOW_X).why == "burst"
    assert m.flow(FLOW_X).bad and not m.flow(FLOW_Y).bad


def _binomial_interval(n: int, p: float, z: float = 3.29) -> tuple[float, float]:
    """Normal approximation, 99.9%."""
    sd = (n * p * (1 - p)) ** 0.5
    return n * p - z * sd, n * p + z * sd


def test_each_flows_loss_rate_is_binomial():
    m = _model(11, loss="5%")
    keys = [f"udp 10.201.1.2:{41000 + i}>10.201.2.2:5202" for i in range(8)]
    out = _interleaved(m, {k: 4000 for k in keys}, 5)
    low, high = _binomial_interval(4000, 0.05)
    for k in keys:
        assert low <= len(_dropped(out[k])) <= high, k


def test_the_flow_table_is_bounded_and_evicts_the_least_recently_seen(monkeypatch):
    from toolkit.netlab import linkmodel
    monkeypatch.setattr(linkmodel, "MAX_FLOWS", 3)
    m = _model(7, loss="10%")
    for key in ("a", "b", "c", "a", "d"):            # "b" is the least recently seen
        m.admit(0, 100, key)
    assert list(m.flows) == ["c", "a", "d"] and m.flows_evicted == 1 and m.flows_seen == 4


def test_flow_keys_name_the_five_tuple_or_the_protocol():
    assert frames.identify(ipv4(17, udp(b"x"))).flow_key() == \
        "udp 10.201.1.2:40000>10.201.2.2:5301"
    assert frames.identify(ipv6(6, tcp(0x02))).flow_key() == \
        "tcp [fd00:201:1::2]:40000>[fd00:201:2::2]:5401"
    echo = struct.pack("!BBHHH", 8, 0, 0, 77, 3)
    assert frames.identify(ipv4(1, echo)).flow_key() == "icmp"
    assert frames.identify(ipv6(58, struct.pack("!BBHHH", 128, 0, 0, 1, 1))).flow_key() \
        == "icmp6"
    assert frames.identify(ipv4(6, b"\0" * 40, frag=10)).flow_key() == "tcp"
    assert frames.identify(ipv4(47, b"\0" * 8)).flow_key() == "47"


def test_the_forwarder_draws_per_flow(tmp_path):
    """Through the engine's own arrival path: a UDP flow's drops are the same alone and
    mixed with a TCP flow's segments."""
    def dgram(seq: int, a_port) -> bytes:
        head = b"LBK1\x01\x00\x00\x00" + struct.pack("!IQqI", 1, seq, 0, 0)
        return a_port.router_mac + ipv4(17, udp(head))[6:]

    def lost(mix: bool) -> set[int]:
        fwd, a, b = _forwarder(tmp_path, {"seed": 7, "a_to_b": {"loss": "20%"}})
        frames_in = []
        for i in range(500):
            frames_in.append(dgram(i, a))
            if mix and i % 3:
                frames_in.append(_segment(a, i))
        for i, f in enumerate(frames_in):       # 5,000 frames/s: under the engine's ceiling
            fwd.arrive(a, f, 10**9 + i * 200_000)
        fwd.send_due(10**11)
        got = {frames.identify(f).seq for f in b.tx.sent if frames.identify(f).proto == "udp"}
        return set(range(500)) - got
    assert lost(False) == lost(True) and 50 < len(lost(False)) < 150


# ---- the ledger ----

def test_ledger_round_trip_and_where(tmp_path):
    w = ledger.Writer(tmp_path / "l.jsonl", {"run": "abc"})
    w.record(1, "a_to_b", 10, 20, 74, SYN.describe(), "forward")
    w.record(0, "a_to_b", 5, None, 74, SYN.describe(), "drop", 'fault 0: "first" SYN')
    w.record(1, "a_to_b", 10, 21, 74, SYN.describe(), "duplicate", "duplicate", copy=2)
    w.close({"overruns": 0})
    led = ledger.read(tmp_path / "l.jsonl")
    assert led.header["run"] == "abc" and led.trailer["overruns"] == 0 and led.note == ""
    assert [r["n"] for r in led.where(flags="S")] == [0, 1, 1]
    assert led.dropped()[0]["why"] == 'fault 0: "first" SYN'
    for line in (tmp_path / "l.jsonl").read_text().splitlines():
        json.loads(line)                              # every line is strict JSON


def test_ledger_of_a_killed_engine_keeps_every_whole_record(tmp_path):
    w = ledger.Writer(tmp_path / "l.jsonl", {})
    for n in range(3):
        w.record(n, "a_to_b", n, n + 1, 60, DGRAM.describe(), "forward")
    w.flush()
    text = (tmp_path / "l.jsonl").read_text()
    (tmp_path / "cut.jsonl").write_text(text[:-20])
    led = ledger.read(tmp_path / "cut.jsonl")
    assert len(led.records) == 2 and "line 4 is incomplete" in led.note
    (tmp_path / "whole.jsonl").write_text(text)
    assert "no trailer" in ledger.read(tmp_path / "whole.jsonl").note


@pytest.mark.parametrize("content,match", [
    ("", "empty"), ("{not json\n", r":1: not JSON"), ('{"a": 1}\n', "not a labkit link ledger"),
    ('{"ledger": "labkit-link-ledger", "version": 9}\n', "version 9"),
])
def test_ledger_errors_name_the_line(tmp_path, content, match):
    (tmp_path / "x.jsonl").write_text(content)
    with pytest.raises(ledger.LedgerError, match=match):
        ledger.read(tmp_path / "x.jsonl")


def test_packet_describe_names_fields_for_each_protocol():
    assert DGRAM.describe() == {"proto": "udp", "sport": 40000, "dport": 5301, "len": 1}
    p = Packet(4, b"", b"", "icmp", icmp=(3, 1))
    assert p.describe() == {"proto": "icmp", "type": 3, "code": 1}


# ---- the forwarder's decisions, with sockets replaced by a list ----

class _Wire:
    def __init__(self):
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)


def _forwarder(tmp_path, spec: dict):
    from toolkit.netlab import forwarder

    def port(i, host):
        return forwarder.Port(host, f"lk-r-{host}", bytes.fromhex(f"026c6b00{i:02x}01"),
                             bytes.fromhex(f"026c6b00{i:02x}02"), bytes([10, 201, i]),
                             bytes.fromhex(f"fd000201{i:04x}0000"), bytes([10, 201, i, 1]),
                             bytes(16), None, _Wire())
    a, b = port(1, "a"), port(2, "b")
    fwd = forwarder.Forwarder(I.from_dict(spec), [a, b], ("a", "b"), tmp_path / "l.jsonl", {})
    return fwd, a, b


def _segment(a_port, seq: int, flags: int = 0x10, size: int = 100) -> bytes:
    frame = ipv4(6, tcp(flags, seq=seq, payload=b"x" * size))
    return a_port.router_mac + frame[6:]                # addressed to the router


def _run(fwd, a, frames_in, t0=1_000_000_000):
    for i, f in enumerate(frames_in):
        fwd.arrive(a, f, t0 + i * 1000)
    fwd.send_due(t0 + 10**10)
    fwd.expire_holds(t0 + 10**10)
    fwd.send_due(t0 + 2 * 10**10)


def _seqs(port) -> list[int]:
    return [frames.identify(f).seq for f in port.tx.sent]


def test_forwarder_hold_sends_the_segment_after_the_next(tmp_path):
    fwd, a, b = _forwarder(tmp_path, {"fault": [{"action": "hold", "proto": "tcp",
                                                 "payload": True, "nth": 2}]})
    _run(fwd, a, [_segment(a, s) for s in (100, 200, 300, 400)])
    assert _seqs(b) == [100, 300, 200, 400]
    assert all(f[:6] == b.host_mac and f[6:12] == b.router_mac for f in b.tx.sent)
    assert a.tx.sent == []


def test_forwarder_drops_the_last_data_segment_once_a_fin_shows_it(tmp_path):
    fwd, a, b = _forwarder(tmp_path, {"fault": [{"action": "drop", "proto": "tcp",
                                                 "last": True}]})
    _run(fwd, a, [_segment(a, 100), _segment(a, 200), _segment(a, 300, 0x11, size=0)])
    assert _seqs(b) == [100, 300]
    fwd.finish()
    led = ledger.read(tmp_path / "l.jsonl")
    assert [(r["pkt"]["seq"], r["action"]) for r in led.dropped()] == [(200, "drop")]


def test_forwarder_releases_a_last_candidate_when_no_fin_follows(tmp_path):
    fwd, a, b = _forwarder(tmp_path, {"fault": [{"action": "drop", "proto": "tcp",
                                                 "last": True}]})
    _run(fwd, a, [_segment(a, 100)])
    assert _seqs(b) == [100]
    fwd.finish()
    rec, = ledger.read(tmp_path / "l.jsonl").records
    assert "no FIN followed" in rec["why"]


def test_forwarder_duplicate_delay_and_ttl(tmp_path):
    fwd, a, b = _forwarder(tmp_path, {"fault": [
        {"action": "duplicate", "proto": "tcp", "payload": True, "nth": 1},
        {"action": "delay", "delay": "5ms", "proto": "tcp", "payload": True, "nth": 2}]})
    t0 = 1_000_000_000
    fwd.arrive(a, _segment(a, 100), t0)
    fwd.arrive(a, _segment(a, 200), t0)
    fwd.arrive(a, _segment(a, 300), t0)
    fwd.send_due(t0 + 4_000_000)
    assert _seqs(b) == [100, 100, 300]                 # 200 is 5 ms late on purpose
    fwd.send_due(t0 + 6_000_000)
    assert _seqs(b) == [100, 100, 300, 200]
    expired = a.router_mac + ipv4(6, tcp(0x10), ttl=1)[6:]
    fwd.arrive(a, expired, t0)
    fwd.finish()
    led = ledger.read(tmp_path / "l.jsonl")
    assert [r.get("copy", 1) for r in led.where(seq=100)] == [1, 2]
    assert [r["why"] for r in led.dropped()] == ["ttl"]


def test_forwarder_leaves_the_routers_own_traffic_to_the_kernel(tmp_path):
    fwd, a, b = _forwarder(tmp_path, {})
    to_router = bytearray(_segment(a, 1))
    to_router[30:34] = bytes([10, 201, 1, 1])          # the router's own address
    not_for_us = b"\x02\x99" + _segment(a, 2)[2:]      # another MAC
    _run(fwd, a, [bytes(to_router), not_for_us])
    assert b.tx.sent == [] and a.tx.sent == [] and fwd.n == 0
