"""Ethernet frames as the userspace link sees them: who a frame is, and what a router does
to it on the way through.

Pure functions over bytes, no I/O, stdlib only. `identify` reads just enough of a frame to
route it, match scripted faults against it and name it in the ledger: addresses, protocol,
TCP flags, sequence and acknowledgment numbers, payload length, the lab header's flow and
sequence number of a UDP datagram, an ICMP echo's id and sequence. `route` is what a router
does to a frame it forwards (RFC 1812 5.3.1; RFC 8200 3): new link-layer addresses, the
TTL or hop limit one less, the IPv4 header checksum patched incrementally (RFC 1624 eqn. 3)
instead of recomputed.
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

ETH_LEN = 14
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmp"}
# IPv6 extension headers that may sit between the fixed header and TCP/UDP (RFC 8200 4):
# hop-by-hop, routing, destination options; fragment (44) is handled on its own
_IPV6_EXT = {0, 43, 60}
_FLAG_LETTERS = "FSRPAUEC"            # bit 0 (FIN) upwards, as tcpdump prints them
LAB_MAGIC = b"LBK1"                   # toolkit/wire.py; repeated so this stays stdlib-only


@dataclass(frozen=True, slots=True)
class Packet:
    """What the link knows of one frame. `l4` is the offset of the transport header in the
    frame (or -1 when there is none to read: a later fragment, a truncated header)."""
    family: int                    # 4 or 6; 0 for a frame that is not IP
    src: bytes
    dst: bytes
    proto: str                     # "tcp", "udp", "icmp", or the IP protocol number
    l4: int = -1
    payload_len: int = 0           # transport payload bytes (from the IP length)
    sport: int = 0
    dport: int = 0
    flags: str = ""                # TCP flag letters, e.g. "SA"
    seq: int | None = None         # TCP sequence number; the lab header's seq for UDP
    ack: int | None = None
    flow: int | None = None        # the lab header's flow id (UDP)
    icmp: tuple[int, int] | None = None     # (type, code)
    payload_at: int = -1           # offset of the transport payload (-1: none to read)

    def describe(self) -> dict:
        """The ledger's short identity of a packet."""
        out: dict = {"proto": self.proto}
        if self.proto in ("tcp", "udp"):
            out.update(sport=self.sport, dport=self.dport)
        if self.proto == "tcp":
            out.update(flags=self.flags, seq=self.seq, ack=self.ack, len=self.payload_len)
        elif self.proto == "udp":
            out["len"] = self.payload_len
            if self.flow is not None:
                out.update(flow=self.flow, seq=self.seq)
        elif self.icmp is not None:
            out.update(type=self.icmp[0], code=self.icmp[1])
            if self.seq is not None:
                out.update(id=self.ack, seq=self.seq)
        return out

    def flow_key(self) -> str:
        """The flow, as stable text: "udp 10.201.1.2:41001>10.201.2.2:5202" for TCP and UDP
        (IPv6 "[fd00:201:1::2]:41001", RFC 5952), the protocol alone for the rest ("icmp",
        "icmp6", "47"; and "tcp"/"udp" for a later fragment, which has no ports). The link
        seeds a random stream with it, so it must not change from run to run."""
        if self.l4 >= 0 and self.proto in ("tcp", "udp"):
            return _five_tuple(self.proto, self.family, self.src, self.sport, self.dst,
                               self.dport)
        if self.proto == "icmp" and self.family == 6:
            return "icmp6"
        return self.proto


# Formatting addresses costs about 1.5 us a packet, a tenth of the engine's budget per
# frame; a lab has few flows, so a small cache answers nearly every packet.
@functools.lru_cache(maxsize=1024)
def _five_tuple(proto: str, family: int, src: bytes, sport: int, dst: bytes,
                dport: int) -> str:
    if family == 6:
        a, b = socket.inet_ntop(socket.AF_INET6, src), socket.inet_ntop(socket.AF_INET6, dst)
        return f"{proto} [{a}]:{sport}>[{b}]:{dport}"
    a, b = socket.inet_ntop(socket.AF_INET, src), socket.inet_ntop(socket.AF_INET, dst)
    return f"{proto} {a}:{sport}>{b}:{dport}"


NOT_IP = Packet(0, b"", b"", "other")


def flag_letters(bits: int) -> str:
    return "".join(c for i, c in enumerate(_FLAG_LETTERS) if bits >> i & 1)


