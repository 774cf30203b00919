"""What a run records about where it ran (ARCHITECTURE decision 8: results describe
themselves): the machine and its tools, and the lab network read back from the kernel as
it really was (sysctls, offloads, qdiscs, nftables), not as the spec asked for it."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata

# sysctls every run records on every host, beside those the lab sets
SYSCTLS = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_sack", "net.ipv4.tcp_timestamps",
           "net.ipv4.tcp_window_scaling", "net.ipv4.tcp_ecn", "net.ipv4.tcp_syncookies",
           "net.ipv4.tcp_early_retrans", "net.ipv4.tcp_recovery",
           "net.ipv4.tcp_no_metrics_save", "net.core.rmem_max", "net.core.wmem_max")
OFFLOADS = ("tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "tx-checksumming", "rx-checksumming")
PACKAGES = ("numpy", "numba", "pandas", "pyarrow", "scapy", "matplotlib")
TOOLS = {"dumpcap": ["-v"], "tcpdump": ["--version"], "tshark": ["-v"], "ip": ["-V"],
         "tc": ["-V"], "nft": ["--version"], "ethtool": ["--version"]}


def environment() -> dict:
    from .. import __version__
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"labkit": __version__, "python": sys.version.split()[0],
            "kernel": platform.release(), "machine": platform.machine(),
            "system": platform.system(), "packages": packages, "tools": tool_versions()}


def tool_versions() -> dict:
    out = {}
    for tool, args in TOOLS.items():
        exe = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if exe is None:
            out[tool] = None
            continue
        try:
            done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            out[tool] = "present (version unknown)"
            continue
        text = (done.stdout or done.stderr).strip().splitlines()
        out[tool] = text[0].strip() if text else "present"
    return out


def network(lab, sysctls: tuple[str, ...] = ()) -> dict:
    """The lab as the kernel has it now: per node sysctls, per interface offloads, the
    router's qdiscs and nftables ruleset."""
    names = list(dict.fromkeys([*SYSCTLS, *sysctls]))
    hosts = {}
    for node in lab.topology.names:
        entry = {"sysctls": _sysctls(lab, node, names)}
        ifaces = ([lab.iface(node, "r")] if node != "r"
                  else [lab.iface("r", h) for h in lab.topology.host_names])
        entry["offloads"] = {i: _offloads(lab, node, i) for i in ifaces}
        entry["qdiscs"] = _json(lab, node, ["tc", "-s", "-j", "qdisc", "show"])
        hosts[node] = entry
    ruleset = _json(lab, "r", ["nft", "-j", "list", "ruleset"])
    return {**lab.describe(), "nodes": hosts, "router_nftables": ruleset}


def _sysctls(lab, node: str, names: list[str]) -> dict:
    done = lab.exec(node, ["sysctl", "-e", *names])
    out = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _offloads(lab, node: str, iface: str) -> dict:
    done = lab.exec(node, ["ethtool", "-k", iface])
    if done.returncode != 0:
        return {"error": (done.stderr or "ethtool failed").strip()[:200]}
    out = {}
    for line in done.stdout.splitlines():
        m = re.match(r"\s*([a-z0-9-]+): (on|off)", line)
        if m and m.group(1) in OFFLOADS:
            out[m.group(1)] = m.group(2)
    return out


def _json(lab, node: str, argv: list[str]):
    try:
        done = lab.exec(node, argv)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    if done.returncode != 0:
        return {"error": (done.stderr or "failed").strip()[:200]}
    try:
        return json.loads(done.stdout or "null")
    except ValueError:
        return {"error": "not JSON", "text": done.stdout[:500]}
