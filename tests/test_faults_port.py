"""Scripted faults that name one flow by its port: matching and counting (faults.py), the
lab key's errors (impairment.py), and the engine's holds (`hold`, `last`) waiting for the
next packet of their own flow, not of the direction, while other flows send meanwhile
(emulator.py). No privileges: packets are built in memory and the sockets are lists."""

from __future__ import annotations

import struct

import pytest

from toolkit.netlab import frames, ledger
from toolkit.netlab import impairment as I
from toolkit.netlab.faults import FaultBook, matches
from toolkit.netlab.frames import Packet


def _pkt(sport: int, dport: int, flags: str = "A", payload: int = 0) -> Packet:
    return Packet(4, bytes([10, 201, 1, 2]), bytes([10, 201, 2, 2]), "tcp", l4=34,
                  payload_len=payload, sport=sport, dport=dport, flags=flags)


def _faults(*raw: dict) -> tuple:
    return I.from_dict({"fault": list(raw)}).faults


# ---- matching and counting ----

def test_port_matches_either_end_and_nothing_else():
    f, = _faults({"action": "drop", "proto": "tcp", "port": 5301})
    assert matches(f, "a_to_b", _pkt(41000, 5301), 0.0)       # to the server
    assert matches(f, "b_to_a", _pkt(5301, 41000), 0.0)       # from it
    assert not matches(f, "a_to_b", _pkt(41000, 5302), 0.0)
    assert not matches(f, "a_to_b", _pkt(5302, 5303), 0.0)
    udp = Packet(4, b"", b"", "udp", l4=34, sport=41000, dport=5301)
    assert not matches(f, "a_to_b", udp, 0.0)                 # the protocol still counts


def test_port_counts_the_nth_of_its_own_flow_only():
    """The 2nd SYN of port 5301 is the 2nd that port sees, however many SYNs other flows
    sent in between (each flow's fault on its own port, as lab 05 has them)."""
    book = FaultBook(_faults(
        {"action": "drop", "proto": "tcp", "port": 5301, "flags": "S", "not_flags": "A",
         "nth": 2},
        {"action": "drop", "proto": "tcp", "port": 5302, "flags": "SA"}))
    order = [(41001, 5301, "S"), (41002, 5302, "S"), (41002, 5302, "S"),
             (5302, 41002, "SA"), (41001, 5301, "S"), (5301, 41001, "SA")]
    acted = [getattr(book.decide("a_to_b" if d in (5301, 5302) else "b_to_a",
                                 _pkt(s, d, fl), 0.0), "index", None) for s, d, fl in order]
    assert acted == [None, None, None, 1, 0, None]
    assert [s["matched"] for s in book.summary()] == [2, 1]


def test_port_appears_in_the_fault_description():
    f, = _faults({"action": "drop", "proto": "tcp", "port": 5301, "flags": "S",
                  "not_flags": "A"})
    assert f.describe() == "drop #1 tcp port 5301 [S] not [A]"


@pytest.mark.parametrize("raw,message", [
    ({"action": "drop", "proto": "tcp", "port": 0}, r"fault\[0\]\.port: 0; expected a port"),
    ({"action": "drop", "proto": "tcp", "port": 65536}, r"fault\[0\]\.port: 65536"),
    ({"action": "drop", "proto": "tcp", "port": "5301"}, r"fault\[0\]\.port: '5301'"),
    ({"action": "drop", "proto": "tcp", "port": True}, r"fault\[0\]\.port: True"),
    ({"action": "drop", "port": 5301}, r"fault\[0\]\.port: a port needs proto"),
    ({"action": "drop", "proto": "icmp", "port": 5301}, r"a port needs proto"),
])
def test_a_bad_port_is_refused_naming_the_key(raw, message):
    with pytest.raises(I.SpecError, match=message):
        I.from_dict({"fault": [raw]})


def test_a_bad_port_in_a_lab_is_a_lab_error(tmp_path):
    from toolkit.labs import spec
    text = """
[lab]
title = "t"
engine = "userspace"
[link]
fault = [{action = "drop", proto = "tcp", port = 70000}]
[[flow]]
port = 5301
"""
    with pytest.raises(spec.LabError, match=r"link\.fault\[0\]\.port: 70000"):
        spec.loads(text, tmp_path / "lab.toml")


# ---- the engine's holds, per flow ----

