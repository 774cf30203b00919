"""A topology is plain data: hosts, a router, links, addresses, MTU, offloads, sysctls.

    a ──lk-a-r / lk-r-a── r ──lk-r-b / lk-b-r── b        (and more hosts, e.g. m for an attacker)

Every host has its own network namespace. Each link is a veth pair between the router and
one host; link i gets 10.201.i.0/24 and fd00:201:i::/64, the router is .1 / ::1 on it, the
host .2 / ::2, and the host's default routes point at the router. MAC addresses are fixed
(02:6c:6b:00:<link>:<01 router | 02 host>, locally administered), so two runs of a lab
produce byte-identical link layers and the userspace emulator knows its next hops without ARP.

Interface names live inside each namespace, so they need no run id: the end in host X
facing Y is `lk-X-Y` (IFNAMSIZ allows host names up to 5 characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

ROUTER = "r"
_HOST_NAME = re.compile(r"[a-z][a-z0-9]{0,4}")
_SYSCTL_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_\-]+)*")

# Short sysctl names a lab may use; anything else must be written in full (net.core.x).
SHORT_SYSCTLS = {
    "tcp_congestion_control", "tcp_syncookies", "tcp_sack", "tcp_timestamps",
    "tcp_window_scaling", "tcp_ecn", "tcp_rmem", "tcp_wmem", "tcp_no_metrics_save",
    "tcp_syn_retries", "tcp_synack_retries", "tcp_retries2", "tcp_fin_timeout",
    "tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes", "tcp_mtu_probing",
    "tcp_slow_start_after_idle", "tcp_early_retrans", "tcp_recovery", "tcp_dsack",
    "tcp_fack", "tcp_frto", "tcp_max_syn_backlog", "tcp_abort_on_overflow", "tcp_rto_min_us",
    "ip_forward", "ip_local_port_range",
}


class TopologyError(ValueError):
    """A topology is malformed; the message names the key."""


@dataclass(frozen=True)
class Host:
    name: str
    sysctls: tuple[tuple[str, str], ...] = ()    # (full name, value), applied in order


@dataclass(frozen=True)
class Link:
    host: str                 # the non-router end
    index: int                # 1-based: picks the subnet and the MACs
    mtu: int = 1500

    @property
    def subnet4(self) -> str:
        return f"10.201.{self.index}.0/24"

    @property
    def subnet6(self) -> str:
        return f"fd00:201:{self.index}::/64"

    def addr(self, router_side: bool, family: int = 4) -> str:
        last = 1 if router_side else 2
        return f"10.201.{self.index}.{last}" if family == 4 else f"fd00:201:{self.index}::{last}"

    def mac(self, router_side: bool) -> str:
        return f"02:6c:6b:00:{self.index:02x}:{1 if router_side else 2:02x}"


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...]                       # the end hosts (not the router)
    links: tuple[Link, ...]
    router_sysctls: tuple[tuple[str, str], ...] = ()
    offloads: bool = False    # GSO/TSO/GRO; off so captures show wire-sized segments
    forwarding: bool = True   # the router's kernel forwards (off: the emulator does)

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    @property
    def names(self) -> tuple[str, ...]:
        """Every namespace-owning node, router first."""
        return (ROUTER, *self.host_names)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in this topology (hosts: {', '.join(self.names)})")

    def link(self, host: str) -> Link:
        for link in self.links:
            if link.host == host:
                return link
        raise KeyError(f"no link to {host!r} (hosts: {', '.join(self.host_names)})")

    def with_forwarding(self, on: bool) -> Topology:
        return replace(self, forwarding=on)


def iface(node: str, peer: str) -> str:
    """The name of node's interface facing peer: lk-a-r on a, lk-r-a on the router."""
    return f"lk-{node}-{peer}"


def sysctl_name(name: str) -> str:
    """Full sysctl name: the short TCP names get net.ipv4., anything else is kept."""
    if name in SHORT_SYSCTLS:
        return f"net.ipv4.{name}"
    return name


