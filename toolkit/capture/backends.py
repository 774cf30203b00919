"""What each capture tool is told, and what it says back: pure functions, no processes.

A backend is described by data: how to build its command line, which line on stderr
proves the capture is running, how long its kernel ring may hold a packet back, how many
packets per second it can keep up with, and how to read the counters it prints when it
exits. Tests check all of it without root, on saved stderr text.

Readiness, per backend, and why the marker is proof rather than a hint:
- dumpcap prints "Capturing on 'lo'" *before* it opens the interface, so that line
  proves nothing. It prints "File: <path>" only after it has opened the interface,
  installed the BPF filter, written the pcapng header and flushed it (capture_loop_start
  in dumpcap.c). From then on every packet the filter accepts lands in its ring.
- tcpdump prints "listening on <if>" after pcap_activate, pcap_setfilter and opening the
  output file, right before its capture loop.
- scapy (our scapy_backend.py) prints its line after the socket is bound with its filter,
  the file header is flushed and the sniffer thread runs.

Draining, per backend: dumpcap 4.0 has no immediate mode; libpcap's TPACKET_V3 ring hands
a block to user space only when the block fills or its 250 ms timeout expires, and on
SIGINT dumpcap stops without draining a half-filled block. So a stop waits for longer than
that timeout first (measured here: packets sent 0 ms before SIGINT were lost every time,
300 ms before, never). tcpdump runs with --immediate-mode and has no such delay; the scapy
backend reads its socket dry after SIGINT.

Ring buffer, ring=(file_mib, files): dumpcap counts file sizes in kB of 1,000 bytes
(measured: filesize:20 switches at 20,420 bytes) and names files a_00001_<time>.pcapng;
tcpdump counts whole millions of bytes (so the size rounds up to at least 1 MB) and reuses
the names a.pcap0 .. a.pcap<N-1>; the scapy backend rotates as dumpcap does.

Comments: dumpcap writes a section comment with --capture-comment, but refuses it for a
ring buffer ("only if we capture into a single pcapng file"); live.py then adds it to each
file after the stop (files.annotate). The scapy backend writes it itself. tcpdump writes
pcap, which has no comments: the comment stays in the capture's metadata (run.json).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Callable

PREFERENCE = ("dumpcap", "tcpdump", "scapy")


@dataclass(frozen=True)
class BackendSpec:
    name: str
    ready: re.Pattern          # the stderr line that proves the capture is running
    settle_s: float            # how long a packet may sit in the kernel ring before delivery
    file_format: str           # "pcapng" or "pcap"
    argv: Callable[..., list[str]]
    max_pps: int | None = None  # packets/s it keeps up with; None: more than a lab sends
    writes_comment: str = "no"  # "always", "single" (not with a ring buffer), "no"


def ring_sizes(ring) -> tuple[float, int]:
    """Check ring=(file_mib, files); the error names what is wrong."""
    try:
        file_mib, files = ring
    except (TypeError, ValueError):
        raise ValueError(f"ring must be (file_mib, files), got {ring!r}") from None
    if isinstance(file_mib, bool) or not isinstance(file_mib, (int, float)) or \
            not file_mib > 0 or not math.isfinite(file_mib):
        raise ValueError(f"ring file size must be a positive number of MiB, got {file_mib!r}")
    if isinstance(files, bool) or not isinstance(files, int) or files < 1:
        raise ValueError(f"ring file count must be a whole number >= 1, got {files!r}")
    return float(file_mib), files


def _dumpcap_argv(exe: str, interface: str, out: str, snaplen: int, bpf_filter: str,
                  buffer_mib: int | None, packet_limit: int | None, *, ring=None,
                  comment: str = "") -> list[str]:
    argv = [exe, "-i", interface, "-w", out, "-n", "-s", str(snaplen)]
    if buffer_mib:
        argv += ["-B", str(buffer_mib)]
    if packet_limit:
        argv += ["-c", str(packet_limit)]
    if ring:
        file_mib, files = ring_sizes(ring)
        kb = max(1, round(file_mib * (1 << 20) / 1000))
        argv += ["-b", f"filesize:{kb}", "-b", f"files:{files}"]
    elif comment:
        argv += ["--capture-comment", comment]
    if bpf_filter:
        argv += ["-f", bpf_filter]
    return argv


# libpcap in immediate mode (tcpdump --immediate-mode) captures through TPACKET_V2, whose
# kernel ring has slots of one size: the snapshot length, capped (libpcap 1.10, Ethernet
# and lo) at the MTU when the interface's offloads are off, else at 64 KiB, since GRO
# hands it whole 64 KiB packets. tcpdump's default 2 MiB is then some 1,300 slots on the
# kit's own lab links (offloads off, MTU 1500) but 31 on lo or a NIC with offloads on, and
# on lo a packet takes two (the kernel hands the packet socket the sent and the received
# copy; libpcap keeps one): with tcpdump stopped, 16 of 200 datagrams were kept, and a
# test's 5,000 lost 78 in CI. A 64 KiB slot takes a 128 KiB block, so the kernel holds
# twice the buffer there: IMMEDIATE_MAX_MIB 32 is about 510 slots in 64 MiB.
IMMEDIATE_SLOTS = 1024
IMMEDIATE_MAX_MIB = 32
_LARGEST_SLOT = 65535 + 18      # libpcap's cap with offloads on: 64 KiB and a link header
_SLOT_OVERHEAD = 128            # struct tpacket2_hdr, sockaddr_ll, alignment


def immediate_buffer_mib(snaplen: int) -> int | None:
    """tcpdump's -B for IMMEDIATE_SLOTS frames where the offloads may be on (at most
    IMMEDIATE_MAX_MIB), or None where its own 2 MiB holds them (a short snapshot)."""
    slot = min(snaplen, _LARGEST_SLOT) + _SLOT_OVERHEAD
    mib = min(IMMEDIATE_MAX_MIB, math.ceil(IMMEDIATE_SLOTS * slot / (1 << 20)))
    return mib if mib > 2 else None


def _tcpdump_argv(exe: str, interface: str, out: str, snaplen: int, bpf_filter: str,
                  buffer_mib: int | None, packet_limit: int | None, *, ring=None,
                  comment: str = "") -> list[str]:
    # -U: write each packet as it arrives, so a killed tcpdump still leaves them on disk;
    # --immediate-mode: no ring block timeout, so SIGINT loses nothing already received;
    # -Z root (as root only): Debian's tcpdump otherwise drops to user "tcpdump" before
    # creating the file, and cannot write into a root-only run directory.
    argv = [exe, "-i", interface, "-w", out, "-s", str(snaplen), "-n", "-U", "--immediate-mode"]
    if os.geteuid() == 0:
        argv += ["-Z", "root"]
    if buffer_mib:
        argv += ["-B", str(buffer_mib * 1024)]      # tcpdump counts KiB
    if packet_limit:
        argv += ["-c", str(packet_limit)]
    if ring:
        file_mib, files = ring_sizes(ring)
        megabytes = max(1, math.ceil(file_mib * (1 << 20) / 1_000_000))
        argv += ["-C", str(megabytes), "-W", str(files)]
    if bpf_filter:
        argv.append(bpf_filter)
    return argv


def _scapy_argv(exe: str, interface: str, out: str, snaplen: int, bpf_filter: str,
                buffer_mib: int | None, packet_limit: int | None, *, ring=None,
                comment: str = "") -> list[str]:
    argv = [exe, "-m", "toolkit.capture.scapy_backend", "-i", interface, "-w", out,
            "-s", str(snaplen)]
    if buffer_mib:
        argv += ["-B", str(buffer_mib)]
    if packet_limit:
        argv += ["-c", str(packet_limit)]
    if ring:
        file_mib, files = ring_sizes(ring)
        argv += ["--ring-bytes", str(max(1, round(file_mib * (1 << 20)))),
                 "--ring-files", str(files)]
    if comment:
        argv += ["--comment", comment]
    if bpf_filter:
        argv += ["-f", bpf_filter]
    return argv


BACKENDS: dict[str, BackendSpec] = {
    "dumpcap": BackendSpec("dumpcap", re.compile(r"^File: ", re.M), 0.5, "pcapng",
                           _dumpcap_argv, writes_comment="single"),
    "tcpdump": BackendSpec("tcpdump", re.compile(r"listening on "), 0.05, "pcap",
                           _tcpdump_argv),
    # the scapy backend reads its socket dry on SIGINT: nothing to wait for. Its ceiling
    # (scapy_backend.py; test_capture_scapy.py holds it to it), measured in the lab for
    # 10 s on 2 cores shared with the sender and other work: one capture lost 0.7% at
    # 8,000/s and 25% at 12,000/s; four at once (a, r-a, r-b, b) nothing at 3,500/s each.
    # Declared with room for a busier machine; CaptureSet.max_pps divides it among cores.
    "scapy": BackendSpec("scapy", re.compile(r"^labkit-scapy: listening on ", re.M), 0.0,
                         "pcapng", _scapy_argv, max_pps=2500, writes_comment="always"),
}


# dumpcap's running count, rewritten in place with "\r" (absent with -q)
RUNNING_COUNT = re.compile(r"Packets: (\d+)")


@dataclass(frozen=True)
class CaptureCounters:
    """What the backend itself counted; None where it did not say.

    dropped is the total the backend reports as lost before reaching the file:
    dumpcap's "received/dropped" figure (pcap + dumpcap), tcpdump's kernel + interface drops.
    """

    backend: str
    captured: int | None = None          # written to the file
    received: int | None = None          # seen by the filter (kernel count)
    dropped: int | None = None
    dropped_kernel: int | None = None    # ring full (pcap_stats ps_drop)
    dropped_backend: int | None = None   # dumpcap's own buffer full
    dropped_interface: int | None = None  # NIC/driver (ps_ifdrop)
    flushed: int | None = None           # dumpcap: discarded when the filter was installed

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def known(self) -> bool:
        return self.captured is not None or self.received is not None


_DUMPCAP_CAPTURED = re.compile(r"^Packets captured: (\d+)", re.M)
# "Packets received/dropped on interface 'Loopback: lo': 12/0 (pcap:0/dumpcap:0/flushed:0/
#  ps_ifdrop:0) (0.0%)"; the parenthesis lists name:value pairs, fewer in old versions
_DUMPCAP_IFACE = re.compile(
    r"^Packets received/dropped on interface '.*': (\d+)/(\d+)(?: \(([^)]*)\))?", re.M)
_TCPDUMP = re.compile(
    r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)",
    re.M)


def _add(a: int | None, b: int) -> int:
    return b if a is None else a + b


def parse_counters(backend: str, stderr: str) -> CaptureCounters:
    """The counters a backend printed at exit (summed over interfaces)."""
    f: dict[str, int | None] = {}
    stderr = stderr.replace("\r", "\n")    # dumpcap's last running count ends without "\n"
    if backend == "dumpcap":
        m = _DUMPCAP_CAPTURED.findall(stderr)
        if m:
            f["captured"] = int(m[-1])
        for rx, dr, detail in _DUMPCAP_IFACE.findall(stderr):
            f["received"] = _add(f.get("received"), int(rx))
            f["dropped"] = _add(f.get("dropped"), int(dr))
            pairs = dict(p.split(":", 1) for p in detail.split("/") if ":" in p)
            for key, field in (("pcap", "dropped_kernel"), ("dumpcap", "dropped_backend"),
                               ("flushed", "flushed"), ("ps_ifdrop", "dropped_interface")):
                if pairs.get(key, "").isdigit():
                    f[field] = _add(f.get(field), int(pairs[key]))
    elif backend in ("tcpdump", "scapy"):       # the scapy backend prints tcpdump's lines
        names = {"captured": "captured", "received by filter": "received",
                 "dropped by kernel": "dropped_kernel",
                 "dropped by interface": "dropped_interface"}
        for n, what in _TCPDUMP.findall(stderr):
            f[names[what]] = int(n)
        if "dropped_kernel" in f or "dropped_interface" in f:
            f["dropped"] = (f.get("dropped_kernel") or 0) + (f.get("dropped_interface") or 0)
    else:
        raise ValueError(f"unknown capture backend {backend!r}")
    return CaptureCounters(backend, **f)


def permission_hint(text: str) -> str:
    """What to do, when a backend's error text says it lacked privileges."""
    low = text.lower()
    denied = "not permitted" in low or "permission denied" in low or "permission to" in low
    # tcpdump running as uid 0 gives its savefile to its own user (chown), then switches to
    # that user (initgroups, setuid). In a user namespace that user is not mapped and
    # setgroups is forbidden, so one of the two fails: the chown when the namespace's root
    # owns the output directory (a rootless lab started by an ordinary user), else the switch
    if "couldn't change ownership of savefile" in low or (denied and "couldn't change to" in low):
        return ("tcpdump cannot give up root inside a user namespace (a rootless lab): "
                "capture with dumpcap or scapy there (backend='dumpcap')")
    if not denied:
        return ""
    if "network namespace" in low:
        return ("entering a network namespace needs root (CAP_SYS_ADMIN): run as root, "
                "e.g. sudo make demo")
    return ("capturing needs the CAP_NET_RAW and CAP_NET_ADMIN capabilities: run as root "
            "(sudo make demo), or let dumpcap capture for you: "
            "sudo dpkg-reconfigure wireshark-common (answer Yes), "
            "sudo usermod -aG wireshark $USER, then log in again")
