"""What this machine offers a lab: privileges, kernel features, tools, Python packages.

Kernel features are found by trying them, not by reading module lists (a qdisc may be
built in, loadable, or absent, and only the kernel knows): a throwaway lab is built and
netem, tbf, htb and an nftables numgen rule are each added on its router. Everything is
removed by the lab's own teardown.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from .lab import up
from .rootless import PrivilegeError, detect
from .topology import default_topology

TOOLS = {  # command -> Debian package
    "ip": "iproute2", "tc": "iproute2", "nft": "nftables", "ethtool": "ethtool",
    "dumpcap": "wireshark-common", "tcpdump": "tcpdump", "tshark": "tshark",
    "ping": "iputils-ping", "unshare": "util-linux", "nsenter": "util-linux",
}
PACKAGES = ("numpy", "numba", "pandas", "pyarrow", "scapy", "matplotlib")

_TRIALS = {
    "netem": ["tc", "qdisc", "add", "dev", "lk-r-a", "root", "netem", "delay", "1ms"],
    "tbf": ["tc", "qdisc", "add", "dev", "lk-r-b", "root", "tbf", "rate", "10mbit",
            "burst", "32kb", "limit", "64kb"],
    "htb": ["tc", "qdisc", "add", "dev", "lo", "root", "htb", "default", "1"],
}
_NFT_TRIAL = ("table inet labkit_probe {\n    chain forward {\n"
              "        type filter hook forward priority 0; policy accept;\n"
              "        numgen random mod 100 < 1 counter drop\n    }\n}\n")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


@dataclass
class MachineReport:
    privilege: dict
    kernel: dict[str, bool | None] = field(default_factory=dict)
    kernel_errors: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str | None] = field(default_factory=dict)
    packages: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"privilege": self.privilege, "kernel": self.kernel,
                "kernel_errors": self.kernel_errors, "tools": self.tools,
                "packages": self.packages}

    @property
    def can_build(self) -> bool:
        return self.privilege.get("mode") in ("root", "rootless")

    @property
    def have_netem(self) -> bool:
        return bool(self.kernel.get("netem"))


def probe_kernel(privilege: str = "auto") -> tuple[dict[str, bool | None], dict[str, str]]:
    found: dict[str, bool | None] = {}
    errors: dict[str, str] = {}
    with up(default_topology(), privilege=privilege) as lab:
        found["veth"] = found["netns"] = True
        for name, argv in _TRIALS.items():
            done = lab.exec("r", argv)
            found[name] = done.returncode == 0
            if done.returncode:
                errors[name] = done.stderr.strip()
        done = lab.exec("r", ["nft", "-f", "-"], input=_NFT_TRIAL)
        found["nftables_numgen"] = done.returncode == 0
        if done.returncode:
            errors["nftables_numgen"] = done.stderr.strip() or "nft failed"
        found["af_packet"] = lab.exec("r", [sys.executable, "-c", _AF_PACKET_TRIAL]).returncode == 0
    return found, errors


_AF_PACKET_TRIAL = ("import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, "
                    "socket.htons(3)); s.bind(('lk-r-a', 0))")


def probe_machine(privilege: str = "auto", kernel: bool = True) -> MachineReport:
    try:
        priv = detect(privilege).as_dict()
    except PrivilegeError as e:
        priv = {"mode": None, "detail": str(e)}
    report = MachineReport(priv)
    report.tools = {t: _which(t) for t in TOOLS}
    for pkg in PACKAGES:
        try:
            report.packages[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            report.packages[pkg] = None
    if kernel and report.can_build:
        try:
            report.kernel, report.kernel_errors = probe_kernel(privilege)
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            report.kernel_errors["lab"] = str(e)
    return report
