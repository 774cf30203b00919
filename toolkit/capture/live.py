"""A running capture: start it, know it is recording, stop it, always leave a file.

    with capture.start("lo", run_dir / "a.pcapng", bpf_filter="udp port 5001") as cap:
        ...traffic...                 # every packet sent from here on is in the file
    cap.result.counters.dropped       # the backend's own drop count; cap.result.files

    capture.start(lab.iface("b", "r"), path, prefix=lab.prefix("b"),   # any namespace,
                  ring=(64, 10), comment="run 3f9c1a, vantage point b")  # also rootless

`start` returns only once the backend has said, on stderr, the line it prints after the
interface is open and the filter installed (see backends.py for why that line is proof).
`stop` waits out the kernel ring's delivery delay, then SIGINT (the backend flushes, closes
its file and prints its counters), then SIGTERM, then SIGKILL, each with a timeout; then
it repairs each file a kill tore, adds the comment to pcapng files the backend could not
comment itself (dumpcap's ring files), and returns a CaptureResult naming the files. It
runs from `__exit__` and from `start`'s own failure paths, so no exit path leaves a
capture process behind.

Under a prefix (`ip netns exec NS`, or the lab's rootless `nsenter ... ip netns exec NS`)
every command in it execs the next, so the pid we hold and signal is the backend's own.

The backend runs in our process group on purpose: a Ctrl-C or a CI timeout that kills the
group stops it too, instead of leaving an orphan filling the disk.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .backends import (BACKENDS, PREFERENCE, RUNNING_COUNT, CaptureCounters, parse_counters,
                       immediate_buffer_mib, permission_hint, ring_sizes)
from ..runtime import child_env
from .files import annotate, repair


_KEEP = 16 * 1024     # stderr kept from the start and from the end (counters come last)


class CaptureFailed(RuntimeError):
    """The capture could not start; the message says why and what to do."""


def which(name: str) -> str | None:
    # sbin is often missing from a non-root PATH, and sudo's secure_path varies
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}")
         if os.access(p, os.X_OK)), None)


def executable(backend: str) -> str | None:
    """What runs a backend; the scapy backend is this interpreter running our module."""
    if backend == "scapy":
        return sys.executable if importlib.util.find_spec("scapy") else None
    return which(backend)


def installed_backends() -> list[str]:
    return [b for b in PREFERENCE if executable(b)]


@dataclass(frozen=True)
class CaptureResult:
    """What a stopped capture left: its files (in capture order) and what it counted.

    comment_in_file: whether the files carry `comment` as their pcapng section comment
    (False for tcpdump's pcap: then run.json is where the comment lives).
    """

    backend: str
    interface: str
    files: tuple[Path, ...]
    file_format: str
    counters: CaptureCounters
    comment: str = ""
    comment_in_file: bool = False
    repaired: tuple[str, ...] = ()
    escalated: str | None = None
    returncode: int | None = None
    max_pps: int | None = None
    started_at: float | None = None
    stopped_at: float | None = None

    def as_dict(self) -> dict:
        """For run.json."""
        return {"backend": self.backend, "interface": self.interface,
                "files": [str(p) for p in self.files], "file_format": self.file_format,
                "counters": self.counters.as_dict(), "comment": self.comment,
                "comment_in_file": self.comment_in_file, "repaired": list(self.repaired),
                "escalated": self.escalated, "returncode": self.returncode,
                "max_pps": self.max_pps, "started_unix_s": self.started_at,
                "stopped_unix_s": self.stopped_at}


def ring_files(path: Path, backend: str) -> list[Path]:
    """The files a ring buffer based on `path` left, oldest first."""
    if backend == "tcpdump":
        # a.pcap0, a.pcap1, ...: reused in turn, so only the times tell the order
        rx = re.compile(re.escape(path.name) + r"\d+")
        found = [p for p in path.parent.glob(glob.escape(path.name) + "*")
                 if rx.fullmatch(p.name)]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))
    # dumpcap's (and our scapy backend's) a_00001_20261122234451.pcapng
    rx = re.compile(re.escape(path.stem) + r"_(\d{5,})_\d{14}" + re.escape(path.suffix))
    found = [(int(m.group(1)), p) for p in path.parent.glob(glob.escape(path.stem) + "_*")
             if (m := rx.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


class Capture:
    """Handle on one running capture process. Use as a context manager, or call stop()."""

    def __init__(self, backend: str, interface: str, path: Path, argv: list[str],
                 netns: str | None, snaplen: int, *, ring=None, comment: str = "",
                 where: str = "", env: dict | None = None):
        self.backend, self.interface, self.path = backend, interface, path
        self.argv, self.netns, self.snaplen = argv, netns, snaplen
        self.ring, self.comment = ring, comment
        self.where = where or (f" in netns {netns}" if netns else "")
        self.spec = BACKENDS[backend]
        self.file_format = self.spec.file_format
        self.max_pps = self.spec.max_pps      # a runner keeps its traffic below this
        self.counters = CaptureCounters(backend)
        self.result: CaptureResult | None = None
        self.packets_seen = 0          # dumpcap's running count (lags up to ~0.5 s)
        self.returncode: int | None = None
        self.escalated: str | None = None   # the signal that finally stopped it, if not SIGINT
        self.repaired: str | None = None    # what repair() did to the file, if anything
        self.started_at = self.stopped_at = None
        self._head = bytearray()
        self._tail = bytearray()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True,
                                        name=f"capture-{backend}-{self.proc.pid}")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._lock:
            head, tail = bytes(self._head), bytes(self._tail)
        sep = "\n[...]\n" if len(head) == _KEEP and tail else ""
        return (head + (sep.encode() + tail if tail else b"")).decode("utf-8", "replace")

    def _read_stderr(self) -> None:
        # raw reads: dumpcap rewrites "\rPackets: N" in place, with no newline to wait for
        fd = self.proc.stderr.fileno()
        window = ""
        while chunk := os.read(fd, 4096):
            text = chunk.decode("utf-8", "replace")
            with self._lock:
                room = _KEEP - len(self._head)
                self._head += chunk[:room]
                if chunk[room:]:
                    self._tail = (self._tail + chunk[room:])[-_KEEP:]
            window = (window + text)[-8192:]
            if not self._ready.is_set() and self.spec.ready.search(window):
                self._ready.set()
            counts = RUNNING_COUNT.findall(text)
            if counts:
                self.packets_seen = int(counts[-1])

    def await_ready(self, timeout: float = 10.0) -> None:
        """Return once the backend has said it is recording; CaptureFailed (and the
        process stopped) if it ends or stays silent instead."""
        try:
            self._await_ready(timeout)
        except BaseException:
            self.stop(timeout=2.0, settle=0)
            raise

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self.proc.poll() is not None:
                self._reader.join(2.0)
                text = " ".join(self.stderr.split())
                hint = permission_hint(text)
                raise CaptureFailed(
                    f"{self.backend} on {self.interface}{self.where} exited with status "
                    f"{self.proc.returncode} before capturing: {text[:600] or '(no output)'}"
                    + (f"\n-> {hint}" if hint else ""))
            if time.monotonic() > deadline:
                raise CaptureFailed(f"{self.backend} did not report a running capture on "
                                    f"{self.interface}{self.where} within {timeout:.0f} s: "
                                    f"{' '.join(self.stderr.split())[:400]}")
        self.started_at = time.time()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the backend to end by itself (packet_limit reached); None on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0, settle: float | None = None) -> CaptureResult:
        """Stop the capture; return its files and the backend's counters. Safe to call
        twice (the second call returns the same result).

        settle: seconds to wait first, so packets still in the kernel ring get written
        (default: the backend's ring delay; 0 when the traffic is known to be drained).
        """
        if self._stopped:
            return self.result
        try:
            if self.running:
                time.sleep(self.spec.settle_s if settle is None else settle)
        finally:
            try:
                self._terminate(timeout)
            finally:
                self._stopped = True
                self.stopped_at = time.time()
                self.returncode = self.proc.returncode
                self._reader.join(2.0)
                if not self._reader.is_alive():     # never close a pipe under a reader
                    self.proc.stderr.close()
                self.counters = parse_counters(self.backend, self.stderr)
                self.result = self._finish_files()
        return self.result

    def _finish_files(self) -> CaptureResult:
        """Every file readable, carrying the comment where the format has room for it."""
        paths = ring_files(self.path, self.backend) if self.ring else []
        if not paths:        # single file, or a ring that never got its first file
            paths = [self.path]
        repairs = [r for p in paths if (r := repair(p, self.file_format, self.snaplen))]
        self.repaired = "; ".join(repairs) or None
        in_file = False
        if self.comment and self.file_format == "pcapng":
            for p in paths:
                annotate(p, self.comment)      # no-op where the backend already wrote it
            in_file = True
        return CaptureResult(
            self.backend, self.interface, tuple(paths), self.file_format, self.counters,
            self.comment, in_file, tuple(repairs), self.escalated, self.returncode,
            self.max_pps, self.started_at, self.stopped_at)

    def _terminate(self, grace: float) -> None:
        # SIGINT is the backends' "finish up" signal: flush, close the file, print counters.
        # SIGTERM and SIGKILL only when it does not end in time.
        steps = ((signal.SIGINT, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0))
        try:
            for sig, wait in steps:
                if self.proc.poll() is not None:
                    return
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    return
                if sig != signal.SIGINT:
                    self.escalated = sig.name
                try:
                    self.proc.wait(wait)
                    return
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if self.proc.poll() is None:      # interrupted mid-escalation: no survivors
                self.escalated = "SIGKILL"
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if not self._stopped else f"stopped rc={self.returncode}"
        return f"<Capture {self.backend} {self.interface} -> {self.path} {state}>"


def launch(interface: str, outfile: str | os.PathLike, *, snaplen: int = 262144,
           bpf_filter: str = "", netns: str | None = None, prefix: list[str] | None = None,
           backend: str | None = None, buffer_mib: int | None = None,
           packet_limit: int | None = None, ring=None, comment: str = "") -> Capture:
    """Start the backend process without waiting for it (see start); the caller must
    call await_ready() before trusting it, and stop() on every path."""
    names = [backend] if backend else installed_backends()
    if not names:
        raise CaptureFailed("no capture tool found: install dumpcap (Debian package "
                            "wireshark-common) or tcpdump, or scapy (pip install scapy); "
                            "`sudo make test` installs them")
    name = names[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown capture backend {name!r}; known: {', '.join(BACKENDS)}")
    if netns and prefix:
        raise ValueError("give netns= or prefix=, not both (netns=NS is the prefix "
                         "['ip', 'netns', 'exec', NS])")
    if ring is not None:
        ring = ring_sizes(ring)
    if "\0" in comment:
        raise ValueError("capture comment must not contain NUL characters")
    exe = executable(name)
    if exe is None:
        raise CaptureFailed(f"{name} is not installed"
                            + (": pip install scapy" if name == "scapy" else ""))
    out = Path(outfile).absolute()         # `ip netns exec` keeps the cwd, but be explicit
    out.parent.mkdir(parents=True, exist_ok=True)
    # so a stale file can never pass for this capture's
    for stale in [out, *(ring_files(out, name) if ring else [])]:
        stale.unlink(missing_ok=True)
    if name == "tcpdump" and buffer_mib is None and not netns and not prefix:
        # an interface the kit did not build (lo, a NIC): its offloads may be on, where
        # each frame takes a 64 KiB slot (backends.immediate_buffer_mib). The lab's links
        # (in namespaces) have theirs off, and tcpdump's own buffer holds 1,300 frames
        buffer_mib = immediate_buffer_mib(snaplen)
    argv = BACKENDS[name].argv(exe, interface, str(out), snaplen, bpf_filter, buffer_mib,
                               packet_limit, ring=ring, comment=comment)
    where = ""
    if netns:
        ip = which("ip")
        if ip is None:
            raise CaptureFailed("capturing in a network namespace needs `ip` (iproute2)")
        # `ip netns exec` execs the command in place: the pid we signal is the backend's
        prefix, where = [ip, "netns", "exec", netns], f" in netns {netns}"
    elif prefix:
        prefix = [str(a) for a in prefix]
        where = f" under {' '.join(prefix)}"
    env = None
    if name == "scapy":     # our module must import wherever the prefix takes it
        env = child_env()
    return Capture(name, interface, out, [*(prefix or []), *argv], netns, snaplen,
                   ring=ring, comment=comment, where=where, env=env)


def start(interface: str, outfile: str | os.PathLike, *, snaplen: int = 262144,
          bpf_filter: str = "", netns: str | None = None, prefix: list[str] | None = None,
          backend: str | None = None, buffer_mib: int | None = None,
          packet_limit: int | None = None, ring=None, comment: str = "",
          ready_timeout: float = 10.0) -> Capture:
    """Start capturing on `interface` into `outfile`; returns once the backend has proven
    the capture is running.

    Where: netns="NS" runs the backend inside that network namespace (`ip netns exec`);
    prefix=[...] runs it under any argv prefix, e.g. lab.prefix("b") (rootless labs
    enter theirs through nsenter). backend: "dumpcap" (pcapng), "tcpdump" (pcap) or
    "scapy" (pcapng, at most cap.max_pps packets/s); default: the first installed, in
    that order. ring=(file_mib, files): rotate through that many files of that size,
    the list of files is in stop()'s result. comment: the pcapng section comment
    (Wireshark: Statistics > Capture File Properties); kept in the result for pcap.
    packet_limit: the backend stops by itself after that many packets (Capture.wait).
    buffer_mib: the kernel buffer; by default the backend's own, except tcpdump outside
    a namespace (netns=, prefix=): room for 1,024 frames of up to 64 KiB, at most 32 MiB
    (backends.immediate_buffer_mib).
    """
    cap = launch(interface, outfile, snaplen=snaplen, bpf_filter=bpf_filter, netns=netns,
                 prefix=prefix, backend=backend, buffer_mib=buffer_mib,
                 packet_limit=packet_limit, ring=ring, comment=comment)
    cap.await_ready(ready_timeout)
    return cap
