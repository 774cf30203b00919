"""The scapy backend: a capture process in pure Python, for where dumpcap and tcpdump are not.

    ip netns exec NS python -m toolkit.capture.scapy_backend -i IFACE -w OUT.pcapng \
        [-s SNAPLEN] [-f FILTER] [-c COUNT] [-B MIB] [-F pcapng|pcap] [--comment TEXT] \
        [--ring-bytes N --ring-files K]

It behaves like the other backends toward live.py: it runs in the namespace it captures
in (a child process under any argv prefix), says on stderr when it is recording, stops
cleanly on SIGINT or SIGTERM, and prints its counters the way tcpdump does, so one parser
reads both.

Readiness: the AF_PACKET socket is created, the BPF filter attached and the socket bound
(in libpcap's order: see FrameSocket), the file header is written and flushed, and
AsyncSniffer's thread has started;
only then is the READY line printed. From then on every packet the filter accepts is
queued in the socket by the kernel, whether or not Python has read it yet.

Stop: AsyncSniffer stops, then whatever is still queued in the socket is read and written
(non-blocking), then the socket's PACKET_STATISTICS give the kernel's counts: packets that
passed the filter, and those dropped because the receive queue was full. Those drops are
how this backend's ceiling shows: Python handles each packet, and the queue absorbs only
a burst (2 MiB by default, as dumpcap's). scapy's usual sniffing dissects every frame
into layers and keeps up with only ~1,200 packets/s (21% lost at 1,500/s, measured for
issue 3); a capture only needs the bytes, so FrameSocket hands them over undissected,
which lifts the ceiling to ~9,000/s on one core here. BackendSpec.max_pps declares a
margin below that (backends.py), and a runner caps its traffic below it and says so.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import sys
import threading

from .writer import CaptureWriter, RingWriter

READY = "labkit-scapy: listening on"
SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_STATISTICS, PACKET_AUXDATA = 263, 1, 6, 8
PACKET_MR_PROMISC, PACKET_OUTGOING, ETH_P_ALL = 1, 4, 0x0003
SO_RCVBUFFORCE, SO_TIMESTAMPNS = 33, 35
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE
# what the socket's hardware type means as a capture file's link type
LINKTYPES = {ARPHRD_ETHER: 1, ARPHRD_LOOPBACK: 1, ARPHRD_NONE: 101}    # 101: raw IP


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m toolkit.capture.scapy_backend",
                                description="capture with scapy's AsyncSniffer")
    p.add_argument("-i", dest="interface", required=True)
    p.add_argument("-w", dest="out", required=True)
    p.add_argument("-s", dest="snaplen", type=int, default=262144)
    p.add_argument("-f", dest="filter", default="")
    p.add_argument("-c", dest="count", type=int, default=0)
    p.add_argument("-B", dest="buffer_mib", type=int, default=0)
    p.add_argument("-F", dest="file_format", choices=("pcapng", "pcap"), default="pcapng")
    p.add_argument("--comment", default="")
    p.add_argument("--ring-bytes", type=int, default=0)
    p.add_argument("--ring-files", type=int, default=0)
    return p.parse_args(argv)


class StopFlag:
    """Set from a signal handler or a thread, waited on by the main thread.

    Not a threading.Event: Event.set takes a lock that the main thread may be holding
    inside Event.wait when the signal handler runs on top of it, and then both wait
    forever (seen here: one stop in ~40 hung until SIGKILL). A flag and a self-pipe
    take no lock; os.write is safe in a handler.
    """

    def __init__(self):
        self.is_set = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def set(self) -> None:
        self.is_set = True
        try:
            os.write(self._w, b"x")
        except BlockingIOError:          # the pipe is full: a wake-up is pending anyway
            pass

    def wait(self, timeout: float) -> bool:
        if not self.is_set:
            select.select([self._r], [], [], timeout)
        return self.is_set


def _fail(message: str, status: int = 1) -> int:
    print(f"labkit-scapy: {message}", file=sys.stderr, flush=True)
    return status


def socket_statistics(sock: socket.socket) -> tuple[int, int]:
    """(passed the filter, dropped for a full queue) since the last call: the kernel resets
    them on every read. tp_packets already includes tp_drops (af_packet.c)."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return struct.unpack("II", raw)


