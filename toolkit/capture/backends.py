"""Start a packet capture, know when it is running, stop it cleanly.

dumpcap (Wireshark's capture engine) is preferred: it writes pcapng and reports its drop
counters. tcpdump is the fallback. A capture is known to be running when the backend says
so on stderr ("Capturing on ..." / "listening on ..."), which both print once the
interface is open and the filter installed. Stopping sends SIGINT (both then flush and
write their statistics), waits, and only then escalates to SIGTERM and SIGKILL, so the
file is complete on every exit path.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class CaptureFailed(RuntimeError):
    """The capture could not start; the message says why and what to do."""


def available_backends() -> list[str]:
    return [b for b in ("dumpcap", "tcpdump") if _which(b)]


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None)


def _command(backend, exe, interface, out, snaplen, bpf):
    if backend == "dumpcap":
        cmd = [exe, "-i", interface, "-w", str(out), "-s", str(snaplen), "-n"]
        return cmd + (["-f", bpf] if bpf else [])
    cmd = [exe, "-i", interface, "-w", str(out), "-s", str(snaplen), "-U", "-n"]
    return cmd + ([bpf] if bpf else [])


READY = {"dumpcap": re.compile(r"Capturing on"), "tcpdump": re.compile(r"listening on")}
PACKETS = re.compile(r"Packets: (\d+)")    # dumpcap's running count on stderr
DROPS = [
    # dumpcap: "Packets received/dropped on interface 'lo': 42/0 (pcap:0/dumpcap:0/...)"
    re.compile(r"Packets received/dropped on interface .*?: (?P<received>\d+)/(?P<dropped>\d+)"),
    # tcpdump: "12 packets captured" / "0 packets dropped by kernel"
    re.compile(r"(?P<captured>\d+) packets? captured"),
    re.compile(r"(?P<kernel_dropped>\d+) packets? dropped by kernel"),
]


def parse_counters(stderr: str) -> dict[str, int]:
    """The backend's own packet and drop counters, from what it printed at exit."""
    out: dict[str, int] = {}
    for rx in DROPS:
        for m in rx.finditer(stderr):
            for k, v in m.groupdict().items():
                out[k] = out.get(k, 0) + int(v)
    return out


@dataclass
class Capture:
    backend: str
    path: Path
    proc: subprocess.Popen
    stderr_lines: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    packets_seen: int = 0
    _reader: threading.Thread | None = None

    def stop(self, timeout: float = 5.0) -> dict[str, int]:
        """SIGINT, wait; then SIGTERM, wait; then SIGKILL. Returns the drop counters."""
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0),
                              (signal.SIGKILL, 2.0)):
                try:
                    self.proc.send_signal(sig)
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if self._reader is not None:
            self._reader.join(2.0)
        self.counters = parse_counters("".join(self.stderr_lines))
        return self.counters

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_capture(interface: str, out: Path, bpf: str = "", snaplen: int = 262144,
                  backend: str | None = None, ready_timeout: float = 10.0,
                  probe=None) -> Capture:
    """Start capturing on `interface` into `out`; returns once the capture is running.

    "Capturing on" alone does not prove that packets are being recorded yet: with `probe`
    (a callable that sends one packet the filter accepts), probes are sent until the file
    grows past its headers, i.e. until a packet has really been captured and written.
    """
    backends = [backend] if backend else available_backends()
    if not backends or not _which(backends[0]):
        raise CaptureFailed("no capture tool found: install dumpcap (Debian: wireshark-common) "
                            "or tcpdump; `make test` as root installs both")
    name = backends[0]
    exe = _which(name)
    proc = subprocess.Popen(_command(name, exe, interface, out, snaplen, bpf),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    cap = Capture(name, Path(out), proc)
    ready = threading.Event()

    def read_stderr():
        # raw reads: dumpcap updates "\rPackets: N" in place, without newlines
        seen = ""
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            cap.stderr_lines.append(text)
            seen = (seen + text)[-4096:]
            if READY[name].search(seen):
                ready.set()
            m = PACKETS.findall(seen)
            if m:
                cap.packets_seen = int(m[-1])
    cap._reader = threading.Thread(target=read_stderr, daemon=True)
    cap._reader.start()
    deadline = time.monotonic() + ready_timeout
    while not ready.is_set():
        if proc.poll() is not None:
            cap._reader.join(1.0)
            msg = " ".join(line.strip() for line in cap.stderr_lines[:3] if line.strip())
            hint = ""
            if "ermission" in msg or "not permitted" in msg:
                hint = (" -- capturing needs root or the CAP_NET_RAW capability: run as root "
                        "(sudo make demo), or add yourself to the 'wireshark' group")
            raise CaptureFailed(f"{name} could not start: {msg or 'exit ' + str(proc.returncode)}"
                                + hint)
        if time.monotonic() > deadline:
            cap.stop()
            raise CaptureFailed(f"{name} did not report a running capture within "
                                f"{ready_timeout:.0f} s")
        ready.wait(0.05)
    if probe is not None:
        _await_first_packet(cap, probe, deadline)
    return cap


def _await_first_packet(cap: Capture, probe, deadline: float) -> None:
    # dumpcap counts captured packets on stderr a few times a second; tcpdump -U writes
    # each packet to the file at once (after its 24-byte file header)
    while time.monotonic() < deadline + 5.0:
        probe()
        time.sleep(0.05)
        if cap.packets_seen > 0:
            return
        if cap.backend == "tcpdump":
            try:
                if cap.path.stat().st_size > 24:
                    return
            except FileNotFoundError:
                pass
        if cap.proc.poll() is not None:
            break
    cap.stop()
    raise CaptureFailed(f"{cap.backend} runs but recorded none of the readiness probes")
