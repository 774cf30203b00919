"""A running capture: start it, know it is recording, stop it, always leave a file.

    with capture.start("lo", run_dir / "a.pcapng", bpf_filter="udp port 5001") as cap:
        ...traffic...                 # every packet sent from here on is in the file
    cap.counters.dropped              # the backend's own drop count

`start` returns only once the backend has said, on stderr, the line it prints after the
interface is open and the filter installed (see backends.py for why that line is proof).
`stop` waits out the kernel ring's delivery delay, then SIGINT (the backend flushes, closes
its file and prints its counters), then SIGTERM, then SIGKILL, each with a timeout; then
it repairs the file if a kill tore it. It runs from `__exit__` and from `start`'s own
failure paths, so no exit path leaves a capture process behind.

The backend runs in our process group on purpose: a Ctrl-C or a CI timeout that kills the
group stops it too, instead of leaving an orphan filling the disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from .backends import (BACKENDS, PREFERENCE, RUNNING_COUNT, CaptureCounters, parse_counters,
                       permission_hint)
from .files import repair

_KEEP = 16 * 1024     # stderr kept from the start and from the end (counters come last)


class CaptureFailed(RuntimeError):
    """The capture could not start; the message says why and what to do."""


def which(name: str) -> str | None:
    # sbin is often missing from a non-root PATH, and sudo's secure_path varies
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}")
         if os.access(p, os.X_OK)), None)


def installed_backends() -> list[str]:
    return [b for b in PREFERENCE if which(b)]


class Capture:
    """Handle on one running capture process. Use as a context manager, or call stop()."""

    def __init__(self, backend: str, interface: str, path: Path, argv: list[str],
                 netns: str | None, snaplen: int):
        self.backend, self.interface, self.path = backend, interface, path
        self.argv, self.netns, self.snaplen = argv, netns, snaplen
        self.spec = BACKENDS[backend]
        self.file_format = self.spec.file_format
        self.counters = CaptureCounters(backend)
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
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
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

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self.proc.poll() is not None:
                self._reader.join(2.0)
                text = " ".join(self.stderr.split())
                hint = permission_hint(text)
                raise CaptureFailed(
                    f"{self.backend} on {self.interface}"
                    f"{' in netns ' + self.netns if self.netns else ''} exited with status "
                    f"{self.proc.returncode} before capturing: {text[:600] or '(no output)'}"
                    + (f"\n-> {hint}" if hint else ""))
            if time.monotonic() > deadline:
                raise CaptureFailed(f"{self.backend} did not report a running capture on "
                                    f"{self.interface} within {timeout:.0f} s: "
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

    def stop(self, timeout: float = 5.0, settle: float | None = None) -> CaptureCounters:
        """Stop the capture and return the backend's counters. Safe to call twice.

        settle: seconds to wait first, so packets still in the kernel ring get written
        (default: the backend's ring delay; 0 when the traffic is known to be drained).
        """
        if self._stopped:
            return self.counters
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
                self.repaired = repair(self.path, self.file_format, self.snaplen)
        return self.counters

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


def start(interface: str, outfile: str | os.PathLike, *, snaplen: int = 262144,
          bpf_filter: str = "", netns: str | None = None, backend: str | None = None,
          buffer_mib: int | None = None, packet_limit: int | None = None,
          ready_timeout: float = 10.0) -> Capture:
    """Start capturing on `interface` (inside network namespace `netns` if given) into
    `outfile`; returns once the backend has proven the capture is running.

    backend: "dumpcap" (writes pcapng) or "tcpdump" (writes pcap); default: the first
    installed, dumpcap preferred. packet_limit: the backend stops by itself after that
    many packets (see Capture.wait).
    """
    names = [backend] if backend else installed_backends()
    if not names:
        raise CaptureFailed("no capture tool found: install dumpcap (Debian package "
                            "wireshark-common) or tcpdump; `sudo make test` installs both")
    name = names[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown capture backend {name!r}; known: {', '.join(BACKENDS)}")
    exe = which(name)
    if exe is None:
        raise CaptureFailed(f"{name} is not installed")
    out = Path(outfile).absolute()         # `ip netns exec` keeps the cwd, but be explicit
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)            # so a stale file can never pass for this one
    argv = BACKENDS[name].argv(exe, interface, str(out), snaplen, bpf_filter, buffer_mib,
                               packet_limit)
    if netns:
        ip = which("ip")
        if ip is None:
            raise CaptureFailed("capturing in a network namespace needs `ip` (iproute2)")
        # `ip netns exec` execs the command in place: the pid we signal is the backend's
        argv = [ip, "netns", "exec", netns, *argv]
    cap = Capture(name, interface, out, argv, netns, snaplen)
    try:
        cap._await_ready(ready_timeout)
    except BaseException:
        cap.stop(timeout=2.0, settle=0)
        raise
    return cap
