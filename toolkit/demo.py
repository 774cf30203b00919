"""`labkit demo`: a real TCP and UDP exchange on loopback, captured and analyzed.

Until the lab runner exists this is the main job: it shows the whole pipeline on one
machine without namespaces. A TCP client opens a connection (three-way handshake, RFC 9293
section 3.5), sends framed messages that the server echoes, and closes first (FIN from the
client, then the server). A UDP client sends datagrams carrying the lab header (flow,
sequence number, send time) and the server answers every fifth. dumpcap (or tcpdump)
records both on `lo`; the analyzer then reads the capture.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

from . import wire
from .capture import CaptureFailed, start_capture

TCP_MESSAGES = 8
TCP_MESSAGE_BYTES = 1200
UDP_DATAGRAMS = 50
UDP_BODY = 100
UDP_GAP_S = 0.002


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_exchange(port: int) -> int:
    """Echo TCP_MESSAGES framed messages; the client closes first. Returns bytes echoed."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    srv.settimeout(10)

    def serve():
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            while True:
                data = conn.recv(65536)
                if not data:          # the client's FIN: close our side too
                    break
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    echoed = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            deframer = wire.Deframer()
            for i in range(TCP_MESSAGES):
                body = bytes([65 + i % 26]) * TCP_MESSAGE_BYTES
                c.sendall(wire.frame(wire.Header(1, i, time.time_ns()), body))
                got = []
                while not got:
                    data = c.recv(65536)
                    if not data:
                        raise ConnectionError("server closed early")
                    got = deframer.feed(data)
                echoed += sum(len(b) for _, b in got)
                time.sleep(0.005)
            c.shutdown(socket.SHUT_WR)        # FIN from the client first
            while c.recv(65536):
                pass
    finally:
        t.join(10)
        srv.close()
    return echoed


def _udp_exchange(port: int) -> int:
    """Send UDP_DATAGRAMS lab datagrams; the server answers every fifth. Returns replies."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", port))
    srv.settimeout(2)
    replies = 0

    def serve():
        answered = 0
        for _ in range(UDP_DATAGRAMS):
            try:
                data, peer = srv.recvfrom(65536)
            except TimeoutError:
                return
            h = wire.Header.unpack(data)
            if h.seq % 5 == 0:
                reply = wire.Header(2, answered, time.time_ns(), 0, wire.KIND_RESPONSE)
                srv.sendto(reply.pack(), peer)
                answered += 1

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        for i in range(UDP_DATAGRAMS):
            h = wire.Header(1, i, time.time_ns(), UDP_BODY)
            c.sendto(h.pack() + bytes(UDP_BODY), ("127.0.0.1", port))
            time.sleep(UDP_GAP_S)
        t.join(5)
        c.setblocking(False)
        while True:
            try:
                c.recv(65536)
                replies += 1
            except (BlockingIOError, OSError):
                break
    srv.close()
    return replies


def run_demo(out_dir: Path, stream=sys.stdout) -> int:
    """Record and analyze the demo exchange into out_dir. Returns the exit status."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap = out_dir / "demo.pcapng"
    tcp_port, udp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    probe_port = _free_port(socket.SOCK_DGRAM)
    bpf = f"(tcp port {tcp_port}) or (udp port {udp_port}) or (udp dst port {probe_port})"
    print(f"labkit demo: capturing on lo ({bpf}) into {pcap}", file=stream)
    prober = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def probe():
        # a datagram to a closed port, so the capture proves it is recording
        prober.sendto(b"labkit capture readiness probe", ("127.0.0.1", probe_port))
    try:
        cap = start_capture("lo", pcap, bpf=bpf, probe=probe)
    except CaptureFailed as e:
        prober.close()
        print(f"labkit demo: cannot capture: {e}\n"
              "Without capture rights you can still analyze any saved capture, e.g.\n"
              "  labkit analyze ../shared/corpus/files/cs_http_ip4and6.pcapng", file=sys.stderr)
        return 2
    try:
        echoed = _tcp_exchange(tcp_port)
        replies = _udp_exchange(udp_port)
        time.sleep(0.2)               # let the last segments reach the capture
    finally:
        counters = cap.stop()
        prober.close()
    print(f"recorded with {cap.backend}: TCP echoed {echoed} bytes in {TCP_MESSAGES} messages, "
          f"UDP sent {UDP_DATAGRAMS} datagrams and got {replies} replies; "
          f"capture counters {counters or 'n/a'}", file=stream)

    from . import api, report
    a = api.analyze(pcap)
    print(f"(UDP to port {probe_port} is the capture's readiness probe)\n", file=stream)
    print(report.text_report(a), file=stream)
    if a.udp_flows is not None and len(a.udp_flows):
        cols = ["stream", "direction", "flow", "received", "lost", "duplicates", "reordered",
                "owd_ms_mean"]
        print("\nUDP lab flows (from the lab header in each datagram)", file=stream)
        print(a.udp_flows[cols].to_string(index=False), file=stream)
    states = a.tcp_states
    if len(states):
        print("\nTCP endpoint states (RFC 9293), as the segments show them", file=stream)
        print(states.to_string(index=False), file=stream)
    print(f"\ncapture: {pcap}  (open it in Wireshark, or: labkit analyze --packets {pcap})",
          file=stream)
    return 0
