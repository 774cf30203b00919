"""Writing capture files: pcapng blocks as tables of fields, and a writer that can rotate.

The scapy backend writes its own files (scapy's writer makes a Python object per packet
and has no section comments); `files.annotate` reuses the section header builder to add
a comment to a file another backend wrote.

pcapng (draft-ietf-opsawg-pcapng): every block is type, total length, body, total length
again; the body's options are (code, length, value padded to 4 bytes) ending with code 0.
A file here is one section: a section header block (SHB) carrying the comment, one
interface description block (IDB) with nanosecond timestamps (if_tsresol = 9), enhanced
packet blocks (EPB), and at the end an interface statistics block (ISB) with the
received and dropped counts, which Wireshark shows under Capture File Properties.

Ring buffer: `RingWriter` starts a new file once the current one reaches its size, named
as dumpcap names its ring files (stem_00001_YYYYmmddHHMMSS.ext), and deletes the oldest
when more than `files` exist. Each file is a whole section, readable on its own.
"""

from __future__ import annotations

import os
import platform
import struct
import threading
import time
from pathlib import Path

SHB, IDB, EPB, ISB = 0x0A0D0D0A, 1, 6, 5
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1

OPT_END, OPT_COMMENT = 0, 1
SHB_HARDWARE, SHB_OS, SHB_USERAPPL = 2, 3, 4
IF_NAME, IF_TSRESOL, IF_FILTER, IF_OS = 2, 9, 11, 12
ISB_STARTTIME, ISB_ENDTIME, ISB_IFRECV, ISB_IFDROP, ISB_OSDROP = 2, 3, 4, 5, 7


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def options(items: list[tuple[int, bytes]]) -> bytes:
    if not items:
        return b""
    out = b"".join(struct.pack("<HH", code, len(v)) + _pad(v) for code, v in items)
    return out + struct.pack("<HH", OPT_END, 0)


def block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def section_header(comments: list[str] = (), extra: list[tuple[int, bytes]] = ()) -> bytes:
    """An SHB (little-endian, version 1.0, section length unknown)."""
    opts = [(OPT_COMMENT, c.encode()) for c in comments] + list(extra)
    return block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options(opts))


def interface_description(name: str, snaplen: int, bpf_filter: str = "",
                          linktype: int = LINKTYPE_ETHERNET) -> bytes:
    opts = [(IF_NAME, name.encode()), (IF_TSRESOL, bytes([9]))]
    if bpf_filter:
        opts.append((IF_FILTER, b"\0" + bpf_filter.encode()))   # 0: libpcap filter string
    opts.append((IF_OS, platform.platform().encode()))
    return block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + options(opts))


def _ts(ts_ns: int) -> bytes:
    return struct.pack("<II", ts_ns >> 32 & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF)


def enhanced_packet(ts_ns: int, data: bytes, orig_len: int) -> bytes:
    head = struct.pack("<I", 0) + _ts(ts_ns) + struct.pack("<II", len(data), orig_len)
    return block(EPB, head + _pad(data))


def interface_statistics(ts_ns: int, start_ns: int, received: int | None,
                         dropped: int | None) -> bytes:
    opts = [(ISB_STARTTIME, _ts(start_ns)), (ISB_ENDTIME, _ts(ts_ns))]
    if received is not None:
        opts.append((ISB_IFRECV, struct.pack("<Q", received)))
    if dropped is not None:
        # the socket's receive queue overflowed: dropped by the OS (isb_osdrop); Wireshark
        # shows isb_ifdrop as "Dropped packets", so both carry it, as dumpcap does
        opts += [(ISB_IFDROP, struct.pack("<Q", dropped)), (ISB_OSDROP, struct.pack("<Q", dropped))]
    return block(ISB, struct.pack("<I", 0) + _ts(ts_ns) + options(opts))


def pcap_header(snaplen: int, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype)   # ns stamps


def pcap_record(ts_ns: int, data: bytes, orig_len: int) -> bytes:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return struct.pack("<IIII", sec, ns, len(data), orig_len) + data


class CaptureWriter:
    """One capture file, pcapng (with comment and statistics) or pcap."""

    def __init__(self, path: str | os.PathLike, file_format: str, interface: str,
                 snaplen: int, bpf_filter: str = "", comment: str = "",
                 linktype: int = LINKTYPE_ETHERNET):
        if file_format not in ("pcapng", "pcap"):
            raise ValueError(f"unknown capture file format {file_format!r}: pcapng or pcap")
        self.path, self.file_format, self.snaplen = Path(path), file_format, snaplen
        self.f = open(self.path, "wb")
        self.bytes = 0
        self.packets = 0
        self.started_ns = time.time_ns()
        if file_format == "pcapng":
            comments = [comment] if comment else []
            shb = section_header(comments, [(SHB_OS, platform.platform().encode()),
                                            (SHB_USERAPPL, b"labkit capture (scapy)")])
            self._put(shb + interface_description(interface, snaplen, bpf_filter, linktype))
        else:
            self._put(pcap_header(snaplen, linktype))
        self.f.flush()           # the header is on disk before anyone is told we are ready

    def _put(self, data: bytes) -> None:
        self.f.write(data)
        self.bytes += len(data)

    def packet(self, ts_ns: int, data: bytes) -> None:
        cut = data[: self.snaplen]
        if self.file_format == "pcapng":
            self._put(enhanced_packet(ts_ns, cut, len(data)))
        else:
            self._put(pcap_record(ts_ns, cut, len(data)))
        self.packets += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self, received: int | None = None, dropped: int | None = None) -> None:
        if self.f.closed:
            return
        if self.file_format == "pcapng":
            self._put(interface_statistics(time.time_ns(), self.started_ns, received, dropped))
        self.f.close()


def ring_name(base: Path, index: int, when: float) -> Path:
    """dumpcap's ring file name: a.pcapng -> a_00001_20261122234451.pcapng."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(when))
    return base.with_name(f"{base.stem}_{index:05d}_{stamp}{base.suffix}")


class RingWriter:
    """A CaptureWriter that moves on to a new file at `file_bytes`, keeping `files` files.

    `packet` and `flush` may come from two threads (the scapy backend's sniffer thread
    writes while its main thread flushes), so a lock keeps a flush off a file a rotation
    is closing: without it, one CI run's capture ended in "flush of closed file".
    """

    def __init__(self, base: str | os.PathLike, file_bytes: int, files: int, **writer_kw):
        if file_bytes <= 0 or files <= 0:
            raise ValueError(f"ring buffer needs a positive file size and count, "
                             f"got {file_bytes} bytes x {files} files")
        self.base, self.file_bytes, self.files = Path(base), file_bytes, files
        self.kw = writer_kw
        self.index = 0
        self.kept: list[Path] = []
        self.packets = 0
        self._lock = threading.Lock()
        self.current = self._next()

    def _next(self) -> CaptureWriter:
        self.index += 1
        path = ring_name(self.base, self.index, time.time())
        self.kept.append(path)
        while len(self.kept) > self.files:
            self.kept.pop(0).unlink(missing_ok=True)
        return CaptureWriter(path, **self.kw)

    def packet(self, ts_ns: int, data: bytes) -> None:
        with self._lock:
            if self.current.bytes >= self.file_bytes and self.current.packets:
                self.current.close()
                self.current = self._next()
            self.current.packet(ts_ns, data)
            self.packets += 1

    def flush(self) -> None:
        with self._lock:
            self.current.flush()

    def close(self, received: int | None = None, dropped: int | None = None) -> None:
        # the statistics cover the whole capture, so they go into the last file
        with self._lock:
            self.current.close(received, dropped)