def _forwarder(tmp_path, faults: list[dict]):
    """The userspace engine between two fake wires (the link model's tests build it)."""
    from test_netlab_linkmodel import _forwarder as forwarder
    return forwarder(tmp_path, {"fault": faults})


def _segment(a_port, dport: int, seq: int, flags: int = 0x18, size: int = 100) -> bytes:
    """A TCP segment from 10.201.1.2:41000+ to 10.201.2.2:dport, addressed to the router."""
    tcp = struct.pack("!HHIIBBHHH", 41000 + dport % 100, dport, seq, 0, 5 << 4, flags,
                      65535, 0, 0) + b"x" * size
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0, 64, 6, 0,
                     bytes([10, 201, 1, 2]), bytes([10, 201, 2, 2]))
    s = sum(struct.unpack("!10H", ip))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
    return a_port.router_mac + b"\x02" * 6 + b"\x08\x00" + ip + tcp


def _run(fwd, a, frames_in, t0=1_000_000_000):
    for i, f in enumerate(frames_in):
        fwd.arrive(a, f, t0 + i * 1000)
    fwd.send_due(t0 + 10**10)
    fwd.expire_holds(t0 + 10**10)
    fwd.send_due(t0 + 2 * 10**10)


def _order(port) -> list[tuple[int, int]]:
    return [(p.dport, p.seq) for p in map(frames.identify, port.tx.sent)]


def test_hold_by_port_swaps_two_segments_of_its_flow_across_another_flows(tmp_path):
    """Flow 5306's 2nd data segment leaves right after its 3rd, not after the segment of
    flow 5303 that happened to come next."""
    fwd, a, b = _forwarder(tmp_path, [{"action": "hold", "proto": "tcp", "port": 5306,
                                       "payload": True, "nth": 2}])
    _run(fwd, a, [_segment(a, 5306, 100), _segment(a, 5306, 200), _segment(a, 5303, 900),
                  _segment(a, 5306, 300), _segment(a, 5306, 400)])
    assert _order(b) == [(5306, 100), (5303, 900), (5306, 300), (5306, 200), (5306, 400)]


def test_hold_without_a_port_still_waits_for_the_next_frame_of_the_direction(tmp_path):
    fwd, a, b = _forwarder(tmp_path, [{"action": "hold", "proto": "tcp", "payload": True,
                                       "nth": 2}])
    _run(fwd, a, [_segment(a, 5306, 100), _segment(a, 5306, 200), _segment(a, 5303, 900),
                  _segment(a, 5306, 300)])
    assert _order(b) == [(5306, 100), (5303, 900), (5306, 200), (5306, 300)]


def test_last_waits_for_its_own_flows_fin(tmp_path):
    """Another flow's data segment does not show that flow 5304's candidate was not the
    last, nor does another flow's FIN show that it was: only its own flow's next does."""
    fwd, a, b = _forwarder(tmp_path, [{"action": "drop", "proto": "tcp", "port": 5304,
                                       "last": True}])
    _run(fwd, a, [_segment(a, 5304, 100), _segment(a, 5304, 200),
                  _segment(a, 5303, 900), _segment(a, 5303, 1000, 0x11, size=0),
                  _segment(a, 5304, 300, 0x11, size=0)])
    assert _order(b) == [(5304, 100), (5303, 900), (5303, 1000), (5304, 300)]
    fwd.finish()
    dropped = ledger.read(tmp_path / "l.jsonl").dropped()
    assert [(r["pkt"]["dport"], r["pkt"]["seq"]) for r in dropped] == [(5304, 200)]
    assert "port 5304" in dropped[0]["why"]


def test_a_misspelled_link_key_is_a_lab_error_not_a_link_without_faults(tmp_path):
    from toolkit.labs import spec
    text = """
[lab]
title = "t"
engine = "userspace"
[link]
faults = [{action = "drop", proto = "tcp", port = 5301}]
[[flow]]
port = 5301
"""
    with pytest.raises(spec.LabError, match=r"link\.faults: unknown key; known: both, a_to_b, "
                                            r"b_to_a, fault"):
        spec.loads(text, tmp_path / "lab.toml")
    lab = spec.loads(text.replace("faults =", "fault ="), tmp_path / "lab.toml")
    assert [f.port for f in lab.impairment.faults] == [5301]
