"""`labkit demo`: a real TCP and UDP exchange on loopback, captured and analyzed.

Until the lab runner exists this is the main job: it shows the whole pipeline on one
machine without namespaces. A TCP client opens a connection (three-way handshake, RFC 9293
section 3.5), sends framed messages in several writes that the server echoes, and closes
first (FIN from the client, then the server's FIN). A UDP client sends datagrams carrying
the lab header (flow, sequence number, send time; toolkit.wire) and the server answers
every fifth. dumpcap (or tcpdump) records both on `lo`, filtered to the demo's two ports;
the analyzer then reads the capture.

The servers bind port 0 before the capture starts: the kernel picks a free port at random
from the ephemeral range and we hold it, so the filter names ports nothing else can take.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

from . import capture, wire

TCP_MESSAGES = 8
TCP_MESSAGE_BYTES = 1200
UDP_DATAGRAMS = 50
UDP_BODY = 100
UDP_REPLY_EVERY = 5
UDP_GAP_S = 0.002
IO_TIMEOUT_S = 10.0
TCP_FLOW, UDP_FLOW, UDP_REPLY_FLOW = 1, 1, 2


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")


class _Worker(threading.Thread):
    """A server thread whose exception is re-raised in the caller by join_or_raise."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self):
        try:
            self._target_fn()
        except BaseException as e:      # handed to the caller, not lost in the thread
            self.error = e

    def join_or_raise(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise self.error


def _tcp_exchange(listener: socket.socket) -> dict:
    """Echo TCP_MESSAGES framed messages; the client closes first."""
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT_S)
            while data := conn.recv(65536):   # b"" is the client's FIN: then close ours
                conn.sendall(data)

    server = _Worker(serve, "demo-tcp-server")
    server.start()
    echoed = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as c:
            deframer = wire.Deframer()
            for i in range(TCP_MESSAGES):
                body = bytes([65 + i % 26]) * TCP_MESSAGE_BYTES
                c.sendall(wire.frame(wire.Header(TCP_FLOW, i, time.time_ns()), body))
                got: list = []
                while not got:
                    data = c.recv(65536)
                    if not data:
                        raise ConnectionError("the demo TCP server closed early")
                    got = deframer.feed(data)
                echoed += sum(len(b) for _, b in got)
                time.sleep(0.005)             # separate writes, separate segments
            c.shutdown(socket.SHUT_WR)        # FIN from the client first
            while c.recv(65536):              # until the server's FIN
                pass
    finally:
        server.join_or_raise(IO_TIMEOUT_S)
    return {"port": port, "messages": TCP_MESSAGES, "bytes_sent": TCP_MESSAGES * (
        TCP_MESSAGE_BYTES + wire.HEADER_LEN), "bytes_echoed": echoed}


def _udp_exchange(server_sock: socket.socket) -> dict:
    """Send UDP_DATAGRAMS lab datagrams; the server answers every UDP_REPLY_EVERY-th."""
    port = server_sock.getsockname()[1]
    server_sock.settimeout(2.0)
    answered = 0

    def serve():
        nonlocal answered
        for _ in range(UDP_DATAGRAMS):
            try:
                data, peer = server_sock.recvfrom(65536)
            except TimeoutError:
                return                      # loss is possible in principle: stop waiting
            if wire.Header.unpack(data).seq % UDP_REPLY_EVERY == 0:
                reply = wire.Header(UDP_REPLY_FLOW, answered, time.time_ns(), 0,
                                    wire.KIND_RESPONSE)
                server_sock.sendto(reply.pack(), peer)
                answered += 1

    server = _Worker(serve, "demo-udp-server")
    server.start()
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        try:
            for i in range(UDP_DATAGRAMS):
                h = wire.Header(UDP_FLOW, i, time.time_ns(), UDP_BODY)
                c.sendto(h.pack() + bytes(UDP_BODY), ("127.0.0.1", port))
                time.sleep(UDP_GAP_S)
        finally:
            server.join_or_raise(IO_TIMEOUT_S)
        c.settimeout(0.2)
        while replies < answered:
            try:
                c.recv(65536)
            except TimeoutError:
                break
            replies += 1
    return {"port": port, "datagrams": UDP_DATAGRAMS, "replies_sent": answered,
            "replies_received": replies}


