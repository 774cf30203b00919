"""Topology -> Plan: the commands that build the namespaces, veths, addresses and routes.

Pure. Order matters and is chosen so each undo is sound: a namespace is created before
anything in it and its deletion (the only undo recorded) removes its veth ends, addresses,
routes, qdiscs and nftables tables with it. Veth pairs are created with both ends directly
inside their namespaces, so nothing of ours ever appears in the caller's namespace.

IPv6 addresses are added with `nodad`: duplicate address detection (RFC 4862 5.4) would
hold them "tentative" for about a second, and the first packets of an experiment would
find no usable source address.
"""

from __future__ import annotations

from .plan import Plan
from .topology import ROUTER, Names, Topology, iface


def plan_topology(topo: Topology, names: Names) -> Plan:
    plan = Plan()
    for node in topo.names:
        ns = names.netns(node)
        plan.add("ip", "netns", "add", ns, undo=("ip", "netns", "del", ns),
                 why=f"namespace of {node}")
    # sysctls before the interfaces exist: new interfaces copy net.*.conf.default, and the
    # TCP settings are in force before any traffic
    plan.extend(_sysctls(topo, names))
    for link in topo.links:
        h, r = link.host, ROUTER
        plan.add("ip", "link", "add", iface(r, h), "address", link.mac(True),
                 "mtu", str(link.mtu), "netns", names.netns(r),
                 "type", "veth", "peer", "name", iface(h, r), "address", link.mac(False),
                 "mtu", str(link.mtu), "netns", names.netns(h),
                 why=f"link {r}-{h} (removed with the namespaces)")
    if not topo.offloads:
        for link in topo.links:
            for node, peer in ((ROUTER, link.host), (link.host, ROUTER)):
                # veth offers GSO/TSO/GRO; with them on, captures show 64 KB "segments"
                # that never existed on a wire
                plan.add("ethtool", "-K", iface(node, peer), "gso", "off", "tso", "off",
                         "gro", "off", netns=names.netns(node),
                         why=f"offloads off on {iface(node, peer)}")
    for node in topo.names:
        plan.add("ip", "-n", names.netns(node), "link", "set", "lo", "up", why="loopback up")
    for link in topo.links:
        for node, peer, router_side in ((ROUTER, link.host, True), (link.host, ROUTER, False)):
            ns, dev = names.netns(node), iface(node, peer)
            plan.add("ip", "-n", ns, "addr", "add", f"{link.addr(router_side)}/24", "dev", dev,
                     why=f"IPv4 of {node} toward {peer}")
            plan.add("ip", "-n", ns, "-6", "addr", "add", f"{link.addr(router_side, 6)}/64",
                     "dev", dev, "nodad", why=f"IPv6 of {node} toward {peer}")
            plan.add("ip", "-n", ns, "link", "set", dev, "up", why=f"{dev} up")
    for link in topo.links:
        ns = names.netns(link.host)
        plan.add("ip", "-n", ns, "route", "add", "default", "via", link.addr(True),
                 why=f"{link.host} reaches the other hosts through {ROUTER}")
        plan.add("ip", "-n", ns, "-6", "route", "add", "default", "via", link.addr(True, 6),
                 why=f"{link.host} reaches the other hosts through {ROUTER} (IPv6)")
    return plan


def _sysctls(topo: Topology, names: Names) -> Plan:
    plan = Plan()
    fwd = "1" if topo.forwarding else "0"
    router = (("net.ipv4.ip_forward", fwd), ("net.ipv6.conf.all.forwarding", fwd),
              ("net.ipv6.conf.default.forwarding", fwd), *topo.router_sysctls)
    for node, values in ((ROUTER, router), *((h.name, h.sysctls) for h in topo.hosts)):
        # no duplicate address detection on link-local addresses either: it holds them
        # tentative ~1 s, and neighbour discovery (RFC 4861) needs them for next hops
        values = (("net.ipv6.conf.all.accept_dad", "0"),
                  ("net.ipv6.conf.default.accept_dad", "0"), *values)
        plan.add("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values),
                 netns=names.netns(node), why=f"sysctls of {node}")
    return plan
