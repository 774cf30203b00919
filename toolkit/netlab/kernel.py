"""The kernel engine: an Impairment as qdiscs and nftables rules on the router.

Pure planning (`plan_kernel`) plus two small readers of what the kernel counted. The link
a->b leaves the router by lk-r-b, b->a by lk-r-a; every setting of a direction goes on
that egress interface, inside r's namespace:

- random loss: an nftables rule in r's forward hook, `numgen random mod 10^6 < p*10^6
  counter drop` (table inet labkit_<run>), on every kernel since 4.x. Its counter is the
  ground truth of how many packets the link dropped. Not seedable: the kernel draws the
  numbers (the run records that; a seed replays only on the userspace engine).
- rate: tbf with a drop-tail queue (`limit`). On veth a large queue pushes back on the
  sending socket (TCP small queues, RFC-less but real) instead of dropping, so a UDP flow
  only loses datagrams at a bottleneck with a small queue; the default queue is 50 ms of
  the rate, at least 3 full frames.
- delay, jitter, burst loss, duplication, reordering, corruption: netem, where the kernel
  has it (it is a module that many kernels, WSL2's among them, lack). netem is the root
  qdisc and tbf its child, so the delay line comes before the bottleneck queue.
  Semantics differ from the userspace engine in two places, written here so a run can say
  so: netem's jitter reorders packets (it sorts by send time), and netem's `reorder P`
  sends P of the packets at once while the rest wait the delay (it needs a delay).
"""

from __future__ import annotations

import json
import math

from .impairment import DIRECTIONS, Direction, Impairment
from .plan import Plan
from .topology import ROUTER, iface

LOSS_SCALE = 1_000_000


def table_name(run_id: str) -> str:
    return f"labkit_{run_id}"


def egress(direction: str, hosts: tuple[str, str] = ("a", "b")) -> str:
    """The router interface a direction leaves by: a_to_b leaves toward b."""
    a, b = hosts
    return iface(ROUTER, b if direction == "a_to_b" else a)


def tbf_args(d: Direction, mtu: int = 1500) -> list[str]:
    rate_Bps = d.rate_bps / 8
    frame = mtu + 14
    # burst: at least one full frame, else tbf can never send one; 4 ms of the rate above that
    burst = max(2 * frame, int(rate_Bps * 0.004))
    limit = d.queue_bytes if d.queue_bytes is not None else max(3 * frame, int(rate_Bps * 0.05))
    return ["tbf", "rate", f"{d.rate_bps}bit", "burst", str(burst), "limit", str(limit)]


def netem_args(d: Direction) -> list[str]:
    args = ["netem"]
    if d.delay_s:
        args += ["delay", f"{d.delay_s * 1e6:.0f}us"]
        if d.jitter_s:
            args += [f"{d.jitter_s * 1e6:.0f}us"]
    if d.burst:
        # netem's gemodel takes p, r, 1-h, 1-k in percent
        b = d.burst
        args += ["loss", "gemodel", _pct(b.p), _pct(b.r), _pct(b.loss_bad), _pct(b.loss_good)]
    if d.duplicate:
        args += ["duplicate", _pct(d.duplicate)]
    if d.reorder:
        args += ["reorder", _pct(d.reorder)]
    if d.corrupt:
        args += ["corrupt", _pct(d.corrupt)]
    return args


def _pct(p: float) -> str:
    return f"{p * 100:.6g}%"


def needs_netem(d: Direction) -> bool:
    return bool(d.needs() - {"rate", "loss"})


def nft_ruleset(imp: Impairment, run_id: str, hosts: tuple[str, str] = ("a", "b")) -> str | None:
    rules = []
    for name in DIRECTIONS:
        d = imp.direction(name)
        if d.loss:
            threshold = int(round(d.loss * LOSS_SCALE))
            rules.append(f'        oifname "{egress(name, hosts)}" numgen random mod {LOSS_SCALE} '
                         f'< {threshold} counter drop comment "loss {name}"')
    if not rules:
        return None
    # one statement per line: nft rejects `; }` inside a chain written on one line
    return "\n".join([f"table inet {table_name(run_id)} {{", "    chain forward {",
                      "        type filter hook forward priority 0; policy accept;",
                      *rules, "    }", "}", ""])