def identify(frame: bytes) -> Packet:
    if len(frame) < ETH_LEN + 20:
        return NOT_IP
    ethertype = frame[12] << 8 | frame[13]
    if ethertype == ETH_IPV4:
        ihl = (frame[14] & 0x0F) * 4
        total = frame[16] << 8 | frame[17]
        proto = frame[23]
        src, dst = frame[26:30], frame[30:34]
        frag = (frame[20] << 8 | frame[21]) & 0x1FFF
        l4 = ETH_LEN + ihl if frag == 0 and ihl >= 20 else -1
        l4_len = total - ihl
        family = 4
    elif ethertype == ETH_IPV6:
        if len(frame) < ETH_LEN + 40:
            return NOT_IP
        src, dst = frame[22:38], frame[38:54]
        proto = frame[20]
        l4 = ETH_LEN + 40
        l4_len = frame[18] << 8 | frame[19]
        while proto in _IPV6_EXT or proto == 44:
            if l4 + 8 > len(frame):
                l4 = -1
                break
            size = 8 if proto == 44 else (frame[l4 + 1] + 1) * 8
            if proto == 44 and (frame[l4 + 2] << 8 | frame[l4 + 3]) & 0xFFF8:
                proto = frame[l4]
                l4 = -1                  # a later fragment: no transport header in it
                break
            proto = frame[l4]
            l4 += size
            l4_len -= size
        family = 6
    else:
        return NOT_IP
    name = PROTO_NAMES.get(proto, str(proto))
    if l4 < 0 or l4 >= len(frame):
        return Packet(family, src, dst, name)
    if proto == TCP and l4 + 20 <= len(frame):
        sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", frame, l4)
        hlen = (off_flags >> 12) * 4
        return Packet(family, src, dst, name, l4, max(0, l4_len - hlen), sport, dport,
                      flag_letters(off_flags & 0xFF), seq, ack, payload_at=l4 + hlen)
    if proto == UDP and l4 + 8 <= len(frame):
        sport, dport, length = struct.unpack_from("!HHH", frame, l4)
        flow = seq = None
        head = l4 + 8
        if frame[head:head + 4] == LAB_MAGIC and head + 20 <= len(frame):
            flow, seq = struct.unpack_from("!IQ", frame, head + 8)
        return Packet(family, src, dst, name, l4, max(0, length - 8), sport, dport,
                      seq=seq, flow=flow, payload_at=l4 + 8)
    if proto in (ICMP, ICMPV6) and l4 + 8 <= len(frame):
        kind, code = frame[l4], frame[l4 + 1]
        echo = kind in (0, 8) if proto == ICMP else kind in (128, 129)
        ident, seq = struct.unpack_from("!HH", frame, l4 + 4) if echo else (None, None)
        return Packet(family, src, dst, name, l4, max(0, l4_len - 8), seq=seq, ack=ident,
                      icmp=(kind, code), payload_at=l4 + 8)
    return Packet(family, src, dst, name)


def route(frame: bytes, src_mac: bytes, dst_mac: bytes) -> bytes | None:
    """The frame as a router sends it on: new MACs, TTL/hop limit one less (IPv4 header
    checksum patched, RFC 1624), or None when the TTL runs out (RFC 1812 5.3.1: a router
    discards it; sending ICMP Time Exceeded is left to a real router)."""
    out = bytearray(frame)
    out[0:6] = dst_mac
    out[6:12] = src_mac
    if out[12] == 0x08 and out[13] == 0x00:
        ttl = out[22]
        if ttl <= 1:
            return None
        out[22] = ttl - 1
        # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), m the 16-bit word holding TTL and protocol
        old_word = ttl << 8 | out[23]
        new_word = (ttl - 1) << 8 | out[23]
        hc = out[24] << 8 | out[25]
        s = (~hc & 0xFFFF) + (~old_word & 0xFFFF) + new_word
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        hc = ~s & 0xFFFF
        out[24], out[25] = hc >> 8, hc & 0xFF
    elif out[12] == 0x86 and out[13] == 0xDD:
        if out[21] <= 1:
            return None
        out[21] -= 1
    return bytes(out)


def corrupt(frame: bytes, pkt: Packet, draw: float) -> tuple[bytes, int]:
    """Flip one bit of the transport payload (or, with no payload, of the last byte of the
    frame), chosen by `draw` in [0, 1). Checksums are left as they were, so the receiver's
    stack finds the damage (TCP and UDP checksums, RFC 9293 3.1, RFC 768) and drops it.
    Returns the frame and the bit's offset in it."""
    start = pkt.payload_at
    end = min(len(frame), start + pkt.payload_len) if start >= 0 else -1
    if start < 0 or end <= start:
        start, end = len(frame) - 1, len(frame)
    bit = start * 8 + int(draw * (end - start) * 8)
    out = bytearray(frame)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out), bit