def default_topology(hosts: tuple[str, ...] = ("a", "b"), *, mtu: int = 1500,
                     offloads: bool = False,
                     sysctls: dict[str, dict[str, object]] | None = None) -> Topology:
    """a - r - b (plus any extra hosts, each on its own link to r)."""
    return from_dict({"hosts": list(hosts), "mtu": mtu, "offloads": offloads,
                      "sysctl": sysctls or {}})


def from_dict(table: dict, where: str = "topology") -> Topology:
    """A Topology from plain data, as a lab's [topology] table holds it:

        hosts = ["a", "b", "m"]          # default ["a", "b"]
        mtu = 1500
        offloads = false
        [topology.sysctl.a]              # per host, or "all" for every end host, "r" for the router
        tcp_congestion_control = "reno"
        tcp_sack = 0
    """
    if not isinstance(table, dict):
        raise TopologyError(f"{where}: expected a table")
    known = {"hosts", "mtu", "offloads", "sysctl"}
    for key in table:
        if key not in known:
            raise TopologyError(f"{where}.{key}: unknown setting; "
                                f"known: {', '.join(sorted(known))}")
    names = table.get("hosts", ["a", "b"])
    if not isinstance(names, list) or not names:
        raise TopologyError(f"{where}.hosts: expected a list of host names such as ['a', 'b']")
    for n in names:
        if not isinstance(n, str) or not _HOST_NAME.fullmatch(n) or n == ROUTER:
            raise TopologyError(f"{where}.hosts: {n!r} is not a usable host name (1-5 lower-case "
                                f"letters/digits starting with a letter, not {ROUTER!r})")
    if len(set(names)) != len(names):
        raise TopologyError(f"{where}.hosts: duplicate names in {names}")
    if len(names) > 250:
        raise TopologyError(f"{where}.hosts: at most 250 hosts")
    mtu = table.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 1280 <= mtu <= 65535:
        raise TopologyError(f"{where}.mtu: {mtu!r}; expected an integer from 1280 "
                            f"(IPv6's minimum, RFC 8200) to 65535")
    offloads = table.get("offloads", False)
    if not isinstance(offloads, bool):
        raise TopologyError(f"{where}.offloads: expected true or false")
    raw_sysctls = table.get("sysctl", {})
    if not isinstance(raw_sysctls, dict):
        raise TopologyError(f"{where}.sysctl: expected a table per host")
    for who in raw_sysctls:
        if who not in (*names, ROUTER, "all"):
            raise TopologyError(f"{where}.sysctl.{who}: no such host (hosts: "
                                f"{', '.join(names)}, {ROUTER}, or 'all')")
    every = _sysctls(raw_sysctls.get("all", {}), f"{where}.sysctl.all")
    hosts = tuple(Host(n, every + _sysctls(raw_sysctls.get(n, {}), f"{where}.sysctl.{n}"))
                  for n in names)
    links = tuple(Link(n, i + 1, mtu) for i, n in enumerate(names))
    return Topology(hosts, links, _sysctls(raw_sysctls.get(ROUTER, {}), f"{where}.sysctl.r"),
                    offloads=offloads)


def _sysctls(table, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(table, dict):
        raise TopologyError(f"{where}: expected a table of sysctl = value")
    out = []
    for name, value in table.items():
        full = sysctl_name(name)
        if not _SYSCTL_NAME.fullmatch(full) or "." not in full:
            raise TopologyError(f"{where}.{name}: not a sysctl name (write the full name, "
                                f"e.g. net.core.rmem_max, or one of the TCP short names)")
        if isinstance(value, bool) or not isinstance(value, (int, str, list)):
            raise TopologyError(f"{where}.{name}: {value!r}; expected a number or a string")
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if "\n" in text or "=" in text:
            raise TopologyError(f"{where}.{name}: {text!r} is not a sysctl value")
        out.append((full, text))
    return tuple(out)


@dataclass(frozen=True)
class Names:
    """The kernel names of one run: namespaces lk-<run>-<node>."""
    run_id: str
    nodes: tuple[str, ...] = field(default=())

    def netns(self, node: str) -> str:
        return f"lk-{self.run_id}-{node}"