def plan_kernel(imp: Impairment, run_id: str, router_netns: str, *, have_netem: bool,
                mtu: int = 1500, hosts: tuple[str, str] = ("a", "b")) -> Plan:
    """The steps that impose `imp` on the router's egress interfaces."""
    if imp.faults:
        raise ValueError("scripted faults need the userspace engine")
    plan = Plan()
    for name in DIRECTIONS:
        d = imp.direction(name)
        dev = egress(name, hosts)
        if needs_netem(d):
            if not have_netem:
                raise ValueError(f"{name}: needs netem ({', '.join(sorted(d.needs()))}), "
                                 f"which this kernel lacks")
            plan.add("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem_args(d),
                     undo=("tc", "qdisc", "del", "dev", dev, "root"), netns=router_netns,
                     why=f"{name}: delay line on {dev}")
            if d.rate_bps:
                plan.add("tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                         *tbf_args(d, mtu), netns=router_netns,
                         why=f"{name}: bottleneck on {dev} (removed with netem)")
        elif d.rate_bps:
            plan.add("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", *tbf_args(d, mtu),
                     undo=("tc", "qdisc", "del", "dev", dev, "root"), netns=router_netns,
                     why=f"{name}: bottleneck on {dev}")
    ruleset = nft_ruleset(imp, run_id, hosts)
    if ruleset:
        plan.add("nft", "-f", "-", stdin=ruleset, netns=router_netns,
                 undo=("nft", "delete", "table", "inet", table_name(run_id)),
                 why="random loss in the router's forward hook")
    return plan


def plan_forwarding(router_netns: str, on: bool) -> Plan:
    """Turn the router's kernel forwarding on or off (the userspace engine forwards by
    itself, and a second copy from the kernel would duplicate every packet)."""
    value, undo = ("1", "0") if on else ("0", "1")
    plan = Plan()
    plan.add("sysctl", "-q", "-w", f"net.ipv4.ip_forward={value}",
             f"net.ipv6.conf.all.forwarding={value}", netns=router_netns,
             undo=("sysctl", "-q", "-w", f"net.ipv4.ip_forward={undo}",
                   f"net.ipv6.conf.all.forwarding={undo}"),
             why=f"router kernel forwarding {'on' if on else 'off'}")
    return plan


def parse_nft_drops(nft_json: str) -> dict[str, int]:
    """Packets dropped per direction, from `nft -j list table inet labkit_<run>`."""
    out: dict[str, int] = {}
    for item in json.loads(nft_json).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        comment = rule.get("comment", "")
        if not comment.startswith("loss "):
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                out[comment.split()[1]] = int(expr["counter"]["packets"])
    return out


def parse_tc_stats(tc_json: str) -> list[dict]:
    """The qdiscs of an interface with their counters, from `tc -s -j qdisc show dev X`."""
    keep = ("kind", "handle", "parent", "bytes", "packets", "drops", "overlimits", "requeues",
            "backlog", "qlen")
    return [{k: q[k] for k in keep if k in q} for q in json.loads(tc_json or "[]")]


def binomial_interval(n: int, p: float, coverage: float = 0.999) -> tuple[int, int]:
    """The central `coverage` interval of the count of n independent Bernoulli(p) events
    (exact binomial quantiles, summed in log space): a configured loss p over n packets
    should drop a count inside it, except one run in a thousand."""
    if n <= 0 or p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    tail = (1 - coverage) / 2
    log_p, log_q = math.log(p), math.log1p(-p)
    lo = hi = None
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                        + k * log_p + (n - k) * log_q)
        if lo is None and cdf > tail:
            lo = k
        if cdf >= 1 - tail:
            hi = k
            break
    return lo if lo is not None else 0, hi if hi is not None else n