def _frame_socket_class(SuperSocket, attach_filter, raw_layer, get_last_packet_timestamp):
    """A scapy socket that listens the way libpcap does, and hands frames over whole.

    Order matters for the counters: a packet socket opened for ETH_P_ALL receives every
    frame of every interface until it is bound, and the kernel counts those in its
    statistics even once they are flushed (scapy's L2ListenSocket works that way: seen
    here as 11 "drops" on a quiet lo). Opened with protocol 0 it receives nothing
    (packet(7)); the filter goes on, then the bind to the interface with ETH_P_ALL, and
    from that moment only filtered frames of that interface are queued and counted.

    Dissecting each frame into layers is most of scapy's cost per packet, and a capture
    only writes the bytes: Raw keeps them as they came. On a loopback interface every
    packet passes twice, outgoing and incoming; libpcap keeps only the incoming copy
    (pcap-linux.c), and so do we, so a capture of lo counts what tcpdump counts.
    """

    class FrameSocket(SuperSocket):
        desc = "labkit: frames of one interface, filtered in the kernel, undissected"

        def __init__(self, iface: str, bpf_filter: str, rcvbuf: int):
            ifindex = socket.if_nametoindex(iface)      # OSError: no such interface
            SuperSocket.__init__(self, socket.AF_PACKET, socket.SOCK_RAW, 0, iface=iface)
            self.outs = None                            # listen only
            if bpf_filter:
                attach_filter(self.ins, bpf_filter, iface)
            # promiscuous, as dumpcap and tcpdump are by default; the membership ends
            # with the socket (struct packet_mreq: ifindex, type, alen, address)
            self.ins.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
            try:        # past net.core.rmem_max needs CAP_NET_ADMIN
                self.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.ins.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)      # VLAN tags (scapy)
            self.ins.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.auxdata_available = True
            self.ins.bind((iface, ETH_P_ALL))
            self.hatype = self.ins.getsockname()[3]

        def recv_raw(self, x=65535):
            frame, sa_ll, ts = self._recv_raw(self.ins, x)
            if sa_ll[2] == PACKET_OUTGOING and sa_ll[3] == ARPHRD_LOOPBACK:
                return None, None, None
            if ts is None:      # no SCM_TIMESTAMPNS: the kernel's stamp by ioctl
                ts = get_last_packet_timestamp(self.ins)
            return raw_layer, frame, ts

    return FrameSocket


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        from scapy.arch.linux import attach_filter, get_last_packet_timestamp
        from scapy.config import conf
        from scapy.error import Scapy_Exception
        from scapy.sendrecv import AsyncSniffer
        from scapy.supersocket import SuperSocket
    except ImportError as e:
        return _fail(f"scapy is not installed ({e}): pip install scapy", 2)
    conf.verb = 0
    stop = StopFlag()

    def on_signal(signum, frame):
        stop.set()

    # before the socket exists: a stop that arrives during start-up still ends cleanly
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    FrameSocket = _frame_socket_class(SuperSocket, attach_filter, conf.raw_layer,
                                      get_last_packet_timestamp)
    try:
        sock = FrameSocket(args.interface, args.filter, (args.buffer_mib or 2) << 20)
    except (OSError, Scapy_Exception, ValueError, ImportError) as e:
        return _fail(f"cannot capture on {args.interface!r}"
                     f"{' with filter ' + repr(args.filter) if args.filter else ''}: {e}")
    try:
        linktype = LINKTYPES.get(sock.hatype)
        if linktype is None:
            return _fail(f"{args.interface!r} has ARP hardware type {sock.hatype}, "
                         "which this backend cannot frame")
        kw = dict(file_format=args.file_format, interface=args.interface,
                  snaplen=args.snaplen, bpf_filter=args.filter, comment=args.comment,
                  linktype=linktype)
        try:
            writer = (RingWriter(args.out, args.ring_bytes, args.ring_files, **kw)
                      if args.ring_bytes else CaptureWriter(args.out, **kw))
        except OSError as e:
            return _fail(f"cannot write {args.out}: {e}")
        return _capture(args, sock, writer, stop, AsyncSniffer)
    finally:
        sock.close()


def _capture(args, sock, writer, stop: StopFlag, AsyncSniffer) -> int:
    received = dropped = 0

    def write(pkt) -> None:
        # the sniffer may hand over more before the main thread stops it: -c is exact
        if args.count and writer.packets >= args.count:
            return
        # bytes(pkt) gives back the raw frame (scapy caches it), not a re-encoding
        writer.packet(int(pkt.time * 1_000_000_000), bytes(pkt))
        if args.count and writer.packets >= args.count:
            stop.set()

    started = threading.Event()
    sniffer = AsyncSniffer(opened_socket=sock, prn=write, store=False,
                           started_callback=started.set)
    sniffer.start()
    if not started.wait(30) or not sniffer.running:
        return _fail(f"the sniffer thread did not start: {sniffer.exception}")
    print(f"{READY} {args.interface} (filter: {args.filter or 'none'}), file {args.out}",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.2):
            if not sniffer.running:       # its socket failed: say so, keep the file
                break
            writer.flush()
    finally:
        if sniffer.running:
            sniffer.stop(join=True)
        # packets the kernel queued before the sniffer stopped belong to the capture
        while (not args.count or writer.packets < args.count) and \
                select.select([sock.ins], [], [], 0)[0]:
            try:
                pkt = sock.recv()
            except OSError:
                break
            if pkt is not None:
                write(pkt)
        try:
            received, dropped = socket_statistics(sock.ins)
        except OSError:
            received = dropped = None
        writer.close(received, dropped)
    if sniffer.exception is not None:
        print(f"labkit-scapy: the sniffer failed: {sniffer.exception}", file=sys.stderr)
    # tcpdump's wording, so backends.parse_counters reads both
    print(f"{writer.packets} packets captured", file=sys.stderr)
    if received is not None:
        print(f"{received} packets received by filter\n{dropped} packets dropped by kernel",
              file=sys.stderr)
    sys.stderr.flush()
    return 0 if sniffer.exception is None else 1


if __name__ == "__main__":
    sys.exit(main())