def _bound(kind: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
            s.settimeout(IO_TIMEOUT_S)
    except BaseException:
        s.close()
        raise
    return s


def _no_capture(reason: str, stream) -> int:
    # the reason says "cannot capture packets here" itself, or why not (no tool, a refusal)
    print(f"labkit demo: {reason}\n\n"
          "Without capture rights you can still analyze a saved capture:\n"
          "  labkit analyze captures/<file>.pcapng", file=stream)
    return 2


def run_demo(out_dir: Path | None = None, stream=sys.stdout) -> int:
    """Record and analyze the demo exchange into out_dir (default runs/demo-TIME).

    Returns the exit status: 0 done, 2 no capture rights (the message says what to do).
    """
    out_dir = Path(out_dir) if out_dir else default_out_dir()
    found = capture.probe("lo")
    if not found.ok:
        return _no_capture(found.explain(), stream)
    out_dir.mkdir(parents=True, exist_ok=True)
    # named for what the backend writes: pcapng from dumpcap, pcap from tcpdump
    pcap = out_dir / f"demo.{capture.BACKENDS[found.backend].file_format}"
    listener, udp_server = _bound(socket.SOCK_STREAM), None
    try:
        udp_server = _bound(socket.SOCK_DGRAM)
        tcp_port, udp_port = listener.getsockname()[1], udp_server.getsockname()[1]
        bpf = f"tcp port {tcp_port} or udp port {udp_port}"
        print(f"labkit demo: capturing on lo ({bpf}) with {found.backend}", file=stream)
        try:
            cap = capture.start("lo", pcap, bpf_filter=bpf, backend=found.backend)
        except capture.CaptureFailed as e:
            return _no_capture(str(e), stream)
        with cap:
            tcp = _tcp_exchange(listener)
            udp = _udp_exchange(udp_server)
    finally:
        listener.close()
        if udp_server is not None:
            udp_server.close()

    s = capture.summarize(pcap)
    counters = cap.counters.as_dict()
    (out_dir / "run.json").write_text(json.dumps({
        "format_version": 2, "kind": "demo", "capture": {
            "file": pcap.name, "backend": cap.backend, "interface": "lo", "filter": bpf,
            "argv": cap.argv, "started_unix_s": cap.started_at,
            "stopped_unix_s": cap.stopped_at,
            "counters": counters, "repaired": cap.repaired},
        "tcp": tcp, "udp": udp}, indent=2) + "\n")
    print(f"recorded {s.packets} packets ({s.wire_bytes:,} bytes on the wire) with "
          f"{cap.backend} into {pcap}\n"
          f"  TCP: {tcp['messages']} messages, {tcp['bytes_sent']:,} bytes sent, "
          f"{tcp['bytes_echoed']:,} message bytes echoed; client closed first\n"
          f"  UDP: {udp['datagrams']} datagrams sent, {udp['replies_received']} of "
          f"{udp['replies_sent']} replies received\n"
          f"  capture: {cap.counters.dropped if cap.counters.dropped is not None else '?'} "
          f"dropped by the capture" + (f"; {cap.repaired}" if cap.repaired else ""),
          file=stream)
    return _print_analysis(pcap, stream)


UDP_FLOW_COLUMNS = ("stream", "direction", "flow", "received", "lost", "duplicates",
                    "reordered", "owd_mean_s")


def _print_analysis(pcap: Path, stream) -> int:
    from . import analyze
    from .report import text_report

    result = analyze(pcap)
    print("\n" + text_report(result), file=stream)
    flows = result.udp_flows
    if len(flows):
        missing = [c for c in UDP_FLOW_COLUMNS if c not in flows.columns]
        if missing:       # the analyzer's table and this demo disagree: say so, loudly
            raise KeyError(f"udp_flows has no column {', '.join(missing)}")
        cols = list(UDP_FLOW_COLUMNS)
        print("\nUDP lab flows (from the lab header in each datagram)", file=stream)
        print(flows[cols].to_string(index=False), file=stream)
    states = result.tcp_states
    if len(states):
        print("\nTCP endpoint states (RFC 9293), as the segments show them", file=stream)
        print(states.to_string(index=False), file=stream)
    print(f"\ncapture: {pcap}  (open it in Wireshark, or: labkit analyze --packets {pcap})",
          file=stream)
    return 0
