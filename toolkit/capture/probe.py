"""Can this process capture packets, with which tool, and if not, what is missing?

Capturing needs CAP_NET_RAW (and CAP_NET_ADMIN for some interfaces), either in our own
process (root, or granted) or in the dumpcap binary (file capabilities, as Debian's
"non-superusers may capture" setting installs it, executable by the wireshark group).
The static checks explain; the live check decides: `<backend> -L -i <interface>` opens the
interface the same way a capture does and then exits, so it fails exactly when a capture
would. Being uid 0 is not enough on its own (a container may drop CAP_NET_RAW).
"""

from __future__ import annotations

import grp
import importlib.util
import os
import socket
import struct
import subprocess
from dataclasses import dataclass, field

from .live import which

CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN = 12, 13, 21


class CaptureUnavailable(RuntimeError):
    """No backend can capture here; the message says what is missing and what to do."""


def process_capabilities() -> int:
    """Our effective capability set (a bit mask), from /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return (1 << 41) - 1 if os.geteuid() == 0 else 0


def file_capabilities(path: str) -> int:
    """Permitted file capabilities of an executable (security.capability xattr), or 0."""
    try:
        raw = os.getxattr(path, "security.capability")
    except (OSError, AttributeError):
        return 0
    if len(raw) < 12:
        return 0
    # struct vfs_cap_data: magic_etc, then (permitted, inheritable) 32-bit pairs, low first
    _, perm_lo, _ = struct.unpack("<III", raw[:12])
    perm_hi = struct.unpack("<I", raw[12:16])[0] if len(raw) >= 20 else 0
    return perm_lo | perm_hi << 32


def _has(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


@dataclass(frozen=True)
class CaptureProbe:
    installed: dict[str, str]             # backend -> path (scapy: its package)
    usable: tuple[str, ...]               # backends that opened the interface (best first)
    problems: dict[str, str] = field(default_factory=dict)   # backend -> why not
    root: bool = False
    net_raw: bool = False                 # our process holds CAP_NET_RAW
    netns: bool = False                   # we may enter network namespaces (CAP_SYS_ADMIN)

    @property
    def ok(self) -> bool:
        return bool(self.usable)

    @property
    def backend(self) -> str | None:
        return self.usable[0] if self.usable else None

    def explain(self) -> str:
        if self.ok:
            return f"can capture with {', '.join(self.usable)}"
        if not self.installed:
            return ("no capture tool is installed: install dumpcap (Debian package "
                    "wireshark-common) or tcpdump; `sudo make test` installs both")
        lines = ["cannot capture packets here:"]
        lines += [f"  {name}: {why}" for name, why in self.problems.items()]
        lines.append("what to do: run as root (sudo make demo), or let dumpcap capture as "
                     "you: sudo dpkg-reconfigure wireshark-common (answer Yes), then "
                     "sudo usermod -aG wireshark $USER and log in again")
        return "\n".join(lines)

    def require(self) -> str:
        """The best usable backend, or CaptureUnavailable with explain() as its message."""
        if not self.ok:
            raise CaptureUnavailable(self.explain())
        return self.usable[0]


def _why_not(name: str, path: str, caps: int) -> str:
    if _has(caps, CAP_NET_RAW):
        return "has CAP_NET_RAW but could not open the interface"
    if not os.access(path, os.X_OK):
        st = os.stat(path)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return (f"{path} is not executable by you (mode {st.st_mode & 0o777:o}, group "
                f"{group}: you are not in the {group} group)")
    fcaps = file_capabilities(path)
    if name == "dumpcap" and not _has(fcaps, CAP_NET_RAW):
        return (f"you are not root, your process lacks CAP_NET_RAW, and {path} has no "
                "file capabilities (getcap shows none)")
    if _has(fcaps, CAP_NET_RAW):
        return f"{path} has cap_net_raw but the interface still could not be opened"
    return "you are not root and your process lacks CAP_NET_RAW"


def _packet_socket_problem(interface: str) -> str | None:
    """Why the scapy backend could not capture on `interface` from this process, or None.
    It runs in a child of ours, with our privileges: opening the same AF_PACKET socket
    here fails exactly when it would there."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as s:
            s.bind((interface, 0))
    except PermissionError:
        return ("you are not root and your process lacks CAP_NET_RAW (the scapy backend "
                "opens an AF_PACKET socket itself)")
    except OSError as e:
        return f"could not open an AF_PACKET socket on {interface}: {e.strerror or e}"
    return None


def probe(interface: str = "lo", live: bool = True, timeout: float = 10.0) -> CaptureProbe:
    """Which capture backends are installed and which can capture on `interface`."""
    installed = {n: p for n in ("dumpcap", "tcpdump") if (p := which(n))}
    scapy = importlib.util.find_spec("scapy")
    caps = process_capabilities()
    usable: list[str] = []
    problems: dict[str, str] = {}
    for name, path in installed.items():
        if live:
            try:
                r = subprocess.run([path, "-L", "-i", interface], capture_output=True,
                                   text=True, timeout=timeout, stdin=subprocess.DEVNULL)
                if r.returncode == 0:
                    usable.append(name)
                    continue
                problems[name] = (_why_not(name, path, caps) + ": "
                                  + " ".join(r.stderr.split()).split(". ")[0][:200])
            except (OSError, subprocess.TimeoutExpired) as e:
                problems[name] = f"could not run {path}: {e}"
        else:
            fcaps = file_capabilities(path) if name == "dumpcap" else 0
            if (_has(caps, CAP_NET_RAW) or _has(fcaps, CAP_NET_RAW)) and \
                    os.access(path, os.X_OK):
                usable.append(name)
            else:
                problems[name] = _why_not(name, path, caps)
    if scapy is not None:
        installed["scapy"] = scapy.origin or "scapy"
        why = _packet_socket_problem(interface) if live else (
            None if _has(caps, CAP_NET_RAW) else "your process lacks CAP_NET_RAW")
        if why is None:
            usable.append("scapy")
        else:
            problems["scapy"] = why
    return CaptureProbe(installed, tuple(usable), problems, os.geteuid() == 0,
                        _has(caps, CAP_NET_RAW), _has(caps, CAP_SYS_ADMIN))
